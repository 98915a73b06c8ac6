"""A region across UTM zones added up from its zones' measures, against hand sums: a glacier
partly seen on one side of the line (observed shares weighted by the area each zone owns),
a glacier in one zone only, a glacier listed by a zone that owns none of it; the pixel
scores of the zones added as confusion matrices, not as scores."""
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import shapely
from pyproj import Geod, Transformer
from shapely.geometry import box

from gee_export.common.utm import Strip
from training.metrics import scores
from training.zoned import _areas, _per_glacier, _pixels, merge_years


def glacier(gid, ref, pred, observed, inventory=9.0):
    return {"glacier_id": gid, "reference_km2": ref, "predicted_km2": pred,
            "observed_fraction": observed, "inventory_km2": inventory}


def zone_report(zone, glaciers, cms=None, area=None):
    cms = cms or {}
    return {"_zone": zone, "per_glacier": {"glaciers": glaciers},
            "pixels": {"headline": "held_out",
                       **{k: ({"confusion_matrix": cms[k]} if k in cms else None)
                          for k in ("held_out", "training", "all")}},
            "area": area or {}}


def test_a_glacier_partly_seen_on_one_side_of_the_line():
    """G: 2 km^2 seen of the 4 it has west of the line (a data gap), all 3 east of it; H: in
    the eastern zone only (the western one lists it with nothing in its strip); K: listed by
    the western zone with nothing in its strip."""
    reports = [zone_report("46N", [glacier("G", 2.0, 2.2, 0.5), glacier("K", 0.0, 0.0, 0.0),
                                   glacier("H", 0.0, 0.0, 0.0)]),
               zone_report("47N", [glacier("G", 3.0, 2.7, 1.0), glacier("H", 1.0, 1.5, 1.0)])]
    out = _per_glacier(reports)
    rows = {g["glacier_id"]: g for g in out["glaciers"]}
    assert sorted(rows) == ["G", "H"]  # K: no zone owns any of it
    g, h = rows["G"], rows["H"]
    assert g["reference_km2"] == pytest.approx(5.0) and g["predicted_km2"] == pytest.approx(4.9)
    assert g["error_km2"] == pytest.approx(-0.1)
    assert g["relative_error"] == pytest.approx(-0.1 / 5.0)
    # seen: 2 + 3 of 4 + 3 km^2 (not the mean of the zones' shares, 0.75)
    assert g["observed_fraction"] == pytest.approx(5.0 / 7.0)
    assert g["zones"] == ["46N", "47N"] and h["zones"] == ["47N"]
    assert h["observed_fraction"] == pytest.approx(1.0)
    assert h["relative_error"] == pytest.approx(0.5) and g["inventory_km2"] == 9.0
    assert out["mean_abs_error_km2"] == pytest.approx((0.1 + 0.5) / 2)
    assert out["median_relative_error"] == pytest.approx((-0.02 + 0.5) / 2)


def test_zone_pixels_add_up_as_confusion_matrices():
    a = {"held_out": [[50, 10], [5, 35]], "training": [[7, 1], [0, 2]],
         "all": [[57, 11], [5, 37]]}
    b = {"training": [[1, 3], [2, 30]], "all": [[1, 3], [2, 30]]}  # held out: none here
    out = _pixels([zone_report("46N", [], a), zone_report("47N", [], b)])
    assert out["headline"] == "held_out"
    assert out["held_out"]["confusion_matrix"] == a["held_out"]
    cm = np.array(a["all"]) + np.array(b["all"])
    assert out["all"]["confusion_matrix"] == cm.tolist() and out["all"]["pixels"] == cm.sum()
    # the scores of the summed matrix, not a mean of the zones' scores
    assert out["all"]["miou"] == pytest.approx(scores(cm)["miou"])
    assert out["all"]["precision_glacier"] == pytest.approx(67 / (67 + 11 + 3))
    assert out["all"]["recall_glacier"] == pytest.approx(67 / (67 + 5 + 2))
    none = _pixels([zone_report("46N", [], b), zone_report("47N", [], b)])
    assert none["held_out"] is None and none["headline"] == "all"
    keys = ("reference_km2", "predicted_km2", "reference_planar_km2", "predicted_planar_km2",
            "outside_zones_km2")
    areas = _areas([zone_report("46N", [], a, dict(zip(keys, (1, 2, 3, 4, 5)))),
                    zone_report("47N", [], b, dict(zip(keys, (10, 20, 30, 40, 50))))])
    assert areas == dict(zip(keys, (11.0, 22.0, 33.0, 44.0, 55.0)))


