"""PNG figures of a run: learning curves and sample predictions beside the truth."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from gee_export.common.figures import max_per_block, new_figure, save_png

if TYPE_CHECKING:
    from gee_export.common.outlines import Outlines

    from .data import TileDataset


def plot_curves(metrics_csv: Path, out: Path) -> None:
    rows = list(csv.DictReader(open(metrics_csv)))
    ep = [int(float(r["epoch"])) for r in rows]
    fig, (a, b) = new_figure(1, 2, figsize=(11, 4))
    a.plot(ep, [float(r["train_loss"]) for r in rows], label="train")
    a.plot(ep, [float(r["val_loss"]) for r in rows], label="validation")
    a.set_xlabel("epoch"), a.set_ylabel("Dice + CE loss"), a.legend()
    for key, name in (("miou", "mIoU"), ("mf1", "mean F1"), ("oa", "OA"),
                      ("iou_glacier", "glacier IoU")):
        b.plot(ep, [float(r[key]) for r in rows], label=name)
    b.set_xlabel("epoch"), b.set_ylim(0, 1), b.legend(), b.set_title("validation")
    fig.tight_layout()
    save_png(fig, out)


@torch.no_grad()
def plot_samples(model: torch.nn.Module, ds: TileDataset, device: torch.device, out: Path,
                 n: int = 4) -> None:
    """RGB (or the first band), reference and prediction for the val tiles richest in ice,
    with a legend of the classes."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    cmap = ListedColormap(SAMPLE_COLORS)
    frac = []
    for i in range(len(ds)):
        _, lbl = ds.load(i)
        frac.append(float((lbl == 1).mean()))
    pick = list(np.argsort(frac)[::-1][:n])
    model.eval()
    fig, axes = new_figure(len(pick), 3, figsize=(9, 3 * len(pick)), squeeze=False)
    bands = ds.stats.bands
    rgb = [bands.index(b) for b in ("B4", "B3", "B2")] if {"B4", "B3", "B2"} <= set(bands) else None
    for row, i in zip(axes, pick):
        img, lbl = ds.load(int(i))
        pred = model(torch.from_numpy(img)[None].to(device)).argmax(1)[0].cpu().numpy()
        if rgb:
            show = np.clip((img[rgb].transpose(1, 2, 0) + 2) / 4, 0, 1)
        else:
            show = img[0]
        row[0].imshow(show)
        for a, classes in ((row[1], lbl), (row[2], np.where(lbl == 255, 255, pred))):
            a.imshow(np.where(classes == 255, 2, classes), cmap=cmap, vmin=0, vmax=2,
                     interpolation="nearest")
        row[0].set_title(f"{ds.ids[i]} ({'RGB' if rgb else bands[0]})")
        row[1].set_title("reference")
        row[2].set_title("prediction")
        for a in row:
            a.axis("off")
    fig.tight_layout(rect=(0, 0.6 / (3 * len(pick)), 1, 1))
    fig.legend(handles=[Patch(facecolor=c, edgecolor="#808080", label=n)
                        for c, n in zip(SAMPLE_COLORS, SAMPLE_CLASSES)],
               loc="lower center", ncol=3, fontsize=8, frameon=False)
    save_png(fig, out)


# samples.png: the reference and prediction classes, and the ignored pixels of the labels.
SAMPLE_CLASSES = ("background", "glacier", "ignored: no data or glacier under --min-area")
SAMPLE_COLORS = ("#f7fbff", "#2171b5", "#bdbdbd")


