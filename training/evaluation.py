"""`train evaluate`: a scene prediction against reference outlines, pixel by pixel and
glacier by glacier. Reads by blocks; the reference is rasterized with the same pixel-centre
rule as the training labels, so scene scores and tile scores mean the same thing."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from gee_export.common.atomic import write_json
from gee_export.common.errors import GlacierError
from gee_export.common.layout import (
    DEFAULT_REPORT,
    GLACIERS_GPKG,
    PREDICTION_MANIFEST,
    PROBABILITY_TIF,
    now_iso,
    read_manifest,
    report_files,
)

from .metrics import confusion, scores

BOUNDARY_PERCENTILE = 95


def pixel_confusion(prob_src, reference_geoms, threshold: float) -> np.ndarray:
    """cm[true, predicted] over the prediction's valid pixels, block by block."""
    from gee_export.common.bands import LABEL_IGNORE
    from gee_export.common.outlines import OutlineRasterizer

    raster = OutlineRasterizer(reference_geoms, prob_src.transform)
    cm = np.zeros((2, 2), np.int64)
    for _, win in prob_src.block_windows(1):
        p = prob_src.read(1, window=win)
        truth = raster.mask(win.row_off, win.col_off, win.height, win.width).astype(np.uint8)
        truth[~np.isfinite(p)] = LABEL_IGNORE
        cm += confusion((np.nan_to_num(p, nan=0.0) >= threshold).astype(np.uint8), truth)
    return cm


def per_glacier_areas(reference, predicted) -> list[dict]:
    """Each reference glacier against the predicted polygons assigned to it (each predicted
    polygon goes to the reference glacier it overlaps most)."""
    import shapely

    ref = np.asarray(reference)
    pred = np.asarray(predicted)
    assigned = np.zeros(len(ref))
    if len(pred) and len(ref):
        tree = shapely.STRtree(ref)
        pi, ri = tree.query(pred, predicate="intersects")
        if len(pi):
            overlap = shapely.area(shapely.intersection(pred[pi], ref[ri]))
            best: dict[int, tuple[float, int]] = {}
            for p, r, a in zip(pi, ri, overlap):
                if a > best.get(p, (-1.0, -1))[0]:
                    best[p] = (a, r)
            for p, (_, r) in best.items():
                assigned[r] += pred[p].area
    out = []
    for i, g in enumerate(ref):
        a_ref = g.area / 1e6
        a_pred = assigned[i] / 1e6
        out.append({"reference_index": i, "reference_km2": a_ref, "predicted_km2": a_pred,
                    "error_km2": a_pred - a_ref,
                    "relative_error": (a_pred - a_ref) / a_ref if a_ref else None})
    return out


def boundary_distances(a, b, spacing: float) -> np.ndarray:
    """Distance from points every `spacing` metres along the boundaries of `a` to the nearest
    boundary of `b`."""
    import shapely

    la = shapely.get_parts(shapely.boundary(np.asarray(a)))
    lb = shapely.get_parts(shapely.boundary(np.asarray(b)))
    if not len(la) or not len(lb):
        return np.array([])
    pts = []
    for line in la:
        n = max(2, int(np.ceil(line.length / spacing)) + 1)
        pts.append(shapely.line_interpolate_point(line, np.linspace(0, line.length, n)))
    pts = np.concatenate(pts)
    tree = shapely.STRtree(lb)
    _, dist = tree.query_nearest(pts, return_distance=True, all_matches=False)
    return dist


def _summary(d: np.ndarray) -> dict:
    if not d.size:
        return {"mean_m": None, f"p{BOUNDARY_PERCENTILE}_m": None, "points": 0}
    return {"mean_m": float(d.mean()),
            f"p{BOUNDARY_PERCENTILE}_m": float(np.percentile(d, BOUNDARY_PERCENTILE)),
            "points": int(d.size)}


