"""`train compare`: the paper's comparisons (Table 2 models, Table 3 ablations, Fig. 4 band
combinations) on the user's own tiles. Every cell of the grid is an ordinary run (same tiles,
seed and schedule), so each can be inspected, resumed or predicted with on its own."""
from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np

from gee_export.common.atomic import write_bytes, write_json
from gee_export.common.bands import parse_bands
from gee_export.common.errors import InputError
from gee_export.common.layout import (
    COMPARISONS_DIR,
    METRICS_CSV,
    RUN_CONFIG,
    RUNS_DIR,
    base_manifest,
    check_name,
    now_iso,
)

from .models import paper_params_m, resolve
from .trainer import TrainConfig, default_run_name, train

# What every score of a comparison measures (the tiles are split 70/30 in blocks, with a guard
# gap, so validation pixels never lie in a training tile).
SCORED_ON = "validation tiles (held out: in no training tile)"
METRICS = (("miou", "mIoU"), ("mf1", "mean F1"), ("oa", "OA"), ("iou_glacier", "glacier IoU"),
           ("f1_glacier", "glacier F1"))


def run_comparison(tile_dir: Path, workspace: Path, models: list[str], band_sets: list[str],
                   base: TrainConfig, name: str = "compare", quiet: bool = False,
                   echo: Callable[[str], None] = print) -> Path:
    """Train every model x band set (resuming or skipping finished runs), then tabulate."""
    if not models or not band_sets:
        raise InputError("give at least one --models and one --bands")
    for m in models:
        try:
            resolve(m)  # unknown names fail before any training
        except InputError as e:
            raise InputError(str(e).replace("--model ", "--models: ", 1)) from None
    for b in band_sets:
        parse_bands(b)
    check_name(name, "--name")
    out = Path(workspace) / COMPARISONS_DIR / name
    rows = []
    grid = [(m, b.upper()) for m in models for b in band_sets]
    for i, (model, bands) in enumerate(grid, 1):
        cfg = replace(base, model=model, bands=bands)
        run_name = default_run_name(name, cfg)
        run_dir = Path(workspace) / RUNS_DIR / run_name
        echo(f"[{i}/{len(grid)}] {model} on bands {bands} -> {run_dir}")
        train(tile_dir, workspace, cfg, run_name, quiet=quiet, echo=echo)  # resumes by itself
        rows.append(summarize_run(run_dir, model, bands))
    out.mkdir(parents=True, exist_ok=True)
    write_table(rows, out / "comparison.csv", out / "comparison.md")
    bar_chart(rows, out / "comparison.png")
    write_json(out / "comparison.json", base_manifest(
        "comparison", complete=True, completed_at=now_iso(), tiles=str(Path(tile_dir).resolve()),
        models=models, band_sets=[b.upper() for b in band_sets],
        schedule={k: v for k, v in base.__dict__.items() if k not in ("model", "bands")},
        scored_on=SCORED_ON, rows=rows))
    echo(f"comparison complete: {out} (comparison.md, comparison.csv, comparison.png); "
         f"scores on {SCORED_ON}")
    return out


def summarize_run(run_dir: Path, model: str, bands: str) -> dict:
    cfg = json.loads((run_dir / RUN_CONFIG).read_text())
    epochs = list(csv.DictReader(open(run_dir / METRICS_CSV)))
    best = cfg["best"]
    return {"model": model, "bands": bands, "run": run_dir.name,
            "parameters_m": round(cfg["parameters"] / 1e6, 3),
            "paper_parameters_m": paper_params_m(model, cfg["config"]["preset"]),
            **{k: round(best[k], 4) for k, _ in METRICS},
            "best_epoch": int(best["epoch"]), "epochs": len(epochs),
            "seconds_per_epoch": round(float(np.mean([float(r["seconds"]) for r in epochs])), 2)}


def write_table(rows: list[dict], csv_path: Path, md_path: Path) -> None:
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    write_bytes(csv_path, buf.getvalue().encode())
    head = ["model", "bands", "params (M)", "paper (M)"] + [f"val {n}" for _, n in METRICS] + \
        ["s/epoch"]
    lines = [f"Scores: {SCORED_ON}, at each run's best epoch.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["model"], r["bands"], f"{r['parameters_m']:.2f}",
                 f"{r['paper_parameters_m']:.1f}" if r["paper_parameters_m"] else "-"]
        cells += [f"{r[k]:.4f}" for k, _ in METRICS] + [f"{r['seconds_per_epoch']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    write_bytes(md_path, ("\n".join(lines) + "\n").encode())


def bar_chart(rows: list[dict], path: Path) -> None:
    """Validation mIoU per model, one bar per band set (the shape of the paper's Fig. 4)."""
    from gee_export.common.figures import new_figure, save_png

    models = list(dict.fromkeys(r["model"] for r in rows))
    bands = list(dict.fromkeys(r["bands"] for r in rows))
    val = {(r["model"], r["bands"]): r["miou"] for r in rows}
    fig, ax = new_figure(figsize=(max(6, 1.2 * len(models) * max(1, len(bands)) / 2 + 3), 4.5))
    width = 0.8 / len(bands)
    x = np.arange(len(models))
    for j, b in enumerate(bands):
        ys = [val.get((m, b), np.nan) for m in models]
        bars = ax.bar(x + (j - (len(bands) - 1) / 2) * width, ys, width, label=b)
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.set_xticks(x, models, rotation=20, ha="right")
    ax.set_ylabel("mIoU on held-out validation tiles")
    lo = min(v for v in val.values())
    ax.set_ylim(max(0.0, lo - 0.1), 1.0)
    ax.legend(title="bands", fontsize=8)
    ax.set_title("models x band combinations (same tiles, seed and schedule)")
    fig.tight_layout()
    save_png(fig, path)
