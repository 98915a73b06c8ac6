"""Measuring one year: a prediction's ice per reference glacier by zones (at the threshold and
at the edge envelope's two ends), the traced outlines, and the lengths the buffer method and
the area error model take from them."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gee_export.common.layout import PROBABILITY_TIF
from gee_export.common.outlines import MIN_GLACIER_AREA_KM2

from ..zones import ZONE_BUFFER_M, ZoneCounts, ellipsoidal_ratios

if TYPE_CHECKING:
    from gee_export.common.outlines import Outlines
    from gee_export.common.utm import Strip

BOUNDS_MARGIN = 0.1  # without --tta: the edge envelope at threshold -/+ this
RULES = ("ice", "low", "high")
MIN_OBSERVED = 0.9  # a glacier seen over less of its outline gets no area that year
# The pixel staircase of a traced outline is 4/pi times as long as the smooth line it follows
# (averaged over orientations), so the buffer method takes pi/4 of its length.
STAIRCASE_TO_LINE = math.pi / 4


@dataclass(frozen=True)
class ChangeConfig:
    zone_buffer_m: float = ZONE_BUFFER_M
    id_field: str | None = None  # reference id field (default: glac_id, RGIId, ...)
    min_observed: float = MIN_OBSERVED


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
    reference_km2: np.ndarray  # each reference glacier's own area, seen or not (index 1..n)
    boundary_km2: np.ndarray  # the buffer method's area per glacier (index 1..n)
    edge_km: np.ndarray  # the predicted ice's outline less its divides, as a line (1..n)
    pixel_km2: float


def read_reference(reference: Path, prediction: Path, cfg: ChangeConfig) -> Outlines:
    """The reference outlines in the prediction's CRS, with their ids."""
    import rasterio

    from gee_export.common.outlines import read_outlines

    with rasterio.open(prediction / PROBABILITY_TIF) as src:
        return read_outlines(reference, src.crs.to_string(), cfg.id_field)


def measure_year(prediction: Path, manifest: dict, ref: Outlines, cfg: ChangeConfig,
                 strip: Strip | None = None) -> YearAreas:
    """One pass over a prediction: per-glacier areas (ice, low, high) and ice outlines. With
    `strip` (a zone of a zoned prediction), only the pixels of that strip count."""
    import rasterio

    from ..zones import GlacierPieces, zone_blocks, zones_of

    threshold = manifest["parameters"]["config"]["threshold"]
    with rasterio.open(prediction / PROBABILITY_TIF) as src:
        zones = zones_of(src, ref.geometries, cfg.zone_buffer_m, strip)
        counts = ZoneCounts(len(ref))
        pieces = GlacierPieces()
        tta = src.count >= 2
        for b in zone_blocks(src, zones, (1, 2) if tta else (1,)):
            p = np.nan_to_num(b.probability[0], nan=0.0)
            spread = b.probability[1] if tta else BOUNDS_MARGIN
            ice = {"ice": p >= threshold, "low": p - spread >= threshold,
                   "high": (p + spread >= threshold) & b.valid}
            counts.add_block(b, ice)
            pieces.add(np.where(ice["ice"], b.zone, 0), b.transform)
        px = abs(src.res[0] * src.res[1]) / 1e6
    ratio = ellipsoidal_ratios(ref)
    km2 = {rule: counts.km2(rule, px, ratio) for rule in RULES}
    observed = counts.reference / np.maximum(counts.reference_all, 1)
    observed_all = counts.reference[1:].sum() / max(counts.reference_all[1:].sum(), 1)
    outlines = pieces.dissolved()
    return YearAreas(manifest["year"], prediction, km2, observed[1:], float(observed_all),
                     outlines, "tta spread" if tta else f"threshold +- {BOUNDS_MARGIN}",
                     threshold, counts.reference_all[1:] * px * ratio[1:],
                     boundary_km2(outlines, len(ref), math.sqrt(px), ratio[1:]),
                     edge_km(outlines, len(ref), ratio[1:]), px)


# Islands and holes of predicted ice under this area are speckle, not glacier margins: their
# pixel edges would take a bias per km of outline that the error model fitted on margins.
SPECKLE_KM2 = MIN_GLACIER_AREA_KM2 / 10


def edge_km(outlines: dict[int, object], n: int, ratio: np.ndarray) -> np.ndarray:
    """Per glacier, the outline of its predicted ice (islands and holes under SPECKLE_KM2
    left out) less the stretches it shares with a neighbour's (ice divides, which no image
    shows), as the smooth line its pixel staircase follows (pi/4 of it), in km, ellipsoidal
    like the areas."""
    import shapely

    from ..area_error import divide_free_boundaries

    keys = [k for k in sorted(outlines) if 1 <= k <= n]
    margins = [_without_speckle(outlines[k], SPECKLE_KM2 * 1e6 / ratio[k - 1]) for k in keys]
    lines = divide_free_boundaries(margins)
    out = np.zeros(n)
    for k, line in zip(keys, lines):
        out[k - 1] = shapely.length(line) / 1e3 * STAIRCASE_TO_LINE * math.sqrt(ratio[k - 1])
    return out


def _without_speckle(geom, min_m2: float):
    """The parts and holes of a (multi)polygon of at least min_m2 (planar m^2)."""
    import shapely
    from shapely.geometry import Polygon

    parts = [Polygon(p.exterior, [h for h in p.interiors if Polygon(h).area >= min_m2])
             for p in shapely.get_parts(geom) if p.area >= min_m2]
    return shapely.union_all(parts) if parts else Polygon()


def boundary_km2(outlines: dict[int, object], n: int, pixel_km: float,
                 ratio: np.ndarray) -> np.ndarray:
    """The buffer method per glacier (Paul et al. 2013): the length of its predicted outline,
    taken as pi/4 of the pixel staircase, times half a pixel; ellipsoidal like the areas."""
    import shapely

    length_km = np.zeros(n)
    for k, geom in outlines.items():
        if 1 <= k <= n:
            length_km[k - 1] = shapely.length(geom) / 1e3
    return length_km * STAIRCASE_TO_LINE * pixel_km / 2 * ratio

