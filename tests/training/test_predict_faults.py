"""`train predict` when things go wrong: a full disk (on a real, small file system where the
machine allows mounting one), a damaged working copy, non-finite weights or probabilities, and
the export a bare command takes."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from gee_export.common.errors import GlacierError
from training.predict import NonFiniteProbability, PredictConfig, predict, training_export

TRAIN = Path(sys.executable).with_name("train")
REPO = Path(__file__).resolve().parents[2]


def _quiet(*a):
    pass


def _per_pixel(x):
    return 1 / (1 + np.exp(-x[:, 3]))


def _read(path):
    with rasterio.open(path) as f:
        return f.read()


def _mount(where: Path, size: str) -> bool:
    """A tmpfs of `size` at `where`; False where this machine does not allow mounting."""
    where.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                         capture_output=True)
    return res.returncode == 0


def _remount(where: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(where)], check=True)


@pytest.fixture
def small_disk(tmp_path):
    """tmp_path/predictions on its own 900 KiB file system: a 512 x 512 probability raster
    (1 MiB uncompressed) does not fit."""
    where = tmp_path / "predictions"
    if not _mount(where, "900k"):
        pytest.skip("this machine does not allow mounting a small file system (tmpfs)")
    yield where
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


@pytest.fixture(scope="module")
def reference(tiny_run, demo_export, tmp_path_factory):
    """The banded per-pixel prediction made on a disk with room: what every recovery must
    equal."""
    _, run = tiny_run
    _, exp = demo_export
    ws = tmp_path_factory.mktemp("ref")
    out = predict(run / "best.pt", exp, ws, PredictConfig(band_width=128, overlap=32), "x",
                  quiet=True, echo=_quiet, model_fn=_per_pixel)
    return _read(out / "probability.tif")


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_the_same_command_finishes_once_there_is_room(
        tiny_run, demo_export, small_disk, tmp_path):
    """The command line, in its own process: GDAL's own lines must not reach stderr."""
    _, run = tiny_run
    _, exp = demo_export
    args = [str(TRAIN), "predict", "--checkpoint", str(run / "best.pt"), "--export", str(exp),
            "--workspace", str(tmp_path), "--quiet", "--overlap", "32"]
    full = subprocess.run(args, capture_output=True, text=True, cwd=REPO)
    assert full.returncode == 1
    assert full.stderr.count("\n") == 1 and full.stderr.startswith("Error: cannot write "), \
        full.stderr
    assert "no space left on device" in full.stderr and "Tiff" not in full.stderr
    out = tmp_path / "predictions" / "tiny-fixture" / "demo-2018"
    assert not json.loads((out / "prediction.json").read_text())["bands_done"]
    _remount(small_disk, "8m")
    again = subprocess.run(args, capture_output=True, text=True, cwd=REPO)
    assert again.returncode == 0, again.stderr
    ref = predict(run / "best.pt", exp, tmp_path / "room", PredictConfig(overlap=32),
                  quiet=True, echo=_quiet)
    np.testing.assert_array_equal(_read(out / "probability.tif"),
                                  _read(ref / "probability.tif"))


def test_a_column_band_is_recorded_only_once_it_is_on_disk(tiny_run, demo_export, small_disk,
                                                           tmp_path, reference):
    """Column bands of 128 px: a few fit before the disk is full. Every band recorded as done
    must hold exactly the reference's pixels; after room is made, the same call finishes to
    the reference, and --force would too."""
    _, run = tiny_run
    _, exp = demo_export
    cfg = PredictConfig(band_width=128, overlap=32)
    with pytest.raises(GlacierError, match="no space left on device"):
        predict(run / "best.pt", exp, tmp_path, cfg, "x", quiet=True, echo=_quiet,
                model_fn=_per_pixel)
    out = tmp_path / "predictions" / "tiny-fixture" / "x"
    done = json.loads((out / "prediction.json").read_text())["bands_done"]
    assert 0 < len(done) < 4, done  # some fitted, not all
    data = _read(out / "probability.tif.raw.tif")
    for c0 in done:
        np.testing.assert_array_equal(data[:, :, c0:c0 + 128], reference[:, :, c0:c0 + 128])
    _remount(small_disk, "8m")
    predict(run / "best.pt", exp, tmp_path, cfg, "x", quiet=True, echo=_quiet,
            model_fn=_per_pixel)
    np.testing.assert_array_equal(_read(out / "probability.tif"), reference)


