"""A default that several commands and configurations share is one named number: the paper's
minimum glacier area (gee_export.common.outlines.MIN_GLACIER_AREA_KM2) and the distance at
which predicted ice still counts for a glacier (training.zones.ZONE_BUFFER_M), wherever an
option or a configuration defaults to them."""
from __future__ import annotations

import click
import pytest

from gee_export.common.outlines import MIN_GLACIER_AREA_KM2
from tiling import cli as tiling_cli
from tiling.tiles import TileConfig
from training import cli as training_cli
from training.change import DETECTION_LIMIT_KM2, ChangeConfig
from training.evaluation import EvalConfig
from training.predict import PredictConfig
from training.zones import ZONE_BUFFER_M


def _default(command: click.Command, option: str):
    return next(p.default for p in command.params if option in p.opts)


@pytest.mark.parametrize("command", [tiling_cli.tile, training_cli.predict,
                                     training_cli.evaluate], ids=lambda c: c.name)
def test_every_min_area_option_defaults_to_the_papers_minimum_glacier_area(command):
    assert _default(command, "--min-area") == MIN_GLACIER_AREA_KM2


def test_every_configuration_takes_the_same_minimum_glacier_area():
    assert TileConfig().min_area_km2 == PredictConfig().min_area_km2 == \
        EvalConfig().min_area_km2 == MIN_GLACIER_AREA_KM2
    # a glacier's vanished year: ice under half the minimum area can go unseen
    assert DETECTION_LIMIT_KM2 == MIN_GLACIER_AREA_KM2 / 2


@pytest.mark.parametrize("command", [training_cli.evaluate, training_cli.change],
                         ids=lambda c: c.name)
def test_every_zone_buffer_defaults_to_the_zones_own(command):
    assert _default(command, "--zone-buffer") == ZONE_BUFFER_M
    assert EvalConfig().zone_buffer_m == ChangeConfig().zone_buffer_m == ZONE_BUFFER_M
