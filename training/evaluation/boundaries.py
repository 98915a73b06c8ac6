"""Boundary distances between a prediction and its reference: points along one outline, the
distance from each to the other's, and their summaries by the kind of ground each point lies
on. Only the outer outline of the reference counts (ice divides are not boundaries an image
shows), and only where both sides have data."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..heldout import GROUND_NAMES, GROUND_TRAINING, UNKNOWN
from .scoring import GROUNDS, SceneScores

if TYPE_CHECKING:
    from shapely.geometry.base import BaseGeometry

BOUNDARY_PERCENTILE = 95


def boundary_points(a: BaseGeometry, spacing: float, keep: BaseGeometry | None = None
                    ) -> np.ndarray:
    """Points every `spacing` metres along the boundaries of `a`; with `keep` (a polygon),
    only those inside it."""
    import shapely

    pts = []
    for line in shapely.get_parts(shapely.boundary(np.asarray(a))):
        n = max(2, int(np.ceil(line.length / spacing)) + 1)
        pts.append(shapely.line_interpolate_point(line, np.linspace(0, line.length, n)))
    pts = np.concatenate(pts) if pts else np.array([], object)
    return pts[shapely.contains(keep, pts)] if keep is not None and len(pts) else pts


def nearest_boundary(pts: np.ndarray, b: BaseGeometry) -> np.ndarray:
    """Distance from each point to the nearest boundary of `b` (empty when `b` has none)."""
    import shapely

    lb = shapely.get_parts(shapely.boundary(np.asarray(b)))
    if not len(pts) or not len(lb):
        return np.array([])
    _, dist = shapely.STRtree(lb).query_nearest(pts, return_distance=True, all_matches=False)
    return dist


def boundary_distances(a: BaseGeometry, b: BaseGeometry, spacing: float,
                       keep: BaseGeometry | None = None) -> np.ndarray:
    """Distance from points every `spacing` metres along the boundaries of `a` to the nearest
    boundary of `b`; with `keep` (a polygon), only points inside it count."""
    return nearest_boundary(boundary_points(a, spacing, keep), b)


def _summary(d: np.ndarray) -> dict:
    """The median and p95 first (a few far false positives pull the mean past the p95)."""
    if not d.size:
        return {"median_m": None, f"p{BOUNDARY_PERCENTILE}_m": None, "mean_m": None,
                "points": 0}
    return {"median_m": float(np.median(d)),
            f"p{BOUNDARY_PERCENTILE}_m": float(np.percentile(d, BOUNDARY_PERCENTILE)),
            "mean_m": float(d.mean()), "points": int(d.size)}


def _boundaries(ref, scene: SceneScores) -> dict:
    """Distances between the outer outlines, at points with data on both sides (one pixel in
    from any data gap or the scene's edge); divides inside the reference are not counted.
    Split like the pixels, by the kind of ground each point lies on."""
    import shapely

    res = float(np.sqrt(scene.pixel_area_m2))
    keep = shapely.buffer(scene.valid_area, -1.5 * res)
    outer = shapely.union_all(ref.geometries)
    divides = shapely.length(shapely.union_all(shapely.boundary(ref.geometries))) - \
        shapely.length(shapely.boundary(outer))
    out: dict = {k: {} for k in (*GROUNDS, "held_out", "all")}
    for direction, a, b in (("predicted_to_reference", scene.predicted_union, outer),
                            ("reference_to_predicted", outer, scene.predicted_union)):
        pts = boundary_points([a], res, keep)
        d = nearest_boundary(pts, [b])
        code = np.zeros(len(d), np.uint8)  # the ground's polygons are disjoint
        for c, area in scene.ground_areas.items():
            if len(d) and not area.is_empty:
                code[shapely.contains(area, pts)] = c
        for name, sel in ((*((n, code == c) for c, n in GROUND_NAMES.items()),
                           ("held_out", code != GROUND_TRAINING),
                           ("all", np.ones(len(d), bool)))):
            out[name][direction] = _summary(d[sel])
    if scene.footprint.relation == UNKNOWN:
        out.update({k: None for k in (*GROUNDS, "held_out")})
    return {**out, "divides_excluded_km": max(0.0, float(divides) / 1e3)}
