"""The window lattice over a scene and the weights that blend overlapping windows (pure).

Windows sit every `step` pixels, the last one flush with the scene's edge, on one lattice
whatever the column band; under torchrun the rows of windows are cut into one run of rows per
process (`row_shares`), and each process runs again the windows above its share that reach it.
"""
from __future__ import annotations

import numpy as np

MIN_WEIGHT = 1e-3  # floor of the blending weight, so scene-edge pixels are never divided by 0


def window_starts(n: int, window: int, step: int) -> list[int]:
    """Window offsets covering 0..n: every `step`, the last one flush with the end."""
    if n <= window:
        return [0]
    starts = list(range(0, n - window + 1, step))
    if starts[-1] + window < n:
        starts.append(n - window)
    return starts


def blend_weights(window: int) -> np.ndarray:
    """A separable sin^2 bump: full weight at the centre, falling towards the window's edges
    where the model sees least context; floored so a scene edge still gets a value."""
    t = (np.arange(window) + 0.5) / window
    w = np.maximum(np.sin(np.pi * t) ** 2, MIN_WEIGHT)
    return np.outer(w, w).astype(np.float32)


def row_shares(height: int, window: int, step: int, parts: int) -> list[tuple[int, int]]:
    """The output rows of each of `parts` processes: the rows of windows cut into `parts` runs
    of consecutive rows, as equal as they come; each process owns the pixel rows from the top
    of its first row of windows to the top of the next process's. A process left without a
    row of windows gets an empty range.

    Args:
        height: the scene's height in px.
        window: window side in px.
        step: window minus overlap.
        parts: the number of processes.

    Returns:
        (first row, end row) per process, in rank order: together they tile 0..height.
    """
    starts = window_starts(height, window, step)
    tops = [starts[g[0]] if len(g) else height
            for g in np.array_split(np.arange(len(starts)), parts)]
    return [(int(a), int(b)) for a, b in zip(tops, tops[1:] + [height])]


def window_rows(height: int, window: int, step: int, rows: tuple[int, int]) -> list[int]:
    """The tops of the rows of windows that reach output rows rows[0]..rows[1]: the share's
    own and the ones above it that overlap it (run again, so that every pixel sums the same
    windows in the same order as a whole-scene run)."""
    y0, y1 = rows
    return [r for r in window_starts(height, window, step) if r < y1 and r + window > y0]


def windows_in_share(width: int, height: int, window: int, step: int, rows: tuple[int, int],
                     band_width: int) -> int:
    """How many windows a process visits for its rows, column band by column band (a window
    that reaches two bands is run in each): what its progress counts."""
    cols = window_starts(width, window, step)
    return len(window_rows(height, window, step, rows)) * sum(
        len([c for c in cols if c < c0 + band_width and c + window > c0])
        for c0 in range(0, width, band_width))
