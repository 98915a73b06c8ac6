"""The uncertainty of glacier areas and of their rates, split by how errors repeat.

Each glacier's mapped area in a year is its true area plus three kinds of error:
- a *level* error, the same every year (the same model, threshold and sensors map a glacier's
  kind of edge alike): its edges' mean outward displacement times its outline (the bias, which
  the area error model learned on validation ground removes) and what is left of it (the
  model's level sigma). It widens an area's interval and cancels in a rate;
- a *year-to-year* error: its size is set by how far all glaciers' years scatter about their
  lines, pooled (one scale for every glacier, at the pooled degrees of freedom), with each
  year's unobserved part added;
- errors *shared by all glaciers*: the bias's own uncertainty (its standard error times each
  outline), which moves every glacier's area alike and their rates as their outlines shrink
  (the drift term); the edge's own drift between years, measured as half the difference of
  the rates at the threshold -/+ its margin (the threshold term: a model fitted to one year's
  scene maps another year's edges a little differently, and that error grows with the
  change); and an ensemble's spread.
Ice divides are no image edges: they take no bias; ice that crosses a divide as glaciers change
is counted for the glacier on its other side (the divide term: the divide's share of the
outline times the change since the inventory, as a uniform share, so / sqrt(3)).

The total's correlation model: level and year-to-year errors are independent between glaciers
(added in quadrature), the bias's uncertainty is shared (added linearly), divide terms cancel
(ice that crosses a divide stays in the total), an ensemble's term is the spread of its
members' totals.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .area_error import AreaErrorModel
from .trend import RateFit, weighted_slope, wls_rate

UNIFORM_SIGMA = 1 / math.sqrt(12)  # sd of a share uniform on [0, 1]
CORRELATION_MODEL = (
    "per glacier and year, 1 sigma = sqrt(level^2 + common^2 + year^2 + unobserved^2 + "
    "model^2 + divide^2): level (the area error model's sd for the glacier's outline, the "
    "same every year), common (the bias's standard error times the outline, shared by every "
    "glacier), year (the pooled year-to-year scatter), unobserved, model (ensemble spread and "
    "TTA), divide. Rates: year-to-year and unobserved terms only in the fit, plus drift (the "
    "common term's change over the years), threshold (half the difference of the rates at "
    "the threshold -/+ its margin), divide and ensemble terms. Total: level, year and "
    "unobserved terms in quadrature over glaciers (independent), common, drift and threshold "
    "terms linearly (shared), divide terms cancel, ensemble from the members' totals.")


@dataclass
class Series:
    """Per glacier (rows) and year (columns) what the uncertainty needs; NaN where a glacier
    was seen too little to measure."""
    years: np.ndarray  # (T,)
    area: np.ndarray  # (n, T) the ensemble's mean measured area, km^2
    edge_km: np.ndarray  # (n, T) the predicted ice's outline less its divides (line length)
    divide_km: np.ndarray  # (n, n) the ice divide each pair of reference glaciers shares
    outline_km: np.ndarray  # (n,) each reference glacier's whole outline
    reference_km2: np.ndarray  # (n,) the reference (inventory) area
    sigma_unobserved: np.ndarray  # (n, T)
    sigma_model: np.ndarray  # (n, T) ensemble spread and TTA; NaN where not estimated
    sigma_tta: np.ndarray  # (n, T) the TTA part of the model term (0 without --tta)
    members: np.ndarray  # (m, n, T) each ensemble member's area
    buffer_km2: np.ndarray  # (n, T) the buffer method (Paul et al. 2013): without an error model
    low: np.ndarray  # (n, T) the areas at the threshold + margin (or mean - TTA spread)
    high: np.ndarray  # (n, T) at the threshold - margin (or mean + TTA spread)


@dataclass
class Levels:
    """The level terms per glacier and year: the bias taken off, its sds."""
    bias: np.ndarray
    level: np.ndarray  # independent between glaciers
    common: np.ndarray  # shared by all glaciers (the bias's standard error times the outline)
    divide: np.ndarray
    corrected: bool

    def best(self, area: np.ndarray) -> np.ndarray:
        return area - self.bias


def levels(s: Series, model: AreaErrorModel | None) -> Levels:
    """Without an error model the buffer method stands in for the level error (known to be
    too small: say so) and nothing is corrected."""
    seen = np.isfinite(s.area)
    edge = np.where(seen, s.edge_km, 0.0)
    unseen = lambda a: np.where(seen, a, np.nan)  # noqa: E731  (no term where no area)
    if model is None:
        zero = np.zeros_like(s.area)
        divide = divide_sigma(s, np.nan_to_num(np.abs(s.area - s.reference_km2[:, None])))
        return Levels(zero, unseen(s.buffer_km2), unseen(zero), unseen(divide), False)
    # The bias never takes more than the ice mapped: a speckled or vanishing glacier's best
    # area is at least 0.
    bias = np.minimum(model.bias_km2(edge), np.nan_to_num(s.area))
    best = s.area - bias
    divide = divide_sigma(s, np.nan_to_num(np.abs(best - s.reference_km2[:, None])))
    return Levels(bias, unseen(model.level_sigma_km2(edge)),
                  unseen(model.offset_se_km * edge), unseen(divide), True)


def divide_sigma(s: Series, change_km2: np.ndarray) -> np.ndarray:
    """What may cross each glacier's ice divides: along a divide shared with glacier j, the
    margins of both move by their change over their outline (a mean displacement), and the
    ice between may fall on either side: uniform within that band, so its sd is the band /
    sqrt(3). `change_km2` is (n, ...) per glacier: the change since the inventory, or a rate;
    its margins' shift is that over the outline less its divides."""
    per_glacier = (-1,) + (1,) * (np.ndim(change_km2) - 1)
    free = s.outline_km - s.divide_km.sum(1)  # only the margins that are no divide move
    shift = change_km2 / np.maximum(free, 1e-9).reshape(per_glacier)
    band = s.divide_km @ shift + s.divide_km.sum(1).reshape(per_glacier) * shift
    return band * 2 * UNIFORM_SIGMA


