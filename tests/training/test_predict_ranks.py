"""`train predict` sharded with torchrun: two CPU processes (gloo) give the one-process
result bit for bit, a killed rank resumes without predicting its finished column bands again,
and an error on one rank ends both with one line."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine

from training.predict import PredictConfig, predict, row_shares, stream_probability

BIN = Path(sys.executable).parent
ENTRY = Path(__file__).with_name("ranks_entry.py")
CRS = "EPSG:32647"
T = Affine(10, 0, 400_000, 0, -10, 4_300_000)


def _quiet(*a):
    pass


def _torchrun(args: list, env: dict | None = None, entry: Path | None = None
              ) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node 2 train ARGS` (or the fault-planting entry),
    one thread per process."""
    cmd = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2",
           str(entry or BIN / "train"), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1", **(env or {})))


@pytest.fixture(scope="module")
def threshold(tiny_run, demo_export, tmp_path_factory) -> float:
    """A threshold that gives the briefly trained model's prediction some glaciers (its
    probabilities lie close to 0.5): the 70th percentile of its one-process probability."""
    _, run = tiny_run
    _, exp = demo_export
    out = predict(run / "best.pt", exp, tmp_path_factory.mktemp("plain"), PredictConfig(),
                  quiet=True, echo=_quiet)
    with rasterio.open(out / "probability.tif") as f:
        p = f.read(1)
    return round(float(np.percentile(p[np.isfinite(p)], 70)), 4)


def _predict_args(run: Path, exp: Path, ws: Path, threshold: float) -> list:
    return ["predict", "--checkpoint", run / "best.pt", "--export", exp, "--workspace", ws,
            "--quiet", "--threshold", threshold]


def _assert_same_prediction(a: Path, b: Path) -> None:
    """The same probability pixels and the same outlines, exactly."""
    with rasterio.open(a / "probability.tif") as fa, rasterio.open(b / "probability.tif") as fb:
        np.testing.assert_array_equal(fa.read(), fb.read())
        assert (fa.transform, fa.crs, fa.descriptions) == (fb.transform, fb.crs, fb.descriptions)
    for layer in ("glaciers", "by_glacier"):
        ga = gpd.read_file(a / "glaciers.gpkg", layer=layer)
        gb = gpd.read_file(b / "glaciers.gpkg", layer=layer)
        assert len(ga) == len(gb) > 0
        assert list(ga.geometry.to_wkb()) == list(gb.geometry.to_wkb())
        assert ga.drop(columns="geometry").equals(gb.drop(columns="geometry"))
    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())


def test_row_shares_tile_the_scene_and_streamed_apart_equal_the_whole(tmp_path):
    """Each share streamed on its own, with the windows above it that reach into it, gives
    the whole-scene pixels bit for bit, for any number of processes (also more than rows
    of windows). The model depends on each window's context, so a missing or extra window,
    or another summing order, shows."""
    rng = np.random.default_rng(3)
    data = rng.random((11, 300, 170), dtype=np.float32)
    data[:, 250:, :30] = np.nan
    stack = tmp_path / "stack.tif"
    with rasterio.open(stack, "w", driver="GTiff", width=170, height=300, count=11,
                       dtype="float32", nodata=np.nan, crs=CRS, transform=T) as f:
        f.write(data)

    def context(x):  # each pixel plus its window's mean: overlapping windows disagree
        return 1 / (1 + np.exp(-(x[:, 3] + x.mean(axis=(1, 2, 3))[:, None, None])))

    def run(rows, name):
        out = tmp_path / name
        with rasterio.open(stack) as src:
            h = (rows or (0, src.height))[1] - (rows or (0, src.height))[0]
            with rasterio.open(out, "w", driver="GTiff", width=src.width, height=h, count=1,
                               dtype="float32", nodata=np.nan, crs=CRS, transform=T) as dst:
                stream_probability(src, dst, context, [1, 2, 3, 4], lambda a: np.nan_to_num(a - 0.5), 64, 20,
                                   3, 70, rows=rows)
        with rasterio.open(out) as f:
            return f.read(1)

    whole = run(None, "whole.tif")
    for world in (2, 3, 7, 12):
        shares = row_shares(300, 64, 44, world)
        assert shares[0][0] == 0 and shares[-1][1] == 300
        assert all(a[1] == b[0] for a, b in zip(shares, shares[1:]))
        parts = [run(s, f"{world}-{k}.tif") for k, s in enumerate(shares) if s[1] > s[0]]
        np.testing.assert_array_equal(np.concatenate(parts), whole)


