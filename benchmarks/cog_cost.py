"""What cloud-optimized GeoTIFFs cost, side by side with the plain tiled GeoTIFFs written
before: seconds (best of --repeat) and bytes, for a stack cell, a training tile, and
probability.tif made from predict's uncompressed working copy.

The data are the demo's own bands (a 512 px synthetic scene, mirrored to the sizes asked),
so compression sees terrain-like fields rather than noise. The "plain" writers are the ones
this project used before (kept here, not in the package):
- a cell or tile: one rasterio write, band descriptions and tags set after the pixels;
- probability.tif: copy the working copy compressed, then add overviews to the copy (which
  GDAL appends after the pixels, so the file is not a COG).

    .venv/bin/python benchmarks/cog_cost.py [--cell 2048] [--prob 4096] [--repeat 3]
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def _demo(root: Path, size: int) -> np.ndarray:
    """(11, size, size) float32 from a 512 px demo export, mirrored to `size`."""
    import rasterio
    from click.testing import CliRunner

    from gee_export.common.cli import prep

    ws = root / "ws"
    res = CliRunner().invoke(prep, ["export", "--region", "demo", "--year", "2018",
                                    "--demo-size", "512", "--cell-size", "256",
                                    "--workspace", str(ws), "--quiet"])
    assert res.exit_code == 0, res.output
    with rasterio.open(ws / "exports" / "demo-2018" / "stack.vrt") as f:
        base = f.read()
    reps = -(-size // base.shape[1])
    tile = np.concatenate([base, base[:, ::-1]], axis=1)
    tile = np.concatenate([tile, tile[:, :, ::-1]], axis=2)
    big = np.tile(tile, (1, reps, reps))
    return np.ascontiguousarray(big[:, :size, :size])


def plain_write(path: Path, data: np.ndarray, profile: dict, names, tags) -> None:
    import rasterio

    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for i, n in enumerate(names, 1):
            dst.set_band_description(i, n)
        if tags:
            dst.update_tags(**tags)


def plain_probability(raw: Path, dest: Path, profile: dict) -> None:
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.shutil import copy as rio_copy

    options = {k: v for k, v in profile.items() if k not in (
        "driver", "width", "height", "count", "dtype", "crs", "transform", "nodata")}
    rio_copy(raw, dest, driver="GTiff", **options)
    with rasterio.open(dest, "r+") as f:
        f.set_band_description(1, "glacier_probability")
        factors = [2 ** k for k in range(1, 6) if max(f.width, f.height) // 2 ** k >= 256]
        f.build_overviews(factors, Resampling.average)


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    import rasterio
    from affine import Affine
    from rio_cogeo.cogeo import cog_validate

    from gee_export.common.bands import BAND_NAMES
    from gee_export.common.cog import copy_as_cog, uncompressed
    from gee_export.common.rasters import geotiff_profile, write_geotiff

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cell", type=int, default=2048)
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--prob", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    t = Affine(10, 0, 385000, 0, -10, 4352000)
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        data = _demo(root, max(a.cell, a.prob))
        rows = []

        def measure(what, plain, cog, plain_path, cog_path):
            tp, tc = best(plain, a.repeat), best(cog, a.repeat)
            bp, bc = plain_path.stat().st_size, cog_path.stat().st_size
            ok_p = cog_validate(str(plain_path), quiet=True)[0]
            ok_c = cog_validate(str(cog_path), quiet=True)
            rows.append((what, tp, tc, bp, bc, ok_p, ok_c[0] and not ok_c[2]))

        cell = data[:, :a.cell, :a.cell]
        prof = geotiff_profile(a.cell, a.cell, 11, "float32", "EPSG:32647", t, np.nan)
        tags = {"GLACIER_CELL_INFO": '{"valid_fraction": 1.0}'}
        measure(f"stack cell {a.cell} px x 11 bands",
                lambda: plain_write(root / "cell_plain.tif", cell, prof, BAND_NAMES, tags),
                lambda: write_geotiff(root / "cell_cog.tif", cell, prof, BAND_NAMES, tags),
                root / "cell_plain.tif", root / "cell_cog.tif")

        tile = np.ascontiguousarray(data[:, :a.tile, :a.tile])
        tprof = geotiff_profile(a.tile, a.tile, 11, "float32", "EPSG:32647", t, np.nan)
        measure(f"training tile {a.tile} px x 11 bands (no overviews)",
                lambda: plain_write(root / "tile_plain.tif", tile, tprof, BAND_NAMES, None),
                lambda: write_geotiff(root / "tile_cog.tif", tile, tprof, BAND_NAMES, None,
                                      resampling=None),
                root / "tile_plain.tif", root / "tile_cog.tif")

        # a probability-like field: the NDSI band squashed to [0, 1]
        prob = (1 / (1 + np.exp(-8 * data[8:9, :a.prob, :a.prob] + 4))).astype(np.float32)
        pprof = geotiff_profile(a.prob, a.prob, 1, "float32", "EPSG:32647", t, np.nan)
        raw = root / "raw.tif"
        with rasterio.open(raw, "w", **uncompressed(pprof)) as f:
            f.write(prob)
        raw_cog = root / "raw_cog.tif"

        def cog_prob():
            shutil.copy(raw, raw_cog)  # copy_as_cog adds overviews to its working copy
            copy_as_cog(raw_cog, root / "prob_cog.tif", pprof, "average",
                        ["glacier_probability"])
        t_copy = best(lambda: shutil.copy(raw, raw_cog), a.repeat)
        measure(f"probability.tif {a.prob} px (from the working copy)",
                lambda: plain_probability(raw, root / "prob_plain.tif", pprof),
                cog_prob, root / "prob_plain.tif", root / "prob_cog.tif")
        rows[-1] = (*rows[-1][:2], rows[-1][2] - t_copy, *rows[-1][3:])

    print(f"{'what':52s} {'plain s':>8s} {'COG s':>8s} {'ratio':>6s} {'plain MB':>9s} "
          f"{'COG MB':>8s} {'bytes':>6s}  valid COG (plain, new)")
    for what, tp, tc, bp, bc, okp, okc in rows:
        print(f"{what:52s} {tp:8.3f} {tc:8.3f} {tc / tp:6.2f} {bp / 1e6:9.2f} {bc / 1e6:8.2f} "
              f"{bc / bp:6.3f}  {okp}, {okc}")


if __name__ == "__main__":
    main()