def change_png(path: Path, ref: Outlines, per_year: list, table: list[dict], largest: int = 5,
               max_side: int = 800) -> None:
    """Area against year relative to the first year, with 1-sigma bars (the total and the
    largest glaciers; years left out marked) and the total's 90 % rate interval as a fan, and
    a map of the ice lost and gained between the first and the last year, at about a screen
    pixel per map pixel, lost and gained margins drawn a pixel wider on each side so that
    they show at the scale of a region."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch
    from scipy.ndimage import binary_dilation

    years = np.array([y.year for y in per_year])
    fig, (a, b) = new_figure(1, 2, figsize=(15, 5.5))
    total = table[-1]
    rows = sorted(table[:-1], key=lambda r: -max(r[f"area_km2_{y}"] or 0 for y in years))
    rows = rows[:largest]  # by the largest area seen, so a year left out does not hide one
    for k, r in enumerate([total] + rows):
        _area_series(a, r, years, k, big=r is total)
    a.set_xlabel("year"), a.set_ylabel("glacier area, % of the first year seen (ellipsoidal)")
    a.set_xticks(years, [str(y) for y in years])
    a.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    a.set_title(f"total and {len(rows)} largest glaciers (best areas): 1-sigma bars (level "
                "errors included), the total rate's 90 % interval (fan)", fontsize=9)
    cls, extent, crs = _lost_gained([(y.prediction, y.threshold) for y in (per_year[0],
                                                                            per_year[-1])],
                                    max_side)
    for code in (2, 3):  # lost, gained: widened over ice and background, never over no data
        cls[binary_dilation(cls == code) & np.isin(cls, (0, 1))] = code
    colors = ["#ffffff", "#6baed6", "#de2d26", "#31a354", "#404040"]
    b.imshow(cls, cmap=ListedColormap(colors), vmin=0, vmax=4, interpolation="nearest",
             extent=extent)
    shown = ref.frame.geometry if ref.frame.crs == crs else ref.frame.to_crs(crs).geometry
    for g in shown:  # a zoned change's outlines are in EPSG:4326, its map on one zone's grid
        for ring in _rings(g):
            x, y = ring.xy
            b.plot(np.array(x) / 1e3, np.array(y) / 1e3, color="#555555", linewidth=0.3,
                   alpha=0.6)
    b.set_xlabel(f"easting (km, {crs})"), b.set_ylabel("northing (km)")
    b.legend(handles=[Patch(color=c, label=n) for c, n in zip(
        colors[1:], ["ice in both years", f"lost since {years[0]} (drawn a map pixel wider)",
                     f"gained by {years[-1]} (drawn a map pixel wider)",
                     "no data in either year"])] +
        [Patch(facecolor="none", edgecolor="#555555", label="reference outlines")],
        loc="lower right", fontsize=7)
    b.set_title(f"ice {years[0]} -> {years[-1]}")
    fig.tight_layout()
    save_png(fig, path)


def _area_series(ax, row: dict, years: np.ndarray, k: int, big: bool) -> None:
    """One glacier's (or the total's) best areas, in % of its first seen, with 1-sigma bars,
    (the total's) rate's 90 % interval as a fan from that first year, and an x where its fit
    puts each year left out (seen too little)."""
    area = np.array([np.nan if row[f"area_best_km2_{y}"] is None else row[f"area_best_km2_{y}"]
                     for y in years], float)
    sigma = np.array([np.nan if row[f"area_sigma_km2_{y}"] is None else
                      row[f"area_sigma_km2_{y}"] for y in years], float)
    seen = np.isfinite(area)
    if not seen.any() or area[seen][0] <= 0:
        return
    y0, base = years[seen][0], area[seen][0]
    color = "#08519c" if big else f"C{k}"
    rate = row["rate_km2_per_year"]
    pct = row["rate_percent_per_year"]
    trend = ("no rate" if rate is None else f"{rate:+.3f} km^2/yr" if big or pct is None
             else f"{pct:+.1f} %/yr")
    label = (f"{row['glacier_id']}, {base:.2f} km^2 ({trend}"
             + (f"; {row['flags']}" if row["flags"] else "") + ")")
    ax.errorbar(years[seen], 100 * area[seen] / base, yerr=100 * sigma[seen] / base,
                fmt="o-" if big else ".--", color=color, linewidth=2 if big else 1,
                capsize=3, label=label)
    if big and row["rate_ci90_low"] is not None:
        t = np.array([y0, years[-1]], float)
        lo = 100 * (base + row["rate_ci90_low"] * (t - y0)) / base
        hi = 100 * (base + row["rate_ci90_high"] * (t - y0)) / base
        ax.fill_between(t, lo, hi, color=color, alpha=0.25 if big else 0.1, linewidth=0)
    if rate is not None:  # the years left out, where the fit puts them
        gone = years[~seen]
        ax.plot(gone, 100 * (base + rate * (gone - y0)) / base, "x", color=color,
                markersize=10, markeredgewidth=2)


def _rings(geom) -> list:
    import shapely

    return [r for p in shapely.get_parts(geom) for r in [p.exterior, *p.interiors]]


def _lost_gained(years: list[tuple[Path, float]], max_side: int):
    """For the first and last (prediction, threshold): classes on a grid of at most max_side
    pixels a side: 0 none, 1 both, 2 lost, 3 gained, 4 no data. Each map pixel shows the most
    telling class of the block it covers (gained, then lost, then ice; a pixel without data
    in either year is no data, never a change), so that
    margins of a pixel or two stay visible at the scale of a whole region; read a strip of
    blocks at a time."""
    import rasterio
    from rasterio.windows import Window

    from gee_export.common import qml
    from gee_export.common.layout import PROBABILITY_TIF

    from .change_map import change_classes

    (first, t0), (last, t1) = years
    # change.tif's classes (one rule for both) ranked by how telling they are, and the ranks
    # as this map's classes: none, no data, both, lost, gained.
    rank = np.zeros(256, np.uint8)
    rank[[qml.CHANGE_NONE, qml.CHANGE_NODATA, qml.CHANGE_STABLE, qml.CHANGE_LOST,
          qml.CHANGE_GAINED]] = [0, 1, 2, 3, 4]
    priority_to_class = np.array([0, 4, 1, 2, 3])
    with rasterio.open(first / PROBABILITY_TIF) as s0, rasterio.open(last / PROBABILITY_TIF) as s1:
        f = max(1, int(np.ceil(max(s0.width, s0.height) / max_side)))
        h, w = -(-s0.height // f), -(-s0.width // f)
        out = np.zeros((h, w), np.uint8)
        for r in range(h):
            win = Window(0, r * f, s0.width, min(f, s0.height - r * f))
            cls = change_classes(s0.read(1, window=win), t0, s1.read(1, window=win), t1)
            out[r] = max_per_block(rank[cls], f, w)
        left, bottom, right, top = s0.bounds
        crs = s0.crs.to_string()
    return priority_to_class[out], (left / 1e3, right / 1e3, bottom / 1e3, top / 1e3), crs
