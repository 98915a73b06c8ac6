"""Whole-scene prediction: blended overlapping windows streamed into a probability GeoTIFF,
then glacier outlines (the paper's section 2.2: merge patches by averaging overlaps, convert to
polygons, drop small isolated ones).

Memory is bounded by the window, the batch and a column band of `band_width` pixels, never by
the scene: windows are visited band by band and row by row, and a rolling buffer of one
window's height holds the running weighted sums until no later window can touch a row.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from gee_export.common.atomic import as_stored, atomic_output, write_json
from gee_export.common.bands import BAND_NAMES
from gee_export.common.errors import GlacierError
from gee_export.common.layout import (
    GLACIERS_GPKG,
    OUTLINES_FILE,
    PREDICTION_MANIFEST,
    PREDICTIONS_DIR,
    PROBABILITY_TIF,
    STACK_VRT,
    base_manifest,
    file_sha256,
    now_iso,
    read_manifest,
)
from gee_export.common.rasters import bounded_gdal_cache

RAW_SUFFIX = ".raw.tif"  # uncompressed working copy, kept between runs for resume
MIN_WEIGHT = 1e-3  # floor of the blending weight, so scene-edge pixels are never divided by 0


@dataclass(frozen=True)
class PredictConfig:
    window: int | None = None  # default: the checkpoint's tile size (what the model saw)
    overlap: int | None = None  # default: a quarter of the window
    batch_size: int = 4
    threshold: float = 0.5
    min_area_km2: float = 0.05  # paper: glaciers over 0.05 km^2 (2072 in Qilian)
    max_hole_km2: float = 0.01  # holes smaller than this are filled (1 ha: 100 pixels)
    simplify_m: float = 0.0  # 0 keeps the pixel staircase exactly
    band_width: int = 4096  # columns per streamed band: bounds memory on wide scenes
    device: str = "auto"
    amp: bool = True


# -- windows and blending (pure) -------------------------------------------------------------

def window_starts(n: int, window: int, step: int) -> list[int]:
    """Window offsets covering 0..n: every `step`, the last one flush with the end."""
    if n <= window:
        return [0]
    starts = list(range(0, n - window + 1, step))
    if starts[-1] + window < n:
        starts.append(n - window)
    return starts


def blend_weights(window: int) -> np.ndarray:
    """A separable sin^2 bump: full weight at the centre, falling towards the window's edges
    where the model sees least context; floored so a scene edge still gets a value."""
    t = (np.arange(window) + 0.5) / window
    w = np.maximum(np.sin(np.pi * t) ** 2, MIN_WEIGHT)
    return np.outer(w, w).astype(np.float32)


ModelFn = Callable[[np.ndarray], np.ndarray]  # (B, C, w, w) standardized -> (B, w, w) prob


def _read_window(src, band_idx, row, col, window):
    from rasterio.windows import Window

    win = Window(col, row, window, window)
    inside = row + window <= src.height and col + window <= src.width
    return src.read(band_idx, window=win, boundless=not inside, fill_value=np.nan,
                    out_dtype="float32")


def stream_probability(src, dst, model_fn: ModelFn, band_idx: list[int], standardize,
                       window: int, overlap: int, batch_size: int, band_width: int,
                       done_bands: set[int] = frozenset(), on_band=None,
                       progress=None) -> None:
    """Blend model outputs over overlapping windows of `src` into band 1 of `dst` (same grid).

    Every pixel gets sum(w * p) / sum(w) over the windows covering it, with w zero where the
    stack is nodata (so nodata stays NaN). Windows sit on one global lattice whatever the
    column band, so the result does not depend on `band_width`.
    """
    from rasterio.windows import Window

    if not 0 <= overlap < window:
        raise GlacierError(f"--overlap {overlap} must lie in [0, window {window})")
    H, W = src.height, src.width
    step = window - overlap
    rows, cols = window_starts(H, window, step), window_starts(W, window, step)
    weight = blend_weights(window)
    for c0 in range(0, W, band_width):
        if c0 in done_bands:
            if progress:
                progress(len(rows) * sum(1 for c in cols if c < c0 + band_width
                                         and c + window > c0))
            continue
        c1 = min(W, c0 + band_width)
        bcols = [c for c in cols if c < c1 and c + window > c0]
        x0 = bcols[0]
        num = np.zeros((window, bcols[-1] + window - x0), np.float32)
        den = np.zeros_like(num)
        state = {"r0": 0}

        def flush(upto: int):
            r0 = state["r0"]
            upto = min(upto, H)
            if upto <= r0:
                return
            n = upto - r0
            d = den[:n, c0 - x0:c1 - x0]
            with np.errstate(invalid="ignore", divide="ignore"):
                p = np.where(d > 0, num[:n, c0 - x0:c1 - x0] / d, np.nan).astype(np.float32)
            dst.write(p, 1, window=Window(c0, r0, c1 - c0, n))
            num[:-n], den[:-n] = num[n:].copy(), den[n:].copy()
            num[-n:], den[-n:] = 0, 0
            state["r0"] = upto

        for r in rows:
            flush(r)
            for i in range(0, len(bcols), batch_size):
                batch = bcols[i:i + batch_size]
                raw = np.stack([_read_window(src, band_idx, r, c, window) for c in batch])
                valid = np.isfinite(raw).all(axis=1)
                prob = model_fn(np.stack([standardize(x) for x in raw]))
                for c, p, v in zip(batch, prob, valid):
                    w = weight * v
                    num[:, c - x0:c - x0 + window] += w * p
                    den[:, c - x0:c - x0 + window] += w
                if progress:
                    progress(len(batch))
        flush(H)
        if on_band:
            on_band(c0)


# -- outlines (pure on arrays and geometries) --------------------------------------------------

def polygonize_blocks(src, threshold: float, block: int = 1024) -> tuple[list, int]:
    """Glacier polygons (probability >= threshold, 4-connected) of a probability raster, read
    block by block; pieces cut by block borders are dissolved back into one polygon. Also
    returns the number of valid (non-NaN) pixels, counted in the same pass."""
    import shapely
    from rasterio import features
    from rasterio.windows import Window
    from shapely.geometry import shape

    final, edge, valid = [], [], 0
    for r in range(0, src.height, block):
        for c in range(0, src.width, block):
            win = Window(c, r, min(block, src.width - c), min(block, src.height - r))
            p = src.read(1, window=win)
            valid += int(np.isfinite(p).sum())
            mask = np.nan_to_num(p, nan=0.0) >= threshold
            if not mask.any():
                continue
            t = src.window_transform(win)
            x0, y1 = t * (0, 0)
            x1, y0 = t * (win.width, win.height)
            for geom, _ in features.shapes(mask.astype(np.uint8), mask=mask, transform=t):
                poly = shape(geom)
                b = poly.bounds
                touches = ((b[0] <= x0 and c > 0) or (b[2] >= x1 and c + win.width < src.width)
                           or (b[3] >= y1 and r > 0) or (b[1] <= y0 and r + win.height <
                                                          src.height))
                (edge if touches else final).append(poly)
    if edge:
        merged = shapely.union_all(edge)
        final.extend(shapely.get_parts(merged).tolist())
    return final, valid


def clean_polygons(polys: list, min_area_m2: float, max_hole_m2: float,
                   simplify_m: float = 0.0) -> list:
    """Fill holes smaller than max_hole_m2, drop polygons smaller than min_area_m2 (after
    filling, so a glacier is judged by its outline), optionally simplify."""
    from shapely.geometry import Polygon

    out = []
    for p in polys:
        holes = [h for h in p.interiors if Polygon(h).area >= max_hole_m2]
        q = Polygon(p.exterior, holes)
        if q.area < min_area_m2:
            continue
        if simplify_m > 0:
            q = q.simplify(simplify_m, preserve_topology=True)
        out.append(q)
    return out


def mean_probability(src, polys: list, block: int = 1024) -> list[float]:
    """Mean probability inside each polygon (pixel-centre rule), accumulated block by block so
    a glacier as big as the scene costs no more memory than a small one."""
    import shapely
    from rasterio import features
    from rasterio.windows import Window
    from shapely.geometry import box

    n = len(polys)
    if n == 0:
        return []
    geoms = np.asarray(polys)
    tree = shapely.STRtree(geoms)
    sums, counts = np.zeros(n + 1), np.zeros(n + 1)
    for r in range(0, src.height, block):
        for c in range(0, src.width, block):
            win = Window(c, r, min(block, src.width - c), min(block, src.height - r))
            t = src.window_transform(win)
            idx = tree.query(box(*rasterio_bounds(t, win)))
            if not len(idx):
                continue
            p = src.read(1, window=win)
            lab = features.rasterize(((geoms[i], int(i) + 1) for i in idx),
                                     out_shape=p.shape, transform=t, fill=0, dtype="int32")
            ok = (lab > 0) & np.isfinite(p)
            sums += np.bincount(lab[ok], weights=p[ok], minlength=n + 1)
            counts += np.bincount(lab[ok], minlength=n + 1)
    with np.errstate(invalid="ignore"):
        return [float(v) for v in np.where(counts > 0, sums / np.maximum(counts, 1),
                                           np.nan)[1:]]


def rasterio_bounds(transform, win) -> tuple[float, float, float, float]:
    x0, y0 = transform * (0, 0)
    x1, y1 = transform * (win.width, win.height)
    return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)


# -- checks against the checkpoint ------------------------------------------------------------

def normalization_warnings(meta: dict, export: dict, sample_mean: dict[str, float],
                           sigmas: float = 3.0) -> list[str]:
    """Why this scene may not be comparable with the training data, band by band."""
    warnings = []
    trained = meta.get("export_normalization") or {}
    here = export.get("normalization") or {}
    if trained and here:
        differ = [b for b in BAND_NAMES
                  if trained.get("ranges", {}).get(b) != here.get("ranges", {}).get(b)]
        if differ or trained.get("mode") != here.get("mode"):
            warnings.append(
                f"the export is normalized differently from the training data ({here.get('mode')}"
                f" vs {trained.get('mode')}; bands {', '.join(differ) or 'none'} differ): "
                "re-export with --norm-from the training export")
    stats = meta["norm_stats"]
    far = []
    for b, m, s in zip(stats["bands"], stats["mean"], stats["std"]):
        if b in sample_mean and np.isfinite(sample_mean[b]) and \
                abs(sample_mean[b] - m) > sigmas * s:
            far.append(f"{b} (mean {sample_mean[b]:.3f}, training {m:.3f} +- {s:.3f})")
    if far:
        warnings.append("band statistics far outside the training range: " + "; ".join(far))
    return warnings


def sample_band_means(src, band_idx: list[int], names: list[str], n: int = 64,
                      size: int = 64, seed: int = 0) -> dict[str, float]:
    """Per-band mean over n random small windows: a bounded look at the scene."""
    from rasterio.windows import Window

    rng = np.random.default_rng(seed)
    sums, counts = np.zeros(len(band_idx)), np.zeros(len(band_idx))
    for _ in range(n):
        r = int(rng.integers(0, max(1, src.height - size)))
        c = int(rng.integers(0, max(1, src.width - size)))
        a = src.read(band_idx, window=Window(c, r, min(size, src.width), min(size, src.height)))
        ok = np.isfinite(a)
        sums += np.where(ok, a, 0).sum(axis=(1, 2))
        counts += ok.sum(axis=(1, 2))
    with np.errstate(invalid="ignore"):
        return {b: float(s / k) if k else float("nan") for b, s, k in zip(names, sums, counts)}


# -- the command ------------------------------------------------------------------------------

def torch_model_fn(model, device, amp_dtype) -> ModelFn:
    import torch

    from training.runtime import forward

    @torch.no_grad()
    def fn(x: np.ndarray) -> np.ndarray:
        logits = forward(model, torch.from_numpy(np.ascontiguousarray(x)).to(device), amp_dtype)
        return torch.softmax(logits.float(), 1)[:, 1].cpu().numpy()

    return fn


def load_model(checkpoint: Path, device):
    from training.models import build_model
    from training.runtime import load_checkpoint

    ck = load_checkpoint(checkpoint, map_location="cpu")
    meta = ck["meta"]
    model = build_model(meta["model"], meta["preset"], len(meta["band_names"]))
    model.load_state_dict(ck["model_state"])
    return model.to(device).eval(), meta


def predict(*args, **kwargs) -> Path:
    """Probability GeoTIFF and glacier outlines for one export (see _predict); rerunning
    resumes. GDAL's block cache is capped: every block is read about once."""
    with bounded_gdal_cache():
        return _predict(*args, **kwargs)


