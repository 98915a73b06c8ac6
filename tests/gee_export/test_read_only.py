"""A read-only workspace: reruns that have nothing to do, `prep status` and `prep tile
--verify` of intact tiles read only, so they work without the write lock."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from gee_export.common.cli import prep

EXPORT = ["export", "--region", "demo", "--year", "2018", "--demo-size", "512", "--cell-size",
          "256", "--quiet"]
TILE = ["tile", "--size", "128", "--block-tiles", "1", "--quiet"]


def _reads(ws: Path) -> dict[str, str]:
    """Every read-only command on `ws`, each of which must succeed: name -> output."""
    exp = ws / "exports" / "demo-2018"
    out = {}
    for what, args in (("export", EXPORT), ("status", ["status", "--export", str(exp)]),
                       ("pull", ["pull", "--export", str(exp)]),
                       ("tile", TILE + ["--export", str(exp)]),
                       ("verify", ["tile", "--verify", "--quiet"])):
        res = CliRunner().invoke(prep, args + ["--workspace", str(ws)])
        assert res.exit_code == 0, f"{what}: {res.output}"
        out[what] = res.output
    assert "nothing to do" in out["export"] and "complete, " in out["status"]
    assert "nothing to pull" in out["pull"]
    assert "nothing to do" in out["tile"] and "files match their checksums" in out["verify"]
    return out


@pytest.fixture
def read_only_mount(tmp_path):
    """A tmpfs that can be made read-only (root with CAP_SYS_ADMIN), else a skip."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs",
                                            str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root); the injected EROFS test covers it")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_a_read_only_workspace_reruns_and_shows_status(demo_tiles, read_only_mount):
    ws = read_only_mount / "ws"
    shutil.copytree(demo_tiles[0], ws, ignore=shutil.ignore_patterns("runs", "predictions"))
    subprocess.run(["mount", "-o", "remount,ro", str(read_only_mount)], check=True)
    with pytest.raises(OSError, match="Read-only file system"):
        (ws / "probe").write_text("")
    _reads(ws)
    res = CliRunner().invoke(prep, EXPORT[:4] + ["2021"] + EXPORT[5:] + ["--workspace", str(ws)])
    assert res.exit_code == 1 and "read-only file system" in res.output  # real work: one line


def test_reads_take_no_lock(demo_tiles, tmp_path, monkeypatch):
    """The same without a mount: every lock fails as on a read-only file system (EROFS)."""
    import errno

    from gee_export.common import atomic, locks

    ws = tmp_path / "ws"
    shutil.copytree(demo_tiles[0], ws, ignore=shutil.ignore_patterns("runs", "predictions"))

    def refused(directory, *a, **kw):
        raise atomic.write_error(locks.lock_path(directory),
                                 OSError(errno.EROFS, "Read-only file system"))

    import gee_export.local_export

    for module in (locks, gee_export.local_export):  # stages lock through locks
        monkeypatch.setattr(module, "output_lock", refused)
    _reads(ws)
