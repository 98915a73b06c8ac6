"""`train change`: each glacier's area, year by year, and its trend with bounds.

Method. One prediction per year (`train predict`, resumable). Every pixel within the zone
buffer of a reference glacier belongs to the nearest one (training/zones.py), so touching
glaciers are measured apart and a glacier that advances beyond its reference outline keeps
its ice. A glacier's area in a year is its predicted ice over the pixels with data, made
ellipsoidal by the ratio of its reference outline's ellipsoidal to planar area.

Bounds. For each year, a low and a high area: with --tta, the pixels whose mean probability
minus (plus) its spread over the 8 views reaches the threshold; without, the threshold raised
(lowered) by BOUNDS_MARGIN. The trend is the least-squares slope of area against year; its
bounds are the smallest and largest least-squares slopes of any series that stays within
every year's [low, high] (the slope is linear in the areas, so each bound puts every year at
one end of its interval). They cover the model's uncertainty at the ice edge, not errors it
makes with confidence: seasonal snow taken for ice, debris-covered ice missed, or a scene
unlike the training year.
"""
from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from gee_export.common.atomic import as_stored, write_bytes, write_json
from gee_export.common.errors import InputError, StateError
from gee_export.common.layout import (
    CHANGE_FILES,
    PREDICTION_MANIFEST,
    PREDICTIONS_DIR,
    PROBABILITY_TIF,
    base_manifest,
    file_sha256,
    now_iso,
    read_manifest,
    require_complete,
    resolved_path,
    stored_path,
)
from gee_export.common.locks import output_lock

from .zones import ZONE_BUFFER_M, ZoneCounts, ZoneRaster, blocks, dissolve, ellipsoidal_ratios, zone_polygons

if TYPE_CHECKING:
    from gee_export.common.outlines import Outlines

    from .predict import PredictConfig

BOUNDS_MARGIN = 0.1  # without --tta: bounds at threshold -/+ this
RULES = ("ice", "low", "high")


@dataclass(frozen=True)
class ChangeConfig:
    zone_buffer_m: float = ZONE_BUFFER_M
    id_field: str | None = None  # reference id field (default: glac_id, RGIId, ...)


@dataclass
class YearAreas:
    """One year's prediction measured by zones: km^2 per glacier (index 0: outside zones)."""
    year: int
    prediction: Path
    km2: dict[str, np.ndarray]  # rule -> ellipsoidal km^2 per reference glacier
    observed: np.ndarray  # fraction of each reference glacier with data
    observed_all: float  # fraction of all the reference's glacier pixels with data
    outlines: dict[int, object]  # predicted ice per glacier (zone index -> polygon)
    bounds: str  # how low/high were made
    threshold: float  # the prediction's ice threshold


def parse_years(spec: str) -> list[int]:
    """'2018-2024' or '2018,2020,2024'."""
    try:
        if "-" in spec:
            a, b = (int(v) for v in spec.split("-"))
            years = list(range(a, b + 1))
        else:
            years = sorted({int(v) for v in spec.split(",")})
    except ValueError:
        raise InputError(f"--years {spec!r}: give FIRST-LAST (2018-2024) or a list "
                         "(2018,2020,2024)") from None
    if "-" in spec and len(years) < 2 and years != [int(spec.split("-")[0])]:
        raise InputError(f"--years {spec!r}: FIRST comes before LAST")
    if len(years) < 2:
        raise InputError(f"--years {spec!r}: a change needs at least two years")
    return years