@dataclass
class Year:
    """What merge_years reads of one zone's year (change.YearAreas' fields)."""
    year: int
    prediction: Path
    km2: dict
    observed: np.ndarray
    observed_all: float
    outlines: dict
    reference_km2: np.ndarray
    boundary_km2: np.ndarray
    edge_km: np.ndarray = None


def lonlat_box(w, e, crs):
    """A lon/lat box (30.00 to 30.01 N) on a zone's grid, its edges densified."""
    to = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    return shapely.transform(box(w, 30.0, e, 30.01).segmentize(1e-4),
                             lambda xy: np.column_stack(to.transform(xy[:, 0], xy[:, 1])))


def geod_km2(geom):
    return abs(Geod(ellps="WGS84").geometry_area_perimeter(geom)[0]) / 1e6


def test_merge_years_weighs_observed_shares_by_the_area_each_zone_owns():
    """Glacier 1 across the line: 2 km^2 west (half seen), 3 east (all seen), each zone's
    prediction of it reaching past the line differently; glacier 2: east only, 60 % seen."""
    crs = ["EPSG:32646", "EPSG:32647"]
    west = Year(2019, Path("w"), {"ice": np.array([0.1, 2.0, 0.0])}, np.array([0.5, 0.0]), 0.5,
                {1: lonlat_box(95.99, 96.01, crs[0])}, np.array([2.0, 0.0]),
                np.array([0.1, 0.0]), np.array([0.5, 0.0]))
    east = Year(2019, Path("e"), {"ice": np.array([0.2, 3.1, 1.0])}, np.array([1.0, 0.6]),
                (3.0 + 0.6) / 4.0, {1: lonlat_box(95.995, 96.02, crs[1]),
                                    2: lonlat_box(96.1, 96.11, crs[1])},
                np.array([3.0, 1.0]), np.array([0.2, 0.05]), np.array([0.7, 0.3]))
    m = merge_years([west, east], [Strip(None, 96.0), Strip(96.0, None)], crs)
    assert m.observed == pytest.approx([(0.5 * 2 + 1.0 * 3) / 5, 0.6])  # not [0.75, 0.3]
    assert m.observed_all == pytest.approx((0.5 * 2 + 3.6) / 6)  # seen over all 6 km^2
    assert m.km2["ice"] == pytest.approx([0.3, 5.1, 1.0])
    assert m.reference_km2 == pytest.approx([5.0, 1.0])
    assert m.boundary_km2 == pytest.approx([0.3, 0.05])
    assert m.edge_km == pytest.approx([1.2, 0.3])  # each zone's outline within its strip
    assert m.prediction == Path("e")  # the zone that owns the most
    # glacier 1: the west zone's piece west of the line, the east zone's east of it
    g1 = m.outlines[1]
    assert g1.bounds == pytest.approx((95.99, 30.0, 96.02, 30.01), abs=1e-6)
    truth = geod_km2(box(95.99, 30.0, 96.0, 30.01)) + geod_km2(box(96.0, 30.0, 96.02, 30.01))
    assert geod_km2(g1) == pytest.approx(truth, rel=1e-4)
    assert geod_km2(m.outlines[2]) == pytest.approx(geod_km2(box(96.1, 30.0, 96.11, 30.01)),
                                                    rel=1e-4)
