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
from gee_export.common.errors import InputError
from gee_export.common.layout import (
    DEFAULT_REPORT,
    PREDICTION_MANIFEST,
    PROBABILITY_TIF,
    check_name,
    file_sha256,
    now_iso,
    report_files,
    require_complete,
    stored_path,
    workspace_of,
)
from gee_export.common.outlines import MIN_GLACIER_AREA_KM2
from gee_export.common.stage import DONE, Stage

from .area_error import MIN_PIECE_KM, MIN_PIECES, PIECE_PX, EdgePieces, divide_free_boundaries
from .heldout import (
    GROUND_GUARD,
    GROUND_NAMES,
    GROUND_TRAINING,
    GROUND_VALIDATION,
    SAME_SCENE,
    UNKNOWN,
    TrainingFootprint,
    training_footprint,
    unknown_footprint,
)
from .metrics import confusion, scores
from .zones import ZONE_BUFFER_M, ZoneCounts, ellipsoidal_ratios

if TYPE_CHECKING:
    from rasterio.io import DatasetReader
    from shapely.geometry.base import BaseGeometry

    from gee_export.common.outlines import Outlines
    from gee_export.common.utm import Strip

BOUNDARY_PERCENTILE = 95


@dataclass(frozen=True)
class EvalConfig:
    min_area_km2: float = MIN_GLACIER_AREA_KM2  # as prep tile: smaller ones are ignored
    id_field: str | None = None  # inventory id field (default: glac_id, RGIId, ...)
    zone_buffer_m: float = ZONE_BUFFER_M


def boundary_points(a: BaseGeometry, spacing: float, keep: BaseGeometry | None = None
                    ) -> np.ndarray:
    """Points every `spacing` metres along the boundaries of `a`; with `keep` (a polygon),
    only those inside it."""
    import shapely

    pts = []
    for line in shapely.get_parts(shapely.boundary(np.asarray(a))):
        n = max(2, int(np.ceil(line.length / spacing)) + 1)
        pts.append(shapely.line_interpolate_point(line, np.linspace(0, line.length, n)))
    pts = np.concatenate(pts) if pts else np.array([], object)
    return pts[shapely.contains(keep, pts)] if keep is not None and len(pts) else pts


def nearest_boundary(pts: np.ndarray, b: BaseGeometry) -> np.ndarray:
    """Distance from each point to the nearest boundary of `b` (empty when `b` has none)."""
    import shapely

    lb = shapely.get_parts(shapely.boundary(np.asarray(b)))
    if not len(pts) or not len(lb):
        return np.array([])
    _, dist = shapely.STRtree(lb).query_nearest(pts, return_distance=True, all_matches=False)
    return dist


def boundary_distances(a: BaseGeometry, b: BaseGeometry, spacing: float,
                       keep: BaseGeometry | None = None) -> np.ndarray:
    """Distance from points every `spacing` metres along the boundaries of `a` to the nearest
    boundary of `b`; with `keep` (a polygon), only points inside it count."""
    return nearest_boundary(boundary_points(a, spacing, keep), b)


def _summary(d: np.ndarray) -> dict:
    """The median and p95 first (a few far false positives pull the mean past the p95)."""
    if not d.size:
        return {"median_m": None, f"p{BOUNDARY_PERCENTILE}_m": None, "mean_m": None,
                "points": 0}
    return {"median_m": float(np.median(d)),
            f"p{BOUNDARY_PERCENTILE}_m": float(np.percentile(d, BOUNDARY_PERCENTILE)),
            "mean_m": float(d.mean()), "points": int(d.size)}


