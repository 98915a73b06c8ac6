"""`train run`: train a segmentation model on tiles and report OA / F1 / mIoU per epoch.

One process or several (torchrun, DDP): every process sees the same global batches (split
among them) and optimizes the loss of the whole global batch; validation is split among them
and its counts summed. Rank 0 decides (a new run, a resumed one, a refusal), writes every
file, and the others follow. An interrupted run, at any point, is finished by the same
command: from the last completed epoch, or from the start when none completed.
"""
from __future__ import annotations

import csv
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from gee_export.common.bands import parse_bands
from gee_export.common.errors import InputError, StateError
from gee_export.common.layout import (
    BEST_CKPT,
    CURVES_PNG,
    LAST_CKPT,
    METRICS_CSV,
    RUN_CONFIG,
    RUNS_DIR,
    SAMPLES_PNG,
    base_manifest,
    check_files,
    check_name,
    describe_problems,
    file_sha256,
    now_iso,
    read_manifest,
    require_complete,
    stored_path,
    write_manifest,
)
from gee_export.common.locks import output_lock
from gee_export.common.stage import DONE, START, Stage
from gee_export.common.tile_index import tiles_id
from gee_export.common.workers import check_processes, cpu_workers

from .data import CACHE_MB, GlobalBatches, NormStats, TileCache, TileDataset, loader_worker_init
from .losses import dice_ce_loss, loss_from_sums, loss_sums
from .metrics import confusion, scores
from .models import build_model, count_parameters
from .runtime import (
    Processes,
    amp_dtype_for,
    effective_config,
    fast_matmul,
    forward,
    load_checkpoint,
    prepared,
    resolve_device,
    restore_rng_states,
    rng_states,
    save_checkpoint,
    set_deterministic,
)

if TYPE_CHECKING:
    from torch.utils.data import DataLoader

# Options that may differ between an interrupted run and the command that resumes it: they
# change where and how fast it runs, not what it computes.
RESUME_MAY_CHANGE = ("workers", "device")
# A run's configuration as its options (the stage contract names differences so).
RUN_OPTIONS = {"band_names": "--bands", "tiles_id": "--tiles (the tile set's contents)",
               "tiles": "--tiles", "tile_size": "--tiles (their size)", "init": "--init"}


@dataclass(frozen=True)
class TrainConfig:
    model: str = "lgt-unet"
    preset: str = "paper"
    bands: str = "ABCD"  # paper's best combination
    epochs: int = 100
    batch_size: int = 4  # paper; the global batch, split among DDP processes
    lr: float = 1e-4  # paper: AdamW 1e-4 with a cosine schedule
    weight_decay: float = 0.01  # AdamW's usual default; the paper does not state one
    seed: int = 0
    device: str = "auto"
    amp: bool = False  # bf16 autocast on CUDA; slower than fp32 + TF32 here (README)
    workers: int | str = "auto"  # loader processes per training process; see loader_workers
    augment: bool = True  # the 8 rotations and flips
    init: tuple[str, ...] = ()  # published weights to start from (--init)
    deterministic: bool = False  # deterministic algorithms (--deterministic; README: the cost)


def default_run_name(prefix: str, cfg: TrainConfig) -> str:
    """PREFIX-MODEL-PRESET-BANDS, safe as a directory name (lgt-unet:LL-LG-.. has a colon)."""
    return f"{prefix}-{cfg.model.replace(':', '_')}-{cfg.preset}-{cfg.bands}"


