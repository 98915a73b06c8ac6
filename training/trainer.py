"""`train run`: train a segmentation model on tiles and report OA / F1 / mIoU per epoch."""
from __future__ import annotations

import csv
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from gee_export.common.atomic import atomic_output, write_json
from gee_export.common.bands import parse_bands
from gee_export.common.errors import GlacierError
from gee_export.common.layout import (
    BEST_CKPT,
    LAST_CKPT,
    METRICS_CSV,
    RUN_CONFIG,
    RUNS_DIR,
    TILES_MANIFEST,
    base_manifest,
    file_sha256,
    now_iso,
    read_manifest,
)

from .data import NormStats, TileDataset
from .losses import dice_ce_loss
from .metrics import confusion, scores
from .models import build_model, count_parameters

CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class TrainConfig:
    model: str = "lgt-unet"
    preset: str = "paper"
    bands: str = "ABCD"  # paper's best combination
    epochs: int = 100
    batch_size: int = 4  # paper
    lr: float = 1e-4  # paper: AdamW 1e-4 with a cosine schedule
    weight_decay: float = 0.01  # AdamW's usual default; the paper does not state one
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # bf16/fp16 autocast on CUDA only
    workers: int = 0
    augment: bool = True  # the 8 rotations and flips


def default_run_name(prefix: str, cfg: TrainConfig) -> str:
    """PREFIX-MODEL-PRESET-BANDS, safe as a directory name (lgt-unet:LL-LG-.. has a colon)."""
    return f"{prefix}-{cfg.model.replace(':', '_')}-{cfg.preset}-{cfg.bands}"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise GlacierError(f"--device {name}: CUDA is not available on this machine")
    return torch.device(name)