def evaluate_prediction(pred_dir: Path, reference: Path, cfg: EvalConfig = EvalConfig(),
                        name: str = DEFAULT_REPORT, force: bool = False,
                        echo: Callable[[str], None] = print,
                        strip: Strip | None = None) -> dict:
    """Score a prediction, held-out pixels apart from those the model trained on; writes
    NAME.json and its figure beside the prediction. With `strip` (a zone of a zoned
    prediction), only the pixels whose centres lie in that strip of longitudes count."""
    import rasterio

    from gee_export.common.atomic import write_json
    from gee_export.common.layout import workspace_of
    from gee_export.common.stac import update_catalog

    pred_dir = Path(pred_dir)
    check_report_name(name)
    m = require_complete(pred_dir / PREDICTION_MANIFEST, "prediction",
                         "rerun `train predict` to finish it")
    footprint = training_footprint(pred_dir, m)
    params = {"reference": Path(reference).name, "reference_sha256": file_sha256(reference),
              "prediction_completed_at": m.get("completed_at"), "config": asdict(cfg),
              "training_tiles": footprint.tiles_id,  # a re-cut tile set makes a report stale
              **({"strip": strip.to_list()} if strip else {})}
    report_json, figure = report_files(name)
    stage = Stage("evaluation", pred_dir / report_json, "report", EVALUATION_OPTIONS,
                  hint="use --force to replace it, or --name for another report")
    with stage.lock(False, echo):
        decision = stage.decide(params, force, echo)
        if decision.action == DONE:
            return decision.old
        threshold = m["parameters"]["config"]["threshold"]
        with rasterio.open(pred_dir / PROBABILITY_TIF) as src:
            ref, small = _reference(reference, src, cfg)
            scene = score_scene(src, ref.geometries, small.geometries, threshold,
                                cfg.zone_buffer_m, footprint, strip)
        report = _report(pred_dir, reference, ref, small, scene, threshold, params, m)
        agreement_png(pred_dir / figure, pred_dir / PROBABILITY_TIF, ref.geometries,
                      small.geometries, threshold, report, footprint)
        write_json(pred_dir / report_json, report)  # last: complete with its figure
    echo(summary_line(report) + f" ({pred_dir / report_json})")
    update_catalog(workspace_of(pred_dir, "prediction"), echo)
    return report


# train evaluate's parameters as its options (the stage contract names differences so).
EVALUATION_OPTIONS = {"reference": "--reference", "reference_sha256": "--reference (contents)",
                      "prediction_completed_at": "--prediction (remade since)",
                      "training_tiles": "the training tiles (re-cut since)",
                      "strip": "the zone's strip", "config.min_area_km2": "--min-area",
                      "config.zone_buffer_m": "--zone-buffer", "config.id_field": "--id-field"}


def check_report_name(name: str) -> None:
    """A report name is a plain file stem that names no other file of the prediction
    (zones.json, prediction.json, agreement.png, ...): layout.check_name."""
    check_name(name, "--name", zone_part=True)


# What each headline is called where it is printed (summary line, figure title).
HEADLINES = {"validation": "HELD-OUT VALIDATION GROUND", "held_out": "HELD-OUT",
             "all": "ALL PIXELS"}


def summary_line(report: dict) -> str:
    """What `train evaluate` prints: the headline scores first (the validation ground's
    wherever the scene has some), named for what they cover, then the other kinds of ground."""
    p, a, split = report["pixels"], report["area"], report["pixels"]["split"]
    head = p[p["headline"]]
    empty = ("the prediction holds NO ICE anywhere (the scores describe a map without "
             "glaciers); " if not a["predicted_planar_km2"] else "")
    note = split["note"]
    if split["relation"] == "other year":
        note += f": {100 * split['under_training_tiles_share']:.0f} % of them"
    line = (f"evaluation, {empty}{HEADLINES[p['headline']]} ({note}): OA {head['oa']:.4f}, "
            f"mF1 {head['mf1']:.4f}, mIoU {head['miou']:.4f}")
    seen = ("in-sample (training tiles)" if split["relation"] != "other year" else
            f"on {split['trained_on']}'s training ground (seen in another year)")
    for key, what in (("guard", "guard ground"), ("untiled", "untiled"), ("training", seen),
                      ("all", "all pixels")):
        if p.get(key) and key != p["headline"]:
            line += f"; {what}: mIoU {p[key]['miou']:.4f}"
    d = report["boundary_distance"][p["headline"]]
    return (line + f"; glacier area {a['predicted_km2']:.2f} km^2 predicted vs "
            f"{a['reference_km2']:.2f} km^2 reference (ellipsoidal, where the stack has data); "
            f"outer boundary distance ({p['headline'].replace('_', '-')}) predicted->reference "
            f"{_distance(d['predicted_to_reference'])}, reference->predicted "
            f"{_distance(d['reference_to_predicted'])}")


