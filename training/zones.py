"""Glacier zones: which reference glacier each pixel of a scene belongs to.

Neighbouring glaciers of an inventory share ice divides that no image shows, so predicted ice
cannot be matched to glaciers polygon by polygon. Instead every pixel within ZONE_BUFFER_M of
a reference glacier goes to the nearest one (the glacier itself for pixels inside it), and
each glacier is scored on the pixels of its zone. A perfect prediction then gives every
glacier exactly its own area, however many of them touch. Evaluation, the per-glacier layer of
`train predict` and `train change` all count this way, block by block.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

from gee_export.common.outlines import OutlineRasterizer

if TYPE_CHECKING:
    from affine import Affine
    from rasterio.io import DatasetReader

    from gee_export.common.outlines import Outlines
    from gee_export.common.utm import Strip, StripMask

# Ice within this distance of a reference glacier counts for it (retreat and advance stay
# inside); farther away it is a false positive outside every zone.
ZONE_BUFFER_M = 500.0
BLOCK = 1024  # pixels a side per block; with the margin, a few tens of MB per block


class ZoneRaster:
    """Reference index and zone of the pixels of any window of a grid (1-based, 0: none)."""

    def __init__(self, geometries, transform, buffer_m: float = ZONE_BUFFER_M,
                 owned: StripMask | None = None):
        self.raster = OutlineRasterizer(geometries, transform)
        self.owned = owned  # a part of a zoned region: only its strip's pixels count
        res = abs(transform.a)
        self.buffer_px = buffer_m / res
        self.margin = math.ceil(self.buffer_px) + 1  # a glacier in reach lies in the margin
        self.reach = _pixel_bounds(self.raster.geoms, transform)

    def _padded(self, row_off: int, col_off: int, height: int,
                width: int) -> tuple[int, int, int, int]:
        """The window with the margin (rows r0:r1, columns c0:c1), cut where no outline lies
        beyond: a buffer wider than the outlines' reach costs no more memory than theirs."""
        m, (gr0, gc0, gr1, gc1) = self.margin, self.reach
        return (max(row_off - m, min(row_off, gr0)), max(col_off - m, min(col_off, gc0)),
                min(row_off + height + m, max(row_off + height, gr1)),
                min(col_off + width + m, max(col_off + width, gc1)))

    def window(self, row_off: int, col_off: int, height: int,
               width: int) -> tuple[np.ndarray, np.ndarray]:
        """(reference index, zone) of a window: the outline each pixel centre lies in, and
        the nearest outline's index within the buffer."""
        from scipy.ndimage import distance_transform_edt

        r0, c0, r1, c1 = self._padded(row_off, col_off, height, width)
        idx = self.raster.index(r0, c0, r1 - r0, c1 - c0)
        inner = (slice(row_off - r0, row_off - r0 + height),
                 slice(col_off - c0, col_off - c0 + width))
        if not idx.any():
            return idx[inner], np.zeros((height, width), np.int32)
        dist, (iy, ix) = distance_transform_edt(idx == 0, return_indices=True)
        zone = np.where(dist <= self.buffer_px, idx[iy, ix], 0)
        ref, zone = idx[inner], zone[inner].astype(np.int32)
        if self.owned is not None:
            keep = self.owned.window(row_off, col_off, height, width)
            ref, zone = np.where(keep, ref, 0), np.where(keep, zone, 0)
        return ref, zone

    def counted(self, row_off: int, col_off: int, height: int, width: int,
                valid: np.ndarray) -> np.ndarray:
        """`valid` less the pixels of another part's strip (of a zoned region)."""
        if self.owned is None:
            return valid
        return valid & self.owned.window(row_off, col_off, height, width)


def _pixel_bounds(geometries, transform) -> tuple[int, int, int, int]:
    """Rows r0:r1 and columns c0:c1 of the grid that hold every outline (a pixel more on each
    side); an empty window where there is none."""
    import shapely

    if not len(geometries):
        return 0, 0, 0, 0
    x0, y0, x1, y1 = shapely.total_bounds(geometries)
    cols, rows = zip(*(~transform * xy for xy in ((x0, y0), (x0, y1), (x1, y0), (x1, y1))))
    return (math.floor(min(rows)) - 1, math.floor(min(cols)) - 1, math.ceil(max(rows)) + 1,
            math.ceil(max(cols)) + 1)


@dataclass
class ZoneBlock:
    """One block of a probability raster with its glacier zones."""
    row: int
    col: int
    transform: Affine
    probability: np.ndarray  # (bands, h, w), NaN where the stack has no data
    valid: np.ndarray  # with data (and, in a zone of a zoned region, in its strip)
    ref: np.ndarray  # the reference glacier each pixel lies in (1-based; 0: none)
    zone: np.ndarray  # the glacier whose zone each pixel is in (0: none)

    @property
    def shape(self) -> tuple[int, int]:
        return self.valid.shape

    def at_least(self, threshold: float, band: int = 0) -> np.ndarray:
        """Predicted ice: probability at or over the threshold (no data is not ice)."""
        return np.nan_to_num(self.probability[band], nan=0.0) >= threshold