def _cut(tiny_run, demo_export, ws, cfg, name):
    """A prediction interrupted in its third column band."""
    _, run = tiny_run
    _, exp = demo_export
    calls = {"n": 0}

    def model(x):
        calls["n"] += 1
        if calls["n"] == 12:
            raise KeyboardInterrupt
        return _per_pixel(x)

    with pytest.raises(KeyboardInterrupt):
        predict(run / "best.pt", exp, ws, cfg, name, quiet=True, echo=_quiet, model_fn=model)
    return ws / "predictions" / "tiny-fixture" / name


@pytest.mark.parametrize("damage", ["truncated", "overwritten"])
def test_a_working_copy_that_does_not_hold_its_recorded_bands_is_made_again(
        tiny_run, demo_export, tmp_path, reference, damage):
    _, run = tiny_run
    _, exp = demo_export
    cfg = PredictConfig(band_width=128, overlap=32)
    out = _cut(tiny_run, demo_export, tmp_path, cfg, "x")
    raw = out / "probability.tif.raw.tif"
    assert len(json.loads((out / "prediction.json").read_text())["bands_done"]) == 2
    if damage == "truncated":  # as a full disk leaves it
        with open(raw, "r+b") as f:
            f.truncate(raw.stat().st_size // 3)
    else:  # readable, but not what was written
        with rasterio.open(raw, "r+") as f:
            f.write(np.zeros((1, 10, 10), np.float32), window=((100, 110), (5, 15)))
    said = []
    predict(run / "best.pt", exp, tmp_path, cfg, "x", quiet=True, echo=said.append,
            model_fn=_per_pixel)
    assert any("predicting them again" in s for s in said)
    np.testing.assert_array_equal(_read(out / "probability.tif"), reference)


def test_force_starts_an_unfinished_prediction_afresh(tiny_run, demo_export, tmp_path, reference):
    _, run = tiny_run
    _, exp = demo_export
    cfg = PredictConfig(band_width=128, overlap=32)
    out = _cut(tiny_run, demo_export, tmp_path, cfg, "x")
    (out / "probability.tif.raw.tif").write_bytes(b"garbage")
    said = []
    predict(run / "best.pt", exp, tmp_path, cfg, "x", force=True, quiet=True,
            echo=said.append, model_fn=_per_pixel)
    assert any(s.startswith("--force: making") and s.endswith("afresh") for s in said)
    np.testing.assert_array_equal(_read(out / "probability.tif"), reference)


# -- non-finite numbers ---------------------------------------------------------------------------

def test_a_checkpoint_with_non_finite_weights_is_refused_naming_the_tensor(tiny_run, demo_export,
                                                                           tmp_path, cli):
    from gee_export.common.cli import train

    ws, run = tiny_run
    _, exp = demo_export
    ck = torch.load(run / "best.pt", weights_only=True)
    name = list(ck["model_state"])[3]
    ck["model_state"][name] = ck["model_state"][name].clone().fill_(float("nan"))
    bad = tmp_path / "runs" / "diverged" / "best.pt"
    bad.parent.mkdir(parents=True)
    torch.save(ck, bad)
    res = cli(train, ["predict", "--checkpoint", bad, "--export", exp, "--workspace", tmp_path,
                      "--quiet"], ok=False)
    assert res.exit_code == 1 and len(res.output.strip().splitlines()) == 1
    assert f"checkpoint {bad}: weight {name} is not finite" in res.output
    assert not (tmp_path / "predictions").exists()


def test_non_finite_probabilities_where_the_stack_has_data_are_refused(tiny_run, demo_export,
                                                                      tmp_path):
    _, run = tiny_run
    _, exp = demo_export

    def nan_in_one_window(x):
        p = _per_pixel(x)
        p[0, 60, 60] = np.nan
        return p

    with pytest.raises(NonFiniteProbability, match=f"{run / 'best.pt'}: the model's output is "
                                                   "not finite"):
        predict(run / "best.pt", exp, tmp_path, PredictConfig(overlap=32), "nan", quiet=True,
                echo=_quiet, model_fn=nan_in_one_window)
    out = tmp_path / "predictions" / "tiny-fixture" / "nan"
    assert not (out / "probability.tif").exists()
    assert not json.loads((out / "prediction.json").read_text())["complete"]


# -- the export a bare `train predict` takes ------------------------------------------------------------

def _export_manifest(ws: Path, name: str, region: str, year: int) -> Path:
    d = ws / "exports" / name
    d.mkdir(parents=True)
    (d / "export.json").write_text(json.dumps({
        "format_version": 1, "kind": "export", "complete": True, "region": {"name": region},
        "year": year, "completed_at": f"2030-01-0{len(list((ws / 'exports').iterdir()))}"}))
    return d


def test_a_bare_predict_takes_the_models_region_and_year_not_the_newest_export(tiny_run,
                                                                               demo_years):
    ws, run = tiny_run
    said = []
    assert training_export(run / "best.pt", ws, said.append) == ws / "exports" / "demo-2018"
    assert said == [f"--export: {ws / 'exports' / 'demo-2018'} (the model's training region "
                    "and year, demo 2018; give --export to predict another)"]


def test_a_bare_predict_refuses_when_the_region_and_year_is_ambiguous_or_missing(tiny_run,
                                                                                 tmp_path):
    _, run = tiny_run
    ck = tmp_path / "runs" / "moved" / "best.pt"  # its tiles are not in this workspace
    ck.parent.mkdir(parents=True)
    shutil.copy(run / "best.pt", ck)
    _export_manifest(tmp_path, "demo-2019", "demo", 2019)
    with pytest.raises(GlacierError, match="trained on demo 2018, and no complete export holds "
                                           "it .complete exports: .*demo-2019"):
        training_export(ck, tmp_path, _quiet)
    a = _export_manifest(tmp_path, "demo-2018", "demo", 2018)
    assert training_export(ck, tmp_path, _quiet) == a
    b = _export_manifest(tmp_path, "demo-2018-b", "demo", 2018)
    with pytest.raises(GlacierError, match=f"2 complete exports hold it: {a}, {b}; give "
                                           "--export"):
        training_export(ck, tmp_path, _quiet)


def test_a_full_disk_while_compressing_says_so_and_the_rerun_finishes(
        tiny_run, demo_export, tmp_path, reference):
    """The working copy (1 MiB) fits, its compressed copy does not: GDAL's error there
    carries its own error number (1), which is no errno."""
    _, run = tiny_run
    _, exp = demo_export
    where = tmp_path / "predictions"
    if not _mount(where, "1200k"):
        pytest.skip("this machine does not allow mounting a small file system (tmpfs)")
    try:
        cfg = PredictConfig(band_width=128, overlap=32)
        out = where / "tiny-fixture" / "x"
        with pytest.raises(GlacierError, match=f"cannot write {out / 'probability.tif'}: no "
                                               "space left on device"):
            predict(run / "best.pt", exp, tmp_path, cfg, "x", quiet=True, echo=_quiet,
                    model_fn=_per_pixel)
        assert len(json.loads((out / "prediction.json").read_text())["bands_done"]) == 4
        _remount(where, "8m")
        predict(run / "best.pt", exp, tmp_path, cfg, "x", quiet=True, echo=_quiet,
                model_fn=_per_pixel)
        np.testing.assert_array_equal(_read(out / "probability.tif"), reference)
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_the_command_line_takes_the_training_export_too(tiny_run, tmp_path, cli):
    from gee_export.common.cli import train

    _, run = tiny_run
    ck = tmp_path / "runs" / "moved" / "best.pt"
    ck.parent.mkdir(parents=True)
    shutil.copy(run / "best.pt", ck)
    _export_manifest(tmp_path, "demo-2020", "demo", 2020)  # the newest, but another year
    res = cli(train, ["predict", "--checkpoint", ck, "--workspace", tmp_path], ok=False)
    assert res.exit_code == 1 and res.output.startswith(
        "Error: --export not given: the model was trained on demo 2018, and no complete "
        "export holds it"), res.output


def test_the_model_runs_inside_fast_matmul_and_the_setting_is_restored(tiny_run, demo_export,
                                                                       tmp_path, monkeypatch):
    """Prediction asks for TF32 products on its own device for its own work (on CUDA), as
    training does, instead of a global switch made when the model is prepared."""
    import contextlib

    import training.runtime as runtime

    _, run = tiny_run
    _, exp = demo_export
    state = {"inside": False, "calls": []}

    @contextlib.contextmanager
    def recorded(device):
        state["inside"] = True
        try:
            yield
        finally:
            state["inside"] = False

    def model(x):
        state["calls"].append(state["inside"])
        return _per_pixel(x)

    monkeypatch.setattr(runtime, "fast_matmul", recorded)
    predict(run / "best.pt", exp, tmp_path, PredictConfig(band_width=128, overlap=32), "tf32",
            quiet=True, echo=lambda *_: None, model_fn=model)
    assert state["calls"] and all(state["calls"]) and not state["inside"]
