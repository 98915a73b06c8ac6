"""Training throughput (tiles/s) and peak memory of the model presets on the current device,
and the data loader's tiles/s alone, so it is clear whether loading or compute limits
training. Each figure comes from its own subprocess. On CUDA each preset runs with AMP on and
off; peak memory is then the GPU's (torch.cuda.max_memory_allocated), else the process's RSS.

Tiles come from the demo pipeline (synthetic demo export, tiled at --tile-size), made once
and not timed.

    .venv/bin/python benchmarks/bench_train.py [--presets tiny paper] [--tile-size 256]
        [--batch-size 4] [--steps 8] [--device auto]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import child_main, run_child  # noqa: E402


def _dataset(tiles: str, split="train", augment=True):
    from gee_export.common.bands import parse_bands
    from gee_export.common.layout import read_manifest
    from training.data import NormStats, TileDataset

    bands = parse_bands("ABCD")
    stats = NormStats.from_manifest(read_manifest(Path(tiles), "tiles"), bands)
    return TileDataset(Path(tiles), split, bands, stats, augment=augment, seed=0), bands


def _loader(ds, batch_size, workers, device):
    from torch.utils.data import DataLoader

    return DataLoader(ds, batch_size, shuffle=True, num_workers=int(workers),
                      pin_memory=device.type == "cuda", persistent_workers=int(workers) > 0)


def loader(tiles: str, batch_size: str, workers: str, epochs: str):
    """Tiles per second delivered by the data loader alone (read, standardize, augment)."""
    import torch

    ds, _ = _dataset(tiles)
    dl = _loader(ds, int(batch_size), workers, torch.device("cpu"))
    n, t = 0, time.perf_counter()
    for e in range(int(epochs)):
        ds.set_epoch(e)
        for x, _ in dl:
            n += len(x)
    return {"tiles_per_s": n / (time.perf_counter() - t), "tiles": n}


def train(tiles: str, preset: str, batch_size: str, steps: str, device_name: str, amp: str):
    """Training steps on real tiles (loading included); the first step is warm-up."""
    import torch

    from training.models import build_model, count_parameters
    from training.trainer import amp_dtype_for, resolve_device, train_step

    device = resolve_device(device_name)
    torch.manual_seed(0)
    ds, bands = _dataset(tiles)
    dl = _loader(ds, int(batch_size), 2 if device.type == "cuda" else 0, device)
    model = build_model("lgt-unet", preset, len(bands)).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    amp_dtype = amp_dtype_for(device, amp == "on")
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    batches = []
    while len(batches) < int(steps) + 1:  # enough batches, cycling over the split
        batches.extend(dl)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    n, t = 0, None
    for i, (x, y) in enumerate(batches[:int(steps) + 1]):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        train_step(model, x, y, opt, None, scaler, amp_dtype)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i == 0:
            t = time.perf_counter()
        else:
            n += len(x)
    out = {"tiles_per_s": n / (time.perf_counter() - t), "device": str(device),
           "params_m": count_parameters(model) / 1e6,
           "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else "off"}
    if device.type == "cuda":
        out["gpu_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    return out


def make_tiles(root: Path, tile_size: int) -> Path:
    from click.testing import CliRunner

    from gee_export.common.cli import prep

    for args in (["export", "--region", "demo", "--year", "2018", "--demo-size", "1024",
                  "--quiet"],
                 ["tile", "--size", str(tile_size), "--block-tiles", "1", "--quiet"]):
        res = CliRunner().invoke(prep, args + ["--workspace", str(root)])
        if res.exit_code != 0:
            raise SystemExit(res.output)
    return next((root / "tiles").iterdir())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", nargs="+", default=["tiny", "paper"])
    ap.add_argument("--tile-size", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--child", nargs="+")
    a = ap.parse_args()
    if a.child:
        return child_main({"loader": loader, "train": train}, a.child)
    import torch

    cuda = a.device != "cpu" and torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as tmp:
        tiles = make_tiles(Path(tmp), a.tile_size)
        print(f"tiles {a.tile_size} px, batch {a.batch_size}, torch {torch.__version__}, "
              f"{torch.get_num_threads()} CPU threads, "
              f"{torch.cuda.get_device_name(0) if cuda else 'no GPU'}")
        for workers in (0, 2):
            r = run_child(__file__, "loader", tiles, a.batch_size, workers, 3)
            print(f"loader, {workers} workers: {r['tiles_per_s']:8.1f} tiles/s "
                  f"(peak RSS {r['peak_mb']:.0f} MB)")
        for preset in a.presets:
            for amp in (("on", "off") if cuda else ("off",)):
                r = run_child(__file__, "train", tiles, preset, a.batch_size, a.steps,
                              a.device, amp)
                mem = (f"GPU peak {r['gpu_peak_mb']:.0f} MB" if "gpu_peak_mb" in r
                       else f"peak RSS {r['peak_mb']:.0f} MB")
                print(f"train {preset:<6} ({r['params_m']:.1f} M) on {r['device']}, AMP "
                      f"{r['amp']}: {r['tiles_per_s']:8.2f} tiles/s, {mem}")


if __name__ == "__main__":
    main()
