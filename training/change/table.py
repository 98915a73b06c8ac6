"""change.csv's table: one row per glacier and the total, each year's measured and best area
with its terms and 90 % interval, the rate's columns, and the edge envelope's slopes."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from gee_export.common.outlines import MIN_GLACIER_AREA_KM2

from ..area_error import AreaErrorModel
from ..trend import Z90, RateFit, t90
from ..uncertainty import Levels, Series, area_sigma, glacier_rate, levels, pooled_year_sigma, total, with_divides
from .estimate import DETECTION_LIMIT_KM2, YearEstimate

if TYPE_CHECKING:
    from gee_export.common.outlines import Outlines


def slope(years: np.ndarray, areas: np.ndarray) -> float:
    """Least-squares slope of area against year."""
    t = years - years.mean()
    return float((t * (areas - areas.mean())).sum() / (t * t).sum())


def slope_bounds(years: np.ndarray, low: np.ndarray, high: np.ndarray) -> tuple[float, float]:
    """The smallest and largest least-squares slopes of a series within [low, high] each
    year: the slope is sum(w_i a_i) with w_i = (t_i - mean t) / sum (t - mean t)^2, so the
    extremes put each year at the end its weight's sign calls for."""
    t = years - years.mean()
    w = t / (t * t).sum()
    return (float((w * np.where(w > 0, low, high)).sum()),
            float((w * np.where(w > 0, high, low)).sum()))


def change_table(ref: Outlines, estimates: list[YearEstimate], sigma_floor: float,
                 model: AreaErrorModel | None = None) -> tuple[list[dict], dict]:
    """One row per reference glacier, then the total (outside zones not included): each
    year's measured and best area with its 1-sigma terms and 90 % interval, the rate with
    its terms, interval and significance, the edge envelope, the years used; and what the
    uncertainty pooled (change.json's `uncertainty`)."""
    s = _series(ref, estimates)
    years, lv = s.years, levels(s, model)
    best = lv.best(s.area)
    known = np.hypot(np.nan_to_num(s.sigma_unobserved),
                     np.where(best == 0, DETECTION_LIMIT_KM2, 0.0))
    # The scatter is pooled over glaciers above the size limit in every year seen: one that
    # vanishes shrinks far from a line, and its years say nothing of the mapping's noise.
    steady = np.all(~np.isfinite(best) | (best >= MIN_GLACIER_AREA_KM2), axis=1)
    sigma_eta, dof = pooled_year_sigma(years, best, known, steady, sigma_floor)
    # Two years of each glacier leave no scatter to pool: the buffer method stands in.
    sigma_year = np.hypot(sigma_eta if dof else np.nan_to_num(s.buffer_km2), known)
    fits = with_divides([glacier_rate(years, best, sigma_year, s, lv, i, model, dof,
                                      sigma_floor) for i in range(len(best))], s)
    sigma = area_sigma(lv, sigma_year, s)
    low, high = np.minimum(s.area, _stack(estimates, "low")), \
        np.maximum(s.area, _stack(estimates, "high"))
    observed = _stack(estimates, "observed")
    rows = [_row(gid, years, s.area[i], best[i], sigma[i], _glacier_terms(lv, sigma_year, s, i),
                 lv.bias[i], low[i], high[i], observed[i], fits[i])
            for i, gid in enumerate(ref.ids)]
    rows.append(_total_row(years, best, sigma_year, lv, s, fits, model, dof, sigma_floor,
                           low, high, np.array([e.observed_all for e in estimates]),
                           list(ref.ids)))
    pooled = {"year_sigma_km2": sigma_eta if dof else None, "dof": dof,
              "glaciers_pooled": int(sum(np.isfinite(best[i]).sum() >= 3
                                         for i in np.flatnonzero(steady))),
              "quantile90": t90(dof), "bias_corrected": lv.corrected,
              "error_model": model.to_dict() if model else None}
    return rows, pooled


def _stack(estimates: list[YearEstimate], attr: str) -> np.ndarray:
    return np.array([getattr(e, attr) for e in estimates]).T


def _series(ref: Outlines, estimates: list[YearEstimate]) -> Series:
    from ..area_error import shared_divides

    tta = _stack(estimates, "sigma_tta")
    ens = _stack(estimates, "sigma_ensemble")
    model = np.where(np.isnan(ens) & np.isnan(tta), np.nan,
                     np.hypot(np.nan_to_num(ens), np.nan_to_num(tta)))
    divide_km, outline_km = shared_divides(ref.geometries)
    return Series(np.array([e.year for e in estimates], float), _stack(estimates, "area"),
                  _stack(estimates, "edge_km"), divide_km, outline_km,
                  ref.frame["area_km2"].to_numpy(float),
                  _stack(estimates, "sigma_unobserved"), model, tta,
                  np.array([e.members for e in estimates]).transpose(1, 2, 0),
                  _stack(estimates, "buffer_km2"), _stack(estimates, "low"),
                  _stack(estimates, "high"))


def _glacier_terms(lv: Levels, sigma_year: np.ndarray, s: Series, i: int) -> dict:
    eta = np.sqrt(np.maximum(sigma_year[i] ** 2 - np.nan_to_num(s.sigma_unobserved[i]) ** 2, 0))
    return {"level": lv.level[i], "common": lv.common[i], "year": eta,
            "unobserved": s.sigma_unobserved[i], "model": s.sigma_model[i],
            "divide": lv.divide[i]}


