"""Running a change: its members read and checked (zoned ones zone by zone), the error model
found, the stage contract's decision, every year measured, the table made and written."""
from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from gee_export.common.atomic import as_stored
from gee_export.common.errors import InputError
from gee_export.common.layout import CHANGE_FILES, PREDICTIONS_DIR, check_name, file_sha256, stored_path
from gee_export.common.stac import update_catalog
from gee_export.common.stage import DONE, Stage

from ..change_map import write_change_map
from .error_model import ensemble_error_model
from .estimate import SIGMA_FLOOR_KM2, estimate_year
from .measure import ChangeConfig, YearAreas, measure_year, read_reference
from .members import check_ensemble, read_member, read_zoned_member
from .outputs import write_change
from .table import change_table

if TYPE_CHECKING:
    from gee_export.common.outlines import Outlines


def run_change(predictions: list[Path], workspace: Path, reference: Path | None = None,
               cfg: ChangeConfig = ChangeConfig(), name: str | None = None,
               force: bool = False, echo: Callable[[str], None] = print,
               ensemble: Sequence[Sequence[Path]] = (), wait: bool = False) -> Path:
    """Measure every prediction by the reference's zones (with `ensemble`, the predictions of
    further models of the same years); write change.csv, change.gpkg, change.png and
    change.json."""
    from ..predict import reference_default
    from ..zoned import zone_part, zoned_members, zoned_reference

    lists = [[Path(p) for p in ps] for ps in [predictions, *ensemble]]
    zones = zoned_members(lists)
    if zones is None:
        members = [read_member(ps) for ps in lists]
        check_ensemble(members)
        predictions, manifests = members[0]
    else:  # each zone checked as its own change; the zoned predictions in year order
        by_zone = {z: [read_member([zone_part(p, z) for p in ps]) for ps in lists]
                   for z, _ in zones}
        for zone_members in by_zone.values():
            check_ensemble(zone_members)
        members = [read_zoned_member(ps) for ps in lists]
        predictions, manifests = members[0]
    reference = Path(reference) if reference else reference_default(predictions[0]) \
        if zones is None else zoned_reference(predictions[0])
    if not reference.is_file():
        raise InputError(f"{predictions[0]}: its export recorded no outlines; give "
                         "--reference FILE")
    out = _out_dir(Path(workspace), predictions[0], manifests[0], name)
    params = as_stored({"predictions": [stored_path(p, out, workspace) for p in predictions],
                        "completed": [m.get("completed_at") for m in manifests],
                        "reference": reference.name, "reference_sha256": file_sha256(reference),
                        "config": asdict(cfg)})
    if len(members) > 1:
        params["ensemble"] = as_stored([[stored_path(p, out, workspace) for p in ps]
                                        for ps, _ in members[1:]])
    # A zoned prediction's parts are predictions of the one model: the first zone's say it.
    model, source = ensemble_error_model(members if zones is None else by_zone[zones[0][0]],
                                         echo)
    params["error_model"] = source  # a model evaluated again since makes this change stale
    stage = Stage("change", out / CHANGE_FILES[0], names=CHANGE_OPTIONS)
    with stage.lock(wait, echo):
        if stage.decide(params, force, echo).action == DONE:
            return out
        if zones is None:
            ref = read_reference(reference, predictions[0], cfg)
            per_year = [[measure_year(p, m, ref, cfg) for p, m in zip(*member)]
                        for member in members]
            write_change_map(out, predictions[0], predictions[-1])  # before change.json
        else:
            ref, per_year = _measure_zones(reference, by_zone, zones, cfg, out)
        estimates = [estimate_year(list(models), cfg.min_observed)
                     for models in zip(*per_year)]
        table, pooled = change_table(ref, estimates, SIGMA_FLOOR_KM2, model)
        write_change(out, params, ref, per_year[0], table, manifests, len(members),
                     {**pooled, "error_model_source": source}, echo)
    update_catalog(Path(workspace), echo)
    return out


def _measure_zones(reference: Path, by_zone: dict, zones: list, cfg: ChangeConfig,
                   out: Path) -> tuple[Outlines, list[list[YearAreas]]]:
    """Every zone measured on its own strip, the zones' areas added up per year; the
    reference in EPSG:4326 (the merged outlines' CRS); a change map per zone."""
    from gee_export.common.zoned import OUTPUT_CRS

    from ..zoned import merge_years

    refs = {z: read_reference(reference, by_zone[z][0][0][0], cfg) for z, _ in zones}
    per_zone = {z: [[measure_year(p, m, refs[z], cfg, strip) for p, m in zip(*member)]
                    for member in by_zone[z]] for z, strip in zones}
    for z, _ in zones:
        first, last = by_zone[z][0][0][0], by_zone[z][0][0][-1]
        write_change_map(out, first, last, zone=z)  # before change.json
    strips = [strip for _, strip in zones]
    crs = [refs[z].frame.crs for z, _ in zones]
    per_year = [[merge_years([per_zone[z][i][k] for z, _ in zones], strips, crs)
                 for k in range(len(per_zone[zones[0][0]][i]))]
                for i in range(len(per_zone[zones[0][0]]))]
    ref = refs[zones[0][0]]
    return replace(ref, frame=ref.frame.to_crs(OUTPUT_CRS)), per_year


# train change's parameters as its options (the stage contract names differences so).
CHANGE_OPTIONS = {"predictions": "--predictions", "completed": "--predictions (remade since)",
                  "reference": "--reference", "reference_sha256": "--reference (contents)",
                  "ensemble": "--checkpoint (further models)",
                  "config.zone_buffer_m": "--zone-buffer", "config.id_field": "--id-field",
                  "config.min_observed": "--min-observed",
                  "error_model": "the area error model (train evaluate, made since)"}


def _out_dir(workspace: Path, first: Path, manifest: dict, name: str | None) -> Path:
    check_name(name, "--name")
    run = first.resolve().parent.name
    return workspace / PREDICTIONS_DIR / run / (name or f"{manifest.get('region')}-change")

