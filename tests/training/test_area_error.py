"""The area error model: its fit against statsmodels and known parameters, the pieces it is
fitted on against hand counts, and ice divides left out of outlines."""
import math

import numpy as np
import pytest
import shapely
import statsmodels.api as sm
from affine import Affine
from rasterio.features import rasterize
from shapely.geometry import box

from training.area_error import (
    MIN_PIECES,
    PIECE_PX,
    SAMPLE_M,
    AreaErrorModel,
    EdgePieces,
    divide_free_boundaries,
    fit_error_model,
)


def simulated(n: int, mu: float, a: float, b: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.3, 3.0, n)
    return mu * p + np.sqrt(a * p + b * p * p) * rng.standard_normal(n), p


def test_the_fit_recovers_known_parameters_and_its_mean_is_statsmodels_wls():
    mu, a, b = 0.012, 2e-5, 1.6e-5  # 12 m outward; sds of 4.5 m/sqrt(km) and 4 m
    e, p = simulated(4000, mu, a, b)
    model = fit_error_model(e, p, 0.5)
    assert model.offset_km == pytest.approx(mu, abs=3 * model.offset_se_km)
    assert model.var_per_km == pytest.approx(a, rel=0.25)
    assert model.var_per_km2 == pytest.approx(b, rel=0.25)
    # Given its variances, mu and its standard error are weighted least squares through 0.
    v = model.var_per_km * p + model.var_per_km2 * p ** 2
    ref = sm.WLS(e, p, weights=1 / v).fit(cov_type="fixed scale", cov_kwds={"scale": 1.0})
    assert model.offset_km == pytest.approx(ref.params[0], rel=1e-9)
    assert model.offset_se_km == pytest.approx(ref.bse[0], rel=1e-9)
    assert model.pieces == 4000 and model.length_km == pytest.approx(p.sum())
    assert AreaErrorModel.from_dict(model.to_dict()) == model
    assert model.to_dict()["offset_m"] == pytest.approx(1e3 * model.offset_km)


def test_a_glacier_takes_the_bias_and_level_of_its_outline():
    model = AreaErrorModel(0.01, 0.001, 4e-5, 9e-6, 30, 40.0, 0.5)
    assert model.bias_km2(np.array([2.0, 0.0])).tolist() == [0.02, 0.0]
    assert model.level_sigma_km2(np.array([4.0]))[0] == pytest.approx(
        math.sqrt(4e-5 * 4 + 9e-6 * 16))


def test_too_few_or_too_short_pieces_fit_nothing():
    e, p = simulated(MIN_PIECES - 1, 0.01, 1e-5, 1e-5)
    assert fit_error_model(e, p, 0.5) is None
    e, p = simulated(50, 0.01, 1e-5, 1e-5)
    assert fit_error_model(e, np.full(50, 0.1), 0.5) is None  # under MIN_PIECE_KM each


def test_ice_divides_are_left_out_of_the_outlines():
    left, right, apart = box(0, 0, 1000, 1000), box(1000, 0, 1500, 1000), box(3000, 0, 3100, 100)
    lines = divide_free_boundaries([left, right, apart])
    assert shapely.length(lines[0]) == pytest.approx(3000, abs=4)  # less the 1 km divide
    assert shapely.length(lines[1]) == pytest.approx(2000, abs=4)
    assert shapely.length(lines[2]) == pytest.approx(400)


