"""What `train run --deterministic` costs, timed side by side in one process: the modes take
turns every training step in a shuffled order (on a shared machine the load drifts, and
separate processes minutes apart differ by more than the effect), and each mode's median and
fastest step are compared with the default's. Modes: the default of `train run`, with
--deterministic, and with no deterministic algorithms at all (on the CPU the default already
uses them where torch has them). A mode that stops (an operation without a deterministic
kernel) is named with the operation.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_deterministic.py [--preset tiny]
        [--px 128] [--batch 4] [--steps 30] [--device auto]
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, without installing it


def main() -> None:
    import torch

    from training.models import build_model
    from training.runtime import fast_matmul, prepared, resolve_device, set_deterministic
    from training.trainer import train_step

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--px", type=int, default=128)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=30, help="timed steps per mode")
    ap.add_argument("--device", default="auto")
    a = ap.parse_args()
    device = resolve_device(a.device)
    set_deterministic(True, device)  # sets CUBLAS_WORKSPACE_CONFIG before CUDA starts
    torch.manual_seed(0)
    model = prepared(build_model("lgt-unet", a.preset, 11).train(), device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    x = torch.randn(a.batch, 11, a.px, a.px, device=device)
    y = torch.randint(0, 2, (a.batch, a.px, a.px), device=device)
    modes = {"train run (default)": lambda: set_deterministic(False, device),
             "--deterministic": lambda: set_deterministic(True, device),
             "no deterministic algorithms": lambda: torch.use_deterministic_algorithms(False)}
    times: dict[str, list[float]] = {m: [] for m in modes}
    stopped: dict[str, str] = {}
    order = random.Random(0)
    with fast_matmul(device):  # TF32 on CUDA, as train run
        for i in range(a.steps + 1):  # the first round warms up
            turn = [m for m in modes if m not in stopped]
            order.shuffle(turn)
            for m in turn:
                modes[m]()
                t = time.perf_counter()
                try:
                    train_step(model, x, y, opt, None, scaler, None)
                except RuntimeError as e:
                    stopped[m] = str(e).strip().splitlines()[0][:160]
                    continue
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                if i:
                    times[m].append(time.perf_counter() - t)
    where = f"{device.type}, {torch.get_num_threads()} thread(s)" if device.type == "cpu" \
        else torch.cuda.get_device_name(device)
    print(f"lgt-unet {a.preset}, {a.px} px, batch {a.batch}, {where}:")
    base = times["train run (default)"]
    for m, ts in times.items():
        if m in stopped:
            print(f"  {m:<28} stopped: {stopped[m]}")
            continue
        print(f"  {m:<28} median step {statistics.median(ts):.4f} s "
              f"({statistics.median(ts) / statistics.median(base):.3f}x the default), fastest "
              f"{min(ts):.4f} s ({min(ts) / min(base):.3f}x); {len(ts)} steps")


if __name__ == "__main__":
    main()