def evaluate_prediction(pred_dir: Path, reference: Path, min_area_km2: float = 0.0,
                        echo=print) -> dict:
    import geopandas as gpd
    import rasterio
    from shapely.geometry import box

    from gee_export.common.outlines import read_outlines

    pred_dir = Path(pred_dir)
    m = read_manifest(pred_dir / PREDICTION_MANIFEST, "prediction")
    if not m.get("complete"):
        raise GlacierError(f"{pred_dir}: the prediction is not complete; rerun `train predict`")
    threshold = m["parameters"]["config"]["threshold"]
    with rasterio.open(pred_dir / PROBABILITY_TIF) as src:
        crs, res = src.crs.to_string(), src.res[0]
        ref = read_outlines(reference, crs).split_by_area(min_area_km2)[0].frame  # reprojected whatever its CRS
        footprint = box(*src.bounds)
        ref = ref[ref.intersects(footprint)]
        if ref.empty:
            raise GlacierError(f"reference {reference}: no outline overlaps the prediction "
                               f"(bounds {tuple(round(v) for v in src.bounds)} in {crs})")
        ref_geoms = ref.geometry.intersection(footprint).values
        cm = pixel_confusion(src, ref_geoms, threshold)
    pred = gpd.read_file(pred_dir / GLACIERS_GPKG)
    pred_geoms = pred.geometry.values
    glaciers = per_glacier_areas(ref_geoms, pred_geoms)
    errors = np.array([g["error_km2"] for g in glaciers])
    report = {
        "prediction": str(pred_dir), "reference": str(reference), "crs": crs,
        "threshold": threshold, "synthetic": m.get("synthetic"), "evaluated_at": now_iso(),
        "pixels": {"confusion_matrix": cm.tolist(), **scores(cm)},
        "area": {"reference_km2": float(sum(g.area for g in ref_geoms) / 1e6),
                 "predicted_km2": float(sum(g.area for g in pred_geoms) / 1e6),
                 "reference_glaciers": len(ref_geoms), "predicted_glaciers": len(pred_geoms)},
        "per_glacier": {"mean_abs_error_km2": float(np.abs(errors).mean()),
                        "median_relative_error": float(np.median(
                            [g["relative_error"] for g in glaciers
                             if g["relative_error"] is not None])),
                        "glaciers": glaciers},
        "boundary_distance": {
            "predicted_to_reference": _summary(boundary_distances(pred_geoms, ref_geoms, res)),
            "reference_to_predicted": _summary(boundary_distances(ref_geoms, pred_geoms, res))},
    }
    report_json, figure = report_files(DEFAULT_REPORT)
    write_json(pred_dir / report_json, report)
    agreement_png(pred_dir / figure, pred_dir / PROBABILITY_TIF, ref_geoms, threshold, report)
    p = report["pixels"]
    echo(f"evaluation: OA {p['oa']:.4f}, mF1 {p['mf1']:.4f}, mIoU {p['miou']:.4f}, glacier "
         f"area {report['area']['predicted_km2']:.2f} km^2 predicted vs "
         f"{report['area']['reference_km2']:.2f} km^2 reference; boundary distance mean "
         f"{report['boundary_distance']['predicted_to_reference']['mean_m'] or 0:.1f} m "
         f"({pred_dir / report_json})")
    return report


def agreement_png(path: Path, prob_tif: Path, ref_geoms, threshold: float, report: dict,
                  max_side: int = 1600) -> None:
    """True/false positives/negatives on a decimated grid (at most max_side px a side)."""
    import rasterio
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch
    from rasterio.enums import Resampling

    from gee_export.common.figures import new_figure, save_png
    from gee_export.common.outlines import OutlineRasterizer

    with rasterio.open(prob_tif) as src:
        f = max(1, int(np.ceil(max(src.width, src.height) / max_side)))
        h, w = src.height // f or 1, src.width // f or 1
        p = src.read(1, out_shape=(h, w), resampling=Resampling.nearest)
        t = src.transform * src.transform.scale(src.width / w, src.height / h)
    truth = OutlineRasterizer(ref_geoms, t).mask(0, 0, h, w)
    pred = np.nan_to_num(p, nan=0.0) >= threshold
    cls = np.where(truth & pred, 1, np.where(pred, 2, np.where(truth, 3, 0))).astype(float)
    cls[~np.isfinite(p)] = np.nan
    colors = ["#f2f2f2", "#2b8cbe", "#e34a33", "#fdbb84"]
    names = ["true negative", "true positive", "false positive", "false negative"]
    fig, ax = new_figure(figsize=(8, 8 * h / w + 0.6))
    ax.imshow(cls, cmap=ListedColormap(colors), vmin=0, vmax=3, interpolation="nearest")
    ax.set_axis_off()
    px = report["pixels"]
    ax.set_title(f"agreement with reference: mIoU {px['miou']:.3f}, glacier F1 "
                 f"{px['f1_glacier']:.3f}", fontsize=10)
    ax.legend(handles=[Patch(color=c, label=n) for c, n in zip(colors, names)],
              loc="lower right", fontsize=8)
    fig.tight_layout()
    save_png(fig, path)