@pytest.mark.slow
def test_two_processes_predict_the_one_process_result_bit_for_bit(tiny_run, demo_export,
                                                                  threshold, tmp_path):
    _, run = tiny_run
    _, exp = demo_export
    r = _torchrun(_predict_args(run, exp, tmp_path / "two", threshold))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stdout.count("prediction complete") == 1  # rank 0 speaks for the run
    one = predict(run / "best.pt", exp, tmp_path / "one", PredictConfig(threshold=threshold),
                  quiet=True, echo=_quiet)
    two = tmp_path / "two" / "predictions" / "tiny-fixture" / "demo-2018"
    _assert_same_prediction(two, one)
    # Nothing recomputed by a rerun, with either number of processes.
    again = _torchrun(_predict_args(run, exp, tmp_path / "two", threshold))
    assert again.returncode == 0 and "is complete; nothing to do" in again.stdout, \
        again.stdout[-3000:] + again.stderr[-5000:]


@pytest.mark.slow
@pytest.mark.parametrize("damaged", [False, True])
def test_a_killed_rank_resumes_without_predicting_its_finished_bands_again(
        tiny_run, demo_export, threshold, tmp_path, damaged):
    """Column bands of 128 px, so that each rank has four: rank 1 is killed (SIGKILL) once
    its first is recorded. The same command then predicts only what no record holds (and a
    recorded band that no longer reads back as recorded), and the result is the one-process
    result."""
    _, run = tiny_run
    _, exp = demo_export
    ws, log = tmp_path / "ws", tmp_path / "log"
    log.mkdir()
    env = {"PLANT_BAND_WIDTH": "128", "PLANT_LOG": str(log)}
    args = _predict_args(run, exp, ws, threshold)
    killed = _torchrun(args, {**env, "PLANT_KILL": "1"}, ENTRY)
    assert killed.returncode != 0
    out = ws / "predictions" / "tiny-fixture" / "demo-2018"
    parts = out / "probability.tif.parts"
    assert not json.loads((out / "prediction.json").read_text())["complete"]
    records = {p.name: json.loads(p.read_text())["bands_done"] for p in parts.glob("*.json")}
    share1 = "rows-{}-{}".format(*row_shares(512, 128, 96, 2)[1])
    assert records[f"{share1}.json"] == [0], records  # rank 1 recorded its first band, died
    if damaged:  # readable, but not what was recorded
        with rasterio.open(parts / f"{share1}.raw.tif", "r+") as f:
            f.write(np.zeros((1, 5, 5), np.float32), window=((100, 105), (5, 10)))
    for f in log.iterdir():
        f.unlink()
    resumed = _torchrun(args, env, ENTRY)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    streamed = {f.name: [int(c) for c in f.read_text().split()] for f in log.iterdir()}
    assert streamed["rank-1"] == [0, 128, 256, 384][0 if damaged else 1:]
    assert ("rank 1: note:" in resumed.stdout) == damaged, resumed.stdout
    done0 = set(records.get("rows-0-{}.json".format(row_shares(512, 128, 96, 2)[0][1]), []))
    assert sorted(set(streamed.get("rank-0", [])) | done0) == [0, 128, 256, 384]
    assert not done0 & set(streamed.get("rank-0", []))  # rank 0's finished bands kept too
    one = predict(run / "best.pt", exp, tmp_path / "one",
                  PredictConfig(band_width=128, threshold=threshold), quiet=True, echo=_quiet)
    _assert_same_prediction(out, one)


@pytest.mark.slow
def test_an_error_on_one_rank_ends_both_with_one_line(tiny_run, demo_export, tmp_path):
    _, run = tiny_run
    _, exp = demo_export
    r = _torchrun(_predict_args(run, exp, tmp_path, 0.5), {"PLANT_NAN": "1"}, ENTRY)
    assert r.returncode != 0
    ours = [line for line in (r.stdout + r.stderr).splitlines() if line.startswith("Error:")]
    assert len(ours) == 1 and "not finite" in ours[0], r.stdout[-2000:] + r.stderr[-3000:]
