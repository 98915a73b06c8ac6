"""The rate of change and its interval against an independent fit (statsmodels' WLS) and a
hand computation (the pooled scale is tested in test_uncertainty)."""
import numpy as np
import pytest
import statsmodels.api as sm

from training.trend import t90, weighted_slope, wls_rate

YEARS = np.array([2016, 2017, 2018, 2020, 2023], float)


def statsmodels_fit(years, areas, sigmas, fixed: bool):
    """WLS with weights 1/sigma^2: with the sigmas as known errors (scale fixed at 1, normal
    quantiles), or with the scale estimated from the residuals (Student's t, n - 2 degrees of
    freedom)."""
    model = sm.WLS(areas, sm.add_constant(years), weights=1 / sigmas ** 2)
    if fixed:
        return model.fit(cov_type="fixed scale", cov_kwds={"scale": 1.0}, use_t=False)
    return model.fit(use_t=True)


def test_rate_and_interval_equal_statsmodels_wls():
    """With the sigmas as known errors: the rate, its standard error and (at the normal's
    quantile, no degrees of freedom pooled) its interval are statsmodels' WLS."""
    rng = np.random.default_rng(7)
    sigmas = np.array([0.02, 0.2, 0.05, 0.01, 0.1])  # very unequal: weights matter
    areas = 5.0 - 0.1 * (YEARS - 2016) + 0.05 * rng.standard_normal(len(YEARS))
    fit = wls_rate(YEARS, areas, sigmas, sigma_floor=1e-6)
    known = statsmodels_fit(YEARS, areas, sigmas, fixed=True)
    assert fit.rate == pytest.approx(known.params[1], rel=1e-10)
    assert fit.se_year == fit.se == pytest.approx(known.bse[1], rel=1e-10)
    assert fit.ci90 == pytest.approx(tuple(known.conf_int(alpha=0.10)[1]), rel=1e-10)
    assert fit.chi2 == pytest.approx(known.ssr, rel=1e-10)
    # Plain least squares gives another rate here: the weighting is what is tested.
    assert abs(fit.rate - np.polyfit(YEARS, areas, 1)[0]) > 1e-4
    # Pooled degrees of freedom: Student's t; further terms in quadrature.
    wide = fit.with_terms(4, drift=0.03)
    assert wide.se == pytest.approx(np.hypot(known.bse[1], 0.03))
    assert wide.ci90[1] - wide.rate == pytest.approx(2.1318468 * wide.se)
    assert t90(0) == pytest.approx(1.6448536) and t90(1) == pytest.approx(6.3137515)


def test_three_years_by_hand():
    """Areas 10, 9, 7 at 2018, 2019, 2020 with sigmas 1, 1, 0.5: weights 1, 1, 4."""
    fit = wls_rate(np.array([2018, 2019, 2020.]), np.array([10, 9, 7.]),
                   np.array([1, 1, 0.5]), sigma_floor=1e-9)
    w, t, a = np.array([1, 1, 4.]), np.array([0, 1, 2.]), np.array([10, 9, 7.])
    tm, am = (w * t).sum() / 6, (w * a).sum() / 6  # 1.5, 47/6
    stt = (w * (t - tm) ** 2).sum()  # 2.25 + 0.25 + 1 = 3.5
    rate = (w * (t - tm) * (a - am)).sum() / stt  # (-13/4 - 7/12 - 5/3) / 3.5 = -5.5 / 3.5
    assert (tm, am, stt) == (1.5, pytest.approx(47 / 6), 3.5)
    assert rate == pytest.approx(-5.5 / 3.5)
    chi2 = (w * (a - am - rate * (t - tm)) ** 2).sum()
    assert fit.rate == pytest.approx(rate) and fit.chi2 == pytest.approx(chi2)
    assert fit.se == pytest.approx(np.sqrt(1 / stt))  # no per-glacier inflation by scatter
    assert fit.at(2018.5)[0] == pytest.approx(am + rate * (0.5 - tm))
    assert fit.at(2018.5)[1] == pytest.approx(np.sqrt(1 / 6 + (0.5 - tm) ** 2 / stt))
    # Another series' slope with the same weights over the same years.
    assert weighted_slope(fit, np.array([2018, 2019, 2020.]), np.array([1, 2, 4.]),
                          np.array([1, 1, 0.5]), 1e-9) == pytest.approx(
        (w * (t - tm) * np.array([1, 2, 4.])).sum() / stt)


def test_years_left_out_and_the_floor():
    areas = np.array([3.0, np.nan, 2.0, 1.5])
    fit = wls_rate(np.array([2018, 2019, 2020, 2021.]), areas, np.zeros(4), sigma_floor=0.01)
    assert fit.years_used == (2018, 2020, 2021)
    assert fit.rate == pytest.approx(np.polyfit([2018, 2020, 2021], [3, 2, 1.5], 1)[0])
    assert wls_rate(np.array([2018, 2019.]), np.array([1.0, np.nan]), np.ones(2), 0.01) is None
    two = wls_rate(np.array([2018, 2020.]), np.array([1.0, 0.8]), np.array([0.03, 0.04]), 0.01)
    assert two.se == pytest.approx(np.hypot(0.03, 0.04) / 2)  # no scatter to measure
