"""What several test modules share besides fixtures, imported as `tests.helpers` (a test
never imports a conftest): the size of the small demo scene and an in-process CLI runner."""
from __future__ import annotations

import numpy as np
from click.testing import CliRunner

from gee_export.config import Normalization

DEMO_TEST_SIZE = 512  # a quarter-width demo scene: seconds, not minutes


def invoke(cmd, args, ok=True):
    """Run a click command in-process with `args` (any values, passed as strings); with `ok`,
    fail the test with the command's output on a non-zero exit."""
    res = CliRunner().invoke(cmd, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert res.exit_code == 0, res.output
    return res


def physical(stack: np.ndarray, norm: Normalization) -> np.ndarray:
    """The physical values of a normalized (11, ...) stack, inside the ranges: the inverse of
    gee_export.config.normalize, which tests compare exports with; the toolkit never needs it."""
    lo, hi = norm.arrays()
    shape = (-1,) + (1,) * (stack.ndim - 1)
    return stack * (hi - lo).reshape(shape) + lo.reshape(shape)