def zone_blocks(src: DatasetReader, zones: ZoneRaster, bands: Sequence[int] = (1,),
                block: int = BLOCK) -> Iterator[ZoneBlock]:
    """The one pass every per-glacier measure makes over a probability raster (evaluation,
    the per-glacier layer of `train predict`, `train change`): block by block, the bands
    read, the pixels that count, and the reference and zone of each pixel."""
    from rasterio.windows import Window

    for r, c, h, w in blocks(src.height, src.width, block):
        win = Window(c, r, w, h)
        p = src.read(list(bands), window=win)
        ref, zone = zones.window(r, c, h, w)
        yield ZoneBlock(r, c, src.window_transform(win), p,
                        zones.counted(r, c, h, w, np.isfinite(p[0])), ref, zone)


class GlacierPieces:
    """Polygons of each label of a raster's blocks (4-connected pixel edges), dissolved into
    one (multi)polygon per label across the block borders that cut them."""

    def __init__(self):
        self.pieces: dict[int, list] = {}

    def add(self, labels: np.ndarray, transform: Affine) -> None:
        for k, v in zone_polygons(labels, transform).items():
            self.pieces.setdefault(k, []).extend(v)

    def dissolved(self) -> dict[int, object]:
        return dissolve(self.pieces)


def zones_of(src: DatasetReader, geometries, buffer_m: float = ZONE_BUFFER_M,
              strip: Strip | None = None) -> ZoneRaster:
    """The zones of a raster's grid; with `strip` (a zone of a zoned region), only the pixels
    whose centres lie in that strip of longitudes count."""
    from gee_export.common.utm import StripMask

    owned = StripMask(src.crs.to_string(), src.transform, strip) if strip else None
    return ZoneRaster(geometries, src.transform, buffer_m, owned)


def blocks(height: int, width: int, block: int = BLOCK) -> Iterator[tuple[int, int, int, int]]:
    for r in range(0, height, block):
        for c in range(0, width, block):
            yield r, c, min(block, height - r), min(block, width - c)


@dataclass
class ZoneCounts:
    """Pixel counts per reference glacier (index 1..n; 0 collects what lies in no glacier or
    no zone), accumulated block by block."""
    n: int
    reference: np.ndarray = None  # reference pixels where the stack has data
    reference_all: np.ndarray = None  # reference pixels, with data or not
    predicted: dict[str, np.ndarray] = field(default_factory=dict)  # ice in the zone, by rule
    hits: np.ndarray = None  # predicted ice inside the glacier's own outline
    outside: dict[str, int] = field(default_factory=dict)  # ice in no zone, by rule
    valid: int = 0

    def __post_init__(self):
        zeros = lambda: np.zeros(self.n + 1, np.int64)  # noqa: E731
        self.reference, self.reference_all, self.hits = zeros(), zeros(), zeros()

    def add(self, ref: np.ndarray, zone: np.ndarray, valid: np.ndarray,
            ice: dict[str, np.ndarray], ignore: np.ndarray | None = None) -> None:
        """One block: `ice` maps a rule name ("ice", or bounds) to its predicted-ice mask;
        `ignore` marks pixels that count for nothing (glaciers under the size limit)."""
        k = self.n + 1
        counted = valid if ignore is None else valid & ~ignore
        self.valid += int(counted.sum())
        self.reference += np.bincount(ref[valid].ravel(), minlength=k)
        self.reference_all += np.bincount(ref.ravel(), minlength=k)
        for rule, mask in ice.items():
            m = mask & counted
            self.predicted.setdefault(rule, np.zeros(k, np.int64))
            self.predicted[rule] += np.bincount(zone[m].ravel(), minlength=k)
            self.outside[rule] = self.outside.get(rule, 0) + int((m & (zone == 0)).sum())
        if "ice" in ice:
            self.hits += np.bincount(ref[ice["ice"] & valid].ravel(), minlength=k)

    def add_block(self, block: ZoneBlock, ice: dict[str, np.ndarray],
                  ignore: np.ndarray | None = None) -> None:
        self.add(block.ref, block.zone, block.valid, ice, ignore)

    def km2(self, rule: str, pixel_km2: float, ratios: np.ndarray) -> np.ndarray:
        """Ellipsoidal km^2 per glacier (index 0: ice in no zone scaled as the whole) of the
        ice counted by `rule`: pixels times the pixel area times each glacier's ratio
        (ellipsoidal_ratios)."""
        return self.predicted[rule] * pixel_km2 * ratios


def ellipsoidal_ratios(ref: Outlines) -> np.ndarray:
    """Ellipsoidal over planar area per reference glacier (index 1..n) and, at index 0, of the
    whole reference: pixel counts times the pixel area, times this, give the areas that
    inventories quote (the grid's projection distorts areas by up to about 0.5 %)."""
    planar = np.array([g.area / 1e6 for g in ref.geometries])
    ellipsoidal = ref.frame["area_km2"].to_numpy()
    each = np.where(planar > 0, ellipsoidal / np.maximum(planar, 1e-12), 1.0)
    whole = ellipsoidal.sum() / planar.sum() if planar.sum() > 0 else 1.0
    return np.concatenate([[whole], each])


def zone_polygons(labels: np.ndarray, transform: Affine) -> dict[int, list]:
    """Polygons of each non-zero label of a block (4-connected pixel edges)."""
    from rasterio import features
    from shapely.geometry import shape

    out: dict[int, list] = {}
    if not labels.any():
        return out
    for geom, value in features.shapes(labels.astype(np.int32), mask=labels > 0,
                                       transform=transform):
        out.setdefault(int(value), []).append(shape(geom))
    return out


def dissolve(pieces: dict[int, list]) -> dict[int, object]:
    """One (multi)polygon per label from the pieces that block borders cut apart."""
    import shapely

    return {k: shapely.union_all(v) for k, v in pieces.items()}
