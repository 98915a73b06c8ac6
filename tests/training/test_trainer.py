"""Training end to end on the demo tiles: loss falls, checkpoints are data, resume is exact."""
import csv

import pytest
import torch
from click.testing import CliRunner

from gee_export.common.cli import train
from gee_export.common.errors import GlacierError
from tests.helpers import invoke
from training.runtime import load_checkpoint
from training.trainer import TrainConfig
from training.trainer import train as run_train

CFG = TrainConfig(preset="tiny", epochs=3, lr=2e-3, batch_size=2, seed=3, workers=0)


def _quiet(*a):
    pass


def test_loss_falls_and_products_exist(demo_tiles):
    ws, tiles = demo_tiles
    run = run_train(tiles, ws, CFG.__class__(**{**CFG.__dict__, "epochs": 4}), "falls",
                    quiet=True, echo=_quiet)
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    for f in ("config.json", "best.pt", "last.pt", "curves.png", "samples.png"):
        assert (run / f).is_file(), f
    ck = load_checkpoint(run / "best.pt")
    assert ck["meta"]["band_names"][0] == "VV" and ck["meta"]["tile_size"] == 128
    assert len(ck["meta"]["norm_stats"]["mean"]) == 11


def test_resume_gives_the_same_weights(demo_tiles):
    ws, tiles = demo_tiles
    full = run_train(tiles, ws, CFG, "full", quiet=True, echo=_quiet)
    # An interrupted run: the same config stopped after its first epoch, then resumed.
    run_train(tiles, ws, CFG, "cut", max_steps=_steps_per_epoch(tiles, CFG), quiet=True,
              echo=_quiet)
    run_train(tiles, ws, CFG, "cut", resume=True, quiet=True, echo=_quiet)
    a = load_checkpoint(full / "last.pt")["model_state"]
    b = load_checkpoint(ws / "runs" / "cut" / "last.pt")["model_state"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def _steps_per_epoch(tiles, cfg):
    from training.data import read_tile_split

    n = len(read_tile_split(tiles, "train"))
    return -(-n // cfg.batch_size)


def test_resume_with_other_bands_is_refused(demo_tiles):
    ws, tiles = demo_tiles
    run_train(tiles, ws, TrainConfig(preset="tiny", epochs=1, batch_size=4), "bands",
              max_steps=1, quiet=True, echo=_quiet)
    with pytest.raises(GlacierError, match=r"--bands: \['VV'.* -> \['VV', 'VH'"):
        run_train(tiles, ws, TrainConfig(preset="tiny", epochs=1, batch_size=4, bands="A"),
                  "bands", quiet=True, echo=_quiet)


def test_checkpoint_with_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    p = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, p)
    with pytest.raises(GlacierError, match="cannot be loaded as data"):
        load_checkpoint(p)


def test_cli_bad_inputs(demo_tiles, tmp_path):
    ws, tiles = demo_tiles
    r = CliRunner().invoke(train, ["run", "--tiles", str(tiles), "--bands", "AZ",
                                   "--workspace", str(ws)])
    assert r.exit_code != 0 and "letters from ABCD" in r.output
    r = CliRunner().invoke(train, ["run", "--workspace", str(tmp_path)])
    assert r.exit_code != 0 and "prep tile" in r.output


def test_diverging_loss_stops_naming_epoch_and_step(demo_tiles):
    ws, tiles = demo_tiles
    cfg = TrainConfig(preset="tiny", epochs=1, lr=1e30, batch_size=1, seed=0, augment=False)
    with pytest.raises(GlacierError, match=r"loss is not finite at epoch 1, step \d+; lower --lr"):
        run_train(tiles, ws, cfg, "nan", quiet=True, echo=_quiet)


def test_empty_validation_split_is_refused(demo_tiles, tmp_path):
    import shutil

    import pyogrio

    ws, tiles = demo_tiles
    copy = tmp_path / "tiles"
    shutil.copytree(tiles, copy)
    index = pyogrio.read_dataframe(copy / "index.gpkg")
    index["split"] = "train"
    pyogrio.write_dataframe(index, copy / "index.gpkg", layer="tiles")
    with pytest.raises(GlacierError, match="'val' split is empty"):
        run_train(copy, ws, CFG, "empty", quiet=True, echo=_quiet)


def _weights(run_dir):
    return load_checkpoint(run_dir / "last.pt")["model_state"]


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_resume_with_loader_workers_equals_an_unbroken_run(demo_tiles):
    ws, tiles = demo_tiles
    full = run_train(tiles, ws, CFG, "unbroken", quiet=True, echo=_quiet)
    cfg = CFG.__class__(**{**CFG.__dict__, "workers": 2})  # workers may change on resume
    run_train(tiles, ws, cfg, "workers", max_steps=_steps_per_epoch(tiles, CFG), quiet=True,
              echo=_quiet)
    said = []
    run_train(tiles, ws, cfg, "workers", quiet=True, echo=said.append)  # the same command
    assert "resuming" in said[0] and "at epoch 2" in said[0]
    assert _same(_weights(full), _weights(ws / "runs" / "workers"))


def test_interruption_in_the_first_epoch_is_finished_by_the_same_command(demo_tiles,
                                                                         monkeypatch):
    import training.trainer as trainer

    ws, tiles = demo_tiles
    real, calls = trainer.train_step, []

    def interrupted(*a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(trainer, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_train(tiles, ws, CFG, "first-epoch", quiet=True, echo=_quiet)
    monkeypatch.setattr(trainer, "train_step", real)
    run = run_train(tiles, ws, CFG, "first-epoch", quiet=True, echo=_quiet)
    assert _same(_weights(run), _weights(run_train(tiles, ws, CFG, "unbroken", quiet=True,
                                                   echo=_quiet)))


def test_a_failed_start_does_not_block_a_corrected_command(demo_tiles, monkeypatch):
    import training.trainer as trainer

    ws, tiles = demo_tiles

    def broken(*a, **kw):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(trainer, "train_step", broken)
    with pytest.raises(RuntimeError):
        run_train(tiles, ws, CFG, "failed", quiet=True, echo=_quiet)
    monkeypatch.undo()
    said = []
    smaller = CFG.__class__(**{**CFG.__dict__, "batch_size": 1, "epochs": 1})
    run_train(tiles, ws, smaller, "failed", quiet=True, echo=said.append)
    assert said[0].endswith("it finished no epoch") and "--batch-size: 2 -> 1" in said[0]
    assert (ws / "runs" / "failed" / "last.pt").is_file()


@pytest.mark.parametrize("change, option", [({"lr": 1e-3}, "--lr: 0.002 -> 0.001"),
                                            ({"epochs": 5}, "--epochs: 3 -> 5); rerun with its "
                                                            "options to finish it, or give --name "
                                                            "for a new run (a cosine schedule"),
                                            ({"augment": False}, "--augment: on -> off")])
def test_resume_refuses_any_other_option(demo_tiles, change, option):
    ws, tiles = demo_tiles
    name = "refuse-" + next(iter(change))
    run_train(tiles, ws, CFG, name, max_steps=1, quiet=True, echo=_quiet)
    with pytest.raises(GlacierError) as e:
        run_train(tiles, ws, CFG.__class__(**{**CFG.__dict__, **change}), name, quiet=True,
                  echo=_quiet)
    assert option in str(e.value) and "--name for a new run" in str(e.value)


def test_corrupt_tile_is_named_before_training(demo_tiles, tmp_path):
    import shutil

    ws, tiles = demo_tiles
    copy = tmp_path / "tiles"
    shutil.copytree(tiles, copy)
    victim = sorted((copy / "images").iterdir())[1]
    victim.write_bytes(victim.read_bytes()[:5000])
    with pytest.raises(GlacierError, match=rf"images/{victim.name}: 5000 bytes .* run `prep tile "
                                           r"--verify`"):
        run_train(copy, ws, CFG, "corrupt", quiet=True, echo=_quiet)
    assert not (ws / "runs" / "corrupt").exists()


def test_augmentation_changes_every_epoch(demo_tiles):
    from gee_export.common.layout import read_manifest
    from training.data import NormStats, TileDataset

    ws, tiles = demo_tiles
    bands = ["VV", "VH"]
    stats = NormStats.from_manifest(read_manifest(tiles, "tiles"), bands)
    ds = TileDataset(tiles, "train", bands, stats, augment=True, seed=0)
    per_epoch = [[ds[(i, e)][1] for i in range(len(ds))] for e in range(3)]
    assert any(not torch.equal(a, b) for a, b in zip(per_epoch[0], per_epoch[1]))
    again = [ds[(i, 1)][1] for i in range(len(ds))]
    assert all(torch.equal(a, b) for a, b in zip(per_epoch[1], again))


def test_global_batches_are_the_same_for_any_number_of_processes():
    from training.data import GlobalBatches

    one = list(GlobalBatches(11, 4, seed=5))
    for world in (2, 3):
        parts = [list(GlobalBatches(11, 4, 5, True, r, world)) for r in range(world)]
        assert all(len(p) == len(one) for p in parts)  # every process steps equally often
        for j, batch in enumerate(one[:-1]):
            assert sorted(sum((p[j] for p in parts), [])) == sorted(batch)
    last = [list(GlobalBatches(9, 4, 5, True, r, 2))[-1] for r in range(2)]
    assert all(len(p) == 1 for p in last)  # 1 tile left for 2 processes: topped up


def test_the_ddp_loss_of_split_batches_is_the_loss_of_the_whole():
    from training.losses import dice_ce_loss, loss_from_sums, loss_sums

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 2, 16, 16, generator=g)
    target = torch.randint(0, 2, (4, 16, 16), generator=g)
    target[1, :4] = 255
    whole = dice_ce_loss(logits, target)
    split = loss_from_sums(loss_sums(logits[:1], target[:1]) + loss_sums(logits[1:], target[1:]))
    torch.testing.assert_close(whole, split)


def test_tile_cache_stays_within_its_budget():
    import numpy as np

    from training.data import TileCache

    cache = TileCache(budget=3 * 1000)
    for i in range(10):
        cache.put(i, (np.zeros(250, np.float32), np.zeros(0, np.uint8)))  # 1000 bytes each
    assert cache.bytes == 3000 and cache.get(9) is not None and cache.get(6) is None


class _CachedDataset(torch.utils.data.Dataset):
    """Puts a 1000-byte item into its TileCache per index; says which process holds how much."""

    def __init__(self, cache, n: int = 40):
        self.cache, self.n = cache, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        import os

        import numpy as np

        self.cache.put(i, (np.zeros(250, np.float32),))
        return os.getpid(), self.cache.bytes


@pytest.mark.parametrize("made_for", [0, 2])
def test_loader_workers_share_the_tile_cache_budget(made_for):
    """Two worker processes, each with its copy of a 4000-byte cache: 4000 bytes in all,
    whether or not the cache was told of the workers."""
    from torch.utils.data import DataLoader

    from training.data import TileCache

    cache = TileCache(4000, workers=made_for)
    held: dict[int, int] = {}
    for pids, sizes in DataLoader(_CachedDataset(cache), batch_size=4, num_workers=2):
        for pid, size in zip(pids.tolist(), sizes.tolist()):
            held[pid] = max(held.get(pid, 0), size)
    assert len(held) == 2 and sum(held.values()) == 4000
    assert cache.bytes == 0  # this process's copy was never used


def test_a_cache_made_for_workers_holds_nothing_in_the_process_that_made_it():
    import numpy as np

    from training.data import TileCache

    alone, beside_workers = TileCache(4000), TileCache(4000, workers=2)
    for c in (alone, beside_workers):
        c.put(0, (np.zeros(250, np.float32),))
    assert alone.bytes == 1000 and beside_workers.bytes == 0 and beside_workers.get(0) is None


@pytest.mark.parametrize("workers", [0, 3])
def test_a_runs_splits_share_one_cache_budget(workers):
    from types import SimpleNamespace

    from training import trainer
    from training.data import CACHE_MB
    from training.runtime import Processes

    run = SimpleNamespace(cfg=CFG, procs=Processes(), device=torch.device("cpu"),
                          train_ds=_CachedDataset(None, 40), val_ds=_CachedDataset(None, 10))
    trainer._loaders(run, workers)
    caches = (run.train_ds.cache, run.val_ds.cache)
    assert sum(c.budget for c in caches) == CACHE_MB * 2 ** 20
    assert abs(caches[0].budget - 4 * caches[1].budget) < 5  # 40 tiles to 10
    assert {c.workers for c in caches} == {workers}


def test_tile_splits_read_with_sqlite_equal_pyogrio(demo_tiles, tmp_path):
    """The split is read from index.gpkg with the standard library; GDAL agrees."""
    import pyogrio

    from gee_export.common.errors import InputError
    from training.data import read_tile_split

    _, tiles = demo_tiles
    frame = pyogrio.read_dataframe(tiles / "index.gpkg", read_geometry=False)
    for split in ("train", "val"):
        want = sorted(frame.loc[frame["split"] == split, "tile_id"])
        assert want and read_tile_split(tiles, split) == want
    bad = tmp_path / "tiles"
    bad.mkdir()
    (bad / "index.gpkg").write_text("not a database")
    with pytest.raises(InputError, match="cannot be read as the tile index"):
        read_tile_split(bad, "train")


def test_runs_and_predictions_from_before_amp_was_opt_in_still_resume(tiny_run, tmp_path):
    """Older runs recorded amp on (it did nothing on a CPU): the same command still finds the
    run and its prediction done instead of refusing them."""
    import json
    import shutil

    ws0, run0 = tiny_run
    ws = tmp_path / "ws"
    shutil.copytree(ws0, ws, ignore=shutil.ignore_patterns("predictions"))
    run = ws / "runs" / run0.name
    args = ["--workspace", ws, "--quiet"]
    pred = ["predict", "--checkpoint", run / "best.pt", "--export",
            ws / "exports" / "demo-2018", *args]
    invoke(train, pred)
    for path, key in ((run / "config.json", ("config",)),
                      (ws / "predictions" / run.name / "demo-2018" / "prediction.json",
                       ("parameters", "config"))):
        m = json.loads(path.read_text())
        node = m
        for k in key:
            node = node[k]
        node["amp"] = True
        path.write_text(json.dumps(m))
    again = invoke(train, ["run", "--tiles", ws / "tiles" / "demo-2018", "--preset", "tiny",
                           "--epochs", 2, "--lr", "2e-3", "--batch-size", 4, "--name",
                           run.name, *args])
    assert "nothing to do" in again.output
    assert "nothing to do" in invoke(train, pred).output


def test_a_workspace_path_with_url_characters(demo_tiles, tmp_path):
    import shutil

    from training.data import read_tile_split

    _, tiles = demo_tiles
    odd = tmp_path / "a#b%41?c" / "tiles"
    shutil.copytree(tiles, odd)
    assert read_tile_split(odd, "train") == read_tile_split(tiles, "train")
    assert not (tmp_path / "a").exists()


def test_a_damaged_checkpoint_says_how_to_go_on_and_a_failed_save_is_one_line(
        demo_tiles, tmp_path, monkeypatch):
    import shutil

    from gee_export.common.errors import StateError, WriteError
    from training import runtime

    ws, tiles = demo_tiles
    cfg = CFG.__class__(**{**CFG.__dict__, "epochs": 2})
    run = run_train(tiles, ws, cfg, "damaged", quiet=True, echo=_quiet, max_steps=1)
    last = run / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    with pytest.raises(StateError, match=f"cannot resume from it: delete {run}"):
        run_train(tiles, ws, cfg, "damaged", quiet=True, echo=_quiet)
    shutil.rmtree(run)

    def failing_save(*a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64")

    monkeypatch.setattr(torch, "save", failing_save)
    monkeypatch.setattr(runtime.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1, 1, 0))
    with pytest.raises(WriteError, match=r"cannot write .*last.pt: no space left on device"):
        runtime.save_checkpoint(tmp_path / "last.pt", {})
    assert not list(tmp_path.iterdir())
