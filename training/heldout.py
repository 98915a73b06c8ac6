"""Which pixels of a prediction the model trained on.

A score over pixels the model was fitted to measures memory, not mapping. Evaluation follows
the chain prediction -> run -> its tile set and split -> the training tiles' windows on the
export grid, and scores the pixels in no training tile (validation tiles, the guard gap and
everything untiled) apart from those inside one. A prediction of another year or another
region than the tiles were cut from is held out as a whole: in time or in space.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gee_export.common.errors import InputError, InputNotFoundError
from gee_export.common.layout import (
    PREDICTION_MANIFEST,
    RUN_CONFIG,
    RUNS_DIR,
    read_manifest,
    resolved_path,
    workspace_of,
)
from gee_export.common.tile_index import read_tile_rows, tiles_id

TRAIN_SPLIT = "train"  # as prep tile names it

# How the prediction relates to the training data.
SAME_SCENE = "same scene"  # the export the training tiles were cut from
OTHER_YEAR = "other year"  # the same grid in another year: held out in time
OTHER_SCENE = "other scene"  # another grid or region: held out in space
UNKNOWN = "unknown"  # the run or its tiles cannot be found


@dataclass(frozen=True)
class TrainingFootprint:
    """The training tiles of a prediction's model on the prediction's grid (row_off, col_off,
    one tile size), and what they mean for it."""
    relation: str
    windows: np.ndarray  # (n, 2) row and column offsets of training tiles on this grid
    tile_size: int
    trained_on: str  # the tiles' region-year, for messages
    note: str

    @property
    def in_sample_possible(self) -> bool:
        return self.relation == SAME_SCENE

    def mask(self, row_off: int, col_off: int, height: int, width: int) -> np.ndarray:
        """True on the pixels of a window that lie in a training tile of this scene."""
        out = np.zeros((height, width), bool)
        if not self.in_sample_possible or not len(self.windows):
            return out
        s = self.tile_size
        r0 = np.clip(self.windows[:, 0] - row_off, 0, height)
        r1 = np.clip(self.windows[:, 0] + s - row_off, 0, height)
        c0 = np.clip(self.windows[:, 1] - col_off, 0, width)
        c1 = np.clip(self.windows[:, 1] + s - col_off, 0, width)
        for a, b, c, d in zip(r0, r1, c0, c1):
            if a < b and c < d:
                out[a:b, c:d] = True
        return out

    def to_dict(self) -> dict:
        return {"relation": self.relation, "trained_on": self.trained_on,
                "training_tiles": int(len(self.windows)), "tile_size": self.tile_size,
                "note": self.note}


def unknown_footprint(why: str) -> TrainingFootprint:
    return TrainingFootprint(UNKNOWN, np.zeros((0, 2), np.int64), 0, "unknown",
                             f"which pixels the model trained on is unknown: {why}; every "
                             "score below may be in-sample")


def training_footprint(pred_dir: Path, prediction: dict) -> TrainingFootprint:
    """The training tiles of the model that made the prediction in `pred_dir`, placed on its
    grid, or the reason why the prediction is held out as a whole (or unknown)."""
    pred_dir = Path(pred_dir)
    try:
        tiles_dir, recorded_id = _training_tiles(pred_dir, prediction)
        tiles = read_manifest(tiles_dir, "tiles")
    except (InputError, OSError) as e:
        return unknown_footprint(str(e))
    if recorded_id and tiles_id(tiles) != recorded_id:
        return unknown_footprint(f"the tile set {tiles_dir} changed after the model was "
                                 "trained on it")
    trained_on = f"{tiles.get('region')}-{tiles.get('year')}"
    none = np.zeros((0, 2), np.int64)
    size = int(tiles["tile_size"])
    same_grid = tiles.get("grid") == prediction.get("grid")
    if not same_grid or tiles.get("region") != prediction.get("region"):
        return TrainingFootprint(OTHER_SCENE, none, size, trained_on,
                                 f"held out in space: the model trained on {trained_on} "
                                 "tiles of another grid; every pixel is held out")
    if tiles.get("year") != prediction.get("year"):
        return TrainingFootprint(OTHER_YEAR, none, size, trained_on,
                                 f"held out in time: the model trained on {trained_on}; "
                                 f"every pixel of {prediction.get('year')} is held out "
                                 "(the place is the same, so the ground is not new)")
    windows = np.array(read_tile_rows(tiles_dir, TRAIN_SPLIT, ("row_off", "col_off")),
                       np.int64).reshape(-1, 2)
    return TrainingFootprint(SAME_SCENE, windows, size, trained_on,
                             f"the model trained on {len(windows)} tiles of this scene "
                             f"({size} px); held-out scores leave their pixels out")


def _training_tiles(pred_dir: Path, prediction: dict) -> tuple[Path, str | None]:
    """The tile directory the model trained on, and that tile set's recorded identity: from
    the prediction's own record, else from the run beside it in the workspace."""
    rec = prediction.get("trained_on")
    if rec:
        return resolved_path(rec["tiles"], pred_dir), rec.get("tiles_id")
    # Predictions made before the record existed: predictions/<run>/<name> -> runs/<run>.
    run_dir = workspace_of(pred_dir, "prediction") / RUNS_DIR / pred_dir.parent.name
    if not (run_dir / RUN_CONFIG).is_file():
        raise InputNotFoundError(f"{pred_dir / PREDICTION_MANIFEST} does not record the "
                                 f"training tiles and no run {run_dir} holds them")
    config = read_manifest(run_dir, "run").get("config", {})
    if "tiles" not in config:
        raise InputError(f"{run_dir / RUN_CONFIG} records no tiles")
    return resolved_path(config["tiles"], run_dir), config.get("tiles_id")