def _distance(s: dict) -> str:
    if not s["points"]:
        return "n/a (no boundary to measure)"
    return (f"median {s['median_m']:.1f} m, p{BOUNDARY_PERCENTILE} "
            f"{s[f'p{BOUNDARY_PERCENTILE}_m']:.1f} m (mean {s['mean_m']:.1f} m)")


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


GROUNDS = tuple(GROUND_NAMES.values())  # untiled, training, validation, guard: by ground code
# The area error model is fitted on all the ground the model never trained on: validation
# tiles alone hold the edges of a few glaciers in a few blocks (on one of 8 demo scenes
# edges easier than the rest, and the bias came out too small); the guard ring beside the
# training tiles triples the sample and spreads it over the scene.
HELD_OUT_GROUND = (GROUND_VALIDATION, GROUND_GUARD)
AREA_ERROR_NOTE = (
    "area error E = mu P + e, Var(e) = a P + b P^2, fitted by maximum likelihood on pieces "
    "of the reference outlines on held-out ground (validation and guard tiles, never trained "
    "on; each glacier's outline less its ice "
    f"divides, within one cell of {PIECE_PX} pixels): P the outline's length (km), E the predicted "
    "ice of the glacier's zone less its reference ice (km^2); offset_m = mu, the edges' mean "
    "outward displacement. train change removes the bias mu L from each glacier's area (L its "
    "predicted outline less divides) and takes sqrt(a L + b L^2) as its level error")


@dataclass
class SceneScores:
    confusion: dict[str, np.ndarray]  # kind of ground (and held_out) -> cm[true, predicted]
    zones: ZoneCounts
    reference_on: dict[int, np.ndarray]  # ground code -> reference pixels with data, by glacier
    valid_area: object  # polygon of the pixels with data (for boundary distances)
    predicted_union: object  # the predicted ice as polygons
    pixel_area_m2: float
    footprint: TrainingFootprint
    ground_areas: dict  # ground code -> its polygon in map coordinates (empty when none)
    under_training_tiles: float  # share of the pixels with data under a training tile, any year
    edge_pieces: EdgePieces | None = None  # validation-ground pieces for the area error model


def score_scene(src: DatasetReader, ref_geoms: Sequence[BaseGeometry],
                small_geoms: Sequence[BaseGeometry], threshold: float,
                buffer_m: float = ZONE_BUFFER_M,
                footprint: TrainingFootprint | None = None,
                strip: Strip | None = None) -> SceneScores:
    """One pass over the probability raster, block by block: the confusion matrices of each
    kind of ground (heldout.GROUND_*), the per-zone counts, and the polygons of valid data and
    predicted ice. A prediction without a single pixel with data is refused: its scores
    would be zeros that look like a result. With `strip` (a zone of a zoned region), only the
    pixels of its strip count."""
    import shapely

    from gee_export.common.outlines import OutlineRasterizer

    from .zones import GlacierPieces, zone_blocks, zones_of

    footprint = footprint or unknown_footprint("not given")
    zones = zones_of(src, ref_geoms, buffer_m, strip)
    small = OutlineRasterizer(small_geoms, src.transform) if len(small_geoms) else None
    counts = ZoneCounts(len(ref_geoms))
    on = {c: np.zeros(len(ref_geoms) + 1, np.int64) for c in (GROUND_TRAINING, GROUND_VALIDATION)}
    cm = {k: np.zeros((2, 2), np.int64) for k in GROUNDS}
    under_tiles = with_data = 0  # pixels with data under a training tile (any year)
    areas = GlacierPieces()  # 1: valid, no ice; 2: ice
    edges = EdgePieces(len(ref_geoms), src.transform, divide_free_boundaries(ref_geoms)) \
        if footprint.relation == SAME_SCENE else None
    for b in zone_blocks(src, zones):
        (h, w), valid, ref = b.shape, b.valid, b.ref
        ice = b.at_least(threshold) & valid
        ignore = small.mask(b.row, b.col, h, w) & (ref == 0) if small else None
        counts.add_block(b, {"ice": ice}, ignore)
        truth = (ref > 0).astype(np.uint8)
        truth[~valid if ignore is None else ~valid | ignore] = LABEL_IGNORE
        ground = footprint.ground(b.row, b.col, h, w)
        for code, name in GROUND_NAMES.items():
            cm[name] += confusion(ice[ground == code], truth[ground == code])
        for code, n in on.items():
            n += np.bincount(ref[valid & (ground == code)].ravel(), minlength=len(n))
        under_tiles += int((valid & (ground == GROUND_TRAINING)).sum())
        with_data += int(valid.sum())
        areas.add(valid.astype(np.uint8) + ice, b.transform)
        if edges is not None:
            edges.add(b.row, b.col, np.isin(ground, HELD_OUT_GROUND), valid, ice, ref, b.zone)
    if not sum(m.sum() for m in cm.values()):
        raise InputError(f"{src.name}: no pixel with data to score (the probabilities are "
                         "all no-data); remake the prediction rather than score it")
    cm["held_out"] = sum(cm[k] for k in GROUNDS if k != "training")
    merged = areas.dissolved()
    empty = shapely.Polygon()
    ice_area = merged.get(2, empty)
    return SceneScores(cm, counts, on, shapely.union(merged.get(1, empty), ice_area),
                       ice_area, abs(src.res[0] * src.res[1]), footprint,
                       footprint.areas(src.transform), under_tiles / with_data, edges)


