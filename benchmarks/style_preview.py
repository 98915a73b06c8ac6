"""Render what the QGIS styles (.qml) of a prediction or change directory say, with
matplotlib, for a look without QGIS: the probability ramp (read from probability.qml's
colour ramp, interpolated as QGIS does), the outlines graduated by glaciers.qml, and
change.tif's classes by change.qml's palette. Writes style_preview.png beside the files.

    .venv/bin/python benchmarks/style_preview.py PREDICTION_DIR [CHANGE_DIR]
"""
from __future__ import annotations

import sys
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np


def _rgba(hex_color: str, alpha: int | float = 255) -> tuple[float, float, float, float]:
    h = hex_color.lstrip("#")
    return (*(int(h[i:i + 2], 16) / 255 for i in (0, 2, 4)), float(alpha) / 255)


def ramp_image(qml: Path, values: np.ndarray) -> np.ndarray:
    """RGBA of `values` by the INTERPOLATED ramp of a singlebandpseudocolor style."""
    items = ET.parse(qml).getroot().findall("pipe/rasterrenderer/rastershader/"
                                            "colorrampshader/item")
    stops = np.array([float(i.get("value")) for i in items])
    cols = np.array([_rgba(i.get("color"), int(i.get("alpha"))) for i in items])
    out = np.zeros(values.shape + (4,))
    v = np.nan_to_num(values, nan=-1)
    for c in range(4):
        out[..., c] = np.interp(v, stops, cols[:, c])
    out[~np.isfinite(values)] = 0
    return out


def palette_image(qml: Path, classes: np.ndarray) -> tuple[np.ndarray, list]:
    entries = ET.parse(qml).getroot().findall("pipe/rasterrenderer/colorPalette/paletteEntry")
    out = np.zeros(classes.shape + (4,))
    legend = []
    for e in entries:
        rgba = _rgba(e.get("color"), int(e.get("alpha")))
        out[classes == int(e.get("value"))] = rgba
        legend.append((rgba, e.get("label")))
    return out, legend


def main(pred: Path, change: Path | None) -> Path:
    import geopandas as gpd
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import rasterio
    from matplotlib.patches import Patch

    panels = 3 if change else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 5.5))
    with rasterio.open(pred / "probability.tif") as f:
        prob, b = f.read(1), f.bounds
    extent = (b.left, b.right, b.bottom, b.top)
    axes[0].imshow(ramp_image(pred / "probability.qml", prob), extent=extent)
    items = ET.parse(pred / "probability.qml").getroot().findall(".//colorrampshader/item")
    axes[0].legend(handles=[Patch(color=_rgba(i.get("color"), max(int(i.get("alpha")), 60)),
                                  label=i.get("label")) for i in items], loc="lower right",
                   fontsize=7)
    axes[0].set_title("probability.tif + probability.qml")

    rend = ET.parse(pred / "glaciers.qml").getroot().find("renderer-v2")
    g = gpd.read_file(pred / "glaciers.gpkg", layer="glaciers")
    axes[1].set_facecolor("#f0f0f0")
    handles = []
    for r in rend.findall("ranges/range"):
        sym = rend.find(f"symbols/symbol[@name='{r.get('symbol')}']")
        props = {p.get("k"): p.get("v") for p in sym.findall("layer/prop")}
        fill = tuple(int(x) / 255 for x in props["color"].split(","))
        edge = tuple(int(x) / 255 for x in props["outline_color"].split(","))
        lo, hi = float(r.get("lower")), float(r.get("upper"))
        sel = g[(g[rend.get("attr")] >= lo) & (g[rend.get("attr")] <= hi)]
        if len(sel):
            sel.plot(ax=axes[1], color=fill, edgecolor=edge, alpha=float(sym.get("alpha")),
                     linewidth=0.6)
        handles.append(Patch(facecolor=fill, edgecolor=edge, label=r.get("label")))
    axes[1].set_xlim(b.left, b.right)
    axes[1].set_ylim(b.bottom, b.top)
    axes[1].legend(handles=handles, loc="lower right", fontsize=7)
    axes[1].set_title(f"glaciers.gpkg + glaciers.qml (by {rend.get('attr')})")

    if change:
        with rasterio.open(change / "change.tif") as f:
            img, legend = palette_image(change / "change.qml", f.read(1))
        axes[2].set_facecolor("#f0f0f0")
        axes[2].imshow(img, extent=extent)
        axes[2].legend(handles=[Patch(color=c, label=t) for c, t in legend],
                       loc="lower right", fontsize=7)
        axes[2].set_title("change.tif + change.qml")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    out = pred / "style_preview.png"
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    return out


if __name__ == "__main__":
    print(main(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else None))
