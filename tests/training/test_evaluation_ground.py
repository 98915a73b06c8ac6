"""`train evaluate` by kind of ground (issue 30): a prediction wrong on its validation tile
and right on its training and guard tiles scores 0 on validation ground, which is the
headline, and 1 elsewhere; in another year the same split by the training tile set's
ground. Expected counts come from the tile windows and the reference rasterized here."""
import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from rasterio.features import rasterize

from tests.training.test_evaluation import (
    GRID,
    QUIET,
    RGI7,
    SIZE,
    in_tiles,
    perfect_prediction,
    record_training,
    scene_root,
    tile_set,
)
from training.evaluation import EvalConfig, evaluate_prediction, summary_line
from training.heldout import OTHER_YEAR, SAME_SCENE

# A validation tile on ice, a guard tile beside it, two training tiles (one on ice).
WINDOWS = [(556, 700), (556, 828), (812, 1100), (300, 300)]
SPLIT = {0: "val", 1: "guard"}  # WINDOWS[2:] train


def wrong_on_validation(tmp_path, year=2018):
    """The prediction is perfect except on the validation tile, where it is inverted; the
    reference rasterized by pixel centres; the masks of each kind of ground."""
    pred = perfect_prediction(scene_root(tmp_path), RGI7)
    tiles, tm = tile_set(pred.parent, WINDOWS, split_of=SPLIT)
    record_training(pred, tiles, tm, year=year)
    with rasterio.open(pred / "probability.tif", "r+") as f:
        p = f.read(1)
        ref = rasterize(gpd.read_file(RGI7).to_crs(GRID["crs"]).geometry, out_shape=p.shape,
                        transform=f.transform).astype(bool)
        val = in_tiles(p.shape, WINDOWS[:1])
        f.write(np.where(val, 1 - p, p).astype(np.float32), 1)
    masks = {"validation": val, "guard": in_tiles(p.shape, WINDOWS[1:2]),
             "training": in_tiles(p.shape, WINDOWS[2:])}
    masks["untiled"] = ~(masks["validation"] | masks["guard"] | masks["training"])
    return pred, ref, masks


def test_validation_ground_is_the_headline_and_scored_apart(tmp_path):
    pred, ref, masks = wrong_on_validation(tmp_path)
    report = evaluate_prediction(pred, RGI7, EvalConfig(min_area_km2=0.0), **QUIET)
    px = report["pixels"]
    assert px["split"]["relation"] == SAME_SCENE and px["headline"] == "validation"
    for kind, m in masks.items():
        assert px[kind]["pixels"] == m.sum(), kind
    v = masks["validation"]
    ice, rock = int((ref & v).sum()), int((~ref & v).sum())
    assert ice > 1000 and rock > 1000  # both classes on the validation tile
    # every pixel of the validation tile wrong: rock called ice, ice called rock
    assert px["validation"]["confusion_matrix"] == [[0, rock], [ice, 0]]
    assert px["validation"]["miou"] == 0.0
    assert px["guard"]["miou"] == px["training"]["miou"] == px["untiled"]["miou"] == 1.0
    held = np.array(px["held_out"]["confusion_matrix"])
    assert held.tolist() == (np.array(px["validation"]["confusion_matrix"]) + np.array(
        px["guard"]["confusion_matrix"]) + np.array(px["untiled"]["confusion_matrix"])).tolist()
    assert px["held_out"]["pixels"] + px["training"]["pixels"] == px["all"]["pixels"]
    assert "chose the best epoch" in px["notes"]["validation"]
    line = summary_line(report)
    assert line.startswith("evaluation, HELD-OUT VALIDATION GROUND (")
    assert "mIoU 0.0000; guard ground: mIoU 1.0000; untiled: mIoU 1.0000; in-sample" in line
    # boundary distances: median and p95 first, by the same kinds of ground
    d = report["boundary_distance"]
    assert list(d["validation"]["reference_to_predicted"])[:2] == ["median_m", "p95_m"]
    assert d["training"]["reference_to_predicted"]["p95_m"] < 4
    assert d["validation"]["reference_to_predicted"]["points"] > 0
    assert "outer boundary distance (validation) predicted->reference median" in line