def predict_years(checkpoint: Path, workspace: Path, region: str, years: list[int],
                  predict_cfg: PredictConfig, quiet: bool,
                  echo: Callable[[str], None]) -> list[Path]:
    """Run (or resume) `train predict` for every year whose export exists; name the others."""
    from gee_export.common.layout import EXPORTS_DIR, product_name

    from .predict import predict

    found, missing = [], []
    for year in years:
        exp = Path(workspace) / EXPORTS_DIR / product_name(region, year)
        ok = (exp / "export.json").is_file() and read_manifest(exp, "export").get("complete")
        (found if ok else missing).append((year, exp))
    if missing:
        echo(f"no complete export for {', '.join(str(y) for y, _ in missing)}; make them with "
             f"`prep export --region {region} --year YEAR`")
    if len(found) < 2:
        raise InputError(f"--region {region} --years: {len(found)} of {len(years)} years have a "
                         "complete export; a change needs two")
    out = []
    for year, exp in found:
        echo(f"{year}: predicting {exp}")
        try:
            out.append(predict(checkpoint, exp, workspace, predict_cfg, quiet=quiet, echo=echo))
        except StateError as e:
            if "holds a prediction made with other" not in str(e):
                raise
            raise StateError(f"{str(e).split('; use --force')[0]}; train change reuses that "
                             "prediction: rerun with the options it was made with, or remake "
                             f"it first with `train predict --export {exp} --force` and "
                             "these options") from None
    return out


def run_change(predictions: list[Path], workspace: Path, reference: Path | None = None,
               cfg: ChangeConfig = ChangeConfig(), name: str | None = None,
               force: bool = False, echo: Callable[[str], None] = print) -> Path:
    """Measure every prediction by the reference's zones; write change.csv, change.gpkg,
    change.png and change.json."""
    from .predict import reference_default

    manifests = [require_complete(Path(p) / PREDICTION_MANIFEST, "prediction",
                                  "finish it with `train predict`") for p in predictions]
    order = np.argsort([m.get("year") or 0 for m in manifests])
    predictions = [Path(predictions[i]) for i in order]
    manifests = [manifests[i] for i in order]
    years = [m.get("year") for m in manifests]
    if None in years or len(set(years)) != len(years) or len(years) < 2:
        raise InputError(f"--predictions: a change needs one prediction per year, of two "
                         f"years or more; got years {years}")
    for p, m in zip(predictions[1:], manifests[1:]):
        if m.get("grid") != manifests[0].get("grid"):
            raise InputError(f"--predictions: {p} lies on another grid than {predictions[0]}; "
                             "a change compares one region's years on one grid")
    reference = Path(reference) if reference else reference_default(predictions[0])
    if not reference.is_file():
        raise InputError(f"{predictions[0]}: its export recorded no outlines; give "
                         "--reference FILE")
    out = _out_dir(Path(workspace), predictions[0], manifests[0], name)
    params = as_stored({"predictions": [stored_path(p, out, workspace) for p in predictions],
                        "completed": [m.get("completed_at") for m in manifests],
                        "reference": reference.name, "reference_sha256": file_sha256(reference),
                        "config": asdict(cfg)})
    with output_lock(out, False, echo):
        if not _needed(out, params, force, echo):
            return out
        ref = _reference(reference, predictions[0], cfg)
        per_year = [measure_year(p, m, ref, cfg) for p, m in zip(predictions, manifests)]
        table = change_table(ref, per_year)
        _write(out, params, ref, per_year, table, manifests, echo)
    return out


def _out_dir(workspace: Path, first: Path, manifest: dict, name: str | None) -> Path:
    run = first.resolve().parent.name
    return workspace / PREDICTIONS_DIR / run / (name or f"{manifest.get('region')}-change")


def _needed(out: Path, params: dict, force: bool, echo) -> bool:
    mf = out / CHANGE_FILES[0]
    if not mf.is_file() or force:
        return True
    old = read_manifest(mf, "change")
    if old.get("parameters") == params and old.get("complete"):
        echo(f"change {out} is complete; nothing to do")
        return False
    if old.get("parameters") != params:
        raise StateError(f"{out} holds a change made from other predictions or another "
                         "reference; use --force to replace it or --name for another")
    return True


def _reference(reference: Path, prediction: Path, cfg: ChangeConfig):
    import rasterio

    from gee_export.common.outlines import read_outlines

    with rasterio.open(prediction / PROBABILITY_TIF) as src:
        return read_outlines(reference, src.crs.to_string(), cfg.id_field)