def _pixel_block(cm: np.ndarray) -> dict | None:
    """Scores of one set of pixels, or None when it holds none (zeros would read as
    scores)."""
    if not cm.sum():
        return None
    return {"pixels": int(cm.sum()), "confusion_matrix": cm.tolist(), **scores(cm)}


# What each kind of ground in report.json's `pixels` is.
GROUND_NOTES = {
    "validation": "under a validation tile and no training tile: ground the model never "
                  "trained on (in any year); it chose the best epoch, so it is not wholly "
                  "independent of the model",
    "guard": "under a guard tile (beside training tiles) and no training or validation tile",
    "untiled": "under no tile",
    "training": "under a training tile (in another year: ground the model saw in the "
                "training tiles' year)",
    "held_out": "everything not under a training tile (validation, guard and untiled "
                "together; kept for compatibility)",
    "all": "every pixel with data"}


def pixel_scores(scene: SceneScores) -> dict:
    """report.json's `pixels`: each kind of ground (validation, guard, untiled, training),
    held-out (all but training) and all, and the headline: the validation ground wherever
    the scene has some, else the held-out pixels, else (the split unknown) all."""
    fp, cm = scene.footprint, scene.confusion
    known = fp.relation != UNKNOWN
    blocks = {k: _pixel_block(cm[k]) if known else None for k in GROUNDS}
    held_out = _pixel_block(cm["held_out"]) if known else None
    headline = "validation" if blocks["validation"] else "held_out" if held_out else "all"
    split = {**fp.to_dict(), "under_training_tiles_share": round(scene.under_training_tiles, 4)}
    return {"headline": headline, "split": split, "notes": GROUND_NOTES,
            "validation": blocks["validation"], "guard": blocks["guard"],
            "untiled": blocks["untiled"], "training": blocks["training"],
            "held_out": held_out, "all": _pixel_block(sum(cm[k] for k in GROUNDS))}


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
        prediction=".", reference=stored_path(reference, pred_dir, workspace_of(
            pred_dir, "prediction")), id_field=ref.id_field,  # relative where in the workspace
        threshold=threshold, synthetic=prediction.get("synthetic"),
        pixels=pixel_scores(scene),
        area={"reference_km2": ref_planar * ratio, "predicted_km2": pred_planar * ratio,
              "reference_planar_km2": ref_planar, "predicted_planar_km2": pred_planar,
              "outside_zones_km2": z.outside["ice"] * px * ratio,
              "reference_glaciers": len(ref), "small_glaciers_ignored": len(small),
              "small_glaciers_km2": float(small.frame["area_km2"].sum()),
              "note": "over all pixels with data (training tiles included; see each "
                      "glacier's training_fraction); ellipsoidal = planar x the reference's "
                      "ellipsoidal/planar ratio"},
        per_glacier={"zone_buffer_m": params["config"]["zone_buffer_m"],
                     "mean_abs_error_km2": float(np.mean([abs(g["error_km2"])
                                                          for g in glaciers])),
                     "median_relative_error": float(np.median(rel)) if rel else None,
                     "glaciers": glaciers},
        boundary_distance=_boundaries(ref, scene),
        area_error_model=_error_model(ref, scene, threshold))


