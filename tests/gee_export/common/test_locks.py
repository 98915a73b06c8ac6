"""One writer per output directory, checked with real processes: a second run refuses at once
naming the holder, or waits; other outputs proceed; a killed holder's lock is taken over."""
from __future__ import annotations

import os
import signal
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


HOLD_AND_FORK = """
import multiprocessing as mp, sys, time
from gee_export.common.locks import output_lock

def child(started):
    started.set()  # the fork's handlers have run (a worker that is up, as a loader's is)
    time.sleep(60)

if __name__ == "__main__":
    mp.set_start_method("fork")
    with output_lock(sys.argv[1]):
        started = mp.Event()
        c = mp.Process(target=child, args=(started,))
        c.start()
        started.wait(60)
        print(c.pid, flush=True)
        sys.stdin.readline()
"""


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"  # a zombie is dead
    except OSError:
        return False


def test_a_forked_child_does_not_keep_its_killed_parents_lock(tmp_path):
    """A loader or pool worker is forked while its parent holds the lock; an flock belongs to
    the open file both share, so the child must not keep it after the parent is killed."""
    out = tmp_path / "runs" / "a"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_AND_FORK, str(out)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[3])
    child = int(holder.stdout.readline())
    try:
        holder.kill()
        holder.wait(timeout=30)
        assert _alive(child)  # the child lives on, as a loader worker may for a while...
        with output_lock(out):  # ...and yet the lock is free at once
            pass
    finally:
        os.kill(child, signal.SIGKILL)


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        return [int(p) for p in path.read_text().split()]
    except OSError:
        return []


@pytest.mark.slow
def test_a_train_run_killed_with_loader_workers_is_taken_over_at_once(demo_tiles, tmp_path):
    """The issue's case: `train run --workers 2` killed with SIGKILL, then rerun at once."""
    ws, tiles = demo_tiles
    train = Path(sys.executable).with_name("train")
    run = subprocess.Popen([str(train), "run", "--tiles", str(tiles), "--workspace", str(tmp_path),
                            "--preset", "tiny", "--epochs", "50", "--batch-size", "2",
                            "--workers", "2", "--device", "cpu", "--name", "k", "--quiet"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers = []
    try:
        deadline = time.time() + 120
        while len(workers) < 2 and time.time() < deadline and run.poll() is None:
            time.sleep(0.05)
            workers = _children(run.pid)
        assert len(workers) >= 2, "the loader workers did not start"
        run.kill()
        run.wait(timeout=30)
        with output_lock(tmp_path / "runs" / "k"):  # at once: no BusyError
            pass
        gone = time.time() + 3  # and its workers exit too (at once: test_loader_workers.py)
        while any(_alive(pid) for pid in workers) and time.time() < gone:
            time.sleep(0.05)
        assert not any(_alive(pid) for pid in workers)
    finally:
        run.kill()
        for pid in workers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_a_busy_message_suggests_wait_only_where_the_command_has_it(tmp_path):
    import click

    from gee_export.common.cli import LazyGroup, user_errors, wait_option

    out = tmp_path / "out"

    @click.command()
    @user_errors
    def plain():
        with output_lock(out):
            pass

    @click.command()
    @wait_option
    @user_errors
    def waiting(wait):
        with output_lock(out, wait):
            pass

    group = LazyGroup(commands={"plain": plain, "waiting": waiting})
    holder = hold(out)
    try:
        refused = {name: CliRunner().invoke(group, [name]).output for name in ("plain", "waiting")}
    finally:
        release(holder)
    for text in refused.values():
        assert len(text.strip().splitlines()) == 1
        assert text.startswith(f"Error: {out} is being written by process {holder.pid} ")
    assert refused["plain"].strip().endswith("; let it finish")
    assert refused["waiting"].strip().endswith("; let it finish, or rerun with --wait")


def test_train_run_offers_wait():
    from gee_export.common.cli import train

    assert "wait" in {p.name for p in train.get_command(None, "run").params}
