"""`prep tile`: labelled tiles from an export and glacier outlines (DESIGN.md sections 1, 2, 4).

Two streaming passes over tile windows, never the whole scene: a scan (valid fraction from one
band, glacier fraction from the rasterized outlines) that decides which tiles to keep and the
split, then the writes (11-band image, label, per-tile statistics), in parallel over tiles.
"""
from __future__ import annotations

import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from gee_export.common.atomic import as_stored, write_json
from gee_export.common.bands import BAND_NAMES, LABEL_BACKGROUND, LABEL_GLACIER, LABEL_IGNORE
from gee_export.common.errors import GlacierError
from gee_export.common.grid import ExportGrid
from gee_export.common.layout import (
    IMAGES_DIR,
    LABELS_DIR,
    OUTLINES_FILE,
    STACK_VRT,
    TILE_INDEX,
    TILES_DIR,
    TILES_MANIFEST,
    base_manifest,
    file_sha256,
    now_iso,
    read_manifest,
)
from gee_export.common.outlines import OutlineRasterizer, read_outlines
from gee_export.common.rasters import bounded_gdal_cache, check_stack, write_geotiff
from gee_export.common.vectors import write_gpkg

from .split import GUARD, TRAIN, VAL, check_val_fraction, min_distance, random_split, spatial_split

STAT_BINS = 1000  # histogram bins on [0, 1] for the training-split percentiles
PERCENTILES = (1, 2, 50, 98, 99)
SPLIT_ALGORITHM = 2  # bump when the split changes, so old tiles are not taken as current


@dataclass(frozen=True)
class TileConfig:
    size: int = 512  # paper: 512 x 512 tiles
    stride: int | None = None  # default = size (no overlap, as the paper)
    min_valid: float = 0.5  # drop tiles with less valid (non-nodata) area than this
    background_ratio: float | None = None  # keep at most this many glacier-free per glacier tile
    split: str = "spatial"
    val_fraction: float = 0.3  # paper: 70/30
    block_tiles: int = 4  # spatial split: blocks of block_tiles x block_tiles tiles
    seed: int = 0
    min_area_km2: float = 0.05  # paper: the 2072 glaciers over 0.05 km^2

    @property
    def step(self) -> int:
        return self.stride or self.size

    @property
    def guard_positions(self) -> int:
        # No training pixel within one tile width of a validation tile: a training tile k
        # positions away leaves a gap of k*step - size >= size.
        return max(1, math.ceil(2 * self.size / self.step) - 1)

    def check(self, grid: ExportGrid) -> None:
        if self.size < 32 or self.size % 32:
            raise GlacierError(f"--size {self.size}: use a multiple of 32 (the model's stride)")
        if not 0 < self.step <= self.size:
            raise GlacierError(f"--stride {self.step}: must lie in 1..{self.size}")
        if self.size > min(grid.width, grid.height):
            raise GlacierError(f"--size {self.size} px is larger than the scene "
                               f"({grid.width} x {grid.height} px)")
        if not 0 <= self.min_valid <= 1:
            raise GlacierError(f"--min-valid {self.min_valid}: must lie in [0, 1]")
        if self.split not in ("spatial", "random"):
            raise GlacierError(f"--split {self.split!r}: use spatial or random")
        check_val_fraction(self.val_fraction)


def tile_windows(grid: ExportGrid, size: int, step: int):
    """(row, col, row_off, col_off) of every full tile on the grid, aligned to its origin."""
    for r, row_off in enumerate(range(0, grid.height - size + 1, step)):
        for c, col_off in enumerate(range(0, grid.width - size + 1, step)):
            yield r, c, row_off, col_off


def tile_id(r: int, c: int) -> str:
    return f"t{r:04d}_{c:04d}"


# --------------------------------------------------------------------------------------------
# Worker functions (module level so processes can run them)

_W: dict = {}


def _init_worker(vrt: str, geoms, transform, out_dir: str):
    import rasterio

    env = bounded_gdal_cache()
    env.__enter__()  # for the worker's lifetime
    _W.update(env=env, src=rasterio.open(vrt), raster=OutlineRasterizer(geoms, transform),
              out=Path(out_dir))


def _scan(args):
    """Valid and glacier fraction of one tile window (one band read, one rasterization)."""
    from rasterio.windows import Window

    r, c, row_off, col_off, size = args
    band0 = _W["src"].read(1, window=Window(col_off, row_off, size, size))
    valid = np.isfinite(band0)
    gl = _W["raster"].mask(row_off, col_off, size, size) & valid
    return float(valid.mean()), float(gl.sum()) / max(1, int(valid.sum()))


