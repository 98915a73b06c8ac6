"""DDP on CPU: two processes (gloo) started by torchrun, as a user would start them."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from training.trainer import TrainConfig
from training.trainer import train as run_train

BIN = Path(sys.executable).parent
OPTIONS = ["--preset", "tiny", "--epochs", "2", "--batch-size", "4", "--lr", "2e-3",
           "--seed", "1", "--workers", "0", "--quiet"]


def rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_two_processes_train_one_run(demo_tiles):
    from torch.utils.data import DataLoader

    from gee_export.common.bands import parse_bands
    from training.data import NormStats, TileDataset
    from training.models import build_model
    from training.runtime import load_checkpoint
    from training.trainer import validate

    ws, tiles = demo_tiles
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", str(BIN / "train"),
           "run", "--tiles", str(tiles), "--workspace", str(ws), "--name", "ddp", *OPTIONS]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    run = ws / "runs" / "ddp"
    config = json.loads((run / "config.json").read_text())
    assert config["complete"] and config["world_size"] == 2
    assert len(rows(run)) == 2  # one set of metrics, written once
    assert sorted(p.name for p in run.iterdir()) == ["best.pt", "config.json", "curves.png",
                                                     "last.pt", "metrics.csv", "samples.png"]
    assert r.stdout.count("epoch 1/2") == 1  # rank 0 speaks for the run

    # The sharded validation equals one process validating the saved weights.
    ck = load_checkpoint(run / "last.pt")
    bands = parse_bands("ABCD")
    model = build_model("lgt-unet", "tiny", len(bands))
    model.load_state_dict(ck["model_state"])
    stats = NormStats.from_dict(ck["meta"]["norm_stats"])
    val = validate(model, DataLoader(TileDataset(tiles, "val", bands, stats), batch_size=3),
                   torch.device("cpu"))
    last = rows(run)[-1]
    for key in ("miou", "oa", "iou_glacier"):
        assert float(last[key]) == pytest.approx(val[key], abs=1e-12)
    assert float(last["val_loss"]) == pytest.approx(val["loss"], rel=1e-5)

    # One process with the same global batch: the same tiles in the same steps and the same
    # global loss, but BatchNorm statistics over 2 tiles per process instead of 4 (PyTorch's
    # SyncBatchNorm is GPU-only) and other dropout masks; so close, not equal.
    cfg = TrainConfig(preset="tiny", epochs=2, batch_size=4, lr=2e-3, seed=1, workers=0)
    single = rows(run_train(tiles, ws, cfg, "single", quiet=True, echo=lambda *_: None))
    for a, b in zip(rows(run), single):
        assert float(a["train_loss"]) == pytest.approx(float(b["train_loss"]), rel=0.1)


def _loss_on_rank(rank: int, world: int, init: str, out: str) -> None:
    import torch.distributed as dist

    from training.losses import dice_ce_loss
    from training.runtime import Processes

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        logits, target = _batch()
        part = slice(2 * rank, 2 * rank + 2)
        mine = logits[part].clone().requires_grad_(True)
        procs = Processes(rank, world)
        loss = dice_ce_loss(mine, target[part], procs.loss_reduce())
        loss.backward()
        counts = procs.sum(torch.tensor([rank + 1.0, 10.0]).numpy())
        torch.save({"loss": loss.detach(), "grad": mine.grad, "counts": counts},
                   f"{out}.{rank}")
        dist.barrier()  # neither leaves while the other still talks to it
    finally:
        dist.destroy_process_group()


def _batch():
    g = torch.Generator().manual_seed(7)
    target = torch.randint(0, 2, (4, 8, 8), generator=g)
    target[3, :2] = 255
    return torch.randn(4, 2, 8, 8, generator=g), target


def test_every_process_optimizes_the_loss_of_the_global_batch(tmp_path):
    """Each of 2 processes holds half a batch; the loss each computes is the whole batch's,
    and its gradient is `world` times the whole's (DDP then averages over the processes)."""
    import torch.multiprocessing as mp

    from training.losses import dice_ce_loss

    out = str(tmp_path / "result")
    mp.spawn(_loss_on_rank, args=(2, f"file://{tmp_path / 'rendezvous'}", out), nprocs=2)
    logits, target = _batch()
    logits.requires_grad_(True)
    whole = dice_ce_loss(logits, target)
    whole.backward()
    for rank in (0, 1):
        r = torch.load(f"{out}.{rank}", weights_only=False)
        torch.testing.assert_close(r["loss"], whole.detach())
        torch.testing.assert_close(r["grad"], 2 * logits.grad[2 * rank:2 * rank + 2])
        assert r["counts"].tolist() == [3.0, 20.0]
