"""`train predict` on generated stacks of two sizes 4x apart in area: km^2 per minute and
peak memory, each size in its own subprocess (probability raster and outlines timed apart).
Targets: peak memory that does not grow with the scene, and a probability stage that costs at
most 1.3x the model's own forward passes.

The overhead ratio is measured in the same subprocess: every batch the model sees during the
prediction is recorded (its shape), then the same batches are run through the same model
function again on their own (pre-made inputs, no reading, blending or writing). Ratio =
probability stage time / that forward-only time.

The checkpoint is an untrained model of the chosen preset (throughput does not depend on the
weights); the stacks are smooth fields so the outlines stage has realistic work.

    .venv/bin/python benchmarks/bench_predict.py [--sizes 2048 4096] [--preset tiny]
        [--window 256] [--device auto]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_tile import make_stack  # noqa: E402
from common import child_main, run_child  # noqa: E402


def make_checkpoint(path: Path, preset: str, window: int) -> Path:
    import torch

    from gee_export.common.bands import BAND_NAMES
    from gee_export.config import Normalization
    from training.models import build_model
    from training.runtime import save_checkpoint

    torch.manual_seed(0)
    model = build_model("lgt-unet", preset, len(BAND_NAMES))
    meta = {"model": "lgt-unet", "preset": preset, "band_names": list(BAND_NAMES),
            "bands": "ABCD", "tile_size": window, "num_classes": 2,
            "export_normalization": Normalization.fixed().to_dict(),
            "norm_stats": {"bands": list(BAND_NAMES), "mean": [0.5] * 11, "std": [0.25] * 11}}
    save_checkpoint(path, {"model_state": model.state_dict(), "meta": meta})
    return path


def predict(ws: str, exp: str, ckpt: str, device: str, window: str):
    import numpy as np
    import rasterio

    import training.predict as P
    import training.predict.model as M

    shapes, model_fns = [], []
    made = M.torch_model_fn

    def recording_model_fn(*args, **kwargs):
        fn = made(*args, **kwargs)
        model_fns.append(fn)

        def recorded(x):
            shapes.append(x.shape)
            return fn(x)
        return recorded

    M.torch_model_fn = recording_model_fn
    t = time.perf_counter()
    times = {}
    out = P.predict(Path(ckpt), Path(exp), Path(ws), P.PredictConfig(device=device,
                                                                    window=int(window)),
                    quiet=True, echo=lambda m: times.setdefault(m, time.perf_counter() - t))
    with rasterio.open(out / "probability.tif") as f:
        km2 = f.width * f.height * abs(f.res[0] * f.res[1]) / 1e6
    rng = np.random.default_rng(0)
    inputs = {s: rng.random(s, dtype=np.float32) for s in set(shapes)}  # one per shape
    t = time.perf_counter()
    for s in shapes:
        model_fns[0](inputs[s])
    forward_s = time.perf_counter() - t
    return {"km2": km2, "probability_s": times.get("polygonizing"), "forward_s": forward_s,
            "batches": len(shapes)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs=2, default=[2048, 4096])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--child", nargs="+")
    a = ap.parse_args()
    if a.child:
        return child_main({"predict": predict}, a.child)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = make_checkpoint(Path(tmp) / "model.pt", a.preset, a.window)
        print(f"preset {a.preset}, window {a.window} px, overlap {a.window // 4} px")
        print(f"{'scene':>11} {'km^2':>7} {'total s':>8} {'prob. s':>8} {'forward s':>9} "
              f"{'prob/fwd':>8} {'km^2/min':>9} {'peak MB':>8}")
        for size in a.sizes:
            ws, exp = make_stack(Path(tmp), size, smooth=True)
            r = run_child(__file__, "predict", ws, exp, ckpt, a.device, a.window)
            print(f"{size:>5}x{size:<5} {r['km2']:7.1f} {r['seconds']:8.1f} "
                  f"{r['probability_s']:8.1f} {r['forward_s']:9.1f} "
                  f"{r['probability_s'] / r['forward_s']:7.2f}x "
                  f"{60 * r['km2'] / r['seconds']:9.1f} {r['peak_mb']:8.0f}")


if __name__ == "__main__":
    main()