def _write(args):
    """Write one tile's image and label (or read them back if done); return its statistics."""
    import rasterio
    from rasterio.windows import Window

    tid, row_off, col_off, size, is_train = args
    out = _W["out"]
    img_path, lbl_path = out / IMAGES_DIR / f"{tid}.tif", out / LABELS_DIR / f"{tid}.tif"
    if img_path.is_file() and lbl_path.is_file():
        with rasterio.open(img_path) as s:
            img = s.read()
        with rasterio.open(lbl_path) as s:
            lbl = s.read(1)
    else:
        src = _W["src"]
        win = Window(col_off, row_off, size, size)
        img = src.read(window=win)
        valid = np.isfinite(img).all(axis=0)
        gl = _W["raster"].mask(row_off, col_off, size, size)
        lbl = np.where(valid, np.where(gl, LABEL_GLACIER, LABEL_BACKGROUND),
                       LABEL_IGNORE).astype(np.uint8)
        t = src.window_transform(win)
        common = dict(driver="GTiff", width=size, height=size, crs=src.crs, transform=t,
                      tiled=True, blockxsize=min(256, size), blockysize=min(256, size),
                      compress="deflate")
        write_geotiff(img_path, img, dict(common, count=img.shape[0], dtype="float32",
                                        nodata=np.nan, predictor=3), BAND_NAMES)
        write_geotiff(lbl_path, lbl[None], dict(common, count=1, dtype="uint8",
                                              nodata=LABEL_IGNORE), ("glacier",))
    valid = lbl != LABEL_IGNORE
    stats = {"glacier_px": int((lbl == LABEL_GLACIER).sum()), "valid_px": int(valid.sum())}
    if is_train:
        v = img[:, valid]
        stats["sum"] = v.sum(axis=1, dtype=np.float64)
        stats["sumsq"] = (v.astype(np.float64) ** 2).sum(axis=1)
        stats["hist"] = unit_histograms(v)
    return tid, stats


def unit_histograms(v: np.ndarray) -> np.ndarray:
    """Per-row histograms of values in [0, 1] into STAT_BINS equal bins (1.0 in the last):
    one bincount over all rows instead of a np.histogram call per band."""
    bins = np.minimum((v * STAT_BINS).astype(np.int64), STAT_BINS - 1)
    bins += (np.arange(v.shape[0]) * STAT_BINS)[:, None]
    return np.bincount(bins.ravel(), minlength=v.shape[0] * STAT_BINS).reshape(v.shape[0], -1)


def _pool_map(fn, items, workers, init_args, desc, quiet):
    from tqdm import tqdm

    bar = dict(total=len(items), desc=desc, unit="tile", disable=quiet, leave=False)
    if workers <= 1:
        _init_worker(*init_args)
        try:
            return [r for r in tqdm(map(fn, items), **bar)]
        finally:
            _W["src"].close()
            _W.pop("env").__exit__(None, None, None)
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=init_args) as ex:
        return list(tqdm(ex.map(fn, items, chunksize=4), **bar))


# --------------------------------------------------------------------------------------------


def make_tiles(*args, **kwargs) -> Path:
    """Cut an export into labelled tiles (see _make_tiles) with GDAL's block cache capped."""
    with bounded_gdal_cache():
        return _make_tiles(*args, **kwargs)


