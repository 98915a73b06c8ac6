"""Exact resume on the device (issue 22, item 5), without tiles: the trainer's own train_step
and checkpoint helpers (rng_states, save_checkpoint, load_checkpoint onto the device as
`train run` loads it, restore_rng_states) on synthetic batches, for lgt-unet (its Dropout2d
draws from the device's generator).

Per mode, the weights after 2k steps of an unbroken run are compared with
- a second unbroken run (the run-to-run floor: 0 when every kernel is deterministic);
- a run stopped after k steps, checkpointed, and resumed in a new model after the process's
  random states were moved elsewhere (what `train run` does);
- the same resume without the device's generator state (checkpoints before issue 22), which
  shows that the check can see a missing state.
Modes: default (fastest kernels), det (`train run --deterministic`: an operation without a
deterministic kernel stops it, and is named), det-warn (deterministic kernels where torch has
them, a warning for the others). Each mode runs in its own process, since the switches are
process-wide and cuBLAS reads its workspace setting once.

    python3 benchmarks/resume_check.py [--preset tiny] [--px 128] [--batch 4] [--steps 3]
        [--modes default det det-warn] [--device auto]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, without installing it

N_BANDS = 11


def _batch(i: int, batch: int, px: int, device):
    """The i-th batch: the same in every run, drawn from its own generator."""
    import torch

    g = torch.Generator().manual_seed(1000 + i)
    x = torch.randn(batch, N_BANDS, px, px, generator=g)
    y = (torch.rand(batch, px, px, generator=g) < 0.4).long()
    return x.to(device), y.to(device)


def _train(a, device, mode: str, resume: str | None, tmp: Path) -> dict:
    """Weights after 2 x a.steps steps; resume: None, 'exact' or 'without-device-rng'."""
    import torch

    from training.models import build_model
    from training.runtime import (
        Processes,
        fast_matmul,
        load_checkpoint,
        prepared,
        restore_rng_states,
        rng_states,
        save_checkpoint,
    )
    from training.trainer import train_step

    def build():
        model = prepared(build_model("lgt-unet", a.preset, N_BANDS), device).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=2 * a.steps)
        return model, opt, sched, torch.amp.GradScaler(device.type, enabled=False)

    torch.manual_seed(0)  # seeds the CPU and every GPU, as train run's --seed
    model, opt, sched, scaler = build()
    with fast_matmul(device):  # TF32 on CUDA, as train run
        for i in range(2 * a.steps):
            if i == a.steps and resume:
                ck = {"model_state": model.state_dict(), "optimizer": opt.state_dict(),
                      "scheduler": sched.state_dict(), "scaler": scaler.state_dict(),
                      **rng_states(device, Processes())}
                save_checkpoint(tmp / "last.pt", ck)
                torch.manual_seed(12345)  # a new process: its generators are elsewhere
                model, opt, sched, scaler = build()
                ck = load_checkpoint(tmp / "last.pt", map_location=device)
                model.load_state_dict(ck["model_state"])
                opt.load_state_dict(ck["optimizer"])
                sched.load_state_dict(ck["scheduler"])
                scaler.load_state_dict(ck["scaler"])
                if resume == "exact":
                    note = restore_rng_states(ck, device, Processes())
                    assert note is None, note
                else:
                    torch.set_rng_state(ck["torch_rng"].cpu())
            x, y = _batch(i, a.batch, a.px, device)
            train_step(model, x, y, opt, sched, scaler, None)
    return {k: v.detach().float().cpu() for k, v in model.state_dict().items()}


def _max_diff(p: dict, q: dict) -> float:
    return max((p[k] - q[k]).abs().max().item() for k in p)


def mode_child(a, mode: str) -> dict:
    import time

    import torch

    from training.runtime import resolve_device, set_deterministic

    device = resolve_device(a.device)
    set_deterministic(mode != "default", device)  # before CUDA starts, as train run
    if mode == "det-warn":
        torch.use_deterministic_algorithms(True, warn_only=True)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        try:
            ref = _train(a, device, mode, None, Path(tmp))
        except RuntimeError as e:  # an operation without a deterministic kernel
            return {"error": str(e).strip().splitlines()[0][:200]}
        seconds = time.perf_counter() - t
        again = _train(a, device, mode, None, Path(tmp))
        exact = _train(a, device, mode, "exact", Path(tmp))
        without = _train(a, device, mode, "without-device-rng", Path(tmp))
    return {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "floor": _max_diff(ref, again), "resumed": _max_diff(ref, exact),
            "without_device_rng": _max_diff(ref, without), "seconds": seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--px", type=int, default=128)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3, help="k: steps before and after the stop")
    ap.add_argument("--modes", nargs="+", default=["default", "det", "det-warn"])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--child", default=None)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(mode_child(a, a.child)))
        return
    print(f"exact resume: lgt-unet {a.preset}, {a.px} px, batch {a.batch}, stopped after "
          f"{a.steps} of {2 * a.steps} steps; max |weight difference| from an unbroken run")
    for mode in a.modes:
        out = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--child", mode],
                             capture_output=True, text=True)
        if out.returncode != 0:
            print(f"{mode:<9} failed: {out.stderr.strip().splitlines()[-1][:200]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        if "error" in r:
            print(f"{mode:<9} stopped: {r['error']}")
            continue
        print(f"{mode:<9} on {r['device']}: another unbroken run {r['floor']:.3g} | resumed "
              f"{r['resumed']:.3g} | resumed without the device's random state "
              f"{r['without_device_rng']:.3g} ({r['seconds']:.1f} s per run)", flush=True)


if __name__ == "__main__":
    main()
