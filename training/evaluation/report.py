"""What `train evaluate` reports: report.json's pixel scores by kind of ground, areas (planar
and ellipsoidal), per-glacier errors, boundary distances and area error model, and the
summary line it prints."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gee_export.common.layout import now_iso, stored_path, workspace_of

from ..area_error import MIN_PIECE_KM, MIN_PIECES, PIECE_PX
from ..heldout import GROUND_TRAINING, GROUND_VALIDATION, UNKNOWN
from ..metrics import scores
from ..zones import ellipsoidal_ratios
from .boundaries import BOUNDARY_PERCENTILE, _boundaries
from .scoring import GROUNDS, SceneScores

if TYPE_CHECKING:
    from gee_export.common.outlines import Outlines

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


AREA_ERROR_NOTE = (
    "area error E = mu P + e, Var(e) = a P + b P^2, fitted by maximum likelihood on pieces "
    "of the reference outlines on held-out ground (validation and guard tiles, never trained "
    "on; each glacier's outline less its ice "
    f"divides, within one cell of {PIECE_PX} pixels): P the outline's length (km), E the predicted "
    "ice of the glacier's zone less its reference ice (km^2); offset_m = mu, the edges' mean "
    "outward displacement. train change removes the bias mu L from each glacier's area (L its "
    "predicted outline less divides) and takes sqrt(a L + b L^2) as its level error")


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
