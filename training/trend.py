"""The rate of area change: weighted least squares over the years a glacier was seen, each
year weighted by its year-to-year error (1 sigma).

Only errors that differ from year to year enter a rate: a glacier mapped too large by the same
amount every year (the same model, threshold and sensors map its edges alike) has the right
rate. The year-to-year sigmas are known up to a scale that the scatter of every glacier's
years about its line sets (uncertainty.pooled_year_sigma): the rate's standard error is the
fit's with those sigmas, and its 90 % interval uses Student's t at the pooled degrees of
freedom (`dof`), or the normal's 1.645 where the sigmas were not estimated from scatter.
Errors shared across years (a drift of the bias, an ensemble's spread) are added to the
standard error as named terms.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

Z90 = 1.6448536269514722  # the standard normal's 95th percentile: a two-sided 90 % interval
METHOD = ("weighted least squares of area on year, weights 1/sigma_year^2 (the year-to-year "
          "error: the pooled residual scatter of all glaciers, and each year's unobserved "
          "part), over the years used; standard error from those sigmas, with the drift, "
          "divide and ensemble terms added in quadrature; 90 % interval = rate -/+ q standard "
          "errors, q from Student's t at the pooled degrees of freedom (the normal's 1.645 "
          "where no scatter could be pooled)")


def t90(dof: int) -> float:
    """The 95th percentile of Student's t with `dof` degrees of freedom (the normal's with
    none: the sigmas were not estimated)."""
    from scipy.stats import t

    return float(t.ppf(0.95, dof)) if dof > 0 else Z90


@dataclass(frozen=True)
class RateFit:
    rate: float  # km^2 per year
    se_year: float  # standard error from the year-to-year sigmas (the fit's covariance)
    years_used: tuple[int, ...]
    t_mean: float  # the weighted mean year, where the fit's intercept is given
    a_mean: float  # the fitted area at t_mean
    sum_w: float
    s_tt: float
    chi2: float  # sum of squared weighted residuals (its expectation: n - 2)
    dof: int = 0  # the degrees of freedom behind the sigmas' scale (pooled); 0: taken as known
    terms: dict = field(default_factory=dict)  # further standard-error terms by name

    @property
    def se(self) -> float:
        """The rate's standard error: the fit's, and every further term, in quadrature."""
        return math.sqrt(self.se_year ** 2 + sum(v ** 2 for v in self.terms.values()))

    @property
    def quantile90(self) -> float:
        return t90(self.dof)

    @property
    def ci90(self) -> tuple[float, float]:
        return self.rate - self.quantile90 * self.se, self.rate + self.quantile90 * self.se

    def at(self, year: float) -> tuple[float, float]:
        """The fitted area in `year` and its standard error from the year-to-year sigmas."""
        value = self.a_mean + self.rate * (year - self.t_mean)
        return value, math.sqrt(1 / self.sum_w + (year - self.t_mean) ** 2 / self.s_tt)

    def with_terms(self, dof: int | None = None, **terms: float) -> "RateFit":
        return replace(self, dof=self.dof if dof is None else dof, terms={**self.terms, **terms})


def wls_rate(years: np.ndarray, areas: np.ndarray, sigmas: np.ndarray,
             sigma_floor: float) -> RateFit | None:
    """The rate over the years whose area is finite (None with fewer than two). Sigmas under
    `sigma_floor` count as the floor, so that no single year takes all the weight."""
    years, areas, sigmas = (np.asarray(v, np.float64) for v in (years, areas, sigmas))
    ok = np.isfinite(areas)
    if ok.sum() < 2:
        return None
    t, a = years[ok], areas[ok]
    w = 1.0 / np.maximum(sigmas[ok], sigma_floor) ** 2
    sum_w = float(w.sum())
    t_mean, a_mean = float((w * t).sum() / sum_w), float((w * a).sum() / sum_w)
    s_tt = float((w * (t - t_mean) ** 2).sum())
    rate = float((w * (t - t_mean) * (a - a_mean)).sum() / s_tt)
    chi2 = float((w * (a - a_mean - rate * (t - t_mean)) ** 2).sum())
    return RateFit(rate, math.sqrt(1.0 / s_tt), tuple(int(y) for y in t), t_mean, a_mean,
                   sum_w, s_tt, chi2)


def weighted_slope(fit: RateFit, years: np.ndarray, values: np.ndarray,
                   sigmas: np.ndarray, sigma_floor: float) -> float:
    """The slope of another series over the fit's years with the fit's weights (how a
    quantity that each year's area carries, such as a bias, moves the rate)."""
    used = np.isin(np.asarray(years).astype(int), fit.years_used)
    other = wls_rate(np.asarray(years)[used], np.asarray(values, float)[used],
                     np.asarray(sigmas)[used], sigma_floor)
    return 0.0 if other is None or not math.isfinite(other.rate) else other.rate
