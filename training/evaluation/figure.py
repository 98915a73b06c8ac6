"""The figure of `train evaluate`: where the prediction agrees with the reference and where it
errs, no data and ignored small glaciers, with the training and validation ground outlined."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..heldout import GROUND_TRAINING, GROUND_VALIDATION, TrainingFootprint
from .report import HEADLINES

if TYPE_CHECKING:
    from shapely.geometry.base import BaseGeometry

# Map classes, in the order a map pixel that covers several raster pixels shows them: the
# errors first, so that a missed margin one pixel wide stays visible over a whole region.
_CLASSES = (("true negative", "#f2f2f2"), ("no data", "#404040"),
            ("small glacier (ignored)", "#b39ddb"), ("true positive", "#2b8cbe"),
            ("false positive", "#e34a33"), ("false negative", "#ffd700"))


def agreement_png(path: Path, prob_tif: Path, ref_geoms: Sequence[BaseGeometry],
                  small_geoms: Sequence[BaseGeometry], threshold: float, report: dict,
                  footprint: TrainingFootprint | None = None, max_side: int = 1600) -> None:
    """True/false positives/negatives, no data and ignored small glaciers on a grid of at most
    max_side px a side (each map pixel shows the most telling class of its block), the
    training tiles outlined, map coordinates in km."""
    import rasterio
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    from gee_export.common.figures import max_per_block, new_figure, save_png
    from gee_export.common.outlines import OutlineRasterizer

    with rasterio.open(prob_tif) as src:
        f = max(1, int(np.ceil(max(src.width, src.height) / max_side)))
        h, w = -(-src.height // f), -(-src.width // f)
        truth = OutlineRasterizer(ref_geoms, src.transform)
        small = OutlineRasterizer(small_geoms, src.transform) if len(small_geoms) else None
        cls = np.zeros((h, w), np.uint8)
        for r in range(h):
            r0, n = r * f, min(f, src.height - r * f)
            p = src.read(1, window=((r0, r0 + n), (0, src.width)))
            t, pred = truth.mask(r0, 0, n, src.width), np.nan_to_num(p, nan=0.0) >= threshold
            code = np.select([t & ~pred, pred & ~t, t & pred], [5, 4, 3], 0).astype(np.uint8)
            if small is not None:
                code[(code == 0) & small.mask(r0, 0, n, src.width)] = 2
            code[~np.isfinite(p)] = 1
            cls[r] = max_per_block(code, f, w)
        left, bottom, right, top = src.bounds
        res, crs = src.res[0], src.crs.to_string()
    fig, ax = new_figure(figsize=(8, 8 * h / w + 0.8))
    ax.imshow(cls, cmap=ListedColormap([c for _, c in _CLASSES]), vmin=0,
              vmax=len(_CLASSES) - 1, interpolation="nearest",
              extent=(left / 1e3, right / 1e3, bottom / 1e3, top / 1e3))
    handles = [Patch(color=c, label=n) for n, c in _CLASSES]
    if footprint is not None:
        from affine import Affine

        handles += _draw_ground(ax, footprint, Affine(res / 1e3, 0, left / 1e3, 0, -res / 1e3,
                                                      top / 1e3))
    ax.set_xlabel(f"easting (km, {crs})")
    ax.set_ylabel("northing (km)")
    px = report["pixels"]
    head = px[px["headline"]]
    title = (f"{HEADLINES[px['headline']].lower()}: mIoU {head['miou']:.3f}, glacier F1 "
             f"{head['f1_glacier']:.3f}")
    if px["training"]:
        title += f"   (training ground: mIoU {px['training']['miou']:.3f})"
    import textwrap

    ax.set_title(title + "\n" + "\n".join(textwrap.wrap(px["split"]["note"], 110)), fontsize=8)
    ax.legend(handles=handles, loc="lower right", fontsize=7)
    fig.tight_layout()
    save_png(fig, path)


def _draw_ground(ax, footprint: TrainingFootprint, transform) -> list:
    """The outlines of the training ground (hatched) and the validation ground (dotted) on
    the figure (`transform`: pixels to its km); their legend entries."""
    import shapely
    from matplotlib.patches import Patch

    areas = footprint.areas(transform)
    seen = ("in-sample" if footprint.in_sample_possible
            else f"{footprint.trained_on}, seen in another year")
    handles = []
    for code, colour, style, hatch, label in (
            (GROUND_TRAINING, "black", "--", "///", f"training tiles ({seen})"),
            (GROUND_VALIDATION, "#1a9850", ":", None, "validation ground (held out)")):
        parts = shapely.get_parts(areas.get(code, shapely.Polygon()))
        for poly in parts:  # the union's outline: neighbouring tiles share no line
            if hatch:
                ax.fill(*poly.exterior.xy, facecolor="none", edgecolor="#555555",
                        hatch=hatch, linewidth=0.0)
            for ring in [poly.exterior, *poly.interiors]:
                ax.plot(*ring.xy, color=colour, linewidth=1.2, linestyle=style)
        if len(parts):
            handles.append(Patch(facecolor="none", edgecolor=colour, linestyle=style,
                                 hatch=hatch, label=label))
    return handles