def test_pieces_count_the_validation_ground_only_by_hand():
    """A 600 m square glacier mapped 20 m too large all round (2 pixels of 10 m), beside a
    touching one mapped exactly; only the left half of the scene is validation ground."""
    t = Affine(10, 0, 0, 0, -10, 1000)
    glacier, neighbour = box(200, 200, 800, 800), box(800, 200, 900, 800)
    size = (100, 100)
    ref = rasterize([(glacier, 1), (neighbour, 2)], out_shape=size, transform=t).astype(np.int32)
    ice = rasterize([glacier.buffer(20, join_style="mitre"), neighbour], out_shape=size,
                    transform=t) > 0
    zone = ref.copy()
    zone[(ice) & (ref == 0)] = 1  # the over-mapped ring lies in the glacier's zone
    ground = np.zeros(size, bool)
    ground[:, :50] = True  # x < 500 m
    pieces = EdgePieces(2, t, divide_free_boundaries([glacier, neighbour]))
    pieces.add(0, 0, ground, np.ones(size, bool), ice, ref, zone)
    (k1, (px1, len1)), = [(k, v) for k, v in pieces.cells.items() if k >> 40 == 1]
    assert not [k for k in pieces.cells if k >> 40 == 2]  # the neighbour lies beyond x = 500
    # Validation ground holds the glacier's left edge (600 m) and 300 m of top and bottom.
    assert len1 == pytest.approx(1200, abs=2 * SAMPLE_M)
    ring = ice & (ref == 0) & ground  # the extra ice: 2 px wide along those 1200 m
    assert px1 == ring.sum() == 2 * 64 + 2 * 2 * 30  # left edge with corners; top, bottom
    assert PIECE_PX >= 100  # one cell here


def test_pieces_of_a_scene_give_its_displacement():
    """Many glaciers mapped one pixel (10 m) too large: the fitted offset is 10 m."""
    t = Affine(10, 0, 0, 0, -10, 0)
    rng = np.random.default_rng(1)
    glaciers = [box(x, -y - h, x + w, -y) for x, y, w, h in
                zip(range(200, 9000, 1100), rng.uniform(200, 500, 9),
                    rng.uniform(300, 900, 9), rng.uniform(800, 3000, 9))]
    size = (400, 1000)
    ref = rasterize([(g, k) for k, g in enumerate(glaciers, 1)], out_shape=size,
                    transform=t).astype(np.int32)
    grown = rasterize([(g.buffer(10, join_style="mitre"), k) for k, g in enumerate(glaciers, 1)],
                      out_shape=size, transform=t).astype(np.int32)
    pieces = EdgePieces(len(glaciers), t, divide_free_boundaries(glaciers))
    pieces.add(0, 0, np.ones(size, bool), np.ones(size, bool), grown > 0, ref, grown)
    model = pieces.fit(1e-4, np.ones(len(glaciers) + 1), 0.5)
    assert model is not None and model.pieces >= MIN_PIECES
    assert model.offset_km * 1e3 == pytest.approx(10.0, abs=0.3)


def test_pieces_of_one_glacier_sharing_an_offset_widen_its_standard_error():
    """Eight glaciers of five pieces each, every glacier's pieces sharing one offset: the
    standard error of mu is statsmodels' cluster-robust one (by glacier), larger than the
    one that takes the pieces as independent."""
    rng = np.random.default_rng(4)
    glaciers = np.repeat(np.arange(8), 5)
    p = rng.uniform(0.3, 1.5, 40)
    e = (0.010 + 0.008 * rng.standard_normal(8)[glaciers]) * p + 0.001 * rng.standard_normal(40)
    model = fit_error_model(e, p, 0.5, glaciers)
    v = model.var_per_km * p + model.var_per_km2 * p ** 2
    wls = sm.WLS(e, p, weights=1 / v)
    naive = wls.fit(cov_type="fixed scale", cov_kwds={"scale": 1.0}).bse[0]
    clustered = wls.fit(cov_type="cluster", cov_kwds={"groups": glaciers,
                                                      "use_correction": False}).bse[0]
    assert model.offset_se_km == pytest.approx(clustered * math.sqrt(8 / 7), rel=1e-6)
    assert model.offset_se_km > 1.2 * naive
    # Without the glaciers, or with each piece its own glacier, the weights' error.
    assert fit_error_model(e, p, 0.5).offset_se_km == pytest.approx(naive, rel=1e-9)
