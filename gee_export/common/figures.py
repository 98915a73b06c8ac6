"""PNG figures for every stage, drawn without pyplot: a library must not switch the caller's
matplotlib backend (that would silence inline figures in a notebook) or keep figures alive."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .atomic import atomic_output

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def new_figure(nrows: int = 1, ncols: int = 1, **kw: Any) -> tuple[Figure, Any]:
    """A standalone Figure and its axes (fig, ax or array of axes), any backend."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=kw.pop("figsize", None), layout=kw.pop("layout", None))
    return fig, fig.subplots(nrows, ncols, **kw)


def save_png(fig: Figure, path: Path, dpi: int = 100) -> None:
    """Write the figure atomically."""
    with atomic_output(Path(path)) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")


def max_per_block(strip: np.ndarray, factor: int, width: int) -> np.ndarray:
    """One map row from a strip of up to `factor` raster rows: each map pixel takes the largest
    value of the factor x factor block it covers. With classes coded by priority, thin margins
    of a pixel or two stay visible at the scale of a whole region (nearest-neighbour
    decimation would drop most of them)."""
    pad = np.zeros((strip.shape[0], width * factor), strip.dtype)
    pad[:, :strip.shape[1]] = strip
    return pad.reshape(strip.shape[0], width, factor).max(axis=(0, 2))
