"""A full disk is one line, 'cannot write FILE: no space left on device', in every stage that
writes rasters: libtiff's own lines ("_tiffWriteProc: No space left on device.") do not reach
stderr before it. Checked on a real small file system (tmpfs) where the machine allows it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PREP = Path(sys.executable).with_name("prep")
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def small(tmp_path):
    """Mount a tmpfs of the given size at a path; unmounted after the test."""
    mounted = []

    def mount(where: Path, size: str) -> None:
        where.mkdir(parents=True, exist_ok=True)
        if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True).returncode:
            pytest.skip("this machine does not allow mounting a small file system (tmpfs)")
        mounted.append(where)

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["export", "tile"])
def test_a_full_disk_is_one_line_naming_the_file(demo_export, tmp_path, small, stage):
    _, exp = demo_export
    if stage == "export":
        small(tmp_path / "exports", "2m")  # the sources fit beside it, the stack does not
        args = ["export", "--region", "demo", "--year", "2018", "--demo-size", "512",
                "--cell-size", "256"]
    else:
        small(tmp_path / "tiles", "400k")
        args = ["tile", "--export", str(exp), "--size", "128", "--block-tiles", "1"]
    res = subprocess.run([str(PREP), *args, "--workspace", str(tmp_path), "--quiet"],
                         capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 1
    assert res.stderr.count("\n") == 1, res.stderr
    assert res.stderr.startswith(f"Error: cannot write {tmp_path}/")
    assert res.stderr.rstrip().endswith(".tif: no space left on device")


def test_a_full_disk_no_file_is_named_for_names_the_workspace(tmp_path):
    """GDAL's last error may not say why ("TIFFAppendToStrip:Write error at scanline 0"):
    libtiff's kept lines do, and the line names the workspace."""
    from gee_export.common import gdal_errors
    from gee_export.common.cli import failure_line

    gdal_errors.clear_messages()
    error = RuntimeError("TIFFAppendToStrip:Write error at scanline 0")
    assert failure_line(error, tmp_path).startswith("unexpected RuntimeError")
    gdal_errors._MESSAGES.append("_tiffWriteProc: No space left on device")
    try:
        assert failure_line(error, tmp_path) == (f"cannot write under {tmp_path}: no space "
                                                 "left on device")
    finally:
        gdal_errors.clear_messages()