def loader_workers(requested: int | str, device: torch.device, world: int) -> int:
    """auto: on CUDA, the CPUs this process may use, shared among the training processes (up
    to 8 each), so decoding keeps up with the GPU; on CPU none, since the model already uses
    every core and extra processes only compete with it (benchmarks/bench_train.py)."""
    if requested != "auto":
        return check_processes(int(requested))
    if device.type != "cuda":
        return 0
    return max(1, cpu_workers("auto", cap=8 * world) // world)


def _seed_all(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


@dataclass
class _Run:
    """Everything one training run holds."""
    cfg: TrainConfig
    procs: Processes
    device: torch.device
    run_dir: Path
    tiles: dict  # the tile manifest
    bands: list[str]
    stats: NormStats
    config: dict  # what config.json records and a resume must match
    train_ds: TileDataset
    val_ds: TileDataset
    model: torch.nn.Module = None
    core: torch.nn.Module = None  # the model without its DDP wrapper
    opt: torch.optim.Optimizer = None
    sched: object = None
    scaler: object = None
    start_epoch: int = 0
    best_miou: float = -1.0
    step: int = 0
    notes: list[str] = field(default_factory=list)


def train(tile_dir: Path, workspace: Path, cfg: TrainConfig, run_name: str | None = None,
          resume: bool = False, max_steps: int | None = None, quiet: bool = False,
          echo: Callable[[str], None] = print, wait: bool = False) -> Path:
    """Train (or finish training) a run; returns its directory. With `wait`, a run another
    process is writing is waited for instead of refused."""
    check_name(run_name, "--name")
    procs = Processes.start()
    tile_dir = Path(tile_dir)
    run_dir = Path(workspace) / RUNS_DIR / (run_name or default_run_name(tile_dir.name, cfg))
    say = echo if procs.main else (lambda *_: None)
    if procs.main:
        with output_lock(run_dir, wait=wait, echo=echo):
            _train(tile_dir, Path(workspace), run_dir, cfg, procs, resume, max_steps, quiet, say)
    else:
        _train(tile_dir, Path(workspace), run_dir, cfg, procs, resume, max_steps, quiet, say)
    procs.stop()
    return run_dir


def _train(tile_dir: Path, workspace: Path, run_dir: Path, cfg: TrainConfig, procs: Processes,
           resume: bool, max_steps: int | None, quiet: bool, echo) -> Path:
    run = _open(tile_dir, workspace, run_dir, cfg, procs)
    action = procs.decide(lambda: _claim(run, resume, echo))
    if action == "done":
        return run_dir
    _build(run, action, echo)
    procs.barrier()
    workers = loader_workers(cfg.workers, run.device, procs.world)
    train_dl, val_dl = _loaders(run, workers)
    with fast_matmul(run.device):
        for epoch in range(run.start_epoch, cfg.epochs):
            row, stopped = _epoch(run, train_dl, val_dl, epoch, max_steps, quiet)
            rng = rng_states(run.device, procs)  # every rank's GPU state, gathered
            if procs.main:
                _record(run, epoch, row, rng, echo)
            procs.barrier()
            if stopped:
                break
        if procs.main:
            _finish(run, complete=max_steps is None, echo=echo)
    return run_dir


# -- what the run reads, and whether it starts, resumes or is done ------------------------------

def _open(tile_dir: Path, workspace: Path, run_dir: Path, cfg: TrainConfig,
          procs: Processes) -> _Run:
    tiles = require_complete(tile_dir, "tiles", "rerun `prep tile` to finish them")
    bands = parse_bands(cfg.bands)
    stats = NormStats.from_manifest(tiles, bands)
    device = resolve_device(cfg.device, procs.local_rank)
    set_deterministic(cfg.deterministic, device)  # before CUDA starts: cuBLAS reads it once
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if cfg.batch_size < procs.world:
        raise InputError(f"--batch-size {cfg.batch_size} is the global batch; it cannot be "
                         f"shared among {procs.world} processes")
    config = {**asdict(cfg), "band_names": bands, "tiles": stored_path(tile_dir, run_dir,
                                                                         workspace),
              "tiles_id": tiles_id(tiles), "tile_size": tiles["tile_size"],
              "init": [{"file": Path(p).name, "sha256": file_sha256(p)} for p in cfg.init]}
    train_ds = TileDataset(tile_dir, "train", bands, stats, augment=cfg.augment, seed=cfg.seed)
    val_ds = TileDataset(tile_dir, "val", bands, stats)
    return _Run(cfg, procs, device, run_dir, tiles, bands, stats, json.loads(json.dumps(config)),
                train_ds, val_ds)


def _claim(run: _Run, resume: bool, echo) -> str:
    """Rank 0: check the tiles, then decide by the stage contract whether this command starts
    the run ('start'), continues it ('resume') or has nothing to do ('done'); a run made
    otherwise is refused, or replaced when it finished no epoch (nothing is lost)."""
    _verify_tiles(Path(run.train_ds.dir), run.tiles, echo)
    has_checkpoint = (run.run_dir / LAST_CKPT).is_file()
    stage = Stage("run", run.run_dir / RUN_CONFIG, names=RUN_OPTIONS, ignore=RESUME_MAY_CHANGE,
                  hint="rerun with its options to finish it, or give --name for a new run",
                  key="config", view=lambda c: effective_config(c, run.device))
    if not stage.manifest.is_file():
        if resume:
            raise StateError(f"--resume: {run.run_dir} holds no run; drop --resume to start it")
        stage.check_own()
        shutil.rmtree(run.run_dir, ignore_errors=True)  # files of no known run
        return "start"
    try:
        decision = stage.decide(effective_config(run.config, run.device), False, echo,
                                nothing_lost=lambda old: None if has_checkpoint
                                else "it finished no epoch")
    except StateError as e:
        cosine = (" (a cosine schedule planned for one number of epochs cannot be stretched "
                  "to another)" if "--epochs:" in str(e) else "")
        raise StateError(f"{e}{cosine}") from None
    if decision.action == START:
        shutil.rmtree(run.run_dir)
        return "start"
    return "done" if decision.action == DONE else ("resume" if has_checkpoint else "start")


def _verify_tiles(tile_dir: Path, tiles: dict, echo) -> None:
    files = tiles.get("files")
    if not files:
        echo(f"note: {tile_dir} records no checksums (made by an older version); not verified")
        return
    problems = check_files(tile_dir, files, full=True)
    if problems:
        raise StateError(f"tiles {tile_dir}: {len(problems)} file(s) are corrupt or missing "
                         f"({describe_problems(problems)}); run `prep tile --verify` to "
                         "rewrite them")


# -- the model, the optimizer, and where they start -------------------------------------------------

def _build(run: _Run, action: str, echo) -> None:
    cfg, procs = run.cfg, run.procs
    _seed_all(cfg.seed)
    model = build_model(cfg.model, cfg.preset, len(run.bands))
    if action == "start" and cfg.init:
        from .models.pretrained import load_pretrained

        report = load_pretrained(model, cfg.model, [Path(p) for p in cfg.init], run.bands)
        echo(report.describe())
        run.notes.append(report.describe())
    model = prepared(model, run.device)
    run.opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = len(GlobalBatches(len(run.train_ds), cfg.batch_size, cfg.seed))
    run.sched = torch.optim.lr_scheduler.CosineAnnealingLR(run.opt, T_max=cfg.epochs *
                                                           steps_per_epoch)
    run.scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype_for(run.device, cfg.amp)
                                      == torch.float16)
    if action == "resume":
        _restore(run, model, echo)
    elif procs.main:
        write_manifest(run.run_dir / RUN_CONFIG, base_manifest(
            "run", config=run.config, parameters=count_parameters(model),
            device=str(run.device), world_size=procs.world, notes=run.notes,
            synthetic=run.tiles.get("synthetic", False)))
        (run.run_dir / METRICS_CSV).unlink(missing_ok=True)
    run.core = model
    if procs.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        if run.device.type == "cuda":  # BatchNorm over the global batch, as one process
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            run.core = model
        model = DDP(model, device_ids=[run.device.index] if run.device.type == "cuda" else None)
    run.model = model


def _restore(run: _Run, model: torch.nn.Module, echo) -> None:
    try:
        ck = load_checkpoint(run.run_dir / LAST_CKPT, map_location=run.device)
    except InputError as e:  # damaged on disk: say how to get going again
        raise StateError(f"{e}; the run cannot resume from it: delete {run.run_dir} to start "
                         "it again, or give --name for a new run") from None
    model.load_state_dict(ck["model_state"])
    run.opt.load_state_dict(ck["optimizer"])
    run.sched.load_state_dict(ck["scheduler"])
    run.scaler.load_state_dict(ck["scaler"])
    note = restore_rng_states(ck, run.device, run.procs)
    run.start_epoch, run.best_miou, run.step = ck["epoch"] + 1, ck["best_miou"], ck["step"]
    if run.procs.main:
        _truncate_csv(run.run_dir / METRICS_CSV, run.start_epoch)
    echo(f"resuming {run.run_dir} at epoch {run.start_epoch + 1}")
    if note:
        echo(note)


def _loaders(run: _Run, workers: int):
    from torch.utils.data import DataLoader

    cfg, procs = run.cfg, run.procs
    # Each loader draws its workers' base seed from its own generator, not from the global
    # RNG that dropout uses: the weights are then the same with or without loader workers.
    kw = dict(num_workers=workers, pin_memory=run.device.type == "cuda",
              persistent_workers=workers > 0, generator=torch.Generator().manual_seed(cfg.seed),
              worker_init_fn=loader_worker_init if workers > 0 else None)
    # One tile cache budget for the process and its workers, shared by the splits by size.
    budget, n_train = CACHE_MB * 2 ** 20, len(run.train_ds)
    train_share = budget * n_train // max(1, n_train + len(run.val_ds))
    run.train_ds.cache = TileCache(train_share, workers)
    run.val_ds.cache = TileCache(budget - train_share, workers)
    batches = GlobalBatches(len(run.train_ds), cfg.batch_size, cfg.seed, True, procs.rank,
                            procs.world)
    val_idx = list(range(procs.rank, len(run.val_ds), procs.world))  # each tile once overall
    val_batches = [val_idx[i:i + cfg.batch_size] for i in range(0, len(val_idx),
                                                                 cfg.batch_size)]
    return (DataLoader(run.train_ds, batch_sampler=batches, **kw),
            DataLoader(run.val_ds, batch_sampler=val_batches, **kw))


# -- one epoch -----------------------------------------------------------------------------------------

def _epoch(run: _Run, train_dl, val_dl, epoch: int, max_steps: int | None,
           quiet: bool) -> tuple[dict, bool]:
    """Train one epoch and validate; (the metrics row, whether max_steps stopped it)."""
    from tqdm import tqdm

    cfg = run.cfg
    train_dl.batch_sampler.set_epoch(epoch)
    run.model.train()
    amp_dtype = amp_dtype_for(run.device, cfg.amp)
    reduce = run.procs.loss_reduce()
    t0, seen, loss_sum, stopped = time.time(), 0, 0.0, False
    bar = tqdm(train_dl, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch",
               disable=quiet or not run.procs.main, leave=False)
    for i, (x, y) in enumerate(bar):
        x, y = x.to(run.device, non_blocking=True), y.to(run.device, non_blocking=True)
        loss = train_step(run.model, x, y, run.opt, run.sched, run.scaler, amp_dtype, reduce)
        if loss is None:  # the loss of the global batch: every process stops here
            raise StateError(f"loss is not finite at epoch {epoch + 1}, step {i + 1}; lower "
                             "--lr or check the tiles for bad values")
        seen += len(x) * run.procs.world
        loss_sum += loss.item() * len(x) * run.procs.world
        bar.set_postfix(loss=f"{loss.item():.3f}",
                        tiles_s=f"{seen / max(1e-9, time.time() - t0):.1f}")
        run.step += 1
        if max_steps is not None and run.step >= max_steps:
            stopped = True
            break
    train_time = time.time() - t0
    run.procs.broadcast_buffers(run.core)
    val = validate(run.core, val_dl, run.device, amp_dtype, run.procs)
    row = {"epoch": epoch + 1, "train_loss": loss_sum / max(1, seen), "val_loss": val.pop("loss"),
           **val, "lr": run.sched.get_last_lr()[0], "seconds": round(train_time, 2),
           "tiles_per_s": round(seen / max(train_time, 1e-9), 2)}
    return row, stopped


def train_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
               opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler,
               scaler: torch.amp.GradScaler, amp_dtype: torch.dtype | None,
               reduce: Callable | None = None) -> torch.Tensor | None:
    """One optimization step on the loss of the (global) batch; returns the detached loss,
    or None if it is not finite, in which case the weights are left untouched."""
    loss = dice_ce_loss(forward(model, x, amp_dtype), y, reduce)
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
def validate(model: torch.nn.Module, loader: DataLoader, device: torch.device,
             amp_dtype: torch.dtype | None = None, procs: Processes = Processes()) -> dict:
    """Scores over every validation pixel (one confusion matrix) and the mean loss per tile;
    each process scores its share of the tiles and the counts are summed."""
    model.eval()
    cm = np.zeros((2, 2), np.int64)
    loss_sum, tiles = 0.0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits = forward(model, x, amp_dtype)
        for j in range(len(x)):  # per tile, so that batching and sharding do not matter
            loss_sum += loss_from_sums(loss_sums(logits[j:j + 1], y[j:j + 1])).item()
        tiles += len(x)
        cm += confusion(logits.argmax(1).cpu().numpy(), y.cpu().numpy())
    total = procs.sum(np.array([*cm.ravel(), loss_sum, tiles], np.float64))
    cm = total[:4].astype(np.int64).reshape(2, 2)
    return {"loss": float(total[4] / max(1, total[5])), **scores(cm)}