def _make_tiles(export_dir: Path, workspace: Path, cfg: TileConfig = TileConfig(),
                outlines_path: Path | None = None, name: str | None = None, workers: int = 1,
                force: bool = False, quiet: bool = False, echo=print) -> Path:
    import shutil

    import geopandas as gpd
    from shapely.geometry import box

    exp = read_manifest(export_dir, "export")
    if not exp.get("complete"):
        raise GlacierError(f"{export_dir}: the export is not complete; rerun `prep export` with "
                           "the same options to finish it")
    grid = ExportGrid.from_dict(exp["grid"])
    vrt = Path(export_dir) / STACK_VRT
    check_stack(vrt)
    cfg.check(grid)
    if outlines_path is None:
        outlines_path = Path(export_dir) / OUTLINES_FILE
        if not outlines_path.is_file():
            raise GlacierError(f"{export_dir} recorded no outlines; give --outlines FILE")
    outlines = read_outlines(outlines_path, grid.crs).split_by_area(cfg.min_area_km2)[0].frame
    grid_box = box(*grid.bounds)
    if not outlines.intersects(grid_box).any():
        raise GlacierError(
            f"outlines {outlines_path} do not overlap the stack: outlines bounds "
            f"{tuple(round(v) for v in outlines.total_bounds)}, stack bounds "
            f"{tuple(round(v) for v in grid.bounds)} (both in {grid.crs})")
    geoms = outlines.geometry.values

    out = Path(workspace) / TILES_DIR / (name or Path(export_dir).name)
    params = as_stored({"export": str(Path(export_dir).resolve()),
                          "export_completed_at": exp.get("completed_at"),
                          "outlines": str(outlines_path), "outlines_sha256":
                          file_sha256(outlines_path), "config": asdict(cfg),
                          "split_algorithm": SPLIT_ALGORITHM})
    mf = out / TILES_MANIFEST
    if mf.is_file():
        old = read_manifest(mf, "tiles")
        if old.get("parameters") != params:
            if not force:
                raise GlacierError(f"{out} holds tiles made with other parameters; use --force "
                                   "to replace them or --name to tile beside them")
            shutil.rmtree(out)
        elif old.get("complete"):
            echo(f"tiles {out} are complete; nothing to do")
            return out
    out.mkdir(parents=True, exist_ok=True)
    manifest = base_manifest("tiles", parameters=params, export=str(Path(export_dir).resolve()),
                             region=exp.get("region", {}).get("name"), year=exp.get("year"),
                             synthetic=exp.get("synthetic", False), bands=list(BAND_NAMES),
                             grid=grid.to_dict(), tile_size=cfg.size,
                             normalization=exp.get("normalization"))
    write_json(mf, manifest)

    init = (str(vrt), geoms, grid.transform, str(out))
    wins = list(tile_windows(grid, cfg.size, cfg.step))
    scans = _pool_map(_scan, [(r, c, ro, co, cfg.size) for r, c, ro, co in wins], workers, init,
                      "scan", quiet)
    kept = [(w, s) for w, s in zip(wins, scans) if s[0] >= cfg.min_valid and s[0] > 0]
    if cfg.background_ratio is not None:
        kept = _limit_background(kept, cfg.background_ratio, cfg.seed)
    if not kept:
        raise GlacierError(f"no tile of {cfg.size} px has a valid fraction >= {cfg.min_valid}")
    rows = np.array([w[0] for w, _ in kept])
    cols = np.array([w[1] for w, _ in kept])
    if cfg.split == "random":
        split = random_split(len(kept), cfg.val_fraction, cfg.seed)
    else:
        split = spatial_split(rows, cols, cfg.val_fraction, cfg.seed, cfg.block_tiles,
                              cfg.guard_positions, [s[0] * s[1] for _, s in kept])

    jobs = [(tile_id(r, c), ro, co, cfg.size, sp == TRAIN)
            for ((r, c, ro, co), _), sp in zip(kept, split) if sp != GUARD]
    results = dict(_pool_map(_write, jobs, workers, init, "tiles", quiet))

    # Index, statistics, area check.
    res = grid.res
    feats = []
    per_split = {TRAIN: _Side(), VAL: _Side()}
    train_acc = _BandStats()
    poly_area, raster_area = 0.0, 0.0
    tree_geoms = outlines.geometry
    sindex = tree_geoms.sindex
    for ((r, c, ro, co), (vf, gf)), sp in zip(kept, split):
        x0, y0 = grid.x0 + co * res, grid.y0 - ro * res
        fp = box(x0, y0 - cfg.size * res, x0 + cfg.size * res, y0)
        tid = tile_id(r, c)
        feats.append({"tile_id": tid, "split": sp, "glacier_fraction": round(gf, 5),
                      "valid_fraction": round(vf, 5), "row_off": ro, "col_off": co,
                      "image": f"{IMAGES_DIR}/{tid}.tif" if sp != GUARD else None,
                      "label": f"{LABELS_DIR}/{tid}.tif" if sp != GUARD else None,
                      "geometry": fp})
        if sp == GUARD:
            continue
        st = results[tid]
        per_split[sp].add(st, res, fp)
        if sp == TRAIN:
            train_acc.add(st)
        # Area of the union: overlapping inventory polygons must not count twice.
        near = tree_geoms.iloc[sindex.query(fp)]
        poly_area += float(near.union_all().intersection(fp).area) if len(near) else 0.0
        raster_area += st["glacier_px"] * res * res
    index = gpd.GeoDataFrame(feats, crs=grid.crs)
    write_gpkg(index, out / TILE_INDEX, "tiles")

    dist = min_distance(per_split[TRAIN].boxes, per_split[VAL].boxes)
    manifest.update(
        counts={"windows": len(wins), "kept": len(kept), **{k: split.count(k) for k in
                                                            (TRAIN, VAL, GUARD)}},
        splits={k: v.report() for k, v in per_split.items()},
        split_distance_m=dist,
        label_area={"polygons_km2": poly_area / 1e6, "rasterized_km2": raster_area / 1e6,
                    "relative_difference": (raster_area - poly_area) / poly_area
                    if poly_area else None,
                    "rule": "pixel centre inside polygon"},
        outlines={"file": str(outlines_path), "count": len(outlines),
                  "min_area_km2": cfg.min_area_km2,
                  "area_km2": float(outlines.geometry.area.sum() / 1e6)},
        train_stats=train_acc.report(),
        complete=True, completed_at=now_iso())
    _overview_png(out / "overview.png", index, outlines, grid)
    write_json(mf, manifest)
    s = manifest["splits"]
    echo(f"tiles complete: {out} ({s[TRAIN]['tiles']} train, {s[VAL]['tiles']} val, "
         f"{manifest['counts'][GUARD]} guard; split distance {dist:.0f} m; labels "
         f"{manifest['label_area']['rasterized_km2']:.2f} km^2 vs polygons "
         f"{manifest['label_area']['polygons_km2']:.2f} km^2)")
    return out