def pooled_year_sigma(years: np.ndarray, best: np.ndarray, known: np.ndarray,
                      pooled: np.ndarray, floor: float) -> tuple[float, int]:
    """The year-to-year sd (km^2) that makes the pooled chi^2 of the glaciers in `pooled`
    (seen in three years or more) equal its degrees of freedom, sum(n_i - 2), with each
    glacier-year's `known` sd added; (0, 0) when no glacier was seen in three years."""
    rows = [i for i in np.flatnonzero(pooled) if np.isfinite(best[i]).sum() >= 3]
    dof = int(sum(np.isfinite(best[i]).sum() - 2 for i in rows))
    if not dof:
        return 0.0, 0

    def chi2(sigma: float) -> float:
        return sum(wls_rate(years, best[i], np.hypot(sigma, known[i]), floor).chi2 for i in rows)

    if chi2(floor) <= dof:
        return floor, dof
    lo, hi = floor, max(floor * 2, float(np.nanstd(best[rows])) + 1.0)
    for _ in range(80):  # chi^2 falls as sigma grows: bisect on a log scale
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if chi2(mid) > dof else (lo, mid)
    return hi, dof


def glacier_rate(years: np.ndarray, best: np.ndarray, sigma_year: np.ndarray, s: Series,
                 lv: Levels, i: int, model: AreaErrorModel | None, dof: int,
                 floor: float) -> RateFit | None:
    """One glacier's rate of its best areas with its terms: threshold, drift (the shared bias
    error as its outline changes) and an ensemble's spread of its members' rates (the divide
    term needs every glacier's rate: with_divides)."""
    fit = wls_rate(years, best[i], sigma_year[i], floor)
    if fit is None:
        return None
    terms = {"threshold": edge_sensitivity(fit, years, s.low[i], s.high[i], sigma_year[i],
                                           floor)}
    if model is not None:
        terms["drift"] = model.offset_se_km * abs(weighted_slope(fit, years, s.edge_km[i],
                                                                 sigma_year[i], floor))
    if len(s.members) > 1:
        rates = [wls_rate(years, m - lv.bias[i], sigma_year[i], floor).rate
                 for m in s.members[:, i]]
        terms["ensemble"] = float(np.std(rates, ddof=1))
    return fit.with_terms(dof, **terms)


def edge_sensitivity(fit: RateFit, years: np.ndarray, low: np.ndarray, high: np.ndarray,
                     sigma_year: np.ndarray, floor: float) -> float:
    """Half the difference between the rates of the areas at the threshold -/+ its margin
    (or the TTA spread): how much the rate moves if the edge that the model maps drifts from
    year to year by that much, an error every glacier shares."""
    return abs(weighted_slope(fit, years, high, sigma_year, floor) -
               weighted_slope(fit, years, low, sigma_year, floor)) / 2


