"""Finding the area error model: the evaluation of a prediction made alike by the same model
(train evaluate), and an ensemble's mean of its members' models."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np

from gee_export.common.layout import PREDICTION_MANIFEST

from ..area_error import AreaErrorModel
from .members import made_differently


def find_error_model(prediction: Path, manifest: dict) -> tuple[AreaErrorModel | None, str]:
    """The area error model of the model that made `prediction`: from an evaluation beside
    the run's predictions (train evaluate on the scene its tiles were cut from) of a
    prediction made alike (the same checkpoint, by content, and the same options: threshold,
    TTA, window...) and not remade since it was evaluated; the most recent of them."""
    import json

    found = []
    for path in sorted(Path(prediction).resolve().parent.glob("*/*.json")):
        try:
            report = json.loads(path.read_text())
            evaluated = json.loads((path.parent / PREDICTION_MANIFEST).read_text())
        except (OSError, ValueError):
            continue
        fitted = report.get("area_error_model") if isinstance(report, dict) else None
        if report.get("kind") == "evaluation" and fitted and fitted.get("fitted", True) and \
                (report.get("parameters") or {}).get("prediction_completed_at") == \
                evaluated.get("completed_at") and not made_differently(manifest, evaluated):
            found.append((str(report.get("evaluated_at")), path, fitted))
    if not found:
        return None, "none found: buffer method, not corrected"
    when, path, fitted = max(found, key=lambda f: f[:2])
    return AreaErrorModel.from_dict(fitted), f"{path.parent.name}/{path.name} ({when})"


def ensemble_error_model(members: list[tuple[list[Path], list[dict]]],
                         echo: Callable[[str], None]) -> tuple[AreaErrorModel | None, str]:
    """Every member's own error model, their mean for the ensemble's mean areas (their
    offsets and variances averaged, the offset's error of their mean); none unless every
    member has one, said in one line."""
    found = [find_error_model(ps[0], ms[0]) for ps, ms in members]
    if any(m is None for m, _ in found):
        missing = [str(ps[0]) for (ps, _), (m, _) in zip(members, found) if m is None]
        echo("note: no area error model for " + ", ".join(missing) + " (make one with `train "
             "evaluate` on the prediction of the scene its model's tiles were cut from, then "
             "rerun with --force): areas are not corrected and their uncertainty falls back "
             "to the buffer method, which is known to be too small")
        return None, "none found: buffer method, not corrected"
    models = [m for m, _ in found]
    mean = lambda k: float(np.mean([getattr(m, k) for m in models]))  # noqa: E731
    se = math.sqrt(sum(m.offset_se_km ** 2 for m in models)) / len(models)
    return (AreaErrorModel(mean("offset_km"), se, mean("var_per_km"), mean("var_per_km2"),
                           sum(m.pieces for m in models), mean("length_km"), models[0].threshold),
            "; ".join(source for _, source in found))
