"""Where a prediction's inputs are found when the command does not name them: the tiles a
checkpoint trained on, the export a bare `train predict` takes, and the export and reference
outlines behind a finished prediction.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from gee_export.common.errors import GlacierError, InputError
from gee_export.common.layout import (
    OUTLINES_FILE,
    PREDICTION_MANIFEST,
    complete_products,
    read_manifest,
    resolved_path,
)
from gee_export.common.zoned import is_zoned


def checkpoint_tiles(checkpoint: Path, config: dict) -> dict | None:
    """The tile set a checkpoint trained on: where it is (its run records it relative to its
    own directory) and its identity; None when the checkpoint does not record it."""
    if "tiles" not in config:
        return None
    return {"tiles": str(resolved_path(config["tiles"], Path(checkpoint).resolve().parent)),
            "tiles_id": config.get("tiles_id")}


def training_export(checkpoint: Path, workspace: Path, echo: Callable[[str], None]) -> Path:
    """The export a `train predict` without --export takes: the one of the model's training
    region and year (from the checkpoint, else its run's tiles), said in one line; refused,
    with the candidates, where no export or several hold that region and year."""
    from training.runtime import load_checkpoint

    ck = load_checkpoint(checkpoint)
    meta, config = ck.get("meta") or {}, ck.get("config") or {}
    region, year, trained = meta.get("region"), meta.get("year"), None
    recorded = checkpoint_tiles(checkpoint, config)
    if recorded:
        tiles_dir = Path(recorded["tiles"])
        try:
            tiles = read_manifest(tiles_dir, "tiles")
            region, year = region or tiles.get("region"), year or tiles.get("year")
            trained = resolved_path(tiles["export"], tiles_dir).resolve()
        except (GlacierError, KeyError):
            pass
    if trained is not None and is_zoned(trained):  # a region across UTM zones: all of them
        echo(f"--export: {trained} (the model's training region and year, {region} {year}, "
             "in every UTM zone; give --export to predict another)")
        return trained
    exports = complete_products(workspace, "export")
    listed = ", ".join(str(d) for d, _ in exports) or "none"
    if region is None or year is None:
        raise InputError(f"--export not given, and {checkpoint} does not record the region "
                         f"and year it was trained on; give --export (complete exports: "
                         f"{listed})")
    same = [d for d, m in exports
            if (m.get("region") or {}).get("name") == region and m.get("year") == year]
    chosen = [d for d in same if d.resolve() == trained] or same
    if len(chosen) != 1:
        found = (f"{len(chosen)} complete exports hold it: {', '.join(map(str, chosen))}"
                 if chosen else f"no complete export holds it (complete exports: {listed})")
        raise InputError(f"--export not given: the model was trained on {region} {year}, and "
                         f"{found}; give --export")
    echo(f"--export: {chosen[0]} (the model's training region and year, {region} {year}; "
         "give --export to predict another)")
    return chosen[0]


def reference_default(prediction_dir: Path) -> Path:
    """The outlines the predicted export recorded, for `train evaluate` without --reference."""
    return prediction_export(prediction_dir) / OUTLINES_FILE


def prediction_export(prediction_dir: Path) -> Path:
    """The export a prediction was made from (stored relative to the prediction)."""
    m = read_manifest(Path(prediction_dir) / PREDICTION_MANIFEST, "prediction")
    return resolved_path(m["export"], Path(prediction_dir))
