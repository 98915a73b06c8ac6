"""Which pixels of a prediction the model trained on.

A score over pixels the model was fitted to measures memory, not mapping. Evaluation follows
the chain prediction -> run -> its tile set and split -> the tiles' windows on the export
grid, and gives each pixel its kind of ground (`TrainingFootprint.ground`): under a training
tile, under a validation tile (never trained on, though it chose the best epoch), under a
guard tile (beside training tiles) or under none. A prediction of another year has the same
ground (the model saw its training ground in another year); one of another region is held
out in space as a whole. Of a tile set of several UTM zones, every zone's tiles count,
wherever they lie: the other zones' tiles are projected onto the prediction's grid.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

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
from gee_export.common.tile_index import ZONE_COLUMN, read_tile_rows, tiles_id

if TYPE_CHECKING:
    from shapely.geometry.base import BaseGeometry

TRAIN_SPLIT, VAL_SPLIT, GUARD_SPLIT = "train", "val", "guard"  # as prep tile names them

# The kind of ground of a pixel (TrainingFootprint.ground), by precedence: a pixel under a
# training tile is training ground whatever else covers it, then validation, then guard.
GROUND_UNTILED = 0  # under no tile
GROUND_TRAINING = 1  # under a training tile
GROUND_VALIDATION = 2  # under a validation tile and no training tile
GROUND_GUARD = 3  # under a guard tile (beside training tiles) and no training or validation one
GROUND_NAMES = {GROUND_UNTILED: "untiled", GROUND_TRAINING: "training",
                GROUND_VALIDATION: "validation", GROUND_GUARD: "guard"}
# Splits in the order they are painted: the later one wins where tiles overlap.
PAINT_ORDER = ((GUARD_SPLIT, GROUND_GUARD), (VAL_SPLIT, GROUND_VALIDATION),
               (TRAIN_SPLIT, GROUND_TRAINING))


def _no_windows() -> np.ndarray:
    return np.zeros((0, 4), np.int64)

# How the prediction relates to the training data.
SAME_SCENE = "same scene"  # the export the training tiles were cut from
OTHER_YEAR = "other year"  # the same grid in another year: held out in time
OTHER_SCENE = "other scene"  # no training tile on this grid: held out in space
UNKNOWN = "unknown"  # the run or its tiles cannot be found


@dataclass(frozen=True)
class TrainingFootprint:
    """The tiles of a prediction's model placed on the prediction's grid (row0, row1, col0,
    col1 each: training, validation and guard), and what they mean for it. `foreign` holds
    the tiles of a zoned tile set's other zones, which are not axis-aligned on this grid:
    (ground code, polygon in this grid's pixel coordinates, x = column, y = row)."""
    relation: str
    windows: np.ndarray  # (n, 4) training tiles' pixel rectangles on this grid
    trained_on: str  # the tiles' region-year, for messages
    note: str
    tiles_id: str | None = None
    validation: np.ndarray = field(default_factory=_no_windows)
    guard: np.ndarray = field(default_factory=_no_windows)
    foreign: tuple = ()

    @property
    def in_sample_possible(self) -> bool:
        return self.relation == SAME_SCENE

    @property
    def has_ground(self) -> bool:
        """Whether the tiles lie on this grid (this scene, or its ground in another year)."""
        return self.relation in (SAME_SCENE, OTHER_YEAR)

    def ground(self, row_off: int, col_off: int, height: int, width: int) -> np.ndarray:
        """The kind of ground (GROUND_*, uint8) of each pixel of a window: training over
        validation over guard over untiled; all untiled where the tiles do not lie on this
        grid (another region, or unknown tiles). Another zone's training tile counts for
        every pixel it touches; other tiles by the pixel centres they hold."""
        out = np.zeros((height, width), np.uint8)
        if not self.has_ground:
            return out
        rects = {GUARD_SPLIT: self.guard, VAL_SPLIT: self.validation, TRAIN_SPLIT: self.windows}
        for split, code in PAINT_ORDER:
            for r0, r1, c0, c1 in rects[split]:
                a, b = max(r0 - row_off, 0), min(r1 - row_off, height)
                c, d = max(c0 - col_off, 0), min(c1 - col_off, width)
                if a < b and c < d:
                    out[a:b, c:d] = code
            _paint_polygons(out, [g for k, g in self.foreign if k == code], code, row_off,
                            col_off, all_touched=code == GROUND_TRAINING)
        return out

    def footprint(self, row_off: int, col_off: int, height: int, width: int) -> np.ndarray:
        """True on the pixels of a window that lie under a training tile (any year)."""
        return self.ground(row_off, col_off, height, width) == GROUND_TRAINING

    def mask(self, row_off: int, col_off: int, height: int, width: int) -> np.ndarray:
        """True on the pixels of a window the model trained on (only in the same scene)."""
        if not self.in_sample_possible:
            return np.zeros((height, width), bool)
        return self.footprint(row_off, col_off, height, width)

    def areas(self, transform) -> dict[int, BaseGeometry]:
        """Each kind of tiled ground as one polygon in map coordinates (`transform`: this
        grid's), by the same precedence as `ground` (empty where there is none)."""
        import shapely
        from shapely.affinity import affine_transform

        rects = {GUARD_SPLIT: self.guard, VAL_SPLIT: self.validation, TRAIN_SPLIT: self.windows}
        out, above = {}, shapely.Polygon()
        for split, code in reversed(PAINT_ORDER):
            parts = [shapely.box(c0, r0, c1, r1) for r0, r1, c0, c1 in rects[split]]
            parts += [g for k, g in self.foreign if k == code]
            pixels = shapely.union_all(parts) if parts and self.has_ground else shapely.Polygon()
            a, b, c, d, e, f = transform[:6]
            out[code] = shapely.difference(affine_transform(pixels, (a, b, d, e, c, f)), above)
            above = shapely.union(above, out[code])
        return out

    def to_dict(self) -> dict:
        return {"relation": self.relation, "trained_on": self.trained_on,
                "training_tiles": int(len(self.windows)), "tiles_id": self.tiles_id,
                "note": self.note}


def _paint_polygons(out: np.ndarray, polygons: list, code: int, row_off: int, col_off: int,
                    all_touched: bool) -> None:
    """Paint `code` on the pixels of a window under polygons given in pixel coordinates."""
    if not polygons:
        return
    import shapely
    from affine import Affine
    from rasterio.features import rasterize

    height, width = out.shape
    window = shapely.box(col_off, row_off, col_off + width, row_off + height)
    near = [g for g in polygons if shapely.intersects(g, window)]
    if near:
        hit = rasterize(near, out_shape=out.shape, transform=Affine.translation(col_off, row_off),
                        all_touched=all_touched, dtype=np.uint8).astype(bool)
        out[hit] = code


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
    grid = prediction.get("grid") or {}
    placed, foreign = _tiles_on(tiles_dir, tiles, grid)
    windows = placed[TRAIN_SPLIT]
    if windows is None:
        return TrainingFootprint(OTHER_SCENE, _no_windows(), trained_on,
                                 f"held out in space: the model trained on {trained_on} "
                                 "tiles, none of which lies on this grid", recorded_id)
    others = {"validation": _or_none(placed[VAL_SPLIT]), "guard": _or_none(placed[GUARD_SPLIT]),
              "foreign": foreign}
    if tiles.get("year") != prediction.get("year"):
        return TrainingFootprint(OTHER_YEAR, windows, trained_on,
                                 f"held out in time: the model trained on {trained_on}; "
                                 f"{prediction.get('year')} is split by that tile set's ground: "
                                 "validation ground it never trained on in any year (it chose "
                                 "the best epoch), and training ground it saw in another "
                                 "year", recorded_id, **others)
    return TrainingFootprint(SAME_SCENE, windows, trained_on,
                             f"the model trained on {len(windows)} tiles of this scene; "
                             "held-out scores leave their pixels out, and the validation "
                             "ground (never trained on; it chose the best epoch) is scored "
                             "apart from the guard ground beside the training tiles",
                             recorded_id, **others)


def _or_none(windows: np.ndarray | None) -> np.ndarray:
    return _no_windows() if windows is None else windows


def _tiles_on(tiles_dir: Path, tiles: dict, grid: dict) -> tuple[dict, tuple]:
    """Each split's tiles placed on `grid` (None where none lies on it), and of a zoned tile
    set the other zones' tiles as (ground code, polygon in `grid`'s pixel coordinates)."""
    size = int(tiles["tile_size"])
    if not tiles.get("zones"):
        return {split: _placed(read_tile_rows(tiles_dir, split, ("row_off", "col_off")), size,
                               tiles.get("grid") or {}, grid)
                for split, _ in PAINT_ORDER}, ()
    zones = {z["zone"]: z.get("grid") or {} for z in tiles["zones"]}
    mine = next((z for z, g in zones.items() if g.get("crs") == grid.get("crs")), None)
    placed, foreign = {}, []
    for split, code in PAINT_ORDER:
        rows = read_tile_rows(tiles_dir, split, ("row_off", "col_off", ZONE_COLUMN))
        placed[split] = None if mine is None else _placed(
            [(r, c) for r, c, z in rows if z == mine], size, zones[mine], grid)
        if mine is not None:
            foreign += [(code, g) for g in _projected(
                [(r, c, zones[z]) for r, c, z in rows if z != mine], size, grid)]
    return placed, tuple(foreign)


def _projected(rows: list[tuple], size: int, grid: dict) -> list:
    """Tiles (row_off, col_off, their zone's grid) of other UTM zones as polygons in `grid`'s
    pixel coordinates (edges densified: straight lines on one zone's grid bend on
    another's); those that miss the grid are left out."""
    import shapely
    from pyproj import Transformer

    out, transformers = [], {}
    bounds = shapely.box(0, 0, int(grid["width"]), int(grid["height"]))
    x0, y0, res = float(grid["x0"]), float(grid["y0"]), float(grid["res"])
    for r, c, g in rows:
        rz = float(g["res"])
        left, top = float(g["x0"]) + c * rz, float(g["y0"]) - r * rz
        tile = shapely.segmentize(shapely.box(left, top - size * rz, left + size * rz, top),
                                  size * rz / 16)
        if g["crs"] not in transformers:
            transformers[g["crs"]] = Transformer.from_crs(g["crs"], grid["crs"], always_xy=True)
        to_grid = transformers[g["crs"]]
        xy = np.array(to_grid.transform(*np.asarray(tile.exterior.coords).T)).T
        poly = shapely.Polygon(np.stack([(xy[:, 0] - x0) / res, (y0 - xy[:, 1]) / res], 1))
        if shapely.intersects(poly, bounds):
            out.append(poly)
    return out


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
