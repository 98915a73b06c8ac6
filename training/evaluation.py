"""`train evaluate`: a scene prediction against reference outlines, pixel by pixel and
glacier by glacier, on the pixels where the stack has data.

The reference is rasterized with the same pixel-centre rule as the training labels, and
glaciers under --min-area count for nothing (as their labels are 255), so scene scores and
tile scores mean the same thing. Per-glacier scores use zones (training/zones.py), so touching
glaciers are scored apart. Boundary distances use the outer outline of the reference (the
union: ice divides are not boundaries an image shows) and only where both sides have data.
Areas are given planar (in the grid's CRS, as pixels count them) and ellipsoidal (what
inventories quote); the ellipsoidal one is the one to compare with an inventory.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from gee_export.common.bands import LABEL_IGNORE
from gee_export.common.errors import InputError, StateError
from gee_export.common.layout import (
    DEFAULT_REPORT,
    GLACIERS_GPKG,
    PREDICTION_MANIFEST,
    PROBABILITY_TIF,
    file_sha256,
    now_iso,
    read_manifest,
    report_files,
    require_complete,
)

from .metrics import confusion, scores
from .zones import ZONE_BUFFER_M, ZoneCounts, ZoneRaster, blocks, ellipsoidal_ratios

if TYPE_CHECKING:
    from geopandas import GeoDataFrame
    from rasterio.io import DatasetReader
    from shapely.geometry.base import BaseGeometry

    from gee_export.common.outlines import Outlines

BOUNDARY_PERCENTILE = 95


@dataclass(frozen=True)
class EvalConfig:
    min_area_km2: float = 0.05  # as prep tile: smaller reference glaciers are ignored
    id_field: str | None = None  # inventory id field (default: glac_id, RGIId, ...)
    zone_buffer_m: float = ZONE_BUFFER_M


def boundary_distances(a: BaseGeometry, b: BaseGeometry, spacing: float,
                       keep: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """Distance from points every `spacing` metres along the boundaries of `a` to the nearest
    boundary of `b`; with `keep` (a polygon), only points inside it count."""
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
    if keep is not None:
        pts = pts[shapely.contains(keep, pts)]
    if not len(pts):
        return np.array([])
    _, dist = shapely.STRtree(lb).query_nearest(pts, return_distance=True, all_matches=False)
    return dist


def _summary(d: np.ndarray) -> dict:
    if not d.size:
        return {"mean_m": None, f"p{BOUNDARY_PERCENTILE}_m": None, "points": 0}
    return {"mean_m": float(d.mean()),
            f"p{BOUNDARY_PERCENTILE}_m": float(np.percentile(d, BOUNDARY_PERCENTILE)),
            "points": int(d.size)}


def evaluate_prediction(pred_dir: Path, reference: Path, cfg: EvalConfig = EvalConfig(),
                        name: str = DEFAULT_REPORT, force: bool = False,
                        echo: Callable[[str], None] = print) -> dict:
    """Score a prediction; writes NAME.json and its figure beside the prediction."""
    import rasterio

    from gee_export.common.atomic import write_json

    pred_dir = Path(pred_dir)
    m = require_complete(pred_dir / PREDICTION_MANIFEST, "prediction",
                         "rerun `train predict` to finish it")
    params = {"reference": Path(reference).name, "reference_sha256": file_sha256(reference),
              "prediction_completed_at": m.get("completed_at"), "config": asdict(cfg)}
    report_json, figure = report_files(name)
    if not _needed(pred_dir / report_json, params, force, echo):
        return read_manifest(pred_dir / report_json, "evaluation")
    threshold = m["parameters"]["config"]["threshold"]
    with rasterio.open(pred_dir / PROBABILITY_TIF) as src:
        ref, small = _reference(reference, src, cfg)
        scene = score_scene(src, ref.geometries, small.geometries, threshold, cfg.zone_buffer_m)
    report = _report(pred_dir, reference, ref, small, scene, threshold, params, m)
    write_json(pred_dir / report_json, report)
    agreement_png(pred_dir / figure, pred_dir / PROBABILITY_TIF, ref.geometries,
                  small.geometries, threshold, report)
    p, a = report["pixels"], report["area"]
    echo(f"evaluation: OA {p['oa']:.4f}, mF1 {p['mf1']:.4f}, mIoU {p['miou']:.4f}, glacier "
         f"area {a['predicted_km2']:.2f} km^2 predicted vs {a['reference_km2']:.2f} km^2 "
         f"reference (ellipsoidal, where the stack has data); outer boundary distance mean "
         f"{report['boundary_distance']['predicted_to_reference']['mean_m'] or 0:.1f} m "
         f"({pred_dir / report_json})")
    return report


def _needed(path: Path, params: dict, force: bool, echo) -> bool:
    from gee_export.common.atomic import as_stored

    if not path.is_file() or force:
        return True
    old = read_manifest(path, "evaluation")
    if old.get("parameters") == as_stored(params):
        echo(f"report {path} is up to date; nothing to do")
        return False
    raise StateError(f"{path} holds a report made with another reference or options; use "
                     "--name for another report or --force to replace it")


def _reference(reference: Path, src, cfg: EvalConfig):
    """Reference glaciers that overlap the prediction, split at the size limit."""
    from shapely.geometry import box

    from gee_export.common.outlines import read_outlines

    every = read_outlines(reference, src.crs.to_string(), cfg.id_field)
    frame = every.frame[every.frame.intersects(box(*src.bounds))].reset_index(drop=True)
    if frame.empty:
        raise InputError(f"reference {reference}: no outline overlaps the prediction (bounds "
                         f"{tuple(round(v) for v in src.bounds)} in {src.crs})")
    from gee_export.common.outlines import Outlines

    return Outlines(frame, every.path, every.id_field, every.repaired).split_by_area(
        cfg.min_area_km2)


@dataclass
class SceneScores:
    confusion: np.ndarray  # cm[true, predicted] over valid pixels, small glaciers left out
    zones: ZoneCounts
    valid_area: object  # polygon of the pixels with data (for boundary distances)
    predicted_union: object  # the predicted ice as polygons
    pixel_area_m2: float


def score_scene(src: DatasetReader, ref_geoms: Sequence[BaseGeometry],
                small_geoms: Sequence[BaseGeometry], threshold: float,
                buffer_m: float = ZONE_BUFFER_M) -> SceneScores:
    """One pass over the probability raster, block by block: the confusion matrix, the
    per-zone counts, and the polygons of valid data and predicted ice."""
    import shapely
    from rasterio.windows import Window

    from gee_export.common.outlines import OutlineRasterizer

    from .zones import dissolve, zone_polygons

    zones = ZoneRaster(ref_geoms, src.transform, buffer_m)
    small = OutlineRasterizer(small_geoms, src.transform) if len(small_geoms) else None
    counts = ZoneCounts(len(ref_geoms))
    cm = np.zeros((2, 2), np.int64)
    pieces: dict[int, list] = {}
    for r, c, h, w in blocks(src.height, src.width):
        win = Window(c, r, w, h)
        p = src.read(1, window=win)
        valid = np.isfinite(p)
        ice = np.nan_to_num(p, nan=0.0) >= threshold
        ref, zone = zones.window(r, c, h, w)
        ignore = small.mask(r, c, h, w) & (ref == 0) if small else None
        counts.add(ref, zone, valid, {"ice": ice}, ignore)
        truth = (ref > 0).astype(np.uint8)
        truth[~valid if ignore is None else ~valid | ignore] = LABEL_IGNORE
        cm += confusion(ice.astype(np.uint8), truth)
        t = src.window_transform(win)
        for k, v in zone_polygons(valid.astype(np.uint8) + ice, t).items():
            pieces.setdefault(k, []).extend(v)  # 1: valid, no ice; 2: ice
    merged = dissolve(pieces)
    empty = shapely.Polygon()
    ice_area = merged.get(2, empty)
    return SceneScores(cm, counts, shapely.union(merged.get(1, empty), ice_area), ice_area,
                       abs(src.res[0] * src.res[1]))


def _report(pred_dir: Path, reference: Path, ref, small, scene: SceneScores, threshold: float,
            params: dict, prediction: dict) -> dict:
    from gee_export.common.atomic import as_stored
    from gee_export.common.layout import base_manifest

    glaciers, ratio = per_glacier(ref, scene)
    z, px = scene.zones, scene.pixel_area_m2 / 1e6
    rel = [g["relative_error"] for g in glaciers if g["relative_error"] is not None]
    ref_planar = float(z.reference[1:].sum() * px)
    pred_planar = float((z.predicted["ice"][1:].sum() + z.outside["ice"]) * px)
    return base_manifest(
        "evaluation", parameters=as_stored(params), complete=True, evaluated_at=now_iso(),
        prediction=str(pred_dir), reference=str(reference), id_field=ref.id_field,
        threshold=threshold, synthetic=prediction.get("synthetic"),
        pixels={"confusion_matrix": scene.confusion.tolist(), **scores(scene.confusion)},
        area={"reference_km2": ref_planar * ratio, "predicted_km2": pred_planar * ratio,
              "reference_planar_km2": ref_planar, "predicted_planar_km2": pred_planar,
              "outside_zones_km2": z.outside["ice"] * px * ratio,
              "reference_glaciers": len(ref), "small_glaciers_ignored": len(small),
              "small_glaciers_km2": float(small.frame["area_km2"].sum()),
              "note": "over pixels with data; ellipsoidal = planar x the reference's "
                      "ellipsoidal/planar ratio"},
        per_glacier={"zone_buffer_m": params["config"]["zone_buffer_m"],
                     "mean_abs_error_km2": float(np.mean([abs(g["error_km2"])
                                                          for g in glaciers])),
                     "median_relative_error": float(np.median(rel)) if rel else None,
                     "glaciers": glaciers},
        boundary_distance=_boundaries(ref, scene))


def per_glacier(ref: Outlines, scene: SceneScores) -> tuple[list[dict], float]:
    """Each reference glacier: its area (rasterized, where the stack has data), the predicted
    ice in its zone, the error; ellipsoidal, by the glacier's ellipsoidal/planar ratio."""
    z, px = scene.zones, scene.pixel_area_m2 / 1e6
    ratios = ellipsoidal_ratios(ref)
    out = []
    for i, (gid, k) in enumerate(zip(ref.ids, ratios[1:]), 1):
        a_ref = z.reference[i] * px * k
        a_pred = z.predicted["ice"][i] * px * k
        out.append({"glacier_id": gid, "reference_km2": a_ref, "predicted_km2": a_pred,
                    "error_km2": a_pred - a_ref,
                    "relative_error": (a_pred - a_ref) / a_ref if a_ref else None,
                    "observed_fraction": (z.reference[i] / z.reference_all[i]
                                          if z.reference_all[i] else 0.0),
                    "inventory_km2": float(ref.frame["area_km2"].iloc[i - 1])})
    return out, float(ratios[0])


