"""`train predict` by one process against `torchrun --nproc_per_node N` processes on the CPU,
side by side in one run: wall seconds of each whole command (start, model, blending, writing,
assembly and outlines), the ratio, and whether the probability rasters are equal bit for bit.

Fair on a machine of C cores: every run gets all C, as threads or as processes. The one
process runs with OMP_NUM_THREADS=C, each of the N processes with C / N (torchrun's own
default is 1); a one-process run with C / N threads is timed as well, which is the same
per-process setting as the sharded run's.

The checkpoint is an untrained model of the chosen preset and the stack a smooth field (as in
bench_predict.py): throughput does not depend on the weights.

    .venv/bin/python benchmarks/bench_predict_ranks.py [--size 1536] [--preset tiny]
        [--window 256] [--nproc 2] [--cores 2]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_predict import make_checkpoint  # noqa: E402
from bench_tile import make_stack  # noqa: E402

BIN = Path(sys.executable).parent


def timed(cmd: list[str], threads: int) -> tuple[float, float]:
    """Wall seconds of one command with `threads` OpenMP threads per process: in all, and
    until it starts on the outlines (start-up and the probability raster)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env=env)
    lines, raster = [], float("nan")
    for line in p.stdout:
        lines.append(line)
        if line.startswith("polygonizing"):
            raster = time.perf_counter() - t
    if p.wait() != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{''.join(lines)[-4000:]}")
    return time.perf_counter() - t, raster


def ideal(size: int, window: int, nproc: int) -> str:
    """How the rows of windows split: the one process's against the largest share's (with
    the rows above it that it runs again), the best a sharded probability stage can do."""
    from training.predict import row_shares, window_rows

    step = window - window // 4
    rows = [len(window_rows(size, window, step, s)) for s in row_shares(size, window, step,
                                                                       nproc)]
    whole = len(window_rows(size, window, step, (0, size)))
    return (f"{whole} in one process, {' + '.join(map(str, rows))} in {nproc}: at best "
            f"{whole / max(rows):.2f}x for that stage")


def probability(ws: Path, name: str):
    import rasterio

    with rasterio.open(ws / "predictions" / "bench" / name / "probability.tif") as f:
        return f.read()


def main() -> None:
    import numpy as np

    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=3072)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeat", type=int, default=3, help="Rounds, each running every "
                    "setting once in turn; the median is reported.")
    a = ap.parse_args()
    per = max(1, a.cores // a.nproc)
    settings = {"one": ("1 process", a.cores, False), "one-thin": ("1 process", per, False),
                "ranks": (f"{a.nproc} processes", per, True)}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "bench").mkdir()
        ckpt = make_checkpoint(Path(tmp) / "bench" / "model.pt", a.preset, a.window)
        ws, exp = make_stack(Path(tmp), a.size, smooth=True)
        args = ["predict", "--checkpoint", str(ckpt), "--export", str(exp), "--workspace",
                str(ws), "--device", "cpu", "--quiet"]
        launch = {False: [str(BIN / "train")],
                  True: [str(BIN / "torchrun"), "--standalone", "--nproc_per_node",
                         str(a.nproc), str(BIN / "train")]}
        print(f"preset {a.preset}, window {a.window} px, scene {a.size}x{a.size} px, "
              f"{a.cores} cores, load average before {os.getloadavg()[0]:.2f}; median of "
              f"{a.repeat} rounds")
        seconds: dict[str, list[tuple[float, float]]] = {k: [] for k in settings}
        for i in range(a.repeat):
            for key, (_, threads, ranks) in settings.items():
                seconds[key].append(timed([*launch[ranks], *args, "--name", f"{key}-{i}"],
                                          threads))
        med = {k: float(np.median([s for s, _ in v])) for k, v in seconds.items()}
        print(f"{'':>25} {'total s':>8} {'to outlines s':>14}  (each round's total)")
        for key, (label, threads, _) in settings.items():
            raster = float(np.median([r for _, r in seconds[key]]))
            print(f"{label:>12} x {threads} thread(s): {med[key]:8.1f} {raster:14.1f}  "
                  f"({', '.join(f'{s:.1f}' for s, _ in seconds[key])})")
        print(f"rows of windows: {ideal(a.size, a.window, a.nproc)}")
        print(f"{a.nproc} processes against 1 process of {a.cores} threads: "
              f"{med['one'] / med['ranks']:.2f}x as fast; against 1 process of {per} "
              f"thread(s): {med['one-thin'] / med['ranks']:.2f}x")
        ranks = probability(ws, "ranks-0")
        for key in ("one", "one-thin"):
            same = np.array_equal(probability(ws, f"{key}-0"), ranks, equal_nan=True)
            print(f"probability.tif of 1 process x {settings[key][1]} thread(s) "
                  f"{'equals' if same else 'differs from'} the {a.nproc} processes' bit for bit")


if __name__ == "__main__":
    main()
