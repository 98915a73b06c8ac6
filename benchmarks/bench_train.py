"""Training throughput and model FLOPs utilization (MFU).

By default, per preset and side by side in one run: the model alone (synthetic tensors already
on the device), the data loader alone (real tiles, the default number of workers for the
device), and the full step as `train run` does it (loader + model), with their ratios and the
model's TFLOP/s and MFU. The loader is timed cold (first epoch: every tile decoded) and warm
(later epochs: tiles from the dataset's bounded cache). Tiles come from the demo pipeline
(not timed). Targets: full step >= 0.9 x model alone; on a GPU the loader >= 3 x the model.

With --settings, the model alone for each setting at --px pixels (no tiles needed), as one
table. A setting is tokens joined by '+':
    fp32 | tf32 | bf16 | fp16   precision [default: what `train run` uses: tf32 on CUDA, fp32
                                on the CPU]; bf16 and fp16 are autocast, as `train run --amp`
    bN                          batch size [default: --batch-size]
    compile | cudagraphs        torch.compile of the whole model (cudagraphs: mode
                                "reduce-overhead", which replays CUDA graphs)
    cl                          channels-last on CUDA (the CPU always uses it, as train run)
    det                         `train run --deterministic`

MFU = FLOPs per tile x tiles/s / the device's dense peak for the precision in use. FLOPs per
tile: torch.utils.flop_counter.FlopCounterMode over one forward and backward pass of the model
on meta tensors (shapes only, nothing computed). Not on the CPU device: there FlopCounterMode
does not see PyTorch's CPU flash-attention kernel and misses all attention (115.1 instead of
127.0 GFLOP for the paper preset at 512 px). Peaks: PEAK_TFLOPS below, or --peak-tflops
(needed on CPUs and unlisted GPUs; without it MFU is 'n/a'). Each figure comes from its own
subprocess.

    .venv/bin/python benchmarks/bench_train.py [--presets tiny paper] [--tile-size 256]
        [--batch-size 4] [--steps 8] [--device auto] [--tiles DIR]
    .venv/bin/python benchmarks/bench_train.py --settings tf32+b16 bf16+b32+compile
        [--presets paper] [--px 512] [--peak-tflops X] [--child-timeout S]
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # the repo, without installing it
from common import child_main, run_child  # noqa: E402

N_BANDS = 11  # ABCD, the default bands

# Dense (no 2:4 sparsity) peak TFLOP/s from NVIDIA's data sheets, by a piece of the name torch
# reports (first match wins) and the precision of the matrix products. Names not listed give
# no MFU unless --peak-tflops is given.
_HOPPER_SXM = {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9}
PEAK_TFLOPS = (
    ("H200", _HOPPER_SXM),
    ("H100 80GB HBM3", _HOPPER_SXM),  # H100 SXM
    ("H100 SXM", _HOPPER_SXM),
    ("H100 PCIe", {"bf16": 756.0, "fp16": 756.0, "tf32": 378.0, "fp32": 51.2}),
    ("A100", {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5}),
)


def peak_tflops(device_name: str, precision: str) -> float | None:
    """The dense peak of a device for a precision, or None when the device is not listed."""
    for piece, peaks in PEAK_TFLOPS:
        if piece in device_name:
            return peaks[precision]
    return None


@dataclass(frozen=True)
class Setting:
    """How the model alone is run: precision, batch, compilation, memory format, determinism."""
    precision: str
    batch: int
    compile: str | None = None  # None, "default" or "reduce-overhead" (CUDA graphs)
    channels_last: bool = False
    deterministic: bool = False

    @classmethod
    def parse(cls, spec: str, batch: int, cuda: bool) -> "Setting":
        kw: dict = {"precision": "tf32" if cuda else "fp32", "batch": batch}
        for token in filter(None, spec.split("+")):
            if token in ("fp32", "tf32", "bf16", "fp16"):
                kw["precision"] = token
            elif token[0] == "b" and token[1:].isdigit() and int(token[1:]) > 0:
                kw["batch"] = int(token[1:])
            elif token in ("compile", "cudagraphs"):
                kw["compile"] = "default" if token == "compile" else "reduce-overhead"
            elif token == "cl":
                kw["channels_last"] = True
            elif token == "det":
                kw["deterministic"] = True
            elif token != "default":
                raise SystemExit(f"--settings {spec}: unknown token {token!r} (use fp32, tf32, "
                                 "bf16, fp16, bN, compile, cudagraphs, cl, det)")
        if kw["precision"] == "tf32" and not cuda:
            raise SystemExit(f"--settings {spec}: TF32 exists on CUDA only")
        return cls(**kw)

    def label(self) -> str:
        """The setting as a --settings spec that parses back to it."""
        return "+".join([self.precision, f"b{self.batch}"] +
                        ([{"default": "compile", "reduce-overhead": "cudagraphs"}[self.compile]]
                         if self.compile else []) +
                        (["cl"] if self.channels_last else []) +
                        (["det"] if self.deterministic else []))


@functools.lru_cache(maxsize=None)
def flops_per_tile(preset: str, px: int, n_bands: int = N_BANDS) -> float:
    """FLOPs of one training step per tile (forward and backward) of lgt-unet, counted by
    FlopCounterMode on meta tensors: shapes only, every operation seen as on a GPU."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from training.models import build_model

    with torch.device("meta"):
        model = build_model("lgt-unet", preset, n_bands).train()
        x = torch.empty(2, n_bands, px, px)  # two: BatchNorm trains on one 1 x 1 map of two
    with FlopCounterMode(display=False) as counter:
        out = model(x)
        out.backward(torch.ones_like(out))  # the loss's own FLOPs are negligible
    return counter.get_total_flops() / 2


