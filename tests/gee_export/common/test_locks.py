"""One writer per output directory, checked with real processes: a second run refuses at once
naming the holder, or waits; other outputs proceed; a killed holder's lock is taken over."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from gee_export.common.cli import prep
from gee_export.common.errors import BusyError
from gee_export.common.locks import lock_path, output_lock

HOLD = """
import sys
from gee_export.common.locks import output_lock
with output_lock(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.readline()
"""


def hold(directory: Path) -> subprocess.Popen:
    """Another process that holds the lock on `directory` until its stdin gets a line."""
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(directory)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True,
                         cwd=Path(__file__).resolve().parents[3])
    assert p.stdout.readline().strip() == "held"
    return p


def release(p: subprocess.Popen) -> None:
    p.stdin.write("go\n")
    p.stdin.flush()
    p.wait(timeout=30)


def test_a_second_writer_is_refused_at_once_naming_the_holder(tmp_path):
    out = tmp_path / "tiles" / "demo-2018"
    holder = hold(out)
    try:
        t = time.perf_counter()
        with pytest.raises(BusyError, match=f"being written by process {holder.pid} "):
            with output_lock(out):
                pass
        assert time.perf_counter() - t < 1
        with output_lock(tmp_path / "tiles" / "demo-2019"):  # another output: no wait
            pass
    finally:
        release(holder)
    with output_lock(out):  # released: free again
        pass
    assert not lock_path(out).exists()  # nothing left beside the outputs


def test_the_cli_says_so_in_one_line(demo_export):
    ws, exp = demo_export
    holder = hold(ws / "tiles" / "locked")
    try:
        res = CliRunner().invoke(prep, ["tile", "--export", str(exp), "--workspace", str(ws),
                                        "--name", "locked", "--quiet"])
    finally:
        release(holder)
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert res.output.startswith("Error: ") and f"process {holder.pid}" in res.output
    assert "--wait" in res.output and len(res.output.strip().splitlines()) == 1
    assert not (ws / "tiles" / "locked").exists()


def test_wait_takes_over_when_the_holder_finishes(tmp_path):
    out = tmp_path / "runs" / "a"
    holder = hold(out)
    threading.Timer(1.0, release, [holder]).start()
    said = []
    t = time.perf_counter()
    with output_lock(out, wait=True, echo=said.append):
        assert time.perf_counter() - t >= 0.9
        assert "waiting for process" in said[0]
        # The waiter woke on the file its holder removed and moved to the path's new one:
        # a third process is refused, so it really holds the lock.
        third = subprocess.run([sys.executable, "-c", HOLD, str(out)], capture_output=True,
                               text=True, input="", cwd=Path(__file__).resolve().parents[3])
        assert "BusyError" in third.stderr


def test_a_killed_holders_lock_is_taken_over(tmp_path):
    out = tmp_path / "predictions" / "run" / "demo-2018"
    holder = hold(out)
    holder.kill()
    holder.wait(timeout=30)
    assert lock_path(out).exists()  # left behind by the kill...
    with output_lock(out):  # ...and simply taken over
        pass
