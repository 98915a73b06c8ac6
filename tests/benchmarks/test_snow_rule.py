"""The spectral snow rule, measured on the demo's July scene against its truth: it gives back
all the bright snow Cloud Score+ mistakes for cloud, and lets back a sixth of the truly
contaminated pixels Cloud Score+ caught, nearly all thin cirrus over snow, which no test on B3
and B11 separates from snow (benchmarks/snow_rule.py prints the full table)."""
import pytest

from benchmarks.snow_rule import measure_snow_rule
from gee_export.config import RecipeConfig
from gee_export.demo.scene import DemoScene


@pytest.fixture(scope="module")
def scene():
    return DemoScene()


def test_the_rule_keeps_the_snow_cloud_score_mistakes_and_what_it_lets_back(scene):
    f = measure_snow_rule(RecipeConfig(2018), scene, step=4)
    assert f.flagged_clean > 1000 and f.restored_clean == f.flagged_clean
    dirty = sum(f.let_back.values()) / f.flagged_contaminated
    assert 0.10 < dirty < 0.25
    assert f.let_back["cirrus"] > 5 * f.let_back["shadow"] > 0 and f.let_back["cloud"] < 10
    assert 0.02 < f.glacier_b3_error < 0.1  # what cirrus does to a glacier's B3


def test_without_the_rule_cloud_score_eats_that_snow(scene):
    off = RecipeConfig(2018, snow_ndsi_min=1.01)  # NDSI never reaches it
    f = measure_snow_rule(off, scene, step=4)
    assert f.restored_clean == 0 and sum(f.let_back.values()) == 0