def _error_model(ref: Outlines, scene: SceneScores, threshold: float) -> dict | None:
    """The area error model of this prediction's model, fitted on its validation ground
    (train change reads it): None where the scene has none, or too few pieces."""
    if scene.edge_pieces is None:
        return None
    model = scene.edge_pieces.fit(scene.pixel_area_m2 / 1e6, ellipsoidal_ratios(ref),
                                  threshold)
    if model is None:
        return {"fitted": False, "note": f"too few pieces of reference outline on held-out "
                f"ground ({scene.edge_pieces.usable()} of at least {MIN_PIECES} over "
                f"{MIN_PIECE_KM} km): no area error model"}
    return {**model.to_dict(), "fitted": True, "ground": "validation and guard",
            "note": AREA_ERROR_NOTE}


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
                    "training_fraction": _share(scene, GROUND_TRAINING, i),
                    "validation_fraction": _share(scene, GROUND_VALIDATION, i),
                    "inventory_km2": float(ref.frame["area_km2"].iloc[i - 1])})
    return out, float(ratios[0])


def _share(scene: SceneScores, code: int, i: int) -> float | None:
    """The share of glacier i's reference pixels (with data) on one kind of ground."""
    if scene.footprint.relation == UNKNOWN:
        return None
    n = scene.zones.reference[i]
    return float(scene.reference_on[code][i] / n) if n else 0.0


def _boundaries(ref, scene: SceneScores) -> dict:
    """Distances between the outer outlines, at points with data on both sides (one pixel in
    from any data gap or the scene's edge); divides inside the reference are not counted.
    Split like the pixels, by the kind of ground each point lies on."""
    import shapely

    res = float(np.sqrt(scene.pixel_area_m2))
    keep = shapely.buffer(scene.valid_area, -1.5 * res)
    outer = shapely.union_all(ref.geometries)
    divides = shapely.length(shapely.union_all(shapely.boundary(ref.geometries))) - \
        shapely.length(shapely.boundary(outer))
    out: dict = {k: {} for k in (*GROUNDS, "held_out", "all")}
    for direction, a, b in (("predicted_to_reference", scene.predicted_union, outer),
                            ("reference_to_predicted", outer, scene.predicted_union)):
        pts = boundary_points([a], res, keep)
        d = nearest_boundary(pts, [b])
        code = np.zeros(len(d), np.uint8)  # the ground's polygons are disjoint
        for c, area in scene.ground_areas.items():
            if len(d) and not area.is_empty:
                code[shapely.contains(area, pts)] = c
        for name, sel in ((*((n, code == c) for c, n in GROUND_NAMES.items()),
                           ("held_out", code != GROUND_TRAINING),
                           ("all", np.ones(len(d), bool)))):
            out[name][direction] = _summary(d[sel])
    if scene.footprint.relation == UNKNOWN:
        out.update({k: None for k in (*GROUNDS, "held_out")})
    return {**out, "divides_excluded_km": max(0.0, float(divides) / 1e3)}


# Map classes, in the order a map pixel that covers several raster pixels shows them: the
# errors first, so that a missed margin one pixel wide stays visible over a whole region.
_CLASSES = (("true negative", "#f2f2f2"), ("no data", "#404040"),
            ("small glacier (ignored)", "#b39ddb"), ("true positive", "#2b8cbe"),
            ("false positive", "#e34a33"), ("false negative", "#ffd700"))


