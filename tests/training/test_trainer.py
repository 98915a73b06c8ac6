"""Training end to end on the demo tiles: loss falls, checkpoints are data, resume is exact."""
import csv

import pytest
import torch
from click.testing import CliRunner

from gee_export.common.cli import train
from gee_export.common.errors import GlacierError
from training.trainer import TrainConfig, load_checkpoint
from training.trainer import train as run_train

CFG = TrainConfig(preset="tiny", epochs=3, lr=2e-3, batch_size=2, seed=3)


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
              quiet=True, echo=_quiet)
    with pytest.raises(GlacierError, match="band_names"):
        run_train(tiles, ws, TrainConfig(preset="tiny", epochs=2, bands="AB"), "bands",
                  resume=True, quiet=True, echo=_quiet)


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