# -- the measured jobs, each in its own subprocess ------------------------------------------------

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


def _model(preset: str, n_bands: int, device, s: Setting):
    """The model, optimizer and scaler as `train run` prepares them, then as `s` asks."""
    import torch

    from training.models import build_model
    from training.runtime import prepared, set_deterministic

    set_deterministic(s.deterministic, device)  # before the first CUDA work, as train run
    model = prepared(build_model("lgt-unet", preset, n_bands).train(), device)
    if device.type == "cuda":  # train run's TF32 (runtime.fast_matmul), or plain fp32
        torch.backends.cuda.matmul.allow_tf32 = s.precision != "fp32"
        torch.backends.cudnn.allow_tf32 = s.precision != "fp32"
    if s.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    if s.compile:
        model = torch.compile(model, mode=s.compile)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(s.precision)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    return model, opt, scaler, amp_dtype


def _timed_steps(model, opt, scaler, amp_dtype, batches, device, channels_last: bool,
                 warmup: int):
    import torch

    from training.trainer import train_step

    n, t = 0, None
    for i, (x, y) in enumerate(batches):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t = time.perf_counter()
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        train_step(model, x, y, opt, None, scaler, amp_dtype)
        n += len(x) if i >= warmup else 0
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    if t is None:
        raise SystemExit(f"fewer batches than the {warmup} warm-up step(s): use more tiles "
                         "or a smaller --batch-size")
    return n / (time.perf_counter() - t)