# -- what rank 0 writes ----------------------------------------------------------------------------------

def _record(run: _Run, epoch: int, row: dict, rng: dict, echo) -> None:
    _append_csv(run.run_dir / METRICS_CSV, row)
    improved = row["miou"] > run.best_miou
    run.best_miou = max(run.best_miou, row["miou"])
    ck = {"epoch": epoch, "step": run.step, "best_miou": run.best_miou,
          "model_state": run.core.state_dict(), "optimizer": run.opt.state_dict(),
          "scheduler": run.sched.state_dict(), "scaler": run.scaler.state_dict(),
          **rng, "config": run.config,
          "meta": {"model": run.cfg.model, "preset": run.cfg.preset, "band_names": run.bands,
                   "bands": run.cfg.bands, "norm_stats": run.stats.to_dict(),
                   "export_normalization": run.tiles.get("normalization"),
                   "tile_size": run.tiles["tile_size"], "num_classes": 2,
                   "region": run.tiles.get("region"), "year": run.tiles.get("year"),
                   "metrics": {k: v for k, v in row.items() if isinstance(v, float)}}}
    if improved:
        save_checkpoint(run.run_dir / BEST_CKPT, ck)
    save_checkpoint(run.run_dir / LAST_CKPT, ck)
    echo(f"epoch {epoch + 1}/{run.cfg.epochs}: loss {row['train_loss']:.4f}, val mIoU "
         f"{row['miou']:.4f}, F1 {row['mf1']:.4f}, OA {row['oa']:.4f} "
         f"({row['tiles_per_s']:.1f} tiles/s)")


