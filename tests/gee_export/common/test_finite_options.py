"""Every float option of every command refuses nan and inf when the command line is parsed, in
one line naming the option (a learning rate of nan used to reach the optimizer)."""
from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from gee_export.common.cli import COMMANDS, FiniteFloat, prep, train

GROUPS = {"prep": prep, "train": train}


def float_options() -> list[tuple[str, str, click.Option]]:
    """(group, command, option) for every option that takes a number with a fraction."""
    found = []
    for group, names in COMMANDS.items():
        for name in names:
            cmd = GROUPS[group].get_command(None, name)
            found += [(group, name, p) for p in cmd.params if isinstance(p, click.Option)
                      and isinstance(p.type, click.types.FloatParamType)]
    return found


def test_the_float_options_are_found():
    names = {(c, p.opts[0]) for _, c, p in float_options()}
    assert {("run", "--lr"), ("run", "--weight-decay"), ("export", "--bbox"),
            ("predict", "--threshold"), ("tile", "--val-fraction")} <= names


@pytest.mark.parametrize("group,command,option", float_options(),
                         ids=lambda v: v.opts[0] if isinstance(v, click.Option) else v)
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_every_float_option_refuses_non_finite_values(group, command, option, value):
    required = ["--year", "2018"] if command == "export" else []  # checked before the rest
    args = [command, *required, option.opts[0]] + [value] * option.nargs
    res = CliRunner().invoke(GROUPS[group], args)
    assert res.exit_code == 2, res.output
    assert res.output.strip().splitlines() == [
        f"Error: Invalid value for '{option.opts[0]}': '{value}' is not a finite number"]


def test_bounds_still_hold_and_help_shows_them():
    t = FiniteFloat(0, 1, min_open=True)
    assert t.convert("0.5", None, None) == 0.5
    with pytest.raises(click.BadParameter, match="not in the range 0<x<=1"):
        t.convert("1.5", None, None)
    assert FiniteFloat()._describe_range() == ""
