"""prep tile against a plain windowed rasterio copy of the same bytes, at two scene sizes 4x
apart (in pixels). Prints seconds, the ratio tile/copy, and the peak memory (RSS) of each run,
each measured in its own subprocess.  Target: ratio <= 1.5, peak memory flat in scene size.

Default sizes 2048 and 4096 px (16 and 64 tiles): `prep tile` has about a second of fixed
cost (imports, index.gpkg, overview PNG) that a 4-tile scene cannot amortize.

    .venv/bin/python benchmarks/bench_tile.py [--sizes 2048 4096]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import child_main, run_child  # noqa: E402


def make_stack(root: Path, size: int, smooth: bool = False) -> tuple[Path, Path]:
    """A complete export of size x size px with outlines; random values, or smooth fields
    (for prediction, where noise would make a polygon of every pixel)."""
    import geopandas as gpd
    import numpy as np
    from shapely.geometry import Point

    from gee_export.common.grid import ExportGrid, iter_cells
    from gee_export.stack import ExportDir, write_cell_tif

    grid = ExportGrid("EPSG:32647", 400_000.0, 4_300_000.0, size, size)
    ws = root / f"ws{size}"
    exp = ExportDir.open_or_create(ws, "bench-2018", {"size": size}, {"grid": grid.to_dict()})
    cells = list(iter_cells(grid, 512))
    exp.set_plan(cells)
    rng = np.random.default_rng(0)
    for c in cells:
        if smooth:
            y, x = np.mgrid[c.row_off:c.row_off + c.height, c.col_off:c.col_off + c.width]
            data = np.stack([0.5 + 0.4 * np.sin(x / 150 + k) * np.cos(y / 190 - k)
                             for k in range(11)]).astype(np.float32)
        else:
            data = rng.random((11, c.height, c.width), dtype=np.float32).round(3)
        write_cell_tif(exp.cell_file(c), grid, c, data)
    pts = rng.uniform(0, size * 10, (size // 32, 2))
    polys = [Point(grid.x0 + x, grid.y0 - y).buffer(300) for x, y in pts]
    gpd.GeoDataFrame(geometry=polys, crs=grid.crs).to_file(exp.path / "outlines.gpkg")
    exp.finish()
    return ws, exp.path


def run_tile(ws: str, exp: str):
    from tiling.tiles import TileConfig, make_tiles

    make_tiles(Path(exp), Path(ws), TileConfig(size=512, split="random", min_area_km2=0),
               workers=1, quiet=True, echo=lambda *a: None)


def run_copy(ws: str, exp: str):
    """The baseline: read each 512 window of the VRT and write it as a compressed GeoTIFF."""
    import rasterio
    from rasterio.windows import Window

    out = Path(ws) / "copy"
    out.mkdir(exist_ok=True)
    with rasterio.open(Path(exp) / "stack.vrt") as src:
        for r in range(0, src.height - 511, 512):
            for c in range(0, src.width - 511, 512):
                win = Window(c, r, 512, 512)
                data = src.read(window=win)
                prof = dict(driver="GTiff", width=512, height=512, count=11, dtype="float32",
                            crs=src.crs, transform=src.window_transform(win), tiled=True,
                            compress="deflate", predictor=3)
                with rasterio.open(out / f"{r}_{c}.tif", "w", **prof) as dst:
                    dst.write(data)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs=2, default=[2048, 4096])
    ap.add_argument("--child", nargs=3)
    a = ap.parse_args()
    if a.child:
        return child_main({"tile": run_tile, "copy": run_copy}, a.child)
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'scene':>10} {'copy s':>8} {'tile s':>8} {'ratio':>6} {'copy MB':>8} {'tile MB':>8}")
        for size in a.sizes:
            ws, exp = make_stack(Path(tmp), size)
            res = {}
            for which in ("copy", "tile"):
                res[which] = run_child(__file__, which, ws, exp)
            print(f"{size:>5}x{size:<4} {res['copy']['seconds']:8.2f} {res['tile']['seconds']:8.2f} "
                  f"{res['tile']['seconds'] / res['copy']['seconds']:6.2f} "
                  f"{res['copy']['peak_mb']:8.0f} {res['tile']['peak_mb']:8.0f}")


if __name__ == "__main__":
    main()
