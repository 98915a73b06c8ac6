"""`TrainingFootprint.ground`: the kind of ground of every pixel of a window, from a hand-made
tile index: training over validation over guard over untiled, the same ground in another
year, none in another region or with unknown tiles, and a zoned tile set's other zones'
tiles projected onto the zone's grid."""
import json

import geopandas as gpd
import numpy as np
import shapely
from pyproj import Transformer

from gee_export.common.layout import base_manifest
from gee_export.common.tile_index import tiles_id
from training.heldout import (
    GROUND_GUARD,
    GROUND_TRAINING,
    GROUND_UNTILED,
    GROUND_VALIDATION,
    OTHER_SCENE,
    OTHER_YEAR,
    SAME_SCENE,
    UNKNOWN,
    training_footprint,
)

SIZE = 4
GRID = {"crs": "EPSG:32632", "x0": 600000.0, "y0": 5200000.0, "res": 10.0, "width": 12,
        "height": 12}
# (split, row_off, col_off): a validation tile overlapping a training tile, a guard tile
# overlapping the validation tile.
TILES = [("train", 0, 0), ("val", 2, 2), ("guard", 4, 4)]


def write_tiles(root, rows, manifest_fields, year=2018, size=SIZE):
    """A complete tile set listing `rows` (dicts with split, row_off, col_off, ...)."""
    tiles = root / "tiles"
    tiles.mkdir()
    frame = gpd.GeoDataFrame([{**r, "tile_id": f"t{k}"} for k, r in enumerate(rows)],
                             geometry=[shapely.box(0, 0, 1, 1)] * len(rows), crs="EPSG:4326")
    frame.to_file(tiles / "index.gpkg", layer="tiles")
    m = base_manifest("tiles", complete=True, parameters={"size": size}, files={"a": [1, "x"]},
                      region="hef", year=year, tile_size=size, **manifest_fields)
    (tiles / "manifest.json").write_text(json.dumps(m))
    return tiles, m


def footprint_of(root, manifest, grid=GRID, year=2018, recorded=None):
    pred = root / "prediction"
    pred.mkdir()
    m = {"grid": grid, "year": year, "trained_on": {
        "tiles": "../tiles", "tiles_id": recorded or tiles_id(manifest)}}
    return training_footprint(pred, m)


def hand_ground() -> np.ndarray:
    """The 12 x 12 ground of TILES, painted by hand in the other order: what is not training
    and not validation is guard; what is not training is validation."""
    g = np.zeros((12, 12), np.uint8)
    g[4:8, 4:8] = GROUND_GUARD
    g[2:6, 2:6] = GROUND_VALIDATION  # over the guard tile where they overlap
    g[0:4, 0:4] = GROUND_TRAINING  # over the validation tile where they overlap
    return g


def test_ground_by_precedence(tmp_path):
    tiles, m = write_tiles(tmp_path, [{"split": s, "row_off": r, "col_off": c}
                                      for s, r, c in TILES], {"grid": GRID})
    fp = footprint_of(tmp_path, m)
    assert fp.relation == SAME_SCENE
    g = fp.ground(0, 0, 12, 12)
    assert g.dtype == np.uint8
    assert np.array_equal(g, hand_ground())
    # Hand counts: 16 training, 16 - 4 validation, 16 - 4 guard, the rest untiled.
    assert np.bincount(g.ravel(), minlength=4).tolist() == [104, 16, 12, 12]
    assert np.array_equal(fp.ground(3, 1, 5, 7), hand_ground()[3:8, 1:8])  # any window
    assert np.array_equal(fp.mask(0, 0, 12, 12), g == GROUND_TRAINING)


def test_another_year_has_the_training_sets_ground(tmp_path):
    tiles, m = write_tiles(tmp_path, [{"split": s, "row_off": r, "col_off": c}
                                      for s, r, c in TILES], {"grid": GRID})
    fp = footprint_of(tmp_path, m, year=2020)
    assert fp.relation == OTHER_YEAR
    assert np.array_equal(fp.ground(0, 0, 12, 12), hand_ground())
    assert not fp.mask(0, 0, 12, 12).any()  # nothing trained on in 2020 itself


