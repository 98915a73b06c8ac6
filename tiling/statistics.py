"""What `prep tile` records about the tiles it wrote: the training split's band statistics
(mean, std, percentiles from histograms), each side's tiles and glacier pixels, and the
rasterized glacier area against the polygons' (the check that labels follow the outlines)."""
from __future__ import annotations

import numpy as np

from gee_export.common.bands import BAND_NAMES
from gee_export.common.errors import InputError

STAT_BINS = 1000  # histogram bins on [0, 1] for the training-split percentiles
PERCENTILES = (1, 2, 50, 98, 99)


def unit_histograms(v: np.ndarray) -> np.ndarray:
    """Per-row histograms of values in [0, 1] into STAT_BINS equal bins (1.0 in the last):
    one bincount over all rows instead of a np.histogram call per band."""
    bins = np.minimum((v * STAT_BINS).astype(np.int64), STAT_BINS - 1)
    bins += (np.arange(v.shape[0]) * STAT_BINS)[:, None]
    return np.bincount(bins.ravel(), minlength=v.shape[0] * STAT_BINS).reshape(v.shape[0], -1)


# -- summaries ------------------------------------------------------------------------------------

class _Side:
    """Tiles, pixels and footprints of one side of the split."""

    def __init__(self, res: float):
        self.tiles = self.glacier_px = self.valid_px = 0
        self.boxes: list = []
        self.res = res

    def add(self, st: dict, fp) -> None:
        self.tiles += 1
        self.glacier_px += st["glacier_px"]
        self.valid_px += st["valid_px"]
        self.boxes.append(fp)

    def report(self) -> dict:
        return {"tiles": self.tiles, "glacier_pixels": self.glacier_px,
                "valid_pixels": self.valid_px,
                "glacier_area_km2": self.glacier_px * self.res ** 2 / 1e6,
                "glacier_fraction": self.glacier_px / max(1, self.valid_px)}


class _LabelArea:
    """Rasterized glacier area against the polygons' area inside the same tiles (planar, in
    the grid's CRS, as the pixels are): the check that labels follow the outlines."""

    def __init__(self, geometries, res: float):
        self.geoms, self.sindex, self.res = geometries, geometries.sindex, res
        self.polygons = self.raster = 0.0

    def add(self, st: dict, fp) -> None:
        near = self.geoms.iloc[self.sindex.query(fp)]
        # Area of the union: overlapping inventory polygons must not count twice.
        self.polygons += float(near.union_all().intersection(fp).area) if len(near) else 0.0
        self.raster += st["glacier_px"] * self.res ** 2

    def report(self) -> dict:
        return {"polygons_km2": self.polygons / 1e6, "rasterized_km2": self.raster / 1e6,
                "relative_difference": ((self.raster - self.polygons) / self.polygons
                                        if self.polygons else None),
                "rule": "pixel centre inside polygon"}


class _BandStats:
    """Per-band mean, std and percentiles of the training split's valid pixels."""

    def __init__(self):
        n = len(BAND_NAMES)
        self.count = 0
        self.sum, self.sumsq = np.zeros(n), np.zeros(n)
        self.hist = np.zeros((n, STAT_BINS), np.int64)

    def add(self, st: dict) -> None:
        self.count += st["valid_px"]
        self.sum += st["sum"]
        self.sumsq += st["sumsq"]
        self.hist += st["hist"]

    def report(self) -> dict:
        if self.count == 0:
            raise InputError("the training split has no valid pixel")
        mean = self.sum / self.count
        std = np.sqrt(np.maximum(self.sumsq / self.count - mean ** 2, 0))
        cum = np.cumsum(self.hist, axis=1)
        out = {"pixels": int(self.count), "bands": {}}
        for i, b in enumerate(BAND_NAMES):
            pct = {str(p): float(np.searchsorted(cum[i], cum[i, -1] * p / 100) / STAT_BINS)
                   for p in PERCENTILES}
            out["bands"][b] = {"mean": float(mean[i]), "std": float(max(std[i], 1e-6)),
                               "percentiles": pct}
        return out


def _train_stats(stats: _BandStats, manifest: dict) -> dict:
    """The training split's band statistics; of a zone of a zoned tile set, none when the
    split made with the other zones left it no training tile (the zones' pool them)."""
    if not stats.count and manifest["parameters"].get("zoned_split"):
        return {"pixels": 0, "bands": {}}
    return stats.report()