def _boundaries(ref, scene: SceneScores) -> dict:
    """Distances between the outer outlines, at points with data on both sides (one pixel in
    from any data gap or the scene's edge); divides inside the reference are not counted."""
    import shapely

    res = float(np.sqrt(scene.pixel_area_m2))
    keep = shapely.buffer(scene.valid_area, -1.5 * res)
    outer = shapely.union_all(ref.geometries)
    divides = shapely.length(shapely.union_all(shapely.boundary(ref.geometries))) - \
        shapely.length(shapely.boundary(outer))
    return {"predicted_to_reference": _summary(boundary_distances(
                [scene.predicted_union], [outer], res, keep)),
            "reference_to_predicted": _summary(boundary_distances(
                [outer], [scene.predicted_union], res, keep)),
            "divides_excluded_km": max(0.0, float(divides) / 1e3)}


def agreement_png(path: Path, prob_tif: Path, ref_geoms: Sequence[BaseGeometry],
                  small_geoms: Sequence[BaseGeometry], threshold: float,
                  report: dict, max_side: int = 1600) -> None:
    """True/false positives/negatives, no data and ignored small glaciers on a decimated grid
    (at most max_side px a side), with map coordinates in km."""
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
        left, bottom, right, top = src.bounds
        crs = src.crs.to_string()
    truth = OutlineRasterizer(ref_geoms, t).mask(0, 0, h, w)
    pred = np.nan_to_num(p, nan=0.0) >= threshold
    cls = np.where(truth & pred, 1, np.where(pred, 2, np.where(truth, 3, 0)))
    if len(small_geoms):
        cls[OutlineRasterizer(small_geoms, t).mask(0, 0, h, w) & ~truth] = 4
    cls[~np.isfinite(p)] = 5
    colors = ["#f2f2f2", "#2b8cbe", "#e34a33", "#fdbb84", "#b39ddb", "#404040"]
    names = ["true negative", "true positive", "false positive", "false negative",
             "small glacier (ignored)", "no data"]
    fig, ax = new_figure(figsize=(8, 8 * h / w + 0.8))
    ax.imshow(cls, cmap=ListedColormap(colors), vmin=0, vmax=5, interpolation="nearest",
              extent=(left / 1e3, right / 1e3, bottom / 1e3, top / 1e3))
    ax.set_xlabel(f"easting (km, {crs})")
    ax.set_ylabel("northing (km)")
    px = report["pixels"]
    ax.set_title(f"agreement with reference: mIoU {px['miou']:.3f}, glacier F1 "
                 f"{px['f1_glacier']:.3f}", fontsize=10)
    ax.legend(handles=[Patch(color=c, label=n) for c, n in zip(colors, names)],
              loc="lower right", fontsize=7)
    fig.tight_layout()
    save_png(fig, path)


def predicted_glaciers(pred_dir: Path) -> GeoDataFrame:
    """The predicted glacier polygons of a prediction."""
    import geopandas as gpd

    return gpd.read_file(Path(pred_dir) / GLACIERS_GPKG, layer="glaciers")
