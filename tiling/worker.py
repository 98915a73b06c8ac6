"""What each worker process of `prep tile` does: open the stack and the outlines' rasterizers
once, then scan tile windows (pass 1) or write tiles (pass 2). Module level, so that
processes can run them; `_progress` is the parent's bar over their results."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from gee_export.common.bands import BAND_NAMES, LABEL_BACKGROUND, LABEL_GLACIER, LABEL_IGNORE
from gee_export.common.layout import file_record, tile_files
from gee_export.common.outlines import OutlineRasterizer
from gee_export.common.rasters import geotiff_profile, write_geotiff

from .statistics import unit_histograms

_W: dict = {}


def _init_worker(vrt: str, large, small, small_label: int, transform, out_dir: str) -> None:
    import rasterio

    _W.update(src=rasterio.open(vrt), large=OutlineRasterizer(large, transform),
              small=OutlineRasterizer(small, transform) if len(small) else None,
              small_label=small_label, out=Path(out_dir))


def _close_worker() -> None:
    _W.pop("src").close()


def _scan(window: tuple[int, int, int]) -> tuple[float, float]:
    """Valid and glacier fraction of one tile window (one band read, one rasterization)."""
    from rasterio.windows import Window

    row_off, col_off, size = window
    valid = np.isfinite(_W["src"].read(1, window=Window(col_off, row_off, size, size)))
    ice = _W["large"].mask(row_off, col_off, size, size) & valid
    return float(valid.mean()), float(ice.sum()) / max(1, int(valid.sum()))


def _write(job: tuple) -> dict:
    """Write one tile's image and label, or read them back if an earlier run wrote them and
    they match the checksums it recorded; return its statistics and its files' checksums."""
    tid, row_off, col_off, size, is_train, known = job
    rels = tile_files(tid)
    paths = [_W["out"] / rel for rel in rels]
    records = [file_record(p) if p.is_file() else None for p in paths]
    changed = any(r is not None and k is not None and r != k for r, k in zip(records, known))
    intact = not changed and None not in records
    img_lbl = _read_tile(*paths) if intact else None
    if img_lbl is None:
        img_lbl = _cut_tile(row_off, col_off, size)
        _write_tile(paths, *img_lbl, row_off, col_off, size)
        records = [file_record(p) for p in paths]
    img, lbl = img_lbl
    valid = lbl != LABEL_IGNORE
    stats = {"glacier_px": int((lbl == LABEL_GLACIER).sum()), "valid_px": int(valid.sum()),
             "files": dict(zip(rels, records)),
             "recut": changed}
    if is_train:
        v = img[:, valid]
        stats["sum"] = v.sum(axis=1, dtype=np.float64)
        stats["sumsq"] = (v.astype(np.float64) ** 2).sum(axis=1)
        stats["hist"] = unit_histograms(v)
    return stats


def _read_tile(img_path: Path, lbl_path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """A tile an earlier run wrote, or None when either file cannot be read (then it is cut
    again)."""
    import rasterio

    try:
        with rasterio.open(img_path) as s:
            img = s.read()
        with rasterio.open(lbl_path) as s:
            return img, s.read(1)
    except rasterio.errors.RasterioError:
        return None


def _cut_tile(row_off: int, col_off: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The stack window and its label: glacier, background, 255 where any band lacks data,
    and small glaciers as --small-glaciers says (a large outline wins where they overlap)."""
    from rasterio.windows import Window

    img = _W["src"].read(window=Window(col_off, row_off, size, size))
    lbl = np.full((size, size), LABEL_BACKGROUND, np.uint8)
    if _W["small"] is not None:
        lbl[_W["small"].mask(row_off, col_off, size, size)] = _W["small_label"]
    lbl[_W["large"].mask(row_off, col_off, size, size)] = LABEL_GLACIER
    lbl[~np.isfinite(img).all(axis=0)] = LABEL_IGNORE
    return img, lbl


def _write_tile(paths: list[Path], img: np.ndarray, lbl: np.ndarray, row_off: int,
                col_off: int, size: int) -> None:
    from rasterio.windows import Window

    src = _W["src"]
    t = src.window_transform(Window(col_off, row_off, size, size))
    # Tiles are COGs without overviews: the loader reads each whole, at full resolution.
    write_geotiff(paths[0], img, geotiff_profile(size, size, img.shape[0], "float32", src.crs, t,
                                                 np.nan), BAND_NAMES, resampling=None)
    write_geotiff(paths[1], lbl[None], geotiff_profile(size, size, 1, "uint8", src.crs, t,
                                                       LABEL_IGNORE), ("glacier",), resampling=None)


def _progress(pairs, total: int, desc: str, quiet: bool):
    from tqdm import tqdm

    return tqdm(pairs, total=total, desc=desc, unit="tile", disable=quiet, leave=False)
