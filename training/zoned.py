"""`train predict` and `train evaluate` on a region across UTM zones.

Each zone is predicted as any export is, into its own prediction directory; the zoned
prediction (zones.json beside one glaciers.gpkg in EPSG:4326) then cuts every zone's
outlines at its zone lines and unites the pieces, so a glacier the line cuts is one polygon
whose ellipsoidal area is the sum of its parts'. Evaluation scores each zone on the pixels of
its own strip of longitudes only and adds the counts and areas up.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from gee_export.common.errors import InputError
from gee_export.common.layout import (
    GLACIERS_GPKG,
    GLACIERS_QML,
    OUTLINE_FILES,
    OUTLINES_FILE,
    PREDICTION_MANIFEST,
    ZONES_MANIFEST,
    read_manifest,
    require_complete,
    resolved_path,
    stored_path,
)
from gee_export.common.stage import DONE, Stage
from gee_export.common.utm import Strip, part_name
from gee_export.common.zoned import OUTPUT_CRS, Part, merge_outlines, write_zoned, zoned_parts

from .metrics import scores


def predict_zoned(export_dir: Path, out: Path, workspace: Path,
                  predict_part: Callable[[Path, str], Path], formats: Sequence[str],
                  echo: Callable[[str], None]) -> Path:
    """Predict every zone of a zoned export with `predict_part(export_dir, name)`, then merge
    their outlines into `out`."""
    from gee_export.common.qml import write_outlines_qml
    from gee_export.common.vectors import write_outline_files

    parts = zoned_parts(export_dir, "export")
    done = [Part(p.zone, p.strip, predict_part(p.path, part_name(out.name, p.zone)))
            for p in parts]
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun: rank 0 alone merges
        return out
    # The merge of the zones' predictions: remade whenever one of them was (nothing is lost).
    made = {p.zone: read_manifest(p.path / PREDICTION_MANIFEST, "prediction").get(
        "completed_at") for p in done}
    stage = Stage("zoned prediction", out / ZONES_MANIFEST, "zoned prediction",
                  {"zones.*": "the prediction of zone {key} (made again since)"})
    formats_done = all((out / f).is_file() for f in [OUTLINE_FILES[f] for f in formats]
                       + [GLACIERS_QML])
    with stage.lock(False, echo):
        decision = stage.decide({"zones": made}, False, echo,
                                nothing_lost=lambda old: "it only merges the zones' predictions",
                                intact=lambda old: None if formats_done else "outlines missing")
        if decision.action == DONE:
            return out
        layers = merged_layers(done)
        out.mkdir(parents=True, exist_ok=True)
        stage.manifest.unlink(missing_ok=True)  # incomplete while its outlines change
        write_outline_files(layers, out, formats)
        write_outlines_qml(out / GLACIERS_QML)  # as beside a prediction of one zone
        g = layers["glaciers"]
        first = read_manifest(done[0].path / PREDICTION_MANIFEST, "prediction")
        write_zoned(out, "prediction", done, workspace, parameters={"zones": made},
                    export=stored_path(export_dir, out, workspace),
                    region=first.get("region"), year=first.get("year"),
                    synthetic=first.get("synthetic"), glaciers=len(g),
                    glacier_area_km2=float(g["area_km2"].sum()), crs=OUTPUT_CRS)
    echo(f"zoned prediction complete: {out} ({len(done)} UTM zones, {len(g)} glaciers, "
         f"{float(g['area_km2'].sum()):.2f} km^2, outlines in {OUTPUT_CRS})")
    return out


def merged_layers(parts: Sequence[Part]) -> dict:
    """The zones' `glaciers` (and `by_glacier`) layers as one, in EPSG:4326: areas
    ellipsoidal of the united polygons, mean probabilities weighted by the pieces' areas."""
    import geopandas as gpd

    from gee_export.common.outlines import ellipsoidal_area_km2

    strips = [p.strip for p in parts]
    frames = {layer: [gpd.read_file(p.path / GLACIERS_GPKG, layer=layer) for p in parts]
              for layer in _layers(parts[0].path / GLACIERS_GPKG)}
    g = merge_outlines(frames["glaciers"], strips, area_means=("mean_probability",))
    layers = {"glaciers": g.assign(
        area_km2=ellipsoidal_area_km2(list(g.geometry), OUTPUT_CRS) if len(g) else [],
        polygon_id=np.arange(1, len(g) + 1, dtype=np.int64))}
    if "by_glacier" in frames:
        b = merge_outlines(frames["by_glacier"], strips, key="glacier_id")
        layers["by_glacier"] = b.assign(
            area_km2=ellipsoidal_area_km2(list(b.geometry), OUTPUT_CRS) if len(b) else [])
    return layers


