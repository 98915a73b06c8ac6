"""`train change`: each glacier's area, year by year, with a 1-sigma uncertainty, and its
rate of change with a 90 % confidence interval.

The method is stated once, in method.py and in trend.METHOD; change.json carries these texts,
so a result says how it was made. One module per step: predictions (which a change needs),
members (read and checked), measure (one year by zones), estimate (a year from an ensemble),
table (change.csv's rows), error_model, imagery_record, truth (the demo's check), outputs (the
files) and run (run_change, the stage that ties them).
"""
from __future__ import annotations

from .error_model import ensemble_error_model, find_error_model
from .estimate import DETECTION_LIMIT_KM2, SIGMA_FLOOR_KM2, YearEstimate, estimate_year
from .imagery_record import imagery
from .measure import SPECKLE_KM2, ChangeConfig, YearAreas, boundary_km2, edge_km, measure_year
from .predictions import (
    check_members,
    parse_years,
    predict_years,
    predictions_to_measure,
    variant_flags,
    variant_name,
)
from .run import run_change
from .table import change_table, slope, slope_bounds
from .truth import _true_rate, truth_check

__all__ = [
    "DETECTION_LIMIT_KM2", "SIGMA_FLOOR_KM2", "SPECKLE_KM2", "ChangeConfig", "YearAreas",
    "YearEstimate", "_true_rate", "boundary_km2", "change_table", "check_members", "edge_km",
    "ensemble_error_model", "estimate_year", "find_error_model", "imagery", "measure_year", "parse_years",
    "predict_years", "predictions_to_measure", "run_change", "slope", "slope_bounds",
    "truth_check", "variant_flags", "variant_name",
]