def _finish(run: _Run, complete: bool, echo) -> None:
    from .plots import plot_curves, plot_samples

    metrics = run.run_dir / METRICS_CSV
    plot_curves(metrics, run.run_dir / CURVES_PNG)
    plot_samples(run.core, run.val_ds, run.device, run.run_dir / SAMPLES_PNG)
    manifest = read_manifest(run.run_dir, "run")
    with open(metrics, newline="") as f:
        rows = list(csv.DictReader(f))
    best = max(rows, key=lambda r: float(r["miou"]))
    manifest.update(complete=complete, completed_at=now_iso(), epochs_done=len(rows),
                    best={k: float(v) for k, v in best.items()},
                    majority_class_miou=majority_miou(run.val_ds))
    write_manifest(run.run_dir / RUN_CONFIG, manifest)
    echo(f"run {'complete' if complete else 'stopped'}: {run.run_dir} (best val mIoU "
         f"{float(best['miou']):.4f} at epoch {int(float(best['epoch']))}; predicting the "
         f"majority class gives {manifest['majority_class_miou']:.4f})")


def majority_miou(ds: TileDataset) -> float:
    """mIoU of always predicting the most frequent class of the validation split."""
    cm = np.zeros((2, 2), np.int64)
    for i in range(len(ds)):
        _, lbl = ds.load(i)
        cm += confusion(np.zeros_like(lbl), lbl)
    if cm[1].sum() > cm[0].sum():
        cm = cm[:, ::-1].copy()
    return scores(cm)["miou"]


def _truncate_csv(path: Path, epochs: int) -> None:
    """Drop rows of epochs after the checkpoint (written before an interruption)."""
    if not path.is_file():
        return
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if int(float(r["epoch"])) <= epochs]
    path.unlink()
    for r in rows:
        _append_csv(path, r)


def _append_csv(path: Path, row: dict) -> None:
    exists = path.is_file()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if not exists:
            w.writeheader()
        w.writerow(row)
