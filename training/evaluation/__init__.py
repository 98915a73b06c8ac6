"""`train evaluate`: a scene prediction scored against reference outlines.

One module per step: `evaluate` (the command, from the prediction and reference read to the
report written), `scoring` (one pass over the probability raster, counted by kind of ground),
`boundaries` (boundary distances), `report` (report.json and the summary line) and `figure`
(agreement.png). What other modules and tests use is importable from here.
"""
from __future__ import annotations

from .boundaries import BOUNDARY_PERCENTILE, _summary, boundary_distances, boundary_points, nearest_boundary
from .evaluate import EVALUATION_OPTIONS, EvalConfig, check_report_name, evaluate_prediction
from .figure import agreement_png
from .report import HEADLINES, per_glacier, pixel_scores, summary_line
from .scoring import GROUNDS, HELD_OUT_GROUND, SceneScores, score_scene

__all__ = [
    "BOUNDARY_PERCENTILE", "EVALUATION_OPTIONS", "GROUNDS", "HEADLINES", "HELD_OUT_GROUND",
    "EvalConfig", "SceneScores", "_summary", "agreement_png", "boundary_distances",
    "boundary_points", "check_report_name", "evaluate_prediction", "nearest_boundary",
    "per_glacier", "pixel_scores", "score_scene", "summary_line",
]
