"""A change's members: each model's predictions in year order, made alike on one grid (zoned
ones by their zones.json), and an ensemble's members checked to differ in their weights only."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from gee_export.common.errors import InputError
from gee_export.common.layout import PREDICTION_MANIFEST, ZONES_MANIFEST, require_complete
from gee_export.common.stage import differences


def read_zoned_member(predictions: list[Path]) -> tuple[list[Path], list[dict]]:
    """One model's zoned predictions in year order, with their zones.json manifests."""
    return _in_year_order(predictions, ZONES_MANIFEST, "zoned prediction")


def _in_year_order(predictions: list[Path], manifest: str, kind: str
                   ) -> tuple[list[Path], list[dict]]:
    """Complete predictions (of one zone or zoned) and their manifests, sorted by year."""
    manifests = [require_complete(Path(p) / manifest, kind, "finish it with `train predict`")
                 for p in predictions]
    order = np.argsort([m.get("year") or 0 for m in manifests])
    return [Path(predictions[i]) for i in order], [manifests[i] for i in order]


def read_member(predictions: list[Path]) -> tuple[list[Path], list[dict]]:
    """One model's predictions in year order, with their manifests: one per year, two years
    or more, one grid, and made alike (same checkpoint and options)."""
    predictions, manifests = _in_year_order(predictions, PREDICTION_MANIFEST, "prediction")
    years = [m.get("year") for m in manifests]
    if None in years or len(set(years)) != len(years) or len(years) < 2:
        raise InputError(f"--predictions: a change needs one prediction per year, of two "
                         f"years or more; got years {years}")
    for p, m in zip(predictions[1:], manifests[1:]):
        if m.get("grid") != manifests[0].get("grid"):
            raise InputError(f"--predictions: {p} lies on another grid than {predictions[0]}; "
                             "a change compares one region's years on one grid")
        diff = made_differently(manifests[0], m)
        if diff:
            raise InputError(f"--predictions: {p} was made otherwise than {predictions[0]} "
                             f"({diff}); a change compares years measured alike: remake it "
                             "with `train predict --force` and the same options")
    return predictions, manifests


def check_ensemble(members: list[tuple[list[Path], list[dict]]]) -> None:
    """The members of an ensemble: the same years, made with the same options by different
    checkpoints."""
    (first, fm), *rest = members
    years = [m.get("year") for m in fm]
    seen: dict[str, Path] = {fm[0]["parameters"].get("checkpoint_sha256"): first[0]}
    for ps, ms in rest:
        if [m.get("year") for m in ms] != years:
            raise InputError(f"--checkpoint: {ps[0].parent} has predictions of years "
                             f"{[m.get('year') for m in ms]}, the first model of {years}")
        recipe = [(key, _recipe(fm[0])[key], _recipe(ms[0])[key]) for key in ("bands", "tiles")]
        diff = ", ".join(filter(None, [made_differently(fm[0], ms[0], checkpoint=False)] +
                                [f"{key}: {a} -> {b}" for key, a, b in recipe if a != b]))
        if diff:
            raise InputError(f"--checkpoint: {ps[0]} was made otherwise than {first[0]} "
                             f"({diff}); an ensemble's members differ in their weights only "
                             "(the same recipe and tiles, another --seed)")
        sha = ms[0]["parameters"].get("checkpoint_sha256")
        if sha in seen:
            raise InputError(f"--checkpoint: {ps[0]} and {seen[sha]} come from the same "
                             "checkpoint; an ensemble needs different ones")
        seen[sha] = ps[0]


def _recipe(prediction: dict) -> dict:
    """What an ensemble's members must share beyond the prediction options: the bands the
    model reads and the tile set it trained on."""
    return {"bands": prediction.get("bands"),
            "tiles": (prediction.get("trained_on") or {}).get("tiles_id")}


def made_differently(a: dict, b: dict, checkpoint: bool = True) -> str:
    """The options in which two predictions differ, as the stage contract names them
    (`option: old -> new`; the checkpoint by content); '' when made alike. Where they lie
    and when they were made may differ, and so may the options that do not change a result
    (--device, --batch-size)."""
    from ..predict import PREDICTION_OPTIONS

    pa, pb = a.get("parameters") or {}, b.get("parameters") or {}
    out = [f"--checkpoint: {pa.get('checkpoint')} -> {pb.get('checkpoint')} (other weights)"
           ] if checkpoint and pa.get("checkpoint_sha256") != pb.get("checkpoint_sha256") else []
    ignore = ("export", "export_completed_at", "checkpoint", "checkpoint_sha256",
              "config.device", "config.batch_size")
    return ", ".join(out + differences(pa, pb, PREDICTION_OPTIONS, ignore))

