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
from typing import TYPE_CHECKING, Callable

from gee_export.common.errors import InputError
from gee_export.common.layout import (
    DEFAULT_REPORT,
    PREDICTION_MANIFEST,
    PROBABILITY_TIF,
    check_name,
    file_sha256,
    report_files,
    require_complete,
)
from gee_export.common.outlines import MIN_GLACIER_AREA_KM2
from gee_export.common.stage import DONE, Stage

from ..heldout import training_footprint
from ..zones import ZONE_BUFFER_M
from .figure import agreement_png
from .report import _report, summary_line
from .scoring import score_scene

if TYPE_CHECKING:
    from gee_export.common.utm import Strip

@dataclass(frozen=True)
class EvalConfig:
    min_area_km2: float = MIN_GLACIER_AREA_KM2  # as prep tile: smaller ones are ignored
    id_field: str | None = None  # inventory id field (default: glac_id, RGIId, ...)
    zone_buffer_m: float = ZONE_BUFFER_M


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
