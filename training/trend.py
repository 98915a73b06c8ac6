"""The rate of area change with a confidence interval: weighted least squares over the years
a glacier was seen, each year weighted by its area uncertainty (1 sigma).

The standard error starts from the per-year sigmas alone (the fit's covariance with known
errors) and is inflated by the Birge ratio sqrt(chi^2 / (n - 2)) when the years scatter about
the line more than their sigmas allow (never deflated: sigmas that overstate the scatter are
kept). The 90 % interval is rate -/+ q standard errors: q is Student's t with n - 2 degrees
of freedom when the scatter set the error (6.31 with three years), else the normal's 1.645.
With two years there is no scatter to measure and the sigmas alone set the error.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

Z90 = 1.6448536269514722  # the standard normal's 95th percentile: a two-sided 90 % interval
METHOD = ("weighted least squares of area on year (weights 1/sigma^2, sigma without the "
          "ensemble's spread) over the years used; standard error from the sigmas, times the "
          "Birge ratio sqrt(chi^2/(n-2)) when above 1, and with an ensemble added in "
          "quadrature to the standard deviation of its members' own rates; 90 % interval = "
          "rate -/+ q standard errors, q from Student's t with n-2 degrees of freedom when the "
          "Birge ratio is above 1, else 1.645")


@dataclass(frozen=True)
class RateFit:
    rate: float  # km^2 per year
    se: float  # its standard error (1 sigma)
    se_from_sigmas: float  # from the per-year sigmas alone
    birge_ratio: float  # sqrt(chi^2 / (n - 2)); nan with two years
    years_used: tuple[int, ...]
    t_mean: float  # the weighted mean year, where the fit's intercept is given
    a_mean: float  # the fitted area at t_mean
    sum_w: float
    s_tt: float
    se_ensemble: float = 0.0  # the spread of an ensemble's members' own rates, in `se`

    @property
    def quantile90(self) -> float:
        """The 95th percentile the interval uses: Student's t with n - 2 degrees of freedom
        when the scatter set the error (Birge ratio over 1), else the normal's."""
        from scipy.stats import t

        dof = len(self.years_used) - 2
        return float(t.ppf(0.95, dof)) if dof > 0 and self.birge_ratio > 1 else Z90

    @property
    def ci90(self) -> tuple[float, float]:
        return self.rate - self.quantile90 * self.se, self.rate + self.quantile90 * self.se

    def at(self, year: float) -> tuple[float, float]:
        """The fitted area in `year` and its standard error (from the sigmas and the scatter;
        an ensemble's spread is in its members' own fits)."""
        fitted = math.sqrt(max(self.se ** 2 - self.se_ensemble ** 2, 0.0))
        scale = fitted / self.se_from_sigmas if self.se_from_sigmas > 0 else 1.0
        value = self.a_mean + self.rate * (year - self.t_mean)
        return value, scale * math.sqrt(1 / self.sum_w + (year - self.t_mean) ** 2 / self.s_tt)


def wls_rate(years: np.ndarray, areas: np.ndarray, sigmas: np.ndarray,
             sigma_floor: float) -> RateFit | None:
    """The rate over the years whose area is finite (None with fewer than two). Sigmas under
    `sigma_floor` (a glacier that is gone has no edge and no spread) count as the floor, so
    that no single year takes all the weight."""
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
    se_sigmas = math.sqrt(1.0 / s_tt)
    dof = len(t) - 2
    chi2 = float((w * (a - a_mean - rate * (t - t_mean)) ** 2).sum())
    birge = math.sqrt(chi2 / dof) if dof > 0 else float("nan")
    se = se_sigmas * max(1.0, birge) if dof > 0 else se_sigmas
    return RateFit(rate, se, se_sigmas, birge, tuple(int(y) for y in t), t_mean, a_mean,
                   sum_w, s_tt)


def with_ensemble(fit: RateFit, spread: float) -> RateFit:
    """The fit of an ensemble's mean, its standard error widened by the standard deviation of
    the members' own rates: what the members disagree on about the change, not about the
    level (a model's bias that lasts across years cancels in its rate)."""
    return replace(fit, se=math.sqrt(fit.se ** 2 + spread ** 2), se_ensemble=spread)