def test_per_glacier_validation_fraction(tmp_path):
    pred, _, _ = wrong_on_validation(tmp_path)
    report = evaluate_prediction(pred, RGI7, EvalConfig(min_area_km2=0.0), **QUIET)
    ref = gpd.read_file(RGI7).to_crs(GRID["crs"]).set_index("rgi_id")
    with rasterio.open(pred / "probability.tif") as src:
        r, c = WINDOWS[0]
        tile = shapely.box(*rasterio.windows.bounds(((r, r + SIZE), (c, c + SIZE)),
                                                    src.transform))
    fractions = []
    for g in report["per_glacier"]["glaciers"]:
        geom = ref.geometry[g["glacier_id"]]
        assert g["validation_fraction"] == pytest.approx(
            geom.intersection(tile).area / geom.area, abs=0.02)
        fractions.append(g["validation_fraction"])
    assert max(fractions) > 0.3


def test_another_year_is_split_by_the_training_sets_ground(tmp_path):
    pred, _, masks = wrong_on_validation(tmp_path, year=2020)
    report = evaluate_prediction(pred, RGI7, EvalConfig(min_area_km2=0.0), **QUIET)
    px = report["pixels"]
    assert px["split"]["relation"] == OTHER_YEAR and px["headline"] == "validation"
    for kind, m in masks.items():
        assert px[kind]["pixels"] == m.sum(), kind
    assert px["validation"]["miou"] == 0.0 and px["training"]["miou"] == 1.0
    line = summary_line(report)
    assert line.startswith("evaluation, HELD-OUT VALIDATION GROUND (held out in time")
    assert "on hef-2018's training ground (seen in another year): mIoU 1.0000" in line


def test_boundary_summary_leads_with_median_and_p95():
    from training.evaluation import _summary

    s = _summary(np.array([1.0, 2.0, 3.0, 100.0]))  # one far false positive
    assert list(s) == ["median_m", "p95_m", "mean_m", "points"]
    assert s["median_m"] == 2.5 and s["p95_m"] == pytest.approx(85.45) and s["mean_m"] == 26.5


def test_zoned_pixels_add_each_kind_of_ground_up():
    from training.zoned import _pixels

    def block(cm):
        return {"confusion_matrix": cm}

    one = {"headline": "held_out", "validation": None, "guard": block([[5, 0], [0, 0]]),
           "untiled": None, "training": block([[3, 0], [0, 3]]),
           "held_out": block([[5, 0], [0, 0]]), "all": block([[8, 0], [0, 3]])}
    two = {"headline": "validation", "validation": block([[1, 2], [3, 4]]), "guard": None,
           "untiled": None, "training": None, "held_out": block([[1, 2], [3, 4]]),
           "all": block([[1, 2], [3, 4]])}
    px = _pixels([{"pixels": one}, {"pixels": two}])
    assert px["headline"] == "validation"  # one zone's validation ground is the headline
    assert px["validation"]["confusion_matrix"] == [[1, 2], [3, 4]]
    assert px["held_out"]["confusion_matrix"] == [[6, 2], [3, 4]]
    assert px["guard"]["pixels"] == 5 and px["untiled"] is None


@pytest.mark.parametrize("grow_px, offset_m", [(1, 10.0), (-1, -10.0)])
def test_the_area_error_model_measures_the_edges_displacement(tmp_path, grow_px, offset_m):
    """The 23 touching RGI 7 glaciers around Hintereisferner mapped one pixel too wide (or
    too narrow) all round on validation ground and exactly on training ground (every third
    tile): the model's offset is the pixel's 10 m (the divides, where the glaciers touch and
    nothing moves, left out), fitted on validation ground only."""
    from scipy.ndimage import binary_dilation, binary_erosion

    pred = perfect_prediction(scene_root(tmp_path), RGI7)
    with rasterio.open(pred / "probability.tif", "r+") as f:
        ice = f.read(1) > 0.5
        h, w = f.shape
        windows = [(r, c) for r in range(0, h - SIZE + 1, SIZE)
                   for c in range(0, w - SIZE + 1, SIZE)]
        train = in_tiles(ice.shape, windows[::3])
        moved = binary_dilation(ice) if grow_px > 0 else binary_erosion(ice)
        f.write(np.where(train, ice, moved).astype(np.float32), 1)
    split = {k: "val" for k in range(len(windows)) if k % 3}
    tiles, tm = tile_set(pred.parent, windows, split_of=split)
    record_training(pred, tiles, tm)
    model = evaluate_prediction(pred, RGI7, EvalConfig(min_area_km2=0.0), **QUIET)[
        "area_error_model"]
    assert model["fitted"] and model["pieces"] >= 20, model
    # A one-pixel dilation of a pixel-centre raster moves a smooth edge by 10 m on average
    # along its normal, less where the edge runs diagonally (the 4-neighbour step): within 2 m.
    assert model["offset_m"] == pytest.approx(offset_m, abs=2.0), model
    assert model["offset_se_m"] < 1.0
