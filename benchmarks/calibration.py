"""Do the uncertainties hold on scenes nobody tuned on? The whole chain on several synthetic
scenes (`prep export --region demo --demo-seed N`), each with its own glaciers, touching pairs,
debris tongue and known change, scored against the scenes' true areas.

For each seed, in ROOT/seed-N (every stage resumes; `train change` and `train evaluate` are
made afresh each run, so a change of their code is measured without retraining):
export 2018-2020 -> tile 2018 -> train (the demo's tiny recipe) -> predict 2018-2020 ->
evaluate 2018 (the area error model, on validation ground) -> change 2018-2020.

Printed, per seed and pooled: the coverage of the 90 % intervals of the glaciers' yearly areas
and of their rates (the target: 80-97 %), mean |z| of the rates (0.80 for a calibrated
Gaussian), the validation-ground mIoU, and whether the total's rate interval holds the true
total rate. A glacier counts from COVERAGE_MIN_KM2 of true area in the first year, as in
`train change`'s truth check.

    .venv/bin/python benchmarks/calibration.py --root /tmp/calibration [--seeds 2018,1,2,3,4,5]
    .venv/bin/python benchmarks/calibration.py --root /tmp/calibration --chain-only
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

BIN = Path(sys.executable).parent
Z90 = 1.6448536269514722
YEARS = (2018, 2019, 2020)
SEEDS = (2018, 1, 2, 3, 4, 5, 6, 7)
COVERAGE_MIN_KM2 = 0.1


def _run(*args: str) -> None:
    out = subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{out.stdout[-2000:]}{out.stderr[-3000:]}")


def region(seed: int) -> str:
    from gee_export.demo.scene import demo_region_name

    return demo_region_name(seed)


def chain(ws: Path, seed: int, epochs: int, with_change: bool) -> None:
    """The demo's commands for one seed; reruns are no-ops but for evaluate and change."""
    name = region(seed)
    for year in YEARS:
        _run("prep", "export", "--region", "demo", "--demo-seed", str(seed), "--year",
             str(year), "--workspace", str(ws), "--quiet")
    _run("prep", "tile", "--workspace", str(ws), "--export", str(ws / "exports" / f"{name}-2018"),
         "--size", "256", "--block-tiles", "2", "--workers", "2", "--quiet")
    _run("train", "run", "--workspace", str(ws), "--tiles", str(ws / "tiles" / f"{name}-2018"),
         "--preset", "tiny", "--epochs", str(epochs), "--lr", "1e-3", "--name", "tiny",
         "--quiet")
    ckpt = ws / "runs" / "tiny" / "best.pt"
    for year in YEARS:
        _run("train", "predict", "--workspace", str(ws), "--checkpoint", str(ckpt),
             "--export", str(ws / "exports" / f"{name}-{year}"), "--quiet")
    if with_change:
        _run("train", "evaluate", "--prediction", str(ws / "predictions" / "tiny" / f"{name}-2018"),
             "--force")
        _run("train", "change", "--workspace", str(ws), "--checkpoint", str(ckpt), "--region",
             name, "--years", f"{YEARS[0]}-{YEARS[-1]}", "--force", "--quiet")


@dataclass
class Scores:
    area_in: list[bool] = field(default_factory=list)
    area_z: list[float] = field(default_factory=list)
    raw_in: list[bool] = field(default_factory=list)  # the same sigma about the uncorrected area
    raw_error: list[float] = field(default_factory=list)  # measured - true (km^2)
    best_error: list[float] = field(default_factory=list)  # best - true (km^2)
    rate_in: list[bool] = field(default_factory=list)
    rate_z: list[float] = field(default_factory=list)
    total_in: list[bool] = field(default_factory=list)
    total_z: list[float] = field(default_factory=list)
    miou: list[float] = field(default_factory=list)

    def add(self, other: "Scores") -> None:
        for k in vars(self):
            getattr(self, k).extend(getattr(other, k))


def _truth(ws: Path, name: str) -> dict[int, dict[str, float]]:
    out = {}
    for year in YEARS:
        m = json.loads((ws / "exports" / f"{name}-{year}" / "export.json").read_text())
        out[year] = m["synthetic_truth"]["glacier_area_km2"]
    return out


def _slope(years: np.ndarray, areas: np.ndarray) -> float:
    t = years - years.mean()
    return float((t * (areas - areas.mean())).sum() / (t * t).sum())


