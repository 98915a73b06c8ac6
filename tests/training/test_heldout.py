"""Training tiles on a prediction's grid at its edges: a tile that begins above (or left of)
the grid and reaches into it covers the rows and columns it reaches, in every block, against
a hand-drawn canvas that extends past the grid."""
import numpy as np

from training.heldout import OTHER_YEAR, SAME_SCENE, TrainingFootprint, _placed

PAD = 200  # the canvas reaches this far past every side of the grid


def canvas(windows, height, width):
    """The tiles drawn on a canvas larger than the grid, then cut to the grid."""
    c = np.zeros((height + 2 * PAD, width + 2 * PAD), bool)
    for r0, r1, c0, c1 in windows:
        c[r0 + PAD:r1 + PAD, c0 + PAD:c1 + PAD] = True
    return c[PAD:PAD + height, PAD:PAD + width]


def test_a_tile_that_begins_above_the_grid_covers_the_rows_it_reaches():
    h, w = 150, 140
    windows = np.array([[-20, 108, 10, 138],  # above the grid, reaching 108 rows into it
                        [100, 228, -90, 38],  # left of it, reaching 38 columns in
                        [-128, 0, 0, 128],  # wholly above: touches nothing
                        [140, 268, 130, 258]])  # past the bottom right corner
    fp = TrainingFootprint(SAME_SCENE, windows, "x", "")
    truth = canvas(windows, h, w)
    assert truth[:108, 10:138].all() and not truth[108:, 40:130].any()
    assert np.array_equal(fp.footprint(0, 0, h, w), truth)
    assert np.array_equal(fp.mask(0, 0, h, w), truth)
    for r in range(0, h, 32):  # block by block, as evaluation reads them
        for c in range(0, w, 32):
            bh, bw = min(32, h - r), min(32, w - c)
            assert np.array_equal(fp.footprint(r, c, bh, bw), truth[r:r + bh, c:c + bw]), (r, c)
    # another year: under the tiles still, but nothing was trained on
    other = TrainingFootprint(OTHER_YEAR, windows, "x", "")
    assert np.array_equal(other.footprint(0, 0, h, w), truth) and not other.mask(0, 0, h, w).any()


def test_a_tile_set_whose_grid_begins_above_the_prediction_still_lies_on_it():
    """The tiles' grid 200 m north of and 50 m west of the prediction's: its first row of
    tiles begins 20 px above the prediction's grid and reaches 108 px into it."""
    grid = {"crs": "EPSG:32632", "x0": 1000.0, "y0": 9000.0, "res": 10.0, "width": 300,
            "height": 300}
    tiles_grid = {**grid, "x0": 950.0, "y0": 9200.0}
    placed = _placed([(0, 0), (0, 128)], 128, tiles_grid, grid)
    assert placed.tolist() == [[-20, 108, -5, 123], [-20, 108, 123, 251]]
    # a tile that ends exactly at the grid's top edge lies on no pixel of it
    assert _placed([(0, 0)], 128, {**grid, "y0": 9000.0 + 1280.0}, grid) is None
    assert _placed([(0, 0)], 128, {**grid, "y0": 9000.0 + 1270.0}, grid).tolist() == \
        [[-127, 1, 0, 128]]
