"""`train compare` on the demo tiles: a 2 x 2 grid of models and band sets, the table, the
chart, and a rerun that trains nothing."""
from __future__ import annotations

import csv
import json

from gee_export.common.cli import train


def test_compare_two_models_two_band_sets(demo_tiles, demo_export, cli):
    ws, tiles = demo_tiles
    args = ["compare", "--tiles", tiles, "--workspace", ws, "--models", "lgt-unet,unet",
            "--bands", "AB,ABCD", "--epochs", 1, "--batch-size", 4, "--lr", "2e-3",
            "--name", "cmp", "--quiet"]
    res = cli(train, args)
    out = ws / "comparisons" / "cmp"
    rows = list(csv.DictReader(open(out / "comparison.csv")))
    assert [(r["model"], r["bands"]) for r in rows] == [
        ("lgt-unet", "AB"), ("lgt-unet", "ABCD"), ("unet", "AB"), ("unet", "ABCD")]
    for r in rows:
        cfg = json.loads((ws / "runs" / r["run"] / "config.json").read_text())
        assert cfg["config"]["model"] == r["model"] and cfg["config"]["bands"] == r["bands"]
        assert cfg["config"]["seed"] == 0 and cfg["config"]["epochs"] == 1
        assert 0 <= float(r["miou"]) <= 1 and float(r["parameters_m"]) > 0
    # Fewer bands, fewer input weights: the first layers see 7 vs 11 channels.
    by = {(r["model"], r["bands"]): float(r["parameters_m"]) for r in rows}
    assert by[("unet", "AB")] < by[("unet", "ABCD")]
    md = (out / "comparison.md").read_text()
    assert md.count("\n") == 8 and "| lgt-unet | ABCD |" in md
    assert md.startswith("Scores: validation tiles (held out") and "val mIoU" in md
    assert "held out" in res.output
    assert "107.5" not in md  # the paper's count belongs beside the paper presets only
    assert (out / "comparison.png").stat().st_size > 5000
    # A rerun finds every run complete and trains nothing.
    res = cli(train, args)
    assert "epoch 1/1" not in res.output and res.output.count("is complete") == 4
    # Any registered model's checkpoint predicts a scene, with its own band subset.
    unet_ab = ws / "runs" / "cmp-unet-tiny-AB" / "best.pt"
    cli(train, ["predict", "--checkpoint", unet_ab, "--export", demo_export[1], "--workspace",
                ws, "--quiet"])
    pred = json.loads((ws / "predictions" / "cmp-unet-tiny-AB" / "demo-2018" /
                       "prediction.json").read_text())
    assert pred["complete"] and pred["bands"] == ["VV", "VH", "B2", "B3", "B4", "B8", "B11"]