def agreement_png(path: Path, prob_tif: Path, ref_geoms: Sequence[BaseGeometry],
                  small_geoms: Sequence[BaseGeometry], threshold: float, report: dict,
                  footprint: TrainingFootprint | None = None, max_side: int = 1600) -> None:
    """True/false positives/negatives, no data and ignored small glaciers on a grid of at most
    max_side px a side (each map pixel shows the most telling class of its block), the
    training tiles outlined, map coordinates in km."""
    import rasterio
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    from gee_export.common.figures import max_per_block, new_figure, save_png
    from gee_export.common.outlines import OutlineRasterizer

    with rasterio.open(prob_tif) as src:
        f = max(1, int(np.ceil(max(src.width, src.height) / max_side)))
        h, w = -(-src.height // f), -(-src.width // f)
        truth = OutlineRasterizer(ref_geoms, src.transform)
        small = OutlineRasterizer(small_geoms, src.transform) if len(small_geoms) else None
        cls = np.zeros((h, w), np.uint8)
        for r in range(h):
            r0, n = r * f, min(f, src.height - r * f)
            p = src.read(1, window=((r0, r0 + n), (0, src.width)))
            t, pred = truth.mask(r0, 0, n, src.width), np.nan_to_num(p, nan=0.0) >= threshold
            code = np.select([t & ~pred, pred & ~t, t & pred], [5, 4, 3], 0).astype(np.uint8)
            if small is not None:
                code[(code == 0) & small.mask(r0, 0, n, src.width)] = 2
            code[~np.isfinite(p)] = 1
            cls[r] = max_per_block(code, f, w)
        left, bottom, right, top = src.bounds
        res, crs = src.res[0], src.crs.to_string()
    fig, ax = new_figure(figsize=(8, 8 * h / w + 0.8))
    ax.imshow(cls, cmap=ListedColormap([c for _, c in _CLASSES]), vmin=0,
              vmax=len(_CLASSES) - 1, interpolation="nearest",
              extent=(left / 1e3, right / 1e3, bottom / 1e3, top / 1e3))
    handles = [Patch(color=c, label=n) for n, c in _CLASSES]
    if footprint is not None:
        from affine import Affine

        handles += _draw_ground(ax, footprint, Affine(res / 1e3, 0, left / 1e3, 0, -res / 1e3,
                                                      top / 1e3))
    ax.set_xlabel(f"easting (km, {crs})")
    ax.set_ylabel("northing (km)")
    px = report["pixels"]
    head = px[px["headline"]]
    title = (f"{HEADLINES[px['headline']].lower()}: mIoU {head['miou']:.3f}, glacier F1 "
             f"{head['f1_glacier']:.3f}")
    if px["training"]:
        title += f"   (training ground: mIoU {px['training']['miou']:.3f})"
    import textwrap

    ax.set_title(title + "\n" + "\n".join(textwrap.wrap(px["split"]["note"], 110)), fontsize=8)
    ax.legend(handles=handles, loc="lower right", fontsize=7)
    fig.tight_layout()
    save_png(fig, path)


def _draw_ground(ax, footprint: TrainingFootprint, transform) -> list:
    """The outlines of the training ground (hatched) and the validation ground (dotted) on
    the figure (`transform`: pixels to its km); their legend entries."""
    import shapely
    from matplotlib.patches import Patch

    areas = footprint.areas(transform)
    seen = ("in-sample" if footprint.in_sample_possible
            else f"{footprint.trained_on}, seen in another year")
    handles = []
    for code, colour, style, hatch, label in (
            (GROUND_TRAINING, "black", "--", "///", f"training tiles ({seen})"),
            (GROUND_VALIDATION, "#1a9850", ":", None, "validation ground (held out)")):
        parts = shapely.get_parts(areas.get(code, shapely.Polygon()))
        for poly in parts:  # the union's outline: neighbouring tiles share no line
            if hatch:
                ax.fill(*poly.exterior.xy, facecolor="none", edgecolor="#555555",
                        hatch=hatch, linewidth=0.0)
            for ring in [poly.exterior, *poly.interiors]:
                ax.plot(*ring.xy, color=colour, linewidth=1.2, linestyle=style)
        if len(parts):
            handles.append(Patch(facecolor="none", edgecolor=colour, linestyle=style,
                                 hatch=hatch, label=label))
    return handles
