"""The local export path (prep export on local rasters) at two scene sizes 4x apart in pixels:
megapixels per second and peak memory (RSS), each size in its own subprocess. The source
rasters are generated first and not timed. Target: peak memory flat in scene size.

Both sizes are multiples of the cell size, so both scenes are made of the same full cells and
the memory figures compare like with like (a scene with ragged edge cells allocates a
different mix of array sizes).

    .venv/bin/python benchmarks/bench_export.py [--sizes 1024 2048] [--cell-size 512]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import child_main, run_child  # noqa: E402


def export(ws: str, size: str, cell_size: str):
    from gee_export.config import RecipeConfig
    from gee_export.demo import demo_region
    from gee_export.export import demo_source_dir, run_local_export

    ws_path, size = Path(ws), int(size)
    run_local_export(ws_path, demo_region(size), RecipeConfig(year=2018),
                     demo_source_dir(ws_path, 2018, size), cell_size=int(cell_size),
                     quiet=True, echo=lambda *a: None)
    return {"megapixels": size * size / 1e6}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs=2, default=[1024, 2048])
    ap.add_argument("--cell-size", type=int, default=512)
    ap.add_argument("--child", nargs="+")
    a = ap.parse_args()
    if a.child:
        return child_main({"export": export}, a.child)
    from gee_export.demo import write_demo_sources
    from gee_export.export import demo_source_dir

    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'scene':>11} {'Mpx':>6} {'seconds':>8} {'Mpx/s':>7} {'peak MB':>8}")
        for size in a.sizes:
            ws = Path(tmp) / f"ws{size}"
            write_demo_sources(demo_source_dir(ws, 2018, size), 2018, size=size)
            r = run_child(__file__, "export", ws, size, a.cell_size)
            print(f"{size:>5}x{size:<5} {r['megapixels']:6.2f} {r['seconds']:8.2f} "
                  f"{r['megapixels'] / r['seconds']:7.3f} {r['peak_mb']:8.0f}")


if __name__ == "__main__":
    main()