def test_no_ground_in_another_region_or_with_unknown_tiles(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    rows = [{"split": s, "row_off": r, "col_off": c} for s, r, c in TILES]
    _, m = write_tiles(tmp_path / "a", rows, {"grid": GRID})
    fp = footprint_of(tmp_path / "a", m, grid={**GRID, "x0": 700000.0})  # 100 km east
    assert fp.relation == OTHER_SCENE
    assert (fp.ground(0, 0, 12, 12) == GROUND_UNTILED).all()
    _, m = write_tiles(tmp_path / "b", rows, {"grid": GRID})
    fp = footprint_of(tmp_path / "b", m, recorded="not-these-tiles")
    assert fp.relation == UNKNOWN
    assert (fp.ground(0, 0, 12, 12) == GROUND_UNTILED).all()


# A zoned tile set at 96 E, 30 N: zone 46N's grid reaches past the zone line, where zone
# 47N's grid begins. Both grids 10 m; tiles of 32 px (320 m).
ZSIZE = 32
LINE46 = Transformer.from_crs("EPSG:4326", "EPSG:32646", always_xy=True).transform(96.0, 30.0)
LINE47 = Transformer.from_crs("EPSG:4326", "EPSG:32647", always_xy=True).transform(96.0, 30.0)
G46 = {"crs": "EPSG:32646", "x0": float(round(LINE46[0]) - 640), "y0": float(round(LINE46[1])),
       "res": 10.0, "width": 128, "height": 96}
G47 = {"crs": "EPSG:32647", "x0": float(round(LINE47[0]) - 640), "y0": float(round(LINE47[1])),
       "res": 10.0, "width": 128, "height": 96}


def zoned_rows():
    # 46N: a validation tile at its east edge, under 47N's training tile there, and a guard
    # tile; 47N: a training tile on the zone line, and a validation tile far from 46N's tiles.
    return [{"split": "val", "row_off": 32, "col_off": 64, "zone": "46N"},
            {"split": "guard", "row_off": 0, "col_off": 0, "zone": "46N"},
            {"split": "train", "row_off": 32, "col_off": 48, "zone": "47N"},
            {"split": "val", "row_off": 64, "col_off": 96, "zone": "47N"},
            {"split": "train", "row_off": 0, "col_off": 0, "zone": "46N"}]


def test_other_zones_tiles_count_where_they_lie(tmp_path):
    zones = [{"zone": "46N", "grid": G46}, {"zone": "47N", "grid": G47}]
    _, m = write_tiles(tmp_path, zoned_rows(), {"zones": zones}, size=ZSIZE)
    fp = footprint_of(tmp_path, m, grid=G46)
    assert fp.relation == SAME_SCENE
    g = fp.ground(0, 0, G46["height"], G46["width"])
    # Independently: each 46N pixel centre in 47N coordinates, tested against 47N's tile.
    cols, rows = np.meshgrid(np.arange(128) + 0.5, np.arange(96) + 0.5)
    x, y = G46["x0"] + cols * 10, G46["y0"] - rows * 10
    x47, y47 = Transformer.from_crs("EPSG:32646", "EPSG:32647", always_xy=True).transform(x, y)
    c47, r47 = (x47 - G47["x0"]) / 10, (G47["y0"] - y47) / 10

    def near_tile(r0, c0, pad):
        return ((r47 >= r0 - pad) & (r47 < r0 + ZSIZE + pad) & (c47 >= c0 - pad)
                & (c47 < c0 + ZSIZE + pad))

    centre_in, touching = near_tile(32, 48, 0), near_tile(32, 48, 0.75)
    assert centre_in.sum() > 500  # the 47N training tile lies largely on 46N's grid
    assert (g[centre_in] == GROUND_TRAINING).all()  # over 46N's own validation tile
    assert not ((g == GROUND_TRAINING) & ~touching)[:, 40:].any()  # 46N's own is at 0, 0
    own_val = np.zeros((96, 128), bool)
    own_val[32:64, 64:96] = True
    assert (g[own_val & ~touching] == GROUND_VALIDATION).all()
    assert (own_val & ~touching).sum() > 300 and (own_val & centre_in).sum() > 300
    assert (g[:32, :32] == GROUND_TRAINING).all()  # 46N's training tile over its guard
    # 47N's validation tile lies east of 46N's grid edge as far as its grid reaches.
    val47 = near_tile(64, 96, 0)
    assert val47.sum() == 0 or (g[val47] == GROUND_VALIDATION).all()
