"""Statistics over a whole region in constant memory, summed cell by cell: the HMA - SRTM
offset's median and each band's percentiles, both from fixed-bin histograms."""
from __future__ import annotations

import numpy as np

from gee_export.common.bands import BAND_NAMES
from gee_export.common.errors import InputError
from gee_export.config import Normalization

DEM_OFFSET_BIN_M = 0.05  # resolution of the HMA - SRTM offset histogram
DEM_OFFSET_RANGE_M = 300.0  # plausible |HMA - SRTM| (geoid undulation is within +-110 m)


class OffsetHistogram:
    """Running median of HMA - SRTM at 5 cm resolution in constant memory."""

    def __init__(self):
        self.edges = np.arange(-DEM_OFFSET_RANGE_M, DEM_OFFSET_RANGE_M + DEM_OFFSET_BIN_M / 2,
                               DEM_OFFSET_BIN_M)
        self.counts = np.zeros(len(self.edges) - 1, np.int64)

    def add(self, diff: np.ndarray) -> None:
        d = diff[np.isfinite(diff)]
        self.counts += np.histogram(d, self.edges)[0]

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    def median(self) -> float:
        if self.n == 0:
            return float("nan")
        cum = np.cumsum(self.counts)
        i = int(np.searchsorted(cum, (self.n + 1) / 2))
        return float((self.edges[i] + self.edges[i + 1]) / 2)


class PercentileAccumulator:
    """Per-band percentiles over a region in constant memory (histograms on the fixed ranges,
    widened by half on each side so out-of-range values still count)."""

    BINS = 4096

    def __init__(self):
        fixed = Normalization.fixed()
        self.edges = {}
        for b, (lo, hi) in fixed.ranges.items():
            span = hi - lo
            self.edges[b] = np.linspace(lo - span / 2, hi + span / 2, self.BINS + 1)
        self.counts = {b: np.zeros(self.BINS, np.int64) for b in BAND_NAMES}

    def add(self, physical: np.ndarray) -> None:
        for i, b in enumerate(BAND_NAMES):
            v = physical[i][np.isfinite(physical[i])]
            self.counts[b] += np.histogram(v, self.edges[b])[0]

    def merge(self, other: "PercentileAccumulator") -> None:
        for b in BAND_NAMES:
            self.counts[b] += other.counts[b]

    def normalization(self, pcts: tuple[float, float]) -> Normalization:
        ranges = {}
        for b in BAND_NAMES:
            c = np.cumsum(self.counts[b])
            if c[-1] == 0:
                raise InputError(f"percentile normalization: band {b} has no valid pixel")
            e = self.edges[b]
            lo = e[int(np.searchsorted(c, c[-1] * pcts[0] / 100))]
            hi = e[min(len(e) - 1, int(np.searchsorted(c, c[-1] * pcts[1] / 100)) + 1)]
            ranges[b] = (float(lo), float(hi))
        return Normalization("percentile", ranges,
                             f"percentiles {pcts[0]:g}/{pcts[1]:g} over the region (local)")
