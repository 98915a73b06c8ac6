"""The truth check: on the demo, whose glaciers change by known amounts (export.json
synthetic_truth), how close the change came and how often the truth lies in its intervals."""
from __future__ import annotations

import math

import numpy as np

from gee_export.common.layout import read_manifest, resolved_path

from ..trend import wls_rate
from .estimate import SIGMA_FLOOR_KM2
from .measure import YearAreas
from .table import slope

COVERAGE_MIN_KM2 = 0.1  # the truth check judges the intervals of glaciers larger than this


def _true_rate(years: np.ndarray, truth: np.ndarray, row: dict) -> float:
    """What the rate estimates, on the true areas: the same weighted fit over the same years
    (a glacier that vanishes shrinks far from a straight line, so the weights matter)."""
    used = np.array([np.nan if row[f"area_km2_{int(y)}"] is None else 1.0 for y in years])
    sigma = np.array([math.hypot(row[f"sigma_year_{int(y)}"] or 0.0,
                                 row[f"sigma_unobserved_{int(y)}"] or 0.0) for y in years])
    fit = wls_rate(years, truth * used, sigma, SIGMA_FLOOR_KM2)
    return fit.rate if fit else slope(years, truth)


def truth_check(table: list[dict], per_year: list[YearAreas], manifests: list[dict]) -> dict:
    """Against the demo's known areas (export.json synthetic_truth), when every year has
    them: total change, signs of glaciers over 1 km^2, and how often the true rate lies in
    the 90 % interval (glaciers over COVERAGE_MIN_KM2) and in the edge envelope."""
    truths = []
    for y, m in zip(per_year, manifests):
        if "export" not in m or m.get("kind") != "prediction":  # none recorded, or zoned
            return {}
        exp = read_manifest(resolved_path(m["export"], y.prediction), "export")
        truth = (exp.get("synthetic_truth") or {}).get("glacier_area_km2")
        if not truth:
            return {}
        truths.append(truth)
    years = np.array([y.year for y in per_year], float)
    rows = {r["glacier_id"]: r for r in table}
    ids = [g for g in truths[0] if g in rows]
    true_rate = {g: _true_rate(years, np.array([t.get(g, 0.0) for t in truths]), rows[g])
                 for g in ids}
    first, last = int(years[0]), int(years[-1])
    both = [g for g in ids if rows[g][f"area_km2_{first}"] is not None
            and rows[g][f"area_km2_{last}"] is not None]  # seen well in both end years
    est = sum(rows[g][f"area_best_km2_{last}"] - rows[g][f"area_best_km2_{first}"] for g in both)
    true = sum(truths[-1].get(g, 0.0) - truths[0].get(g, 0.0) for g in both)
    large = [g for g in ids if truths[0].get(g, 0.0) > 1.0]
    judged = [g for g in ids if truths[0].get(g, 0.0) > COVERAGE_MIN_KM2
              and rows[g]["rate_ci90_low"] is not None]
    inside = lambda g, lo, hi: rows[g][lo] is not None and \
        rows[g][lo] - 1e-9 <= true_rate[g] <= rows[g][hi] + 1e-9  # noqa: E731
    covered = [g for g in judged if inside(g, "rate_ci90_low", "rate_ci90_high")]
    plain = {g: slope(years, np.array([t.get(g, 0.0) for t in truths])) for g in judged}
    covered_plain = [g for g in judged if rows[g]["rate_ci90_low"] - 1e-9 <= plain[g] <=
                     rows[g]["rate_ci90_high"] + 1e-9]
    return {**_area_coverage(rows, truths, years, judged), **_total_coverage(rows, truths, years),
            "total_change_km2": est, "true_total_change_km2": true,
            "total_change_error": (est - true) / true if true else None,
            "total_change_glaciers": len(both),
            "large_glaciers": len(large),
            "large_sign_right": sum(np.sign(rows[g]["rate_km2_per_year"] or 0) ==
                                    np.sign(true_rate[g]) for g in large),
            "coverage90": len(covered) / len(judged) if judged else None,
            "coverage90_glaciers": len(judged),
            "coverage90_missed": sorted(set(judged) - set(covered)),
            # Against the plain least-squares rate of the true areas over every year (the
            # estimand above uses our weights and years, so it moves with the estimator).
            "coverage90_unweighted_truth": (len(covered_plain) / len(judged) if judged
                                            else None),
            "sharpness_mean_abs_error_over_se": (float(np.mean([
                abs(rows[g]["rate_km2_per_year"] - true_rate[g]) / rows[g]["rate_se_km2_per_year"]
                for g in judged])) if judged else None),
            "true_rate_km2_per_year": {g: true_rate[g] for g in judged},
            "truth_inside_edge_envelope": sum(inside(g, "rate_edge_low", "rate_edge_high")
                                              for g in ids),
            "glaciers": len(ids),
            "flagged": [{"glacier_id": g, "flags": rows[g]["flags"]} for g in ids
                        if rows[g]["flags"]]}


def _area_coverage(rows: dict, truths: list[dict], years: np.ndarray, judged: list[str]) -> dict:
    """How often a judged glacier's true area lies in its year's 90 % interval."""
    hits = [rows[g][f"area_ci90_low_{int(y)}"] - 1e-9 <= t.get(g, 0.0) <=
            rows[g][f"area_ci90_high_{int(y)}"] + 1e-9
            for g in judged for y, t in zip(years, truths)
            if rows[g][f"area_ci90_low_{int(y)}"] is not None]
    return {"area_coverage90": float(np.mean(hits)) if hits else None,
            "area_coverage90_glacier_years": len(hits)}


def _total_coverage(rows: dict, truths: list[dict], years: np.ndarray) -> dict:
    """The total's rate against the true total's (the glaciers in the table, over every year:
    the total fills the years a glacier was not seen)."""
    total = rows["total"]
    if total["rate_ci90_low"] is None:
        return {}
    true = slope(years, np.array([sum(v for g, v in t.items() if g in rows) for t in truths]))
    return {"total_rate_true_km2_per_year": true,
            "total_rate_covered": bool(total["rate_ci90_low"] <= true <= total["rate_ci90_high"])}