def measure_year(prediction: Path, manifest: dict, ref: Outlines, cfg: ChangeConfig
                 ) -> YearAreas:
    """One pass over a prediction: per-glacier areas (ice, low, high) and ice outlines."""
    import rasterio
    from rasterio.windows import Window

    threshold = manifest["parameters"]["config"]["threshold"]
    with rasterio.open(prediction / PROBABILITY_TIF) as src:
        zones = ZoneRaster(ref.geometries, src.transform, cfg.zone_buffer_m)
        counts = ZoneCounts(len(ref))
        pieces: dict[int, list] = {}
        tta = src.count >= 2
        for r, c, h, w in blocks(src.height, src.width):
            win = Window(c, r, w, h)
            p = src.read(1, window=win)
            spread = src.read(2, window=win) if tta else BOUNDS_MARGIN
            valid = np.isfinite(p)
            p = np.nan_to_num(p, nan=0.0)
            ice = {"ice": p >= threshold, "low": p - spread >= threshold,
                   "high": (p + spread >= threshold) & valid}
            ref_idx, zone = zones.window(r, c, h, w)
            counts.add(ref_idx, zone, valid, ice)
            for k, v in zone_polygons(np.where(ice["ice"], zone, 0),
                                      src.window_transform(win)).items():
                pieces.setdefault(k, []).extend(v)
        px = abs(src.res[0] * src.res[1]) / 1e6
    ratio = ellipsoidal_ratios(ref)
    km2 = {rule: counts.predicted[rule] * px * ratio for rule in RULES}
    observed = counts.reference / np.maximum(counts.reference_all, 1)
    observed_all = counts.reference[1:].sum() / max(counts.reference_all[1:].sum(), 1)
    return YearAreas(manifest["year"], prediction, km2, observed[1:], float(observed_all),
                     dissolve(pieces),
                     "tta spread" if tta else f"threshold +- {BOUNDS_MARGIN}", threshold)


def slope(years: np.ndarray, areas: np.ndarray) -> float:
    """Least-squares slope of area against year."""
    t = years - years.mean()
    return float((t * (areas - areas.mean())).sum() / (t * t).sum())


def slope_bounds(years: np.ndarray, low: np.ndarray, high: np.ndarray) -> tuple[float, float]:
    """The smallest and largest least-squares slopes of a series within [low, high] each
    year: the slope is sum(w_i a_i) with w_i = (t_i - mean t) / sum (t - mean t)^2, so the
    extremes put each year at the end its weight's sign calls for."""
    t = years - years.mean()
    w = t / (t * t).sum()
    return (float((w * np.where(w > 0, low, high)).sum()),
            float((w * np.where(w > 0, high, low)).sum()))


def change_table(ref: Outlines, per_year: list[YearAreas]) -> list[dict]:
    """One row per reference glacier, then the total over all glaciers (outside zones not
    included): areas per year, slope in km^2/yr and %/yr of the first year, bounds."""
    years = np.array([y.year for y in per_year], float)
    rows = []
    names = ref.ids + ["total"]
    for i, gid in enumerate(names):
        pick = (lambda a, i=i: a[1:].sum()) if gid == "total" else (lambda a, i=i: a[i + 1])
        area = np.array([pick(y.km2["ice"]) for y in per_year])
        low = np.minimum(area, [pick(y.km2["low"]) for y in per_year])
        high = np.maximum(area, [pick(y.km2["high"]) for y in per_year])
        rate = slope(years, area)
        lo, hi = slope_bounds(years, low, high)
        row = {"glacier_id": gid, **{f"area_km2_{int(t)}": round(float(a), 6)
                                     for t, a in zip(years, area)},
               "rate_km2_per_year": rate,
               "rate_percent_per_year": 100 * rate / area[0] if area[0] > 0 else float("nan"),
               "rate_low": lo, "rate_high": hi,
               "observed_min": float(min(y.observed_all if gid == "total" else y.observed[i]
                                         for y in per_year))}
        rows.append(row)
    return rows


