"""A region across a UTM zone line costs what its zones cost: time in proportion to its
pixels, and the peak memory of one zone.

Two synthetic regions of local sources at 46.8 N, side by side in one run: TWO, a box 0.2
degrees wide centred on 96 E (zones 46 and 47), and ONE, a box inside zone 47 as wide as
each of TWO's zones (0.1 degrees and the 1 km each zone's grid reaches past the line), with
the same glaciers per degree. Each stage (`prep export`, `prep tile`, `train
predict` with a one-epoch tiny checkpoint trained on ONE's tiles) runs in a fresh process, one
worker, and reports seconds and peak RSS. Targets: TWO / ONE 2x the time (the ratio per pixel is
printed too) and 1.0x the peak memory.

    .venv/bin/python benchmarks/bench_zones.py [--width 0.1]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

from gee_export.common.utm import METRES_PER_DEGREE, PART_MARGIN_M

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import child_main, run_child  # noqa: E402

LAT = (46.75, 46.85)
STEP = 1e-4  # degrees per source pixel


def write_sources(src: Path, box: tuple[float, float, float, float]) -> None:
    """Rock with an elliptic glacier every 0.025 degrees, S1/S2/SRTM in EPSG:4326."""
    import geopandas as gpd
    import numpy as np
    import rasterio
    from affine import Affine
    from rasterio.features import rasterize
    from shapely.affinity import scale
    from shapely.geometry import Point

    src.mkdir(parents=True)
    w, s, e, n = box
    centres = [(x, y) for x in np.arange(w + 0.0125, e, 0.025)
               for y in np.arange(s + 0.0125, n, 0.025)]
    glaciers = [scale(Point(x, y).buffer(0.008), 1.3, 0.7) for x, y in centres]
    gpd.GeoDataFrame({"glac_id": [f"G{i:03d}" for i in range(len(glaciers))]},
                     geometry=glaciers, crs="EPSG:4326").to_file(src / "outlines.gpkg")
    width, height = round((e - w) / STEP), round((n - s) / STEP)
    t = Affine(STEP, 0, w, 0, -STEP, n)
    ice = rasterize(glaciers, (height, width), transform=t).astype(bool)
    prof = dict(driver="GTiff", width=width, height=height, crs="EPSG:4326", transform=t,
                tiled=True, compress="deflate")
    bands = {"B2": (7500, 1500), "B3": (8000, 1600), "B4": (7800, 1700), "B8": (7000, 2000),
             "B11": (500, 2500), "SCL": (11, 5)}
    with rasterio.open(src / "S2_2018-08-01_L2A.tif", "w", count=6, dtype="uint16", **prof) as f:
        for i, (b, (a, r)) in enumerate(bands.items(), 1):
            f.write(np.where(ice, a, r).astype("uint16"), i)
            f.set_band_description(i, b)
    with rasterio.open(src / "S1_2018-07-10_dB.tif", "w", count=2, dtype="float32", **prof) as f:
        for i, (b, (a, r)) in enumerate({"VV": (-16, -8), "VH": (-24, -15)}.items(), 1):
            f.write(np.where(ice, a, r).astype("float32"), i)
            f.set_band_description(i, b)
    with rasterio.open(src / "DEM_SRTM.tif", "w", count=1, dtype="float32", **prof) as f:
        f.write(np.full((height, width), 3000, "float32"), 1)


def _cli(group: str, args: list) -> dict:
    from click.testing import CliRunner

    from gee_export.common.cli import prep, train

    r = CliRunner().invoke({"prep": prep, "train": train}[group], [str(a) for a in args])
    if r.exit_code:
        raise SystemExit(r.output + repr(r.exception))
    return {}


def job_export(src: str, ws: str, name: str, *box: str) -> dict:
    return _cli("prep", ["export", "--region", name, "--bbox", *box, "--year", 2018,
                         "--source-dir", src, "--cell-size", 512, "--workers", 1,
                         "--workspace", ws, "--quiet"])


def job_tile(ws: str, name: str) -> dict:
    return _cli("prep", ["tile", "--export", Path(ws) / "exports" / f"{name}-2018", "--size",
                         128, "--workers", 1, "--workspace", ws, "--quiet"])


def job_train(ws: str, name: str) -> dict:
    return _cli("train", ["run", "--tiles", Path(ws) / "tiles" / f"{name}-2018", "--preset",
                          "tiny", "--epochs", 1, "--batch-size", 8, "--workers", 0, "--name",
                          "tiny", "--workspace", ws, "--quiet"])


def job_predict(ws: str, name: str) -> dict:
    _cli("train", ["predict", "--checkpoint", Path(ws) / "runs" / "tiny" / "best.pt",
                   "--export", Path(ws) / "exports" / f"{name}-2018", "--workspace", ws,
                   "--quiet"])
    return {}


JOBS = {"export": job_export, "tile": job_tile, "train": job_train, "predict": job_predict}


def pixels(ws: Path, name: str) -> int:
    """Pixels exported, over every zone."""
    exports = ws / "exports"
    total = 0
    for mf in exports.glob(f"{name}-2018*/export.json"):
        m = json.loads(mf.read_text())
        total += m["plan"]["pixels"]
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=float, default=0.1, help="degrees of ONE's box")
    a = ap.parse_args()
    me = str(Path(__file__).resolve())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # ONE is as wide as each of TWO's zones, whose grids reach PART_MARGIN_M past 96 E
        margin = PART_MARGIN_M / (METRES_PER_DEGREE * math.cos(math.radians(LAT[1])))
        boxes = {"one": (96.5, LAT[0], 96.5 + a.width + margin, LAT[1]),
                 "two": (96.0 - a.width, LAT[0], 96.0 + a.width, LAT[1])}
        for name, box in boxes.items():
            write_sources(tmp / f"src-{name}", box)
        ws = tmp / "ws"
        rows = {}
        for name, box in boxes.items():
            rows[name] = {"export": run_child(me, "export", tmp / f"src-{name}", ws, name, *box)}
            rows[name]["tile"] = run_child(me, "tile", ws, name)
            if name == "one":
                run_child(me, "train", ws, name)
            rows[name]["predict"] = run_child(me, "predict", ws, name)
        px = {name: pixels(ws, name) for name in boxes}
        print(f"{'stage':<8} {'ONE s':>7} {'TWO s':>7} {'time x':>7} {'per px':>7} "
              f"{'ONE MB':>7} {'TWO MB':>7} {'peak x':>7}")
        for stage in ("export", "tile", "predict"):
            o, t = rows["one"][stage], rows["two"][stage]
            ratio = t["seconds"] / o["seconds"]
            print(f"{stage:<8} {o['seconds']:7.1f} {t['seconds']:7.1f} {ratio:7.2f} "
                  f"{ratio * px['one'] / max(px['two'], 1):7.2f} {o['peak_mb']:7.0f} "
                  f"{t['peak_mb']:7.0f} {t['peak_mb'] / o['peak_mb']:7.2f}")
        print(f"pixels exported: ONE {px['one'] / 1e6:.2f} Mpx, TWO {px['two'] / 1e6:.2f} Mpx "
              f"({px['two'] / max(px['one'], 1):.2f}x; each zone reaches 1 km past the line)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child_main(JOBS, sys.argv[2:])
    else:
        main()
