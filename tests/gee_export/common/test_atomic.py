"""A full disk or a read-only workspace, simulated by failing the rename that completes every
output: each command ends in one line naming the file, leaves no partial file and no product
marked complete, and the same command succeeds once the disk is writable again."""
from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from gee_export.common.atomic import PARTIAL_MARK
from gee_export.common.cli import prep, train

COMMANDS = {
    "export": (prep, "export --region demo --year 2018 --demo-size 512 --cell-size 256 "
                     "--name again"),
    "tile": (prep, "tile --export {ws}/exports/demo-2018 --size 128 --block-tiles 1 "
                   "--name again"),
    "run": (train, "run --tiles {ws}/tiles/demo-2018 --preset tiny --epochs 1 --batch-size 4 "
                   "--name again"),
    "predict": (train, "predict --checkpoint {ws}/runs/tiny-fixture/best.pt "
                       "--export {ws}/exports/demo-2018 --name again"),
    "evaluate": (train, "evaluate --prediction {ws}/predictions/tiny-fixture/base"),
}
REASONS = {errno.ENOSPC: "no space left on device", errno.EROFS: "read-only file system"}


@pytest.fixture(scope="module")
def workspace(tiny_run, tmp_path_factory) -> Path:
    """A copy of the fixture workspace (export, tiles, a run) with one prediction."""
    ws = tmp_path_factory.mktemp("faults") / "ws"
    shutil.copytree(tiny_run[0], ws, ignore=shutil.ignore_patterns("predictions"))
    res = CliRunner().invoke(train, ["predict", "--checkpoint", str(ws / "runs" / "tiny-fixture"
                                                                   / "best.pt"),
                                     "--export", str(ws / "exports" / "demo-2018"),
                                     "--name", "base", "--workspace", str(ws), "--quiet"])
    assert res.exit_code == 0, res.output
    return ws


def complete_manifests(ws: Path) -> set[str]:
    out = set()
    for p in ws.rglob("*.json"):
        try:
            if json.loads(p.read_text()).get("complete"):
                out.add(str(p.relative_to(ws)))
        except (ValueError, AttributeError):
            pass
    return out


def invoke(ws: Path, command: str):
    group, args = COMMANDS[command]
    argv = args.format(ws=ws).split() + ["--quiet"] * (command != "evaluate")
    if command != "evaluate":
        argv += ["--workspace", str(ws)]
    return CliRunner().invoke(group, argv)


@pytest.mark.parametrize("code", sorted(REASONS), ids=["ENOSPC", "EROFS"])
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_failed_write_is_one_line_and_the_rerun_completes(command, code, workspace,
                                                            monkeypatch):
    ws = workspace
    done_before = complete_manifests(ws)
    real_replace = os.replace

    def failing_replace(src, dst, *a, **kw):
        if str(dst).startswith(str(ws)):
            raise OSError(code, os.strerror(code), str(dst))
        return real_replace(src, dst, *a, **kw)

    monkeypatch.setattr(os, "replace", failing_replace)
    res = invoke(ws, command)
    monkeypatch.undo()
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output
    errors = [ln for ln in res.output.splitlines() if ln.startswith("Error: ")]
    assert len(errors) == 1 and errors[0].startswith(f"Error: cannot write {ws}"), res.output
    assert errors[0].endswith(REASONS[code]), errors[0]
    assert not [p for p in ws.rglob("*") if PARTIAL_MARK in p.name]
    assert complete_manifests(ws) == done_before  # nothing claims to be complete
    again = invoke(ws, command)  # the disk has room again: the same command completes
    assert again.exit_code == 0, again.output
    shutil.rmtree(ws / "exports" / "again", ignore_errors=True)
    shutil.rmtree(ws / "tiles" / "again", ignore_errors=True)
    shutil.rmtree(ws / "runs" / "again", ignore_errors=True)
    shutil.rmtree(ws / "predictions" / "tiny-fixture" / "again", ignore_errors=True)
    for f in ("report.json", "agreement.png"):
        (ws / "predictions" / "tiny-fixture" / "base" / f).unlink(missing_ok=True)


def test_partial_files_a_killed_writer_left_are_removed_and_nothing_else(tmp_path):
    from gee_export.common.atomic import partial_path, remove_partials

    keep = [tmp_path / "a.tif", tmp_path / ".a.lock", tmp_path / "sub" / ".hidden.tif",
            tmp_path / "sub" / "x.partial.tif"]
    left = [partial_path(tmp_path / "a.tif"), tmp_path / "sub" / ".b.4242.partial.tif",
            tmp_path / "sub" / "deeper" / ".m.77.partial.json",
            tmp_path / ".i.9.partial.gpkg-journal"]
    for p in keep + left:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    assert remove_partials(tmp_path) == len(left)
    assert all(p.is_file() for p in keep) and not any(p.exists() for p in left)
    assert remove_partials(tmp_path / "nowhere") == 0