def _layers(path: Path) -> list[str]:
    import pyogrio

    return [name for name, _ in pyogrio.list_layers(path)]


def zoned_reference(prediction: Path) -> Path:
    """The reference a zoned prediction is scored against by default: the outlines of every
    zone of its export, in EPSG:4326 (made by `prep export`)."""
    m = read_manifest(Path(prediction) / ZONES_MANIFEST, "zoned prediction")
    return resolved_path(m["export"], Path(prediction)) / OUTLINES_FILE


# -- train evaluate ---------------------------------------------------------------------------

def evaluate_zoned(parts: Sequence[Part], out: Path, evaluate_part: Callable[[Part], dict],
                   report_name: str, echo: Callable[[str], None]) -> dict:
    """Score every zone on its own strip, then add the zones up into one report."""
    from gee_export.common.atomic import write_json
    from gee_export.common.layout import base_manifest, now_iso, report_files, workspace_of

    require_complete(out / ZONES_MANIFEST, "zoned prediction",
                     "rerun `train predict` to finish it")
    reports = [{**evaluate_part(p), "_zone": p.zone} for p in parts]
    made = {r["_zone"]: r.get("evaluated_at") for r in reports}
    stage = Stage("evaluation", out / report_files(report_name)[0], "report",
                  {"zones.*": "the report of zone {key} (made again since)"})
    with stage.lock(False, echo):
        decision = stage.decide({"zones": made}, False, echo,
                                nothing_lost=lambda old: "it only adds the zones' reports up")
        if decision.action == DONE:
            return decision.old
        report = base_manifest("evaluation", parameters={"zones": made}, complete=True,
                               evaluated_at=now_iso(),
                               zones=[{"zone": p.zone, "report": stored_path(
                                   p.path / report_files(report_name)[0], out,
                                   workspace_of(out, "prediction"))} for p in parts],
                               pixels=_pixels(reports), area=_areas(reports),
                               per_glacier=_per_glacier(reports),
                               note="the sum of the zones' reports, each scored on the pixels "
                                    "of its own strip of longitudes only; boundary distances "
                                    "are in each zone's report")
        write_json(stage.manifest, report)
    echo(zoned_summary(report) + f" ({stage.manifest})")
    return report


def zoned_summary(report: dict) -> str:
    """The zoned report in one line: the headline pixels first, as for one zone."""
    from .evaluation import HEADLINES

    px, area = report["pixels"], report["area"]
    parts = [f"{HEADLINES[px['headline']]} mIoU {px[px['headline']]['miou']:.4f}"]
    parts += [f"{what} mIoU {px[key]['miou']:.4f}" for key, what in
              (("guard", "guard ground"), ("untiled", "untiled"),
               ("training", "training ground (every zone's)"), ("all", "all pixels"))
              if px.get(key) and key != px["headline"]]
    return (f"zoned evaluation over {len(report['zones'])} UTM zones, each on its own strip: "
            + "; ".join(parts) + f"; glacier area {area['predicted_km2']:.2f} km^2 predicted "
            f"vs {area['reference_km2']:.2f} km^2 reference (ellipsoidal)")


def _pixels(reports: list[dict]) -> dict:
    out = {"headline": reports[0]["pixels"]["headline"]}
    for key in ("validation", "guard", "untiled", "training", "held_out", "all"):
        cms = [np.array(r["pixels"][key]["confusion_matrix"]) for r in reports
               if r["pixels"].get(key)]
        if cms:
            cm = sum(cms)
            out[key] = {"pixels": int(cm.sum()), "confusion_matrix": cm.tolist(), **scores(cm)}
        else:
            out[key] = None
    if out["headline"] != "all" and out["held_out"] is None:
        out["headline"] = "all"
    elif out["validation"] is not None and out["headline"] != "all":
        out["headline"] = "validation"  # wherever any zone has validation ground
    return out


def _areas(reports: list[dict]) -> dict:
    keys = ("reference_km2", "predicted_km2", "reference_planar_km2", "predicted_planar_km2",
            "outside_zones_km2")
    return {k: float(sum(r["area"][k] for r in reports)) for k in keys}


