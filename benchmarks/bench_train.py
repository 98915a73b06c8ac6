"""Training throughput, side by side in one run, per preset: the model alone (synthetic tensors
already on the device), the data loader alone (real tiles, the default number of workers for
the device), and the full step as `train run` does it (loader + model), with their ratios.

Targets: full step >= 0.9 x model alone on CPU with default options; on a GPU (paper preset)
bf16 AMP >= 2 x fp32 and the loader >= 3 x the model's rate. channels_last and torch.compile
are measured beside the default and kept only where they help.

The loader is timed cold (first epoch: every tile decoded) and warm (later epochs: decoded
tiles come from the dataset's bounded cache), since training runs for many epochs. Each
figure comes from its own subprocess. Tiles come from the demo pipeline (not timed).

    .venv/bin/python benchmarks/bench_train.py [--presets tiny paper] [--tile-size 256]
        [--batch-size 4] [--steps 8] [--device auto] [--variants]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import child_main, run_child  # noqa: E402


def _setup(tiles: str, device_name: str):
    import torch

    from gee_export.common.bands import parse_bands
    from gee_export.common.layout import read_manifest
    from training.data import NormStats, TileDataset
    from training.runtime import resolve_device

    device = resolve_device(device_name)
    bands = parse_bands("ABCD")
    stats = NormStats.from_manifest(read_manifest(Path(tiles), "tiles"), bands)
    torch.manual_seed(0)
    return device, bands, TileDataset(Path(tiles), "train", bands, stats, augment=True, seed=0)


def _loader(ds, batch_size: int, device, workers: int | None = None):
    """The training loader as `train run` builds it, with its default workers."""
    import torch
    from torch.utils.data import DataLoader

    from training.data import GlobalBatches
    from training.trainer import loader_workers

    workers = loader_workers("auto", device, 1) if workers is None else workers
    batches = GlobalBatches(len(ds), batch_size, seed=0)
    return batches, workers, DataLoader(ds, batch_sampler=batches, num_workers=workers,
                                        pin_memory=device.type == "cuda",
                                        persistent_workers=workers > 0,
                                        generator=torch.Generator().manual_seed(0))


def _model(preset: str, n_bands: int, device, amp: str, variant: str):
    import torch

    from training.models import build_model
    from training.runtime import amp_dtype_for

    model = build_model("lgt-unet", preset, n_bands).to(device).train()
    if "tf32" in variant:  # TensorFloat-32 matrix products in fp32 (Ampere and later)
        torch.backends.cuda.matmul.allow_tf32 = True
    if "channels_last" in variant:
        model = model.to(memory_format=torch.channels_last)
    if "compile" in variant:
        model = torch.compile(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    amp_dtype = amp_dtype_for(device, amp == "on")
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    return model, opt, scaler, amp_dtype


def _timed_steps(model, opt, scaler, amp_dtype, batches, device, variant: str, warmup: int):
    import torch

    from training.trainer import train_step

    n, t = 0, None
    for i, (x, y) in enumerate(batches):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t = time.perf_counter()
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if "channels_last" in variant:
            x = x.contiguous(memory_format=torch.channels_last)
        train_step(model, x, y, opt, None, scaler, amp_dtype)
        n += len(x) if i >= warmup else 0
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    if t is None:
        raise SystemExit(f"fewer batches than the {warmup} warm-up step(s): use more tiles "
                         "or a smaller --batch-size")
    return n / (time.perf_counter() - t)


def model_alone(tiles: str, preset: str, batch: str, steps: str, device_name: str, amp: str,
                variant: str):
    """Training steps on synthetic tensors already on the device."""
    import torch

    device, bands, ds = _setup(tiles, device_name)
    x0, _ = ds[0]
    b, warmup = int(batch), 3 if "compile" in variant else 1
    shape = (x0.shape[0], 512, 512) if "px512" in variant else x0.shape  # the paper's tiles
    x = torch.randn(b, *shape, device=device)
    y = torch.randint(0, 2, (b, *shape[1:]), device=device)
    model, opt, scaler, amp_dtype = _model(preset, len(bands), device, amp, variant)
    rate = _timed_steps(model, opt, scaler, amp_dtype, [(x, y)] * (int(steps) + warmup), device,
                        variant, warmup)
    out = {"tiles_per_s": rate, "device": str(device)}
    if device.type == "cuda":
        out["gpu_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    return out


def loader_alone(tiles: str, batch: str, device_name: str, epochs: str):
    """Tiles per second from the loader alone: the first epoch cold, the others warm."""
    device, _, ds = _setup(tiles, device_name)
    batches, workers, dl = _loader(ds, int(batch), device)
    rates = []
    for e in range(int(epochs)):
        batches.set_epoch(e)
        n, t = 0, time.perf_counter()
        for x, _ in dl:
            n += len(x)
        rates.append(n / (time.perf_counter() - t))
    return {"cold": rates[0], "warm": sum(rates[1:]) / max(1, len(rates) - 1),
            "workers": workers}


def full_step(tiles: str, preset: str, batch: str, epochs: str, device_name: str, amp: str):
    """Loader + model as train run runs them; the first epoch (cold cache) apart."""
    device, bands, ds = _setup(tiles, device_name)
    batches, workers, dl = _loader(ds, int(batch), device)
    model, opt, scaler, amp_dtype = _model(preset, len(bands), device, amp, "default")
    rates = []
    for e in range(int(epochs)):
        batches.set_epoch(e)
        rates.append(_timed_steps(model, opt, scaler, amp_dtype, dl, device, "default",
                                  1 if e == 0 else 0))
    return {"cold": rates[0], "warm": sum(rates[1:]) / max(1, len(rates) - 1),
            "workers": workers}


def make_tiles(root: Path, tile_size: int) -> Path:
    from click.testing import CliRunner

    from gee_export.common.cli import prep

    for args in (["export", "--region", "demo", "--year", "2018", "--demo-size", "1024",
                  "--quiet"],
                 ["tile", "--size", str(tile_size), "--block-tiles", "1", "--quiet"]):
        res = CliRunner().invoke(prep, args + ["--workspace", str(root)])
        if res.exit_code != 0:
            raise SystemExit(res.output)
    return next(p for p in (root / "tiles").iterdir() if p.is_dir())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", nargs="+", default=["tiny", "paper"])
    ap.add_argument("--tile-size", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=3, help="full step and loader epochs")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--tiles", type=Path, default=None,
                    help="use these tiles (made by prep tile) instead of making demo tiles")
    ap.add_argument("--variants", action="store_true",
                    help="also time channels_last and torch.compile (model alone)")
    ap.add_argument("--child", nargs="+")
    a = ap.parse_args()
    if a.child:
        return child_main({"model": model_alone, "loader": loader_alone, "full": full_step},
                          a.child)
    import torch

    cuda = a.device != "cpu" and torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as tmp:
        tiles = a.tiles or make_tiles(Path(tmp), a.tile_size)
        print(f"tiles {a.tile_size} px, batch {a.batch_size}, torch {torch.__version__}, "
              f"{torch.get_num_threads()} CPU threads, "
              f"{torch.cuda.get_device_name(0) if cuda else 'no GPU'}")
        ld = run_child(__file__, "loader", tiles, a.batch_size, a.device, a.epochs)
        print(f"loader alone ({ld['workers']} workers): cold {ld['cold']:.1f} tiles/s, "
              f"warm {ld['warm']:.1f} tiles/s")
        for preset in a.presets:
            report_preset(preset, a, tiles, ld, cuda)


def report_preset(preset: str, a, tiles: Path, ld: dict, cuda: bool) -> None:
    amps = ("on", "off") if cuda else ("off",)
    model = {amp: run_child(__file__, "model", tiles, preset, a.batch_size, a.steps, a.device,
                            amp, "default") for amp in amps}
    full = run_child(__file__, "full", tiles, preset, a.batch_size, a.epochs, a.device, amps[0])
    m = model[amps[0]]["tiles_per_s"]
    print(f"{preset:<6} model alone {m:8.2f} tiles/s | full step cold {full['cold']:8.2f}, "
          f"warm {full['warm']:8.2f} tiles/s | full/model warm {full['warm'] / m:.2f}x "
          f"(target >= 0.9) | loader/model warm {ld['warm'] / m:.1f}x (target >= 3)")
    if cuda:
        print(f"{preset:<6} AMP {model['on']['tiles_per_s']:.2f} vs fp32 "
              f"{model['off']['tiles_per_s']:.2f} tiles/s: "
              f"{model['on']['tiles_per_s'] / model['off']['tiles_per_s']:.2f}x (target >= 2)")
    if a.variants:
        for variant in ("channels_last", "compile", "channels_last+compile"):
            try:
                r = run_child(__file__, "model", tiles, preset, a.batch_size, a.steps, a.device,
                              amps[0], variant)
                print(f"{preset:<6} {variant:<22} {r['tiles_per_s']:8.2f} tiles/s: "
                      f"{r['tiles_per_s'] / m:.2f}x the default")
            except SystemExit as e:
                print(f"{preset:<6} {variant:<22} failed: {str(e).splitlines()[-1][:100]}")


if __name__ == "__main__":
    main()
