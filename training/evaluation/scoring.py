"""The scoring of a prediction against reference outlines: one pass over the probability
raster, block by block, counting each kind of ground (training, validation, guard, untiled
tiles: training/heldout.py) apart, with the per-glacier zones' counts and the pieces of
outline the area error model is fitted on."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from gee_export.common.bands import LABEL_IGNORE
from gee_export.common.errors import InputError

from ..area_error import EdgePieces, divide_free_boundaries
from ..heldout import (
    GROUND_GUARD,
    GROUND_NAMES,
    GROUND_TRAINING,
    GROUND_VALIDATION,
    SAME_SCENE,
    TrainingFootprint,
    unknown_footprint,
)
from ..metrics import confusion
from ..zones import ZONE_BUFFER_M, ZoneCounts

if TYPE_CHECKING:
    from rasterio.io import DatasetReader
    from shapely.geometry.base import BaseGeometry

    from gee_export.common.utm import Strip

GROUNDS = tuple(GROUND_NAMES.values())  # untiled, training, validation, guard: by ground code
# The area error model is fitted on all the ground the model never trained on: validation
# tiles alone hold the edges of a few glaciers in a few blocks (on one of 8 demo scenes
# edges easier than the rest, and the bias came out too small); the guard ring beside the
# training tiles triples the sample and spreads it over the scene.
HELD_OUT_GROUND = (GROUND_VALIDATION, GROUND_GUARD)


@dataclass
class SceneScores:
    confusion: dict[str, np.ndarray]  # kind of ground (and held_out) -> cm[true, predicted]
    zones: ZoneCounts
    reference_on: dict[int, np.ndarray]  # ground code -> reference pixels with data, by glacier
    valid_area: object  # polygon of the pixels with data (for boundary distances)
    predicted_union: object  # the predicted ice as polygons
    pixel_area_m2: float
    footprint: TrainingFootprint
    ground_areas: dict  # ground code -> its polygon in map coordinates (empty when none)
    under_training_tiles: float  # share of the pixels with data under a training tile, any year
    edge_pieces: EdgePieces | None = None  # validation-ground pieces for the area error model


def score_scene(src: DatasetReader, ref_geoms: Sequence[BaseGeometry],
                small_geoms: Sequence[BaseGeometry], threshold: float,
                buffer_m: float = ZONE_BUFFER_M,
                footprint: TrainingFootprint | None = None,
                strip: Strip | None = None) -> SceneScores:
    """One pass over the probability raster, block by block: the confusion matrices of each
    kind of ground (heldout.GROUND_*), the per-zone counts, and the polygons of valid data and
    predicted ice. A prediction without a single pixel with data is refused: its scores
    would be zeros that look like a result. With `strip` (a zone of a zoned region), only the
    pixels of its strip count."""
    import shapely

    from gee_export.common.outlines import OutlineRasterizer

    from ..zones import GlacierPieces, zone_blocks, zones_of

    footprint = footprint or unknown_footprint("not given")
    zones = zones_of(src, ref_geoms, buffer_m, strip)
    small = OutlineRasterizer(small_geoms, src.transform) if len(small_geoms) else None
    counts = ZoneCounts(len(ref_geoms))
    on = {c: np.zeros(len(ref_geoms) + 1, np.int64) for c in (GROUND_TRAINING, GROUND_VALIDATION)}
    cm = {k: np.zeros((2, 2), np.int64) for k in GROUNDS}
    under_tiles = with_data = 0  # pixels with data under a training tile (any year)
    areas = GlacierPieces()  # 1: valid, no ice; 2: ice
    edges = EdgePieces(len(ref_geoms), src.transform, divide_free_boundaries(ref_geoms)) \
        if footprint.relation == SAME_SCENE else None
    for b in zone_blocks(src, zones):
        (h, w), valid, ref = b.shape, b.valid, b.ref
        ice = b.at_least(threshold) & valid
        ignore = small.mask(b.row, b.col, h, w) & (ref == 0) if small else None
        counts.add_block(b, {"ice": ice}, ignore)
        truth = (ref > 0).astype(np.uint8)
        truth[~valid if ignore is None else ~valid | ignore] = LABEL_IGNORE
        ground = footprint.ground(b.row, b.col, h, w)
        for code, name in GROUND_NAMES.items():
            cm[name] += confusion(ice[ground == code], truth[ground == code])
        for code, n in on.items():
            n += np.bincount(ref[valid & (ground == code)].ravel(), minlength=len(n))
        under_tiles += int((valid & (ground == GROUND_TRAINING)).sum())
        with_data += int(valid.sum())
        areas.add(valid.astype(np.uint8) + ice, b.transform)
        if edges is not None:
            edges.add(b.row, b.col, np.isin(ground, HELD_OUT_GROUND), valid, ice, ref, b.zone)
    if not sum(m.sum() for m in cm.values()):
        raise InputError(f"{src.name}: no pixel with data to score (the probabilities are "
                         "all no-data); remake the prediction rather than score it")
    cm["held_out"] = sum(cm[k] for k in GROUNDS if k != "training")
    merged = areas.dissolved()
    empty = shapely.Polygon()
    ice_area = merged.get(2, empty)
    return SceneScores(cm, counts, on, shapely.union(merged.get(1, empty), ice_area),
                       ice_area, abs(src.res[0] * src.res[1]), footprint,
                       footprint.areas(src.transform), under_tiles / with_data, edges)
