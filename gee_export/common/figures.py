"""PNG figures for every stage, drawn without pyplot: a library must not switch the caller's
matplotlib backend (that would silence inline figures in a notebook) or keep figures alive."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

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