def _limit_background(kept, ratio, seed):
    rng = np.random.default_rng(seed)
    with_gl = [k for k in kept if k[1][1] > 0]
    without = [k for k in kept if k[1][1] == 0]
    n = int(round(ratio * max(1, len(with_gl))))
    pick = set(rng.permutation(len(without))[:n].tolist())
    chosen = set(id(without[i]) for i in pick)
    return [k for k in kept if k[1][1] > 0 or id(k) in chosen]


class _Side:
    def __init__(self):
        self.tiles = self.glacier_px = self.valid_px = 0
        self.boxes = []
        self.res = 10.0

    def add(self, st, res, fp):
        self.tiles += 1
        self.glacier_px += st["glacier_px"]
        self.valid_px += st["valid_px"]
        self.res = res
        self.boxes.append(fp)

    def report(self):
        return {"tiles": self.tiles, "glacier_pixels": self.glacier_px,
                "valid_pixels": self.valid_px,
                "glacier_area_km2": self.glacier_px * self.res ** 2 / 1e6,
                "glacier_fraction": self.glacier_px / max(1, self.valid_px)}


class _BandStats:
    def __init__(self):
        n = len(BAND_NAMES)
        self.count = 0
        self.sum, self.sumsq = np.zeros(n), np.zeros(n)
        self.hist = np.zeros((n, STAT_BINS), np.int64)

    def add(self, st):
        self.count += st["valid_px"]
        self.sum += st["sum"]
        self.sumsq += st["sumsq"]
        self.hist += st["hist"]

    def report(self) -> dict:
        if self.count == 0:
            raise GlacierError("the training split has no valid pixel")
        mean = self.sum / self.count
        std = np.sqrt(np.maximum(self.sumsq / self.count - mean ** 2, 0))
        cum = np.cumsum(self.hist, axis=1)
        out = {"pixels": int(self.count), "bands": {}}
        for i, b in enumerate(BAND_NAMES):
            pct = {str(p): float(np.searchsorted(cum[i], cum[i, -1] * p / 100) / STAT_BINS)
                   for p in PERCENTILES}
            out["bands"][b] = {"mean": float(mean[i]), "std": float(max(std[i], 1e-6)),
                               "percentiles": pct}
        return out


def _overview_png(path: Path, index, outlines, grid: ExportGrid):
    from matplotlib.patches import Patch

    from gee_export.common.figures import new_figure, save_png

    colors = {TRAIN: "#4c9be8", VAL: "#f28e2b", GUARD: "#cccccc"}
    fig, ax = new_figure(figsize=(8, 8 * grid.height / grid.width))
    for sp, col in colors.items():
        sub = index[index["split"] == sp]
        if len(sub):
            sub.plot(ax=ax, facecolor=col, edgecolor="white", linewidth=0.5, alpha=0.8)
    outlines.plot(ax=ax, facecolor="none", edgecolor="#1b3a6b", linewidth=0.6)
    w, s, e, n = grid.bounds
    ax.plot([w, e, e, w, w], [s, s, n, n, s], color="black", linewidth=1)
    ax.legend(handles=[Patch(color=c, label=k) for k, c in colors.items()] +
              [Patch(facecolor="none", edgecolor="#1b3a6b", label="glacier outlines")],
              loc="upper right", fontsize=8)
    ax.set_title("tiles by split, glacier outlines, export footprint")
    ax.set_xlabel(f"easting (m, {grid.crs})")
    ax.set_ylabel("northing (m)")
    fig.tight_layout()
    save_png(fig, path)