def _predict(checkpoint: Path, export_dir: Path, workspace: Path, cfg: PredictConfig,
             name: str | None = None, force: bool = False, quiet: bool = False,
             echo=print, model_fn: ModelFn | None = None) -> Path:
    import rasterio
    from tqdm import tqdm

    from gee_export.common.rasters import check_stack
    from training.data import NormStats
    from training.runtime import amp_dtype_for, resolve_device

    export = read_manifest(export_dir, "export")
    if not export.get("complete"):
        raise GlacierError(f"{export_dir}: the export is not complete; finish `prep export`")
    vrt = Path(export_dir) / STACK_VRT
    check_stack(vrt)
    device = resolve_device(cfg.device)
    model, meta = load_model(checkpoint, device) if model_fn is None else (None, None)
    if meta is None:
        from training.runtime import load_checkpoint

        meta = load_checkpoint(checkpoint)["meta"]
    bands = meta["band_names"]
    missing = [b for b in bands if b not in BAND_NAMES]
    if missing:
        raise GlacierError(f"{checkpoint}: trained on band(s) {', '.join(missing)} that the "
                           "stack lacks")
    window = cfg.window or meta["tile_size"]
    if window % 32:
        raise GlacierError(f"--window {window}: must be a multiple of 32 (the encoder's stride)")
    overlap = window // 4 if cfg.overlap is None else cfg.overlap
    if not 0 <= overlap < window:
        raise GlacierError(f"--overlap {overlap} must lie in [0, window {window})")
    stats = NormStats.from_dict(meta["norm_stats"])
    band_idx = [BAND_NAMES.index(b) + 1 for b in bands]
    if model_fn is None:
        model_fn = torch_model_fn(model, device, amp_dtype_for(device, cfg.amp))

    run_name = Path(checkpoint).resolve().parent.name
    out = Path(workspace) / PREDICTIONS_DIR / run_name / (name or Path(export_dir).name)
    params = as_stored({
        "checkpoint": str(Path(checkpoint).resolve()), "checkpoint_sha256":
        file_sha256(checkpoint), "export": str(Path(export_dir).resolve()),
        "export_completed_at": export.get("completed_at"),
        "config": {**asdict(cfg), "window": window, "overlap": overlap}})
    mf = out / PREDICTION_MANIFEST
    manifest = None
    if mf.is_file():
        old = read_manifest(mf, "prediction")
        if old.get("parameters") == params and not force:
            if old.get("complete"):
                echo(f"prediction {out} is complete; nothing to do")
                return out
            manifest = old
        elif not force:
            raise GlacierError(f"{out} holds a prediction made with other parameters; use "
                               "--force to replace it or --name to predict beside it")
    if manifest is None:
        import shutil

        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        manifest = base_manifest("prediction", parameters=params, bands=bands,
                                 grid=export["grid"], export=str(Path(export_dir).resolve()),
                                 region=export.get("region", {}).get("name"),
                                 year=export.get("year"), synthetic=export.get("synthetic"),
                                 bands_done=[])
        write_json(mf, manifest)

    raw = out / (PROBABILITY_TIF + RAW_SUFFIX)
    with rasterio.open(vrt) as src:
        if "warnings" not in manifest:
            manifest["warnings"] = normalization_warnings(
                meta, export, sample_band_means(src, band_idx, bands))
            for w in manifest["warnings"]:
                echo(f"warning: {w}")
            write_json(mf, manifest)
        if not (out / PROBABILITY_TIF).is_file():
            if not raw.is_file():
                manifest["bands_done"] = []
            prof = dict(driver="GTiff", width=src.width, height=src.height, count=1,
                        dtype="float32", crs=src.crs, transform=src.transform, nodata=np.nan,
                        tiled=True, blockxsize=256, blockysize=256, BIGTIFF="IF_SAFER")
            step = window - overlap
            total = len(window_starts(src.height, window, step)) * sum(
                len([c for c in window_starts(src.width, window, step)
                     if c < c0 + cfg.band_width and c + window > c0])
                for c0 in range(0, src.width, cfg.band_width))
            bar = tqdm(total=total, desc="predict", unit="window", disable=quiet, leave=False)

            def band_done(c0):
                manifest["bands_done"].append(c0)
                write_json(mf, manifest)

            with rasterio.open(raw, "r+" if raw.is_file() else "w",
                               **({} if raw.is_file() else prof)) as dst:
                stream_probability(src, dst, model_fn, band_idx, stats.apply, window, overlap,
                                   cfg.batch_size, cfg.band_width,
                                   set(manifest["bands_done"]), band_done, bar.update)
            bar.close()
            _compress(raw, out / PROBABILITY_TIF)
            raw.unlink()

    echo("polygonizing")
    with rasterio.open(out / PROBABILITY_TIF) as prob:
        res = prob.res[0]
        raw_polys, valid_px = polygonize_blocks(prob, cfg.threshold)
        polys = clean_polygons(raw_polys, cfg.min_area_km2 * 1e6, cfg.max_hole_km2 * 1e6,
                               cfg.simplify_m)
        means = mean_probability(prob, polys)
        crs = prob.crs
        valid_km2 = valid_px * abs(prob.res[0] * prob.res[1]) / 1e6
    _write_glaciers(out / GLACIERS_GPKG, polys, means, crs)
    area = sum(p.area for p in polys) / 1e6
    manifest.update(complete=True, completed_at=now_iso(), glaciers=len(polys),
                    glacier_area_km2=area, valid_area_km2=valid_km2, pixel_size_m=res)
    write_json(mf, manifest)
    echo(f"prediction complete: {out} ({len(polys)} glaciers, {area:.2f} km^2)")
    return out


