"""How a change is made, in words: the texts change.json carries under `method`, so that a
result says how it was made (the rate's own text is trend.METHOD)."""
from __future__ import annotations

from ..uncertainty import CORRELATION_MODEL

AREAS_METHOD = (
    "One prediction per year and model (train predict); several checkpoints (--checkpoint "
    "repeated, e.g. the same recipe with other seeds) make an ensemble. Every pixel within "
    "the zone buffer of a reference glacier belongs to the nearest one, so touching glaciers "
    "are measured apart and a glacier that advances beyond its reference outline keeps its "
    "ice. A glacier's area in a year is the ensemble's mean predicted ice over the pixels with "
    "data, made ellipsoidal by its reference outline's ellipsoidal/planar ratio. A glacier "
    "seen over less than min_observed of its reference outline gets no area that year and the "
    "year is left out of its fit; a smaller unseen part is filled at the ice density of the "
    "part seen.")
UNCERTAINTY_METHOD = (
    "Each year's best area is the measured area less the bias of the area error model (train "
    "evaluate, on validation ground: the edges' mean outward displacement times the glacier's "
    "outline less its ice divides); its 1 sigma holds the level, common, year-to-year, "
    "unobserved (the unseen part of the reference outline, as ice or not with equal "
    "likelihood: its area / sqrt(12)), model (the ensemble's standard deviation; with --tta, "
    "half the difference between the areas at mean -/+ spread; empty when not estimated) and "
    "divide terms; the 90 % interval is best -/+ 1.645 sigma. Without an error model nothing "
    "is corrected and the buffer method (Paul et al. 2013: the outline's length, as pi/4 of "
    "its pixel staircase, times half a pixel) stands in for the level term; it is known to be "
    "too small. " + CORRELATION_MODEL)
TOTAL_METHOD = (
    "The total sums the glaciers' best areas; a glacier-year left out is filled with that "
    "glacier's fitted area and the fit's standard error there; a glacier seen in fewer than "
    "two years is left out of every year. Its terms follow the correlation model above.")
