"""Workers die with their parent: kill -9 the parent of a pool and its workers are gone
within seconds instead of waiting on a pipe forever."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gee_export.common.errors import InputError
from gee_export.common.workers import WorkerPool, cpu_workers

PARENT = """
import os, sys, time
from gee_export.common.workers import WorkerPool

def pid(_):
    time.sleep(0.2)
    return os.getpid()

if __name__ == "__main__":
    with WorkerPool(2) as pool:
        pids = {p for _, p in pool.map(pid, range(8))}
        print(" ".join(map(str, sorted(pids))), flush=True)
        time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead too
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_workers_exit_when_the_parent_is_killed(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[3],
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve()
                                                                    .parents[3])})
    workers = [int(p) for p in parent.stdout.readline().split()]
    assert len(workers) == 2 and all(alive(p) for p in workers)
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=30)
    deadline = time.time() + 10
    while time.time() < deadline and any(alive(p) for p in workers):
        time.sleep(0.1)
    survivors = [p for p in workers if alive(p)]
    for p in survivors:
        os.kill(p, signal.SIGKILL)
    assert not survivors, "workers outlived their killed parent"


def test_one_worker_runs_in_process_and_auto_uses_the_cpus():
    with WorkerPool(1) as pool:
        assert [r for _, r in pool.map(abs, [-1, -2])] == [1, 2]
    assert cpu_workers(3) == 3
    # a number of processes that could only exhaust memory: refused, naming the option
    most = 4 * len(os.sched_getaffinity(0))
    assert cpu_workers(most) == most
    with pytest.raises(InputError, match=rf"--workers {most + 1}: .*at most {most}"):
        cpu_workers(most + 1)
    assert 1 <= cpu_workers("auto") <= min(8, len(os.sched_getaffinity(0)))


@pytest.mark.parametrize("group,command", [("prep", "tile"), ("train", "run"),
                                           ("train", "compare")])
def test_a_number_of_processes_past_the_machine_is_refused_naming_it(group, command, tmp_path,
                                                                     cli):
    """issue 31, item 3: options that size memory are bounded by what the machine can use."""
    from gee_export.common import cli as commands

    res = cli(getattr(commands, group), [command, "--workers", 10**6, "--workspace", tmp_path],
              ok=False)
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and "'--workers'" in lines[0] and \
        "at most" in lines[0], res.output
    assert not list(tmp_path.iterdir())