def _compress(raw: Path, dest: Path) -> None:
    """The working file as a compressed, tiled GeoTIFF with overviews, renamed when done."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.shutil import copy as rio_copy

    with atomic_output(dest) as tmp:
        rio_copy(raw, tmp, driver="GTiff", COMPRESS="DEFLATE", PREDICTOR=3, TILED="YES",
                 BLOCKXSIZE=256, BLOCKYSIZE=256, BIGTIFF="IF_SAFER")
        with rasterio.open(tmp, "r+") as f:
            f.set_band_description(1, "glacier_probability")
            factors = [2 ** k for k in range(1, 6) if max(f.width, f.height) // 2 ** k >= 256]
            if factors:
                f.build_overviews(factors, Resampling.average)


def _write_glaciers(path: Path, polys, means, crs) -> None:
    import geopandas as gpd

    from gee_export.common.vectors import write_gpkg

    df = gpd.GeoDataFrame({"glacier_id": np.arange(1, len(polys) + 1, dtype=np.int64),
                           "area_km2": [p.area / 1e6 for p in polys],
                           "mean_probability": means}, geometry=list(polys), crs=crs)
    write_gpkg(df, path, "glaciers")


def reference_default(prediction_dir: Path) -> Path:
    """The outlines the predicted export recorded, for `train evaluate` without --reference."""
    m = read_manifest(prediction_dir / PREDICTION_MANIFEST, "prediction")
    p = Path(m["export"]) / OUTLINES_FILE
    if not p.is_file():
        raise GlacierError(f"{prediction_dir}: its export recorded no outlines; give "
                           "--reference FILE")
    return p
