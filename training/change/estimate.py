"""A year's estimate: each glacier's area from an ensemble's members (the unseen part filled at
the seen part's density), with the model, unobserved and buffer-method terms its uncertainty
needs."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gee_export.common.outlines import MIN_GLACIER_AREA_KM2

from .measure import YearAreas

SIGMA_FLOOR_KM2 = 1e-4  # one 10 m pixel: the least a year's area is known to
# A year in which a glacier shows no ice: ice under half the paper's 0.05 km^2 minimum area can
# go unseen, so its zero is known to this much (1 sigma), not to a pixel.
DETECTION_LIMIT_KM2 = MIN_GLACIER_AREA_KM2 / 2
UNIFORM_SIGMA = 1 / math.sqrt(12)  # sd of a share uniform on [0, 1]: an unseen part's ice


@dataclass
class YearEstimate:
    """One year's areas per glacier (index 0..n-1) from one or several models, with what
    their uncertainty needs; NaN where the glacier was seen too little."""
    year: int
    area: np.ndarray
    sigma_ensemble: np.ndarray
    sigma_tta: np.ndarray  # the TTA part of the model term (NaN: not estimated, without --tta)
    sigma_unobserved: np.ndarray
    buffer_km2: np.ndarray  # the buffer method (Paul et al. 2013), where no error model is
    edge_km: np.ndarray
    observed: np.ndarray
    observed_all: float  # the share of all the reference's glacier pixels seen
    low: np.ndarray  # edge envelope (threshold -/+ margin, or the TTA spread)
    high: np.ndarray
    members: np.ndarray  # (models, glaciers): each ensemble member's area, filled alike


def estimate_year(members: list[YearAreas], min_observed: float) -> YearEstimate:
    """One year's areas per glacier from the members of an ensemble (one measurement per
    model; the scene, and so what is seen, is the same for all)."""
    first = members[0]
    seen = first.observed * first.reference_km2
    unseen = (1 - first.observed) * first.reference_km2
    keep = np.where(first.observed >= min_observed, 1.0, np.nan)

    def filled(a: np.ndarray) -> np.ndarray:  # the unseen part at the seen part's density
        density = np.clip(np.divide(a, seen, out=np.zeros_like(a), where=seen > 0), 0, 1)
        return (a + unseen * density) * keep

    each = np.array([filled(m.km2["ice"][1:]) for m in members])
    sigma_ens = each.std(axis=0, ddof=1) if len(members) > 1 else np.full(len(seen), np.nan)
    sigma_tta = np.full(len(seen), np.nan)  # not estimated without --tta
    if first.bounds == "tta spread":  # half the distance between mean -/+ spread, averaged
        sigma_tta = np.mean([(m.km2["high"][1:] - m.km2["low"][1:]) / 2 for m in members],
                            axis=0) * keep
    mean = lambda rule: filled(np.mean([m.km2[rule][1:] for m in members], axis=0))  # noqa
    area = each.mean(axis=0)
    boundary = np.mean([m.boundary_km2 for m in members], axis=0)
    boundary = np.where(area == 0, np.maximum(boundary, DETECTION_LIMIT_KM2), boundary)
    edge = np.mean([m.edge_km for m in members], axis=0)
    return YearEstimate(first.year, area, sigma_ens * keep, sigma_tta,
                        unseen * UNIFORM_SIGMA * keep,
                        boundary * keep, edge * keep, first.observed, first.observed_all,
                        mean("low"), mean("high"), each)

