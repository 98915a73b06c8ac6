"""The overview figure of a tile set: its tiles coloured by split, the glacier outlines and
the export's footprint, in km."""
from __future__ import annotations

from pathlib import Path

from gee_export.common.grid import ExportGrid

from .split import GUARD, TRAIN, VAL


def _overview_png(path: Path, index, outlines, grid: ExportGrid) -> None:
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter

    from gee_export.common.figures import new_figure, save_png

    colors = {TRAIN: "#4c9be8", VAL: "#f28e2b", GUARD: "#cccccc"}
    fig, ax = new_figure(figsize=(8, 8 * grid.height / grid.width))
    for sp, col in colors.items():
        sub = index[index["split"] == sp]
        if len(sub):
            sub.plot(ax=ax, facecolor=col, edgecolor="white", linewidth=0.5, alpha=0.8)
    outlines.plot(ax=ax, facecolor="none", edgecolor="#1b3a6b", linewidth=0.6)
    w, s, e, n = grid.bounds
    ax.plot([w, e, e, w, w], [s, s, n, n, s], color="black", linewidth=1)
    ax.legend(handles=[Patch(color=c, label=k) for k, c in colors.items()] +
              [Patch(facecolor="none", edgecolor="#1b3a6b", label="glacier outlines")],
              loc="upper right", fontsize=8)
    ax.set_title("tiles by split, glacier outlines, export footprint")
    km = FuncFormatter(lambda v, _: f"{v / 1e3:g}")  # as the other maps: km, no 1e6 offset
    ax.xaxis.set_major_formatter(km)
    ax.yaxis.set_major_formatter(km)
    ax.set_xlabel(f"easting (km, {grid.crs})")
    ax.set_ylabel("northing (km)")
    fig.tight_layout()
    save_png(fig, path)
