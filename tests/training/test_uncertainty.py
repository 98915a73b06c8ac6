"""Areas' and rates' uncertainty against independent fits: statsmodels' OLS/WLS of every
glacier at once (glacier intercepts and slopes, one scale), on constructed series that carry a
level error (a per-glacier offset that lasts every year), year-to-year noise and gaps."""
import math

import numpy as np
import pytest
import statsmodels.api as sm
from scipy.stats import t as student

from training.area_error import AreaErrorModel
from training.trend import Z90, wls_rate
from training.uncertainty import (
    UNIFORM_SIGMA,
    Series,
    area_sigma,
    glacier_rate,
    levels,
    pooled_year_sigma,
    total,
    with_divides,
)

YEARS = np.array([2016, 2017, 2018, 2019, 2021], float)
FLOOR = 1e-6


def constructed(n: int = 6, seed: int = 3, level_sd: float = 0.4, year_sd: float = 0.02,
                gaps: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True areas on lines, the measured ones with a large per-glacier level error and a
    small year-to-year one; glacier 1 misses one year, glacier 2 two."""
    rng = np.random.default_rng(seed)
    a0, rate = rng.uniform(2, 8, n), rng.uniform(-0.3, 0.05, n)
    true = a0[:, None] + rate[:, None] * (YEARS - YEARS[0])
    measured = true + level_sd * rng.standard_normal(n)[:, None] + \
        year_sd * rng.standard_normal(true.shape)
    if gaps:
        measured[1, 2] = np.nan
        measured[2, [0, 3]] = np.nan
    return true, measured, rate


def series(area: np.ndarray, **kw) -> Series:
    n, T = area.shape
    zeros = np.zeros((n, T))
    base = dict(years=YEARS, area=area, edge_km=np.full((n, T), 4.0),
                divide_km=np.zeros((n, n)), outline_km=np.full(n, 5.0),
                reference_km2=np.nanmean(area, axis=1), sigma_unobserved=zeros,
                sigma_model=np.full((n, T), np.nan), sigma_tta=zeros, members=area[None],
                buffer_km2=np.full((n, T), 0.01), low=area - 0.05, high=area + 0.05)
    base.update(kw)
    return Series(**base)


def statsmodels_pooled(measured: np.ndarray):
    """One OLS over all glaciers: an intercept and a slope each, one residual scale."""
    rows, cols = np.nonzero(np.isfinite(measured))
    n = measured.shape[0]
    X = np.zeros((len(rows), 2 * n))
    X[np.arange(len(rows)), 2 * rows] = 1.0
    X[np.arange(len(rows)), 2 * rows + 1] = YEARS[cols] - YEARS.mean()
    return sm.OLS(measured[rows, cols], X).fit(use_t=True)


def test_rates_equal_one_pooled_statsmodels_fit_and_the_level_error_cancels():
    _, measured, _ = constructed()
    n = len(measured)
    s = series(measured)
    known = np.zeros_like(measured)
    sigma, dof = pooled_year_sigma(YEARS, measured, known, np.ones(n, bool), FLOOR)
    ref = statsmodels_pooled(measured)
    assert dof == ref.df_resid == 5 * 6 - 3 - 2 * 6
    assert sigma == pytest.approx(math.sqrt(ref.scale), rel=1e-6)  # pooled, not per glacier
    lv = levels(s, None)
    fits = [glacier_rate(YEARS, measured, np.full_like(measured, sigma), s, lv, i, None, dof,
                         FLOOR) for i in range(n)]
    ci = ref.conf_int(alpha=0.10)
    for i, fit in enumerate(fits):
        assert fit.rate == pytest.approx(ref.params[2 * i + 1], rel=1e-9)
        assert fit.se_year == pytest.approx(ref.bse[2 * i + 1], rel=1e-6)
        assert fit.quantile90 == pytest.approx(student.ppf(0.95, ref.df_resid))
        # Only the threshold term (the areas at -/+ the margin move alike: 0).
        assert fit.terms == {"threshold": pytest.approx(0.0, abs=1e-12)}
        assert fit.ci90 == pytest.approx(tuple(ci[2 * i + 1]), rel=1e-6)
    # A level error as large again changes no rate and no standard error: it cancels.
    shifted = measured + np.arange(n)[:, None] * 3.0
    again, dof2 = pooled_year_sigma(YEARS, shifted, known, np.ones(n, bool), FLOOR)
    assert (again, dof2) == (pytest.approx(sigma, rel=1e-9), dof)


def test_the_year_sigma_adds_to_the_known_terms_in_each_glacier_year():
    """With known unobserved sds, the pooled sigma makes the weighted chi^2 equal its degrees
    of freedom; each glacier's rate is then statsmodels' WLS with those weights, scale 1."""
    _, measured, _ = constructed(gaps=False)
    known = np.zeros_like(measured)
    known[0, 1], known[3, 4] = 0.05, 0.08
    n = len(measured)
    sigma, dof = pooled_year_sigma(YEARS, measured, known, np.ones(n, bool), FLOOR)
    sd = np.hypot(sigma, known)
    chi2 = sum(sm.WLS(measured[i], sm.add_constant(YEARS), weights=1 / sd[i] ** 2).fit().ssr
               for i in range(n))
    assert chi2 == pytest.approx(dof, rel=1e-6) and dof == n * (len(YEARS) - 2)
    fit = wls_rate(YEARS, measured[3], sd[3], FLOOR)
    ref = sm.WLS(measured[3], sm.add_constant(YEARS), weights=1 / sd[3] ** 2).fit(
        cov_type="fixed scale", cov_kwds={"scale": 1.0})
    assert (fit.rate, fit.se_year) == (pytest.approx(ref.params[1]), pytest.approx(ref.bse[1]))
    # Glaciers left out of the pooling (vanishing ones) do not set the scale.
    noisy = measured.copy()
    noisy[5] += np.array([0, 1, -1, 1, 0])
    kept = np.arange(n) != 5
    assert pooled_year_sigma(YEARS, noisy, known, kept, FLOOR) == \
        (pytest.approx(pooled_year_sigma(YEARS, measured[kept], known[kept],
                                         np.ones(n - 1, bool), FLOOR)[0]), dof - 3)
    assert pooled_year_sigma(YEARS, noisy, known, np.ones(n, bool), FLOOR)[0] > 3 * sigma


def test_a_divide_moves_with_both_neighbours_rates():
    _, measured, _ = constructed(n=3, gaps=False)
    shared = np.array([[0, 0.5, 0], [0.5, 0, 0], [0, 0, 0]])  # 0 and 1 touch over 0.5 km
    s = series(measured, divide_km=shared, outline_km=np.array([6.0, 3.0, 4.0]))
    lv = levels(s, None)
    year = np.full_like(measured, 0.02)
    fits = with_divides([glacier_rate(YEARS, measured, year, s, lv, i, None, 9, FLOOR)
                         for i in range(3)], s)
    band = 0.5 * (abs(fits[0].rate) / 5.5 + abs(fits[1].rate) / 2.5)  # outlines less divide
    assert fits[0].terms["divide"] == fits[1].terms["divide"] == pytest.approx(
        band / math.sqrt(3))
    assert fits[2].terms["divide"] == 0


def test_two_years_pool_nothing():
    area = np.array([[3.0, 2.8], [1.0, 0.9]])
    assert pooled_year_sigma(YEARS[:2], area, np.zeros_like(area), np.ones(2, bool),
                             FLOOR) == (0.0, 0)


MODEL = AreaErrorModel(offset_km=0.01, offset_se_km=0.002, var_per_km=4e-5, var_per_km2=9e-6,
                       pieces=20, length_km=30.0, threshold=0.5)


def test_levels_and_the_area_sigma_compose_as_stated():
    area = np.array([[5.0, 4.8, np.nan], [1.0, 0.9, 0.85]])
    edge = np.array([[12.0, 11.0, 0.0], [3.0, 2.9, 2.8]])
    # Glacier 1 shares 0.8 km of its 2 km outline with glacier 0 (outline 10 km).
    s = series(area, years=YEARS[:3], edge_km=edge, divide_km=np.array([[0, 0.8], [0.8, 0]]),
               outline_km=np.array([10.0, 2.0]), reference_km2=np.array([5.1, 1.0]),
               sigma_unobserved=np.array([[0, 0.03, 0], [0, 0, 0.0]]),
               sigma_model=np.array([[0.02, 0.02, np.nan], [0.01, 0.01, 0.01]]))
    lv = levels(s, MODEL)
    assert lv.corrected and lv.bias[0, 0] == pytest.approx(0.12) and lv.bias[0, 2] == 0
    assert lv.level[1, 1] == pytest.approx(math.sqrt(4e-5 * 2.9 + 9e-6 * 2.9 ** 2))
    assert lv.common[0, 1] == pytest.approx(0.002 * 11)
    # Ice across a divide: along it, both margins' mean displacements since the inventory
    # (best area's change / the outline less its divides), the band uniform: / sqrt(3).
    # Glacier 0 is unseen in year 2: no term there, and no shift of its margin.
    best = lv.best(area)
    assert best[1, 2] == pytest.approx(0.85 - 0.01 * 2.8)
    shift1 = abs(best[1] - 1.0) / (2.0 - 0.8)
    shift0 = abs(best[0] - 5.1) / (10.0 - 0.8)
    assert lv.divide[1, 2] == pytest.approx(0.8 * shift1[2] * 2 * UNIFORM_SIGMA)
    assert lv.divide[1, 1] == pytest.approx(0.8 * (shift1[1] + shift0[1]) * 2 * UNIFORM_SIGMA)
    assert lv.divide[0, 1] == lv.divide[1, 1]  # the same band on both sides
    assert np.isnan([lv.divide[0, 2], lv.level[0, 2], lv.common[0, 2]]).all()
    year = np.array([[0.01, np.hypot(0.01, 0.03), 0.01], [0.01, 0.01, 0.01]])
    sigma = area_sigma(lv, year, s)
    want = math.sqrt(lv.level[0, 1] ** 2 + 0.022 ** 2 + 0.01 ** 2 + 0.03 ** 2 + 0.02 ** 2 +
                     lv.divide[0, 1] ** 2)
    assert sigma[0, 1] == pytest.approx(want)
    # Without a model nothing is corrected and the buffer method stands in for the level.
    plain = levels(s, None)
    assert not plain.corrected and (plain.bias == 0).all() and plain.level[0, 0] == 0.01


def test_the_total_adds_independent_terms_in_quadrature_and_shared_ones_linearly():
    _, measured, _ = constructed(n=4, gaps=False)
    measured[2, 1] = np.nan  # one glacier-year filled from its fit
    s = series(measured, edge_km=np.linspace(3, 5, 20).reshape(4, 5))
    lv = levels(s, MODEL)
    best = lv.best(measured)
    year = np.full_like(measured, 0.02)
    fits = [glacier_rate(YEARS, best, year, s, lv, i, MODEL, 12, FLOOR) for i in range(4)]
    tot = total(YEARS, best, year, lv, s, fits, MODEL, 12, FLOOR)
    fill, fill_se = fits[2].at(YEARS[1])
    assert tot.area[1] == pytest.approx(np.nansum(best[:, 1]) + fill)
    assert tot.filled.tolist() == [0, 1, 0, 0, 0]
    assert tot.terms["year"][1] == pytest.approx(math.sqrt(3 * 0.02 ** 2 + fill_se ** 2))
    assert tot.terms["year"][0] == pytest.approx(2 * 0.02)  # 4 glaciers in quadrature
    assert tot.terms["level"][0] == pytest.approx(math.sqrt((lv.level[:, 0] ** 2).sum()))
    assert tot.terms["common"][0] == pytest.approx(lv.common[:, 0].sum())  # linear
    # The total's rate: statsmodels' WLS of the totals with the year term as sigma.
    ref = sm.WLS(tot.area, sm.add_constant(YEARS), weights=1 / tot.terms["year"] ** 2).fit(
        cov_type="fixed scale", cov_kwds={"scale": 1.0})
    assert tot.fit.rate == pytest.approx(ref.params[1]) and \
        tot.fit.se_year == pytest.approx(ref.bse[1])
    edge = s.edge_km.copy()  # the filled year's outline: the mean of the glacier's seen ones
    edge[2, 1] = np.mean(np.delete(edge[2], 1))
    edge_total = edge.sum(0)
    drift = 0.002 * abs(np.polyfit(YEARS, edge_total, 1, w=1 / tot.terms["year"])[0])
    assert tot.fit.terms["drift"] == pytest.approx(drift, rel=1e-6)
    assert tot.fit.se == pytest.approx(math.sqrt(tot.fit.se_year ** 2 + drift ** 2 +
                                                 tot.fit.terms["threshold"] ** 2))
    assert tot.fit.quantile90 == pytest.approx(student.ppf(0.95, 12))


def test_the_threshold_term_is_half_the_spread_of_the_rates_at_its_margins():
    _, measured, _ = constructed(n=3, gaps=False)
    low = measured - 0.01 * (YEARS - 2016)  # the margin's areas drift apart by 0.02/yr
    high = measured + 0.01 * (YEARS - 2016)
    s = series(measured, low=low, high=high)
    lv = levels(s, None)
    fit = glacier_rate(YEARS, measured, np.full_like(measured, 0.02), s, lv, 0, None, 9, FLOOR)
    assert fit.terms["threshold"] == pytest.approx(0.01)
    tot = total(YEARS, measured, np.full_like(measured, 0.02), lv, s, [
        glacier_rate(YEARS, measured, np.full_like(measured, 0.02), s, lv, i, None, 9, FLOOR)
        for i in range(3)], None, 9, FLOOR)
    assert tot.fit.terms["threshold"] == pytest.approx(0.03)  # shared: linear over glaciers


def test_an_ensemble_adds_the_spread_of_its_members_rates():
    _, measured, _ = constructed(n=2, gaps=False)
    members = np.stack([measured + 0.01 * (YEARS - 2016), measured - 0.01 * (YEARS - 2016)])
    s = series(measured, members=members)
    lv = levels(s, None)
    fit = glacier_rate(YEARS, measured, np.full_like(measured, 0.02), s, lv, 1, None, 6, FLOOR)
    assert fit.terms["ensemble"] == pytest.approx(np.std([0.01, -0.01], ddof=1))
    assert fit.se == pytest.approx(math.hypot(fit.se_year, fit.terms["ensemble"]))
    assert Z90 < fit.quantile90  # pooled degrees of freedom: Student's t