def _total_row(years: np.ndarray, best: np.ndarray, sigma_year: np.ndarray, lv: Levels,
               s: Series, fits: list, model, dof: int, floor: float, low: np.ndarray,
               high: np.ndarray, observed: np.ndarray, ids: list[str]) -> dict:
    """The sum over glaciers (uncertainty.total); its envelope sums the glaciers' where
    seen and their fills elsewhere."""
    tot = total(years, best, sigma_year, lv, s, fits, model, dof, floor)
    seen = np.isfinite(s.area[tot.keep])
    envelope = lambda a: np.where(seen, a[tot.keep], tot.each).sum(0)  # noqa: E731
    bias = np.where(seen, lv.bias[tot.keep], 0.0).sum(0)
    row = _row("total", years, tot.area + bias, tot.area, tot.sigma, tot.terms, bias,
               envelope(low), envelope(high), observed, tot.fit)
    notes = [f"{int(y)}: {int(n)} glacier(s) from their fits" for y, n in zip(years, tot.filled)
             if n]
    if tot.left_out:
        notes.append(f"leaves out {', '.join(ids[i] for i in tot.left_out)} (seen in fewer "
                     "than two years)")
    row["flags"] = "; ".join(notes)
    return row


def _row(gid: str, years: np.ndarray, area: np.ndarray, best: np.ndarray, sigma: np.ndarray,
         terms: dict[str, np.ndarray], bias: np.ndarray, low: np.ndarray, high: np.ndarray,
         observed: np.ndarray, fit: RateFit | None) -> dict:
    ok = np.isfinite(area)
    num = lambda v: None if v is None or not np.isfinite(v) else float(v)  # noqa: E731
    y = [int(t) for t in years]
    q = Z90  # areas: the normal's (the level model's sds are estimates of many pieces)
    row: dict = {"glacier_id": gid}
    row.update({f"area_km2_{t}": num(round(float(a), 6)) for t, a in zip(y, area)})
    row.update({f"area_best_km2_{t}": num(round(float(a), 6)) for t, a in zip(y, best)})
    row.update({f"area_sigma_km2_{t}": num(v) for t, v in zip(y, sigma)})
    row.update({f"area_ci90_low_{t}": num(max(a - q * v, 0.0)) for t, a, v in zip(y, best, sigma)})
    row.update({f"area_ci90_high_{t}": num(a + q * v) for t, a, v in zip(y, best, sigma)})
    row.update({f"bias_km2_{t}": num(b) if k else None for t, b, k in zip(y, bias, ok)})
    for name, term in terms.items():
        row.update({f"sigma_{name}_{t}": num(v) if k else None
                    for t, v, k in zip(y, term, ok)})
    row.update({f"observed_{t}": round(float(o), 4) for t, o in zip(y, observed)})
    row.update(_rate_columns(fit, best[ok][0] if ok.any() else np.nan))
    edge = slope_bounds(years[ok], low[ok], high[ok]) if ok.sum() >= 2 else (None, None)
    row.update({
        "rate_edge_low": num(edge[0]), "rate_edge_high": num(edge[1]),
        "years_used": ";".join(str(int(t)) for t in years[ok]),
        "observed_min": float(np.min(observed)),
        "flags": "; ".join(f"{int(t)}: seen over {math.floor(1000 * o) / 10:g} % only, left "
                           "out" for t, o, k in zip(years, observed, ok) if not k)})
    return row


RATE_TERMS = ("year", "threshold", "drift", "divide", "ensemble")


def _rate_columns(fit: RateFit | None, first: float) -> dict:
    """The rate in km^2/yr and in % of the first year's best area a year, each with its 1
    sigma and 90 % interval; whether that interval excludes zero; the terms of its sigma
    (empty where a term was not estimated)."""
    num = lambda v: None if v is None or not np.isfinite(v) else float(v)  # noqa: E731
    if fit is None:
        keys = ["rate_km2_per_year", "rate_se_km2_per_year", "rate_ci90_low", "rate_ci90_high",
                "rate_percent_per_year", "rate_percent_se", "rate_percent_ci90_low",
                "rate_percent_ci90_high", "significant", "rate_dof",
                *(f"rate_se_{k}_km2_per_year" for k in RATE_TERMS)]
        return dict.fromkeys(keys)
    lo, hi = fit.ci90
    pct = 100 / first if first > 0 else math.nan
    terms = {"year": fit.se_year, **fit.terms}
    return {"rate_km2_per_year": num(fit.rate), "rate_se_km2_per_year": num(fit.se),
            "rate_ci90_low": num(lo), "rate_ci90_high": num(hi),
            "rate_percent_per_year": num(fit.rate * pct), "rate_percent_se": num(fit.se * pct),
            "rate_percent_ci90_low": num(lo * pct), "rate_percent_ci90_high": num(hi * pct),
            "significant": bool(lo > 0 or hi < 0), "rate_dof": fit.dof,
            **{f"rate_se_{k}_km2_per_year": num(terms.get(k)) for k in RATE_TERMS}}
