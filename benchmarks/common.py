"""Shared by the benchmark scripts: run one measured job in a fresh subprocess, so each gets
its own peak-memory figure.

Peak memory is VmHWM from /proc/self/status, not getrusage's ru_maxrss: on Linux ru_maxrss
survives fork and exec, so a child started by a parent that had just generated a big scene
would report the parent's peak (an earlier version of these scripts was fooled by that)."""
from __future__ import annotations

import json
import resource
import subprocess
import sys
import time


def child_main(jobs: dict, argv: list[str]) -> None:
    """In the subprocess: run jobs[argv[0]](*argv[1:]) and print seconds, peak RSS and any
    figures the job returns, as one JSON line."""
    t = time.perf_counter()
    extra = jobs[argv[0]](*argv[1:]) or {}
    print(json.dumps({"seconds": time.perf_counter() - t,
                      "peak_mb": peak_rss_mb(),
                      "worker_peak_mb": worker_peak_mb(),
                      **extra}))


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB (Linux VmHWM; ru_maxrss elsewhere)."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker_peak_mb() -> float:
    """The largest peak RSS of any worker process this process started and reaped (0 when it
    started none): with N workers, total memory is about the parent's peak + N times this."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def run_child(script: str, *args, env: dict | None = None) -> dict:
    out = subprocess.run([sys.executable, script, "--child", *map(str, args)],
                         capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"benchmark child {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])