def score_seed(ws: Path, seed: int) -> Scores:
    """Each glacier's yearly areas and rate, and the total rate, against the scene's truth."""
    name = region(seed)
    truth = _truth(ws, name)
    change = ws / "predictions" / "tiny" / f"{name}-change"
    rows = list(csv.DictReader(open(change / "change.csv")))
    num = lambda v: float(v) if v not in ("", None) else math.nan  # noqa: E731
    s = Scores()
    for row in rows:
        gid = row["glacier_id"]
        if gid == "total":
            continue
        if truth[YEARS[0]].get(gid, 0.0) <= COVERAGE_MIN_KM2:
            continue
        for year in YEARS:
            lo, hi = num(row[f"area_ci90_low_{year}"]), num(row[f"area_ci90_high_{year}"])
            if math.isfinite(lo):
                t = truth[year].get(gid, 0.0)
                best, sigma = num(row[f"area_best_km2_{year}"]), num(row[f"area_sigma_km2_{year}"])
                raw = num(row[f"area_km2_{year}"])
                s.area_in.append(lo <= t <= hi)
                s.area_z.append((best - t) / sigma)
                s.raw_in.append(abs(raw - t) <= Z90 * sigma)
                s.raw_error.append(raw - t)
                s.best_error.append(best - t)
        used = [int(y) for y in row["years_used"].split(";") if y]
        if len(used) >= 2 and math.isfinite(num(row["rate_ci90_low"])):
            true = _slope(np.array(used, float), np.array([truth[y].get(gid, 0.0) for y in used]))
            s.rate_in.append(num(row["rate_ci90_low"]) <= true <= num(row["rate_ci90_high"]))
            s.rate_z.append((num(row["rate_km2_per_year"]) - true) / num(row["rate_se_km2_per_year"]))
    total = rows[-1]
    true_total = _slope(np.array(YEARS, float),
                        np.array([sum(v for g, v in truth[y].items() if any(r["glacier_id"] == g for r in rows))
                                  for y in YEARS]))
    s.total_in.append(num(total["rate_ci90_low"]) <= true_total <= num(total["rate_ci90_high"]))
    s.total_z.append((num(total["rate_km2_per_year"]) - true_total) / num(total["rate_se_km2_per_year"]))
    report = json.loads((ws / "predictions" / "tiny" / f"{name}-2018" / "report.json").read_text())
    px = report["pixels"]
    block = px.get("validation") or px.get("held_out") or px["all"]
    s.miou.append(block["miou"])
    return s


def _line(label: str, s: Scores) -> str:
    pct = lambda v: f"{100 * np.mean(v):5.1f} % of {len(v):3d}" if v else "      -      "  # noqa
    mz = lambda v: f"{np.mean(np.abs(v)):.2f}" if v else "-"  # noqa: E731
    return (f"{label:<10} {pct(s.area_in)}  {mz(s.area_z):>5}   {pct(s.rate_in)}  "
            f"{mz(s.rate_z):>5}   {sum(s.total_in)}/{len(s.total_in)}  {mz(s.total_z):>5}   "
            f"{np.mean(s.miou):.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    ap.add_argument("--epochs", type=int, default=15)  # the demo's recipe
    ap.add_argument("--chain-only", action="store_true", help="stop after prediction")
    ap.add_argument("--score-only", action="store_true", help="score the changes already made")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    for seed in seeds:
        if args.score_only:
            continue
        t = time.perf_counter()
        chain(args.root / f"seed-{seed}", seed, args.epochs, not args.chain_only)
        print(f"seed {seed}: chain {time.perf_counter() - t:.0f} s", flush=True)
    if args.chain_only:
        return
    print(f"{'seed':<10} {'area 90 % coverage':<19} mean|z|  {'rate 90 % coverage':<19} "
          f"mean|z|  total  |z|     val. mIoU")
    pooled = Scores()
    for seed in seeds:
        s = score_seed(args.root / f"seed-{seed}", seed)
        pooled.add(s)
        print(_line(str(seed), s))
    print(_line("pooled", pooled))
    print(f"areas without the bias correction (the same sigma about the measured area): "
          f"{100 * np.mean(pooled.raw_in):.1f} % covered; mean error measured "
          f"{np.mean(pooled.raw_error):+.4f} km^2, best {np.mean(pooled.best_error):+.4f} km^2; "
          f"{len(pooled.rate_in)} glacier rates, {len(pooled.area_in)} glacier-years")
    print("target: coverage 80-97 %, rate mean |z| 0.55-1.1 (0.80 calibrated), total covered "
          "on at least 5 of 6 seeds")


if __name__ == "__main__":
    main()