def _seed_all(seed: int):
    import random

    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def _distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank) when launched by torchrun, else (0, 1, 0)."""
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))
    return 0, 1, 0


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    """A checkpoint is data, never code: loaded with weights_only=True."""
    path = Path(path)
    if not path.is_file():
        raise GlacierError(f"checkpoint {path}: no such file")
    try:
        ck = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # unpickling errors of several types
        raise GlacierError(f"checkpoint {path}: cannot be loaded as data ({e.__class__.__name__})"
                           ) from None
    if not isinstance(ck, dict) or ck.get("checkpoint_version") != CHECKPOINT_VERSION:
        raise GlacierError(f"checkpoint {path}: not a checkpoint of this toolkit")
    return ck


def _save_checkpoint(path: Path, obj: dict):
    with atomic_output(path) as tmp:
        torch.save(obj, tmp)


def train(tile_dir: Path, workspace: Path, cfg: TrainConfig, run_name: str | None = None,
          resume: bool = False, max_steps: int | None = None, quiet: bool = False,
          echo=print) -> Path:
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    tile_dir = Path(tile_dir)
    tiles = read_manifest(tile_dir, "tiles")
    if not tiles.get("complete"):
        raise GlacierError(f"{tile_dir}: tiles are not complete; rerun `prep tile`")
    bands = parse_bands(cfg.bands)
    stats = NormStats.from_manifest(tiles, bands)
    rank, world, local_rank = _distributed()
    device = resolve_device(cfg.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    _seed_all(cfg.seed)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)

    run_name = run_name or default_run_name(tile_dir.name, cfg)
    run_dir = Path(workspace) / RUNS_DIR / run_name
    config = {**asdict(cfg), "band_names": bands, "tiles": str(tile_dir.resolve()),
              "tiles_manifest_sha256": file_sha256(tile_dir / TILES_MANIFEST),
              "tile_size": tiles["tile_size"]}
    train_ds = TileDataset(tile_dir, "train", bands, stats, augment=cfg.augment, seed=cfg.seed)
    val_ds = TileDataset(tile_dir, "val", bands, stats)
    model = build_model(cfg.model, cfg.preset, len(bands)).to(device)
    n_params = count_parameters(model)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train_ds) / (cfg.batch_size * world))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * steps_per_epoch)
    start_epoch, best_miou = 0, -1.0

    if resume:
        ck = load_checkpoint(run_dir / LAST_CKPT)
        for key in ("model", "preset", "band_names"):
            if ck["meta"][key] != config[key]:
                raise GlacierError(f"--resume: {run_dir / LAST_CKPT} was trained with {key} "
                                   f"{ck['meta'][key]!r}, this run asks for {config[key]!r}")
        model.load_state_dict(ck["model_state"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        torch.set_rng_state(ck["torch_rng"])
        start_epoch, best_miou = ck["epoch"] + 1, ck["best_miou"]
        _truncate_csv(run_dir / METRICS_CSV, start_epoch)
        echo(f"resuming {run_dir} at epoch {start_epoch + 1}")
    elif (run_dir / RUN_CONFIG).is_file():
        old = read_manifest(run_dir, "run")
        if old.get("complete") and old.get("config") == config:
            echo(f"run {run_dir} is complete; nothing to do (use --name for another run)")
            return run_dir
        raise GlacierError(f"{run_dir} already holds a run; use --resume to continue it or "
                           "--name for a new one")
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        manifest = base_manifest("run", config=config, parameters=n_params,
                                 device=str(device), world_size=world, synthetic=tiles.get(
                                     "synthetic", False))
        write_json(run_dir / RUN_CONFIG, manifest)

    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP
        from torch.utils.data.distributed import DistributedSampler

        model = DDP(model, device_ids=[local_rank] if device.type == "cuda" else None)
        sampler = DistributedSampler(train_ds, shuffle=True, seed=cfg.seed)
    else:
        sampler = None
    gen = torch.Generator().manual_seed(cfg.seed)
    loader_kw = dict(num_workers=cfg.workers, pin_memory=device.type == "cuda",
                     persistent_workers=cfg.workers > 0)
    train_dl = DataLoader(train_ds, cfg.batch_size, shuffle=sampler is None, sampler=sampler,
                          generator=gen, drop_last=False, **loader_kw)
    val_dl = DataLoader(val_ds, cfg.batch_size, shuffle=False, **loader_kw)
    amp_dtype = amp_dtype_for(device, cfg.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    core = model.module if world > 1 else model

    metrics_path = run_dir / METRICS_CSV
    step = 0
    for epoch in range(start_epoch, cfg.epochs):
        train_ds.set_epoch(epoch)
        gen.manual_seed(cfg.seed * 100003 + epoch)  # the epoch's order, independent of resume
        if sampler is not None:
            sampler.set_epoch(epoch)
        model.train()
        t0, seen, loss_sum = time.time(), 0, 0.0
        bar = tqdm(train_dl, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch",
                   disable=quiet or rank != 0, leave=False)
        for i, (x, y) in enumerate(bar):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = train_step(model, x, y, opt, sched, scaler, amp_dtype)
            if loss is None:
                raise GlacierError(f"loss is not finite at epoch {epoch + 1}, step {i + 1}; "
                                   "lower --lr or check the tiles for bad values")
            seen += len(x)
            loss_sum += loss.item() * len(x)
            bar.set_postfix(loss=f"{loss.item():.3f}",
                            tiles_s=f"{seen / max(1e-9, time.time() - t0):.1f}")
            step += 1
            if max_steps is not None and step >= max_steps:
                break
        train_time = time.time() - t0
        val = evaluate(core, val_dl, device, amp_dtype)
        if rank != 0:
            continue
        row = {"epoch": epoch + 1, "train_loss": loss_sum / max(1, seen),
               "val_loss": val.pop("loss"), **val, "lr": sched.get_last_lr()[0],
               "seconds": round(train_time, 2), "tiles_per_s": round(seen / train_time, 2)}
        _append_csv(metrics_path, row, new=epoch == 0)
        improved = row["miou"] > best_miou
        best_miou = max(best_miou, row["miou"])
        ck = {"checkpoint_version": CHECKPOINT_VERSION, "epoch": epoch, "best_miou": best_miou,
              "model_state": core.state_dict(), "optimizer": opt.state_dict(),
              "scheduler": sched.state_dict(), "torch_rng": torch.get_rng_state(),
              "meta": {"model": cfg.model, "preset": cfg.preset, "band_names": bands,
                       "bands": cfg.bands, "norm_stats": stats.to_dict(),
                       "export_normalization": tiles.get("normalization"),
                       "tile_size": tiles["tile_size"], "num_classes": 2,
                       "metrics": {k: v for k, v in row.items() if isinstance(v, float)}}}
        if improved:
            _save_checkpoint(run_dir / BEST_CKPT, ck)
        _save_checkpoint(run_dir / LAST_CKPT, ck)
        echo(f"epoch {epoch + 1}/{cfg.epochs}: loss {row['train_loss']:.4f}, val mIoU "
             f"{row['miou']:.4f}, F1 {row['mf1']:.4f}, OA {row['oa']:.4f} "
             f"({row['tiles_per_s']:.1f} tiles/s)")
        if max_steps is not None and step >= max_steps:
            break
    if rank == 0:
        from .plots import plot_curves, plot_samples

        plot_curves(metrics_path, run_dir / "curves.png")
        plot_samples(core, val_ds, device, run_dir / "samples.png")
        manifest = read_manifest(run_dir, "run")
        rows = list(csv.DictReader(open(metrics_path)))
        best = max(rows, key=lambda r: float(r["miou"]))
        manifest.update(complete=max_steps is None, completed_at=now_iso(),
                        epochs_done=len(rows), best={k: float(v) for k, v in best.items()},
                        majority_class_miou=majority_miou(val_ds))
        write_json(run_dir / RUN_CONFIG, manifest)
        echo(f"run complete: {run_dir} (best val mIoU {float(best['miou']):.4f} at epoch "
             f"{int(float(best['epoch']))}; predicting the majority class gives "
             f"{manifest['majority_class_miou']:.4f})")
    return run_dir


def amp_dtype_for(device: torch.device, amp: bool):
    """bf16 where the GPU has it (no loss scaling needed), else fp16; None on CPU or off."""
    if not amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def forward(model, x: torch.Tensor, amp_dtype) -> torch.Tensor:
    """The model's logits, under autocast when an AMP dtype is given (training, validation and
    prediction all go through here)."""
    with torch.autocast(x.device.type, dtype=amp_dtype or torch.float32,
                        enabled=amp_dtype is not None):
        return model(x)


def train_step(model, x, y, opt, sched, scaler, amp_dtype) -> torch.Tensor | None:
    """One optimization step; returns the (detached) loss, or None if it is not finite, in
    which case the weights are left untouched."""
    loss = dice_ce_loss(forward(model, x, amp_dtype), y)
    if not torch.isfinite(loss):
        return None
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    if sched is not None:
        sched.step()
    return loss.detach()


@torch.no_grad()
def evaluate(model, loader, device, amp_dtype=None) -> dict:
    model.eval()
    cm = np.zeros((2, 2), np.int64)
    loss_sum, n = 0.0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits = forward(model, x, amp_dtype)
        loss_sum += dice_ce_loss(logits, y).item() * len(x)
        n += len(x)
        cm += confusion(logits.argmax(1).cpu().numpy(), y.cpu().numpy())
    return {"loss": loss_sum / max(1, n), **scores(cm)}


def majority_miou(ds: TileDataset) -> float:
    """mIoU of always predicting the most frequent class of the validation split."""
    cm = np.zeros((2, 2), np.int64)
    for i in range(len(ds)):
        _, lbl = ds.load(i)
        cm += confusion(np.zeros_like(lbl), lbl)
    if cm[1].sum() > cm[0].sum():
        cm = cm[:, ::-1].copy()
    return scores(cm)["miou"]


def _truncate_csv(path: Path, epochs: int):
    """Drop rows of epochs after the checkpoint (written before an interruption)."""
    if not path.is_file():
        return
    rows = [r for r in csv.DictReader(open(path)) if int(float(r["epoch"])) <= epochs]
    if rows:
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


def _append_csv(path: Path, row: dict, new: bool):
    exists = path.is_file() and not new
    if new and path.is_file():
        path.unlink()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if not exists:
            w.writeheader()
        w.writerow(row)
