"""The local export (`prep export --source-dir`) against a reference run of the same recipe
with its optimizations switched off, side by side, at two scene sizes 4x apart in pixels:
megapixels per second, the speed ratio, peak memory, and the largest difference between the two
stacks. The source rasters are generated first and not timed.

The reference is the same code with these switched off, one by one the changes that made the
export faster: one warp per band instead of one per file, a warp even where a source shares the
export's pixel lattice, np.nanmedian instead of bottleneck's, DEFLATE instead of ZSTD, and one
process instead of one per CPU. Targets: >= 5x faster, the same stack (within 1e-6), peak memory
flat in scene size.

    .venv/bin/python benchmarks/bench_export.py [--sizes 2048 4096] [--cell-size 512]

The default sizes are large enough for the per-cell work to outweigh the fixed cost (imports,
plan, scene metadata, about 0.8 s), which a 1024 px scene of 4 cells cannot amortize.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import child_main, run_child  # noqa: E402


def switch_off_optimizations() -> None:
    """The reference: the recipe as it ran before the export was made faster."""
    import numpy as np

    from gee_export.common import rasters
    from gee_export.local import cell_reads, placing, recipe

    one_file = cell_reads.read_source

    def per_band(path, kind, grid, cell, bands, resampling="bilinear", native_rule=None):
        if bands is None or native_rule is not None:  # the noise rule needs both bands
            return one_file(path, kind, grid, cell, bands, resampling, native_rule)
        out, n = {}, 0
        for b in bands:
            got, k = one_file(path, kind, grid, cell, [b], resampling)
            out.update(got)
            n += k
        return out, n

    def numpy_median(stack):
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                return np.nanmedian(stack, axis=0).astype(np.float32)

    cell_reads.read_source = per_band
    placing._aligned_offset = lambda *a: None
    placing._axis_sampling = lambda *a: None
    recipe.nan_median = numpy_median
    rasters.COMPRESSION = {"compress": "deflate"}


def export(ws: str, size: str, cell_size: str, mode: str):
    from gee_export.config import RecipeConfig
    from gee_export.demo.scene import demo_region
    from gee_export.export import demo_source_dir
    from gee_export.local_export import LocalOptions, run_local_export

    if mode == "reference":
        switch_off_optimizations()
    ws_path, size = Path(ws), int(size)
    run_local_export(ws_path, demo_region(size), RecipeConfig(year=2018),
                     demo_source_dir(ws_path, 2018, size),
                     options=LocalOptions(cell_size=int(cell_size),
                                          workers="auto" if mode == "fast" else 1),
                     name=mode, quiet=True, echo=lambda *a: None)
    return {"megapixels": size * size / 1e6}


def max_difference(a: Path, b: Path) -> float:
    import numpy as np
    import rasterio

    with rasterio.open(a) as fa, rasterio.open(b) as fb:
        x, y = fa.read(), fb.read()
    same_mask = np.array_equal(np.isnan(x), np.isnan(y))
    return float(np.nanmax(np.abs(x - y))) if same_mask else float("inf")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs=2, default=[2048, 4096])
    ap.add_argument("--cell-size", type=int, default=512)
    ap.add_argument("--child", nargs="+")
    a = ap.parse_args()
    if a.child:
        return child_main({"export": export}, a.child)
    from gee_export.common.workers import cpu_workers
    from gee_export.demo.sources import write_demo_sources
    from gee_export.export import demo_source_dir

    print(f"local export, {a.cell_size} px cells, {cpu_workers('auto')} worker(s) in the fast run")
    print(f"{'scene':>11} {'Mpx':>6} {'ref s':>7} {'fast s':>7} {'ref Mpx/s':>9} "
          f"{'fast Mpx/s':>10} {'speed-up':>8} {'ref MB':>7} {'fast MB':>14} {'max diff':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for size in a.sizes:
            ws = Path(tmp) / f"ws{size}"
            write_demo_sources(demo_source_dir(ws, 2018, size), 2018, size=size)
            r = {m: run_child(__file__, "export", ws, size, a.cell_size, m)
                 for m in ("reference", "fast")}
            diff = max_difference(ws / "exports" / "reference" / "stack.vrt",
                                  ws / "exports" / "fast" / "stack.vrt")
            mpx = r["fast"]["megapixels"]
            fast_mem = f"{r['fast']['peak_mb']:.0f}+{r['fast']['worker_peak_mb']:.0f}/worker"
            print(f"{size:>5}x{size:<5} {mpx:6.2f} {r['reference']['seconds']:7.2f} "
                  f"{r['fast']['seconds']:7.2f} {mpx / r['reference']['seconds']:9.3f} "
                  f"{mpx / r['fast']['seconds']:10.3f} "
                  f"{r['reference']['seconds'] / r['fast']['seconds']:7.2f}x "
                  f"{r['reference']['peak_mb']:7.0f} {fast_mem:>14} {diff:9.1e}")


if __name__ == "__main__":
    main()
