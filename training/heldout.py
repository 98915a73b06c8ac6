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
from gee_export.common.tile_index import read_tile_rows, tiles_id, zone_tile_rows

TRAIN_SPLIT = "train"  # as prep tile names it

# How the prediction relates to the training data.
SAME_SCENE = "same scene"  # the export the training tiles were cut from
OTHER_YEAR = "other year"  # the same grid in another year: held out in time
OTHER_SCENE = "other scene"  # no training tile on this grid: held out in space
UNKNOWN = "unknown"  # the run or its tiles cannot be found


@dataclass(frozen=True)
class TrainingFootprint:
    """The training tiles of a prediction's model placed on the prediction's grid (row0, row1,
    col0, col1 each), and what they mean for it."""
    relation: str
    windows: np.ndarray  # (n, 4) pixel rectangles on this grid, from map coordinates
    trained_on: str  # the tiles' region-year, for messages
    note: str
    tiles_id: str | None = None

    @property
    def in_sample_possible(self) -> bool:
        return self.relation == SAME_SCENE

    def footprint(self, row_off: int, col_off: int, height: int, width: int) -> np.ndarray:
        """True on the pixels of a window that lie under a training tile (any year)."""
        out = np.zeros((height, width), bool)
        for r0, r1, c0, c1 in self.windows:
            a, b = max(r0 - row_off, 0), min(r1 - row_off, height)
            c, d = max(c0 - col_off, 0), min(c1 - col_off, width)
            if a < b and c < d:
                out[a:b, c:d] = True
        return out

    def mask(self, row_off: int, col_off: int, height: int, width: int) -> np.ndarray:
        """True on the pixels of a window the model trained on (only in the same scene)."""
        if not self.in_sample_possible:
            return np.zeros((height, width), bool)
        return self.footprint(row_off, col_off, height, width)

    def to_dict(self) -> dict:
        return {"relation": self.relation, "trained_on": self.trained_on,
                "training_tiles": int(len(self.windows)), "tiles_id": self.tiles_id,
                "note": self.note}


def unknown_footprint(why: str) -> TrainingFootprint:
    return TrainingFootprint(UNKNOWN, np.zeros((0, 4), np.int64), "unknown",
                             f"which pixels the model trained on is unknown: {why}; every "
                             "score below may be in-sample")


def training_footprint(pred_dir: Path, prediction: dict) -> TrainingFootprint:
    """The training tiles of the model that made the prediction in `pred_dir`, placed on its
    grid by their map coordinates (whatever the exports are called), or the reason why the
    prediction is held out as a whole (or unknown)."""
    pred_dir = Path(pred_dir)
    try:
        tiles_dir, recorded_id = _training_tiles(pred_dir, prediction)
        tiles = read_manifest(tiles_dir, "tiles")
    except (InputError, OSError) as e:
        return unknown_footprint(str(e))
    if not recorded_id or tiles_id(tiles) != recorded_id:
        return unknown_footprint(f"the tile set {tiles_dir} is not the one the model was "
                                 "trained on (re-cut since, or not recorded)")
    trained_on = f"{tiles.get('region')}-{tiles.get('year')}"
    if tiles.get("zones"):  # a tile set of several UTM zones: the zone on this grid's CRS
        rows, tiles_grid = zone_tile_rows(tiles_dir, tiles, (prediction.get("grid") or {})
                                          .get("crs"), TRAIN_SPLIT)
    else:
        rows = read_tile_rows(tiles_dir, TRAIN_SPLIT, ("row_off", "col_off"))
        tiles_grid = tiles.get("grid") or {}
    windows = _placed(rows, int(tiles["tile_size"]), tiles_grid, prediction.get("grid") or {})
    if windows is None:
        return TrainingFootprint(OTHER_SCENE, np.zeros((0, 4), np.int64), trained_on,
                                 f"held out in space: the model trained on {trained_on} "
                                 "tiles, none of which lies on this grid", recorded_id)
    if tiles.get("year") != prediction.get("year"):
        return TrainingFootprint(OTHER_YEAR, windows, trained_on,
                                 f"held out in time: the model trained on {trained_on}; every "
                                 f"pixel of {prediction.get('year')} is held out, though "
                                 "those under training tiles show ground it saw in another "
                                 "year", recorded_id)
    return TrainingFootprint(SAME_SCENE, windows, trained_on,
                             f"the model trained on {len(windows)} tiles of this scene; "
                             "held-out scores leave their pixels out (the validation tiles "
                             "among them chose the best epoch)", recorded_id)


def _placed(rows: list[tuple], size: int, tiles_grid: dict, grid: dict) -> np.ndarray | None:
    """The training tiles as pixel rectangles on `grid`, from their map coordinates on the
    tile set's grid (the same grid: the offsets themselves); None when the grids share no
    CRS or no tile lies on `grid`."""
    offsets = np.array(rows, np.float64).reshape(-1, 2)
    if tiles_grid == grid:
        r, c = offsets.T.astype(np.int64)
        return np.stack([r, r + size, c, c + size], axis=1)
    keys = ("crs", "x0", "y0", "res")
    if any(k not in tiles_grid or k not in grid for k in keys) or \
            tiles_grid["crs"] != grid["crs"]:
        return None
    res_t, res = float(tiles_grid["res"]), float(grid["res"])
    top = float(tiles_grid["y0"]) - offsets[:, 0] * res_t  # map coordinates of each tile
    left = float(tiles_grid["x0"]) + offsets[:, 1] * res_t
    r0 = np.round((float(grid["y0"]) - top) / res).astype(np.int64)
    c0 = np.round((left - float(grid["x0"])) / res).astype(np.int64)
    span = int(round(size * res_t / res))
    windows = np.stack([r0, r0 + span, c0, c0 + span], axis=1)
    inside = (windows[:, 1] > 0) & (windows[:, 0] < int(grid.get("height", 1 << 30))) & \
        (windows[:, 3] > 0) & (windows[:, 2] < int(grid.get("width", 1 << 30)))
    return windows if inside.any() else None


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