def _per_glacier(reports: list[dict]) -> dict:
    """Each glacier once: its zones' areas added up (a glacier the line cuts is seen by two);
    fractions weighted by the reference area each zone saw."""
    rows: dict[str, dict] = {}
    for r in reports:
        for g in r["per_glacier"]["glaciers"]:
            acc = rows.setdefault(g["glacier_id"], {"glacier_id": g["glacier_id"],
                                                    "reference_km2": 0.0, "predicted_km2": 0.0,
                                                    "inventory_km2": g["inventory_km2"],
                                                    "_seen": 0.0, "_all": 0.0, "zones": []})
            acc["reference_km2"] += g["reference_km2"]
            acc["predicted_km2"] += g["predicted_km2"]
            if g["reference_km2"] > 0:
                acc["zones"].append(r.get("_zone", ""))
            acc["_seen"] += g["reference_km2"]
            acc["_all"] += g["reference_km2"] / g["observed_fraction"] \
                if g["observed_fraction"] else 0.0
    glaciers = []
    for g in rows.values():
        if not g["_all"]:
            continue  # in no zone's strip: the zones that saw it own none of it
        err = g["predicted_km2"] - g["reference_km2"]
        seen, every = g.pop("_seen"), g.pop("_all")
        glaciers.append({**g, "error_km2": err,
                         "relative_error": err / g["reference_km2"] if g["reference_km2"]
                         else None, "observed_fraction": seen / every})
    rel = [g["relative_error"] for g in glaciers if g["relative_error"] is not None]
    return {"mean_abs_error_km2": float(np.mean([abs(g["error_km2"]) for g in glaciers]))
            if glaciers else None,
            "median_relative_error": float(np.median(rel)) if rel else None,
            "glaciers": glaciers}


# -- train change ---------------------------------------------------------------------------

def zoned_members(lists: Sequence[Sequence[Path]]) -> list[tuple[str, Strip]] | None:
    """The UTM zones (and strips) that every prediction of every model shares, or None when
    the predictions are of one zone each.

    Raises:
        InputError: zoned and single-zone predictions mixed, or zones that differ.
    """
    parts = [[zoned_parts(p, "prediction") for p in ps] for ps in lists]
    flat = [x for ps in parts for x in ps]
    if all(x is None for x in flat):
        return None
    if any(x is None for x in flat):
        raise InputError("--predictions: zoned predictions (of a region across UTM zones) and "
                         "predictions of one grid cannot be compared; give one kind")
    zones = [(p.zone, p.strip) for p in flat[0]]
    for ps, x in zip([p for ps in lists for p in ps], flat):
        if [(p.zone, p.strip) for p in x] != zones:
            raise InputError(f"--predictions: {ps} covers UTM zones "
                             f"{[p.zone for p in x]}, the first {[z for z, _ in zones]}; "
                             "a change compares one region's zones: export every year with "
                             "the same --outlines (a zone without glaciers is not exported)")
    return zones


def zone_part(prediction: Path, zone: str) -> Path:
    """One zone's prediction directory of a zoned prediction."""
    return next(p.path for p in zoned_parts(prediction, "prediction") if p.zone == zone)


def merge_years(years: Sequence, strips: Sequence[Strip], crs: Sequence[str]):
    """One year's areas of every zone as one (a change.YearAreas): areas added up (each zone
    counted its own strip only), observed shares weighted by the reference area each zone
    owns, the ice outlines cut at the zone lines and united in EPSG:4326. The boundary term
    adds the zones' (a glacier the line cuts gains the cut's length: conservative)."""
    from dataclasses import replace

    import geopandas as gpd

    owned = np.array([y.reference_km2 for y in years])  # zones x glaciers
    total = owned.sum(0)
    observed = np.where(total > 0, (np.array([y.observed for y in years]) * owned).sum(0)
                        / np.maximum(total, 1e-12), 0.0)
    seen_all = sum(y.observed_all * y.reference_km2.sum() for y in years)
    frames = [gpd.GeoDataFrame({"k": list(y.outlines)}, geometry=list(y.outlines.values()),
                               crs=c) for y, c in zip(years, crs)]
    merged = merge_outlines(frames, strips, key="k")
    return replace(years[0], km2={rule: sum(y.km2[rule] for y in years) for rule in years[0].km2},
                   observed=observed, observed_all=float(seen_all / max(total.sum(), 1e-12)),
                   outlines=dict(zip(merged["k"], merged.geometry)),
                   reference_km2=total, boundary_km2=sum(y.boundary_km2 for y in years),
                   edge_km=sum(y.edge_km for y in years),
                   prediction=years[int(np.argmax(owned.sum(1)))].prediction)
