"""A command that picks its input by default says which, in one line, before anything else."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from gee_export.common.cli import prep, train


def _product(ws, parent, name, kind, completed_at, **fields):
    d = ws / parent / name
    d.mkdir(parents=True)
    manifest = {"export": "export.json", "tiles": "manifest.json"}[kind]
    (d / manifest).write_text(json.dumps({"format_version": 1, "kind": kind, "complete": True,
                                          "completed_at": completed_at, **fields}))
    return d


@pytest.mark.parametrize("group,args,parent,kind,option", [
    (train, ["run", "--preset", "tiny"], "tiles", "tiles", "--tiles"),
    (train, ["compare", "--models", "unet"], "tiles", "tiles", "--tiles"),
    (prep, ["tile"], "exports", "export", "--export"),
])
def test_the_newest_complete_input_is_named(tmp_path, group, args, parent, kind, option):
    older = _product(tmp_path, parent, "b-older", kind, "2030-01-02T00:00:00+00:00")
    newer = _product(tmp_path, parent, "a-newer", kind, "2030-01-03T00:00:00+00:00")
    _product(tmp_path, parent, "c-unfinished", kind, None).joinpath(
        "export.json" if kind == "export" else "manifest.json").write_text(
        json.dumps({"format_version": 1, "kind": kind, "complete": False}))
    res = CliRunner().invoke(group, args + ["--workspace", str(tmp_path)])
    first = res.output.splitlines()[0]
    assert first == (f"{option}: {newer} (the newest complete {kind} of 2 in "
                     f"{tmp_path / parent}; give {option} to choose another)"), res.output
    assert str(older) not in res.output


@pytest.mark.parametrize("command", ["status", "pull"])
def test_status_and_pull_name_the_export_they_took(tmp_path, command):
    _product(tmp_path, "exports", "one", "export", None)
    res = CliRunner().invoke(prep, [command, "--workspace", str(tmp_path)])
    assert res.output.splitlines()[0] == (
        f"--export: {tmp_path / 'exports' / 'one'} (the most recently changed of 1 in "
        f"{tmp_path / 'exports'}; give --export to choose another)"), res.output