def model_alone(preset: str, setting: str, px: str, steps: str, device_name: str):
    """Training steps on synthetic tensors already on the device."""
    import torch

    from training.runtime import resolve_device

    device = resolve_device(device_name)
    s = Setting.parse(setting, 1, device.type == "cuda")
    torch.manual_seed(0)
    warmup = 3 if s.compile else 1
    model, opt, scaler, amp_dtype = _model(preset, N_BANDS, device, s)
    x = torch.randn(s.batch, N_BANDS, int(px), int(px), device=device)
    y = torch.randint(0, 2, (s.batch, int(px), int(px)), device=device)
    rate = _timed_steps(model, opt, scaler, amp_dtype, [(x, y)] * (int(steps) + warmup), device,
                        s.channels_last, warmup)
    out = {"tiles_per_s": rate, "device": str(device),
           "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
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


def full_step(tiles: str, preset: str, batch: str, epochs: str, device_name: str):
    """Loader + model as train run runs them by default; the first epoch (cold cache) apart."""
    device, bands, ds = _setup(tiles, device_name)
    batches, workers, dl = _loader(ds, int(batch), device)
    s = Setting.parse("default", int(batch), device.type == "cuda")
    model, opt, scaler, amp_dtype = _model(preset, len(bands), device, s)
    rates = []
    for e in range(int(epochs)):
        batches.set_epoch(e)
        rates.append(_timed_steps(model, opt, scaler, amp_dtype, dl, device, False,
                                  1 if e == 0 else 0))
    return {"cold": rates[0], "warm": sum(rates[1:]) / max(1, len(rates) - 1),
            "workers": workers}


# -- the reports ---------------------------------------------------------------------------------------

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


def _run_child_for(timeout: float | None, *args) -> dict:
    """run_child with a time limit; the child's whole process group (compile workers too) is
    killed when it runs over."""
    if timeout is None:
        return run_child(__file__, *args)
    proc = subprocess.Popen([sys.executable, __file__, "--child", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise SystemExit(f"over --child-timeout {timeout:g} s") from None
    if proc.returncode != 0:
        raise SystemExit(f"benchmark child {args} failed:\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])


def throughput(tiles_per_s: float, flops: float, precision: str, device_name: str,
               peak: float | None) -> str:
    """'TFLOP/s, MFU' of a rate: MFU against --peak-tflops or the device's listed peak for the
    precision, with the bf16 peak beside it when the device is listed (the issue's measure)."""
    tflops = tiles_per_s * flops / 1e12
    listed = peak_tflops(device_name, precision)
    mfu = peak or listed
    text = f"{tflops:8.3g} TFLOP/s, MFU " + (f"{tflops / mfu:6.1%}" if mfu else
                                             "n/a (give --peak-tflops)")
    bf16 = peak_tflops(device_name, "bf16")
    if bf16 and not peak and precision != "bf16":
        text += f" ({tflops / bf16:.1%} of the bf16 peak)"
    return text


def report_settings(a, cuda: bool) -> None:
    """One row per preset and setting: the model alone at --px; with --repeats, the settings
    are run in turn that many times and each row gives the median (and the range)."""
    settings = list(dict.fromkeys(Setting.parse(s, a.batch_size, cuda) for s in a.settings))
    peak = f"--peak-tflops {a.peak_tflops:g}" if a.peak_tflops else "the listed dense peak"
    print(f"{'preset':<7} {'setting':<26} {'tiles/s':>9}  model FLOPs per second, MFU "
          f"(of {peak} for the precision)")
    for preset in a.presets:
        flops = flops_per_tile(preset, a.px)
        print(f"{preset:<7} {a.px} px: {flops / 1e9:.2f} GFLOP per tile (forward + backward)")
        runs: dict[Setting, list] = {s: [] for s in settings}
        for _ in range(a.repeats):
            for s in settings:
                try:
                    runs[s].append(_run_child_for(a.child_timeout, "model", preset, s.label(),
                                                  a.px, a.steps, a.device))
                except SystemExit as e:
                    runs[s].append(str(e).strip().splitlines()[-1][:110])
                if a.repeats == 1:
                    _print_row(preset, s, runs[s], flops, a.peak_tflops)
        if a.repeats > 1:
            for s in settings:
                _print_row(preset, s, runs[s], flops, a.peak_tflops)


def _print_row(preset: str, s: Setting, runs: list, flops: float, peak: float | None) -> None:
    ok = [r for r in runs if isinstance(r, dict)]
    if not ok:
        print(f"{preset:<7} {s.label():<26} failed: {runs[-1]}", flush=True)
        return
    rates = sorted(r["tiles_per_s"] for r in ok)
    rate = rates[len(rates) // 2] if len(rates) % 2 else sum(rates[len(rates) // 2 - 1:
                                                                   len(rates) // 2 + 1]) / 2
    spread = f" ({rates[0]:.2f}-{rates[-1]:.2f}, {len(rates)} runs)" if len(rates) > 1 else ""
    mem = f", {max(r['gpu_peak_mb'] for r in ok) / 1024:.1f} GiB" if "gpu_peak_mb" in ok[0] \
        else ""
    print(f"{preset:<7} {s.label():<26} {rate:9.2f}  "
          f"{throughput(rate, flops, s.precision, ok[0]['device_name'], peak)}{mem}{spread}",
          flush=True)


def report_preset(preset: str, a, tiles: Path, tile_size: int, ld: dict, cuda: bool) -> None:
    default = Setting.parse("default", a.batch_size, cuda)
    m = run_child(__file__, "model", preset, default.label(), tile_size, a.steps, a.device)
    full = run_child(__file__, "full", tiles, preset, a.batch_size, a.epochs, a.device)
    rate, flops = m["tiles_per_s"], flops_per_tile(preset, tile_size)
    print(f"{preset:<6} model alone {rate:8.2f} tiles/s "
          f"({throughput(rate, flops, default.precision, m['device_name'], a.peak_tflops)}) | "
          f"full step cold {full['cold']:8.2f}, warm {full['warm']:8.2f} tiles/s | full/model "
          f"warm {full['warm'] / rate:.2f}x (target >= 0.9) | loader/model warm "
          f"{ld['warm'] / rate:.1f}x (target >= 3)", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", nargs="+", default=["tiny", "paper"])
    ap.add_argument("--tile-size", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=3, help="full step and loader epochs")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--tiles", type=Path, default=None,
                    help="use these tiles (made by prep tile) instead of making demo tiles")
    ap.add_argument("--settings", nargs="+", default=None,
                    help="time the model alone in these settings at --px (see above)")
    ap.add_argument("--px", type=int, default=512, help="tile side for --settings")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="the device's dense peak TFLOP/s, for MFU (else the table's)")
    ap.add_argument("--repeats", type=int, default=1,
                    help="with --settings: run the settings in turn this many times (medians)")
    ap.add_argument("--child-timeout", type=float, default=None,
                    help="seconds after which one measurement is abandoned")
    ap.add_argument("--child", nargs="+")
    a = ap.parse_args()
    if a.child:
        return child_main({"model": model_alone, "loader": loader_alone, "full": full_step},
                          a.child)
    import torch

    cuda = a.device != "cpu" and torch.cuda.is_available()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
          f"{torch.cuda.get_device_name(0) if cuda else 'no GPU'}")
    if a.settings:
        return report_settings(a, cuda)
    with tempfile.TemporaryDirectory() as tmp:
        tiles = a.tiles or make_tiles(Path(tmp), a.tile_size)
        from gee_export.common.layout import read_manifest

        tile_size = read_manifest(Path(tiles), "tiles")["tile_size"]
        print(f"tiles {tile_size} px, batch {a.batch_size}")
        ld = run_child(__file__, "loader", tiles, a.batch_size, a.device, a.epochs)
        print(f"loader alone ({ld['workers']} workers): cold {ld['cold']:.1f} tiles/s, "
              f"warm {ld['warm']:.1f} tiles/s")
        for preset in a.presets:
            report_preset(preset, a, tiles, tile_size, ld, cuda)


if __name__ == "__main__":
    main()