def _write(out: Path, params: dict, ref, per_year: list[YearAreas], table: list[dict],
           manifests: list[dict], echo) -> None:
    from .plots import change_png

    manifest_name, csv_name, gpkg_name, png_name = CHANGE_FILES
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, list(table[0]))
    w.writeheader()
    w.writerows(table)
    write_bytes(out / csv_name, buf.getvalue().encode())
    _write_outlines(out / gpkg_name, ref, per_year)
    change_png(out / png_name, ref, per_year, table)
    total = table[-1]
    write_json(out / manifest_name, base_manifest(
        "change", parameters=params, complete=True, completed_at=now_iso(),
        years=[y.year for y in per_year], bounds=per_year[0].bounds, glaciers=len(ref),
        total=total, truth=truth_check(table, per_year, manifests),
        method=__doc__.split("Method. ")[1].split("\n\n")[0].replace("\n", " ")))
    echo(f"change complete: {out} (total {total['rate_km2_per_year']:+.3f} km^2/yr "
         f"[{total['rate_low']:+.3f}, {total['rate_high']:+.3f}] over "
         f"{per_year[0].year}-{per_year[-1].year})")


def _write_outlines(path: Path, ref, per_year: list[YearAreas]) -> None:
    import geopandas as gpd

    from gee_export.common.outlines import ellipsoidal_area_km2
    from gee_export.common.vectors import write_gpkg

    rows, geoms = [], []
    for y in per_year:
        for k in sorted(y.outlines):
            rows.append({"glacier_id": ref.ids[k - 1], "year": y.year})
            geoms.append(y.outlines[k])
    crs = ref.frame.crs
    frame = gpd.GeoDataFrame(rows, geometry=geoms, crs=crs) if rows else gpd.GeoDataFrame(
        {"glacier_id": [], "year": []}, geometry=[], crs=crs)
    frame["area_km2"] = ellipsoidal_area_km2(frame.geometry.values, crs) if rows else []
    write_gpkg(frame, path, "outlines")


def truth_check(table: list[dict], per_year: list[YearAreas], manifests: list[dict]) -> dict:
    """Against the demo's known areas (export.json synthetic_truth), when every year has
    them: total change, signs of glaciers over 1 km^2, truth inside the bounds."""
    truths = []
    for y, m in zip(per_year, manifests):
        if "export" not in m:
            return {}
        exp = read_manifest(resolved_path(m["export"], y.prediction), "export")
        truth = (exp.get("synthetic_truth") or {}).get("glacier_area_km2")
        if not truth:
            return {}
        truths.append(truth)
    years = np.array([y.year for y in per_year], float)
    rows = {r["glacier_id"]: r for r in table}
    ids = [g for g in truths[0] if g in rows]
    true_rate = {g: slope(years, np.array([t.get(g, 0.0) for t in truths])) for g in ids}
    first, last = int(years[0]), int(years[-1])
    est = sum(rows[g][f"area_km2_{last}"] - rows[g][f"area_km2_{first}"] for g in ids)
    true = sum(truths[-1].get(g, 0.0) - truths[0].get(g, 0.0) for g in ids)
    large = [g for g in ids if truths[0].get(g, 0.0) > 1.0]
    return {"total_change_km2": est, "true_total_change_km2": true,
            "total_change_error": (est - true) / true if true else None,
            "large_glaciers": len(large),
            "large_sign_right": sum(np.sign(rows[g]["rate_km2_per_year"]) ==
                                    np.sign(true_rate[g]) for g in large),
            "truth_inside_bounds": sum(rows[g]["rate_low"] - 1e-9 <= true_rate[g] <=
                                       rows[g]["rate_high"] + 1e-9 for g in ids),
            "glaciers": len(ids)}