def with_divides(fits: list[RateFit | None], s: Series) -> list[RateFit | None]:
    """Each glacier's rate with its divide term: the divides' bands at both neighbours'
    rates (a glacier's divide moves with its neighbour's change too)."""
    rates = np.array([abs(f.rate) if f else 0.0 for f in fits])
    band = divide_sigma(s, rates)
    return [f.with_terms(divide=float(b)) if f else None for f, b in zip(fits, band)]


def area_sigma(lv: Levels, sigma_year: np.ndarray, s: Series) -> np.ndarray:
    """1 sigma of each glacier-year's best area: every term in quadrature."""
    model = np.nan_to_num(s.sigma_model)
    return np.sqrt(lv.level ** 2 + lv.common ** 2 + sigma_year ** 2 + model ** 2 +
                   lv.divide ** 2)


@dataclass
class Total:
    area: np.ndarray  # (T,) the sum of best areas, glacier-years left out filled from fits
    terms: dict[str, np.ndarray]  # 1-sigma terms per year
    fit: RateFit | None
    left_out: list[int]  # glaciers seen in fewer than two years: in no year of the total
    filled: np.ndarray  # (T,) how many glaciers each year's total fills from their fits
    keep: np.ndarray  # the glaciers in the total
    each: np.ndarray  # (kept, T) their best areas, filled from their fits where unseen

    @property
    def sigma(self) -> np.ndarray:  # a term not estimated (NaN) adds nothing
        return np.sqrt(sum(np.nan_to_num(t) ** 2 for t in self.terms.values()))


def total(years: np.ndarray, best: np.ndarray, sigma_year: np.ndarray, lv: Levels,
          s: Series, fits: list[RateFit | None], model: AreaErrorModel | None, dof: int,
          floor: float) -> Total:
    """The sum over glaciers, under the correlation model of the module's docstring. A
    glacier-year left out is filled with the glacier's fitted area, and the fit's standard
    error there joins the year-to-year term (each ensemble member from its own fit)."""
    left_out = [i for i, f in enumerate(fits) if f is None and not np.isfinite(best[i]).all()]
    keep = np.setdiff1d(np.arange(len(best)), left_out)
    gaps = ~np.isfinite(best[keep])
    filled, fill_se = best[keep].copy(), np.zeros(gaps.shape)
    each = s.members[:, keep] - lv.bias[keep]
    for row, i in enumerate(keep):
        for j in np.flatnonzero(gaps[row]):
            filled[row, j], fill_se[row, j] = fits[i].at(years[j])
            for k, m in enumerate(s.members[:, i]):
                own = wls_rate(years, m - lv.bias[i], sigma_year[i], floor)
                each[k, row, j] = own.at(years[j])[0]
    fill_each = lambda a: np.where(gaps, np.nanmean(a[keep], axis=1, keepdims=True), a[keep])  # noqa
    quad = lambda a: np.sqrt(np.nansum(a ** 2, axis=0))  # noqa: E731
    totals = each.sum(axis=1)  # per member
    tta = np.nansum(np.nan_to_num(s.sigma_tta[keep]), axis=0)
    ens = totals.std(axis=0, ddof=1) if len(totals) > 1 else np.zeros(len(years))
    estimated = len(totals) > 1 or np.isfinite(s.sigma_tta[keep]).any()
    year = np.sqrt(quad(np.where(gaps, np.nan, sigma_year[keep])) ** 2 + quad(fill_se) ** 2)
    terms = {"level": quad(fill_each(lv.level)), "common": np.nansum(fill_each(lv.common), 0),
             "year": year, "model": np.hypot(ens, tta) if estimated else
             np.full(len(years), np.nan)}
    tot = filled.sum(axis=0)
    fit = wls_rate(years, tot, year, floor)
    if fit is not None:
        extra = {"threshold": edge_sensitivity(
            fit, years, np.where(gaps, filled, s.low[keep] - lv.bias[keep]).sum(0),
            np.where(gaps, filled, s.high[keep] - lv.bias[keep]).sum(0), year, floor)}
        if model is not None:
            edge = np.nansum(fill_each(np.where(np.isfinite(s.area), s.edge_km, np.nan)), 0)
            extra["drift"] = model.offset_se_km * abs(weighted_slope(fit, years, edge, year,
                                                                     floor))
        if len(totals) > 1:
            extra["ensemble"] = float(np.std([wls_rate(years, t, year, floor).rate
                                              for t in totals], ddof=1))
        fit = fit.with_terms(dof, **extra)
    return Total(tot, terms, fit, left_out, gaps.sum(axis=0), keep, filled)
