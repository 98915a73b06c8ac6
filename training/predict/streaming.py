"""Model outputs over overlapping windows, blended and streamed into a raster.

Memory is bounded by the window, the batch and a column band of `band_width` pixels, never by
the scene: windows are visited band by band and row by row, and a rolling buffer of one
window's height holds the running weighted sums until no later window can touch a row.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np

from gee_export.common.errors import InputError, StateError

from .windows import blend_weights, window_rows, window_starts

if TYPE_CHECKING:
    from rasterio.io import DatasetReader, DatasetWriter

# Two rows of 256 px blocks of a 4096 px column band of 11 float32 bands (92 MB), so that
# each block is decoded once although consecutive rows of windows overlap; GDAL's default
# 64 MB decoded the overlaps again (reading took 2.6x as long at 4096^2).
STREAM_CACHE_MB = 160

# (B, C, w, w) standardized -> (B, w, w) glacier probability, or (B, K, w, w) with more bands
# (with --tta: the mean and the spread over the 8 rotations and flips).
ModelFn = Callable[[np.ndarray], np.ndarray]


class NonFiniteProbability(StateError):
    """The model gave nan or inf for pixels with data: no result can be made from it."""


def stream_probability(src: DatasetReader, dst: DatasetWriter, model_fn: ModelFn,
                       band_idx: list[int], standardize: Callable[[np.ndarray], np.ndarray],
                       window: int, overlap: int, batch_size: int, band_width: int,
                       done_bands: set[int] = frozenset(),
                       on_band: Callable[[int], None] | None = None,
                       progress: Callable[[int], None] | None = None,
                       rows: tuple[int, int] | None = None) -> None:
    """Blend model outputs over overlapping windows of `src` into the bands of `dst` (same
    grid), one per output band of the model.

    Every pixel gets sum(w * p) / sum(w) over the windows covering it, with w zero where the
    stack is nodata (so nodata stays NaN). Windows sit on one global lattice whatever the
    column band, so the result does not depend on `band_width`. With `rows` (y0, y1), only
    those rows are made, written from row 0 of `dst` (a process's share of the scene): the
    same values as in a whole-scene run, bit for bit.
    """
    if not 0 <= overlap < window:
        raise InputError(f"--overlap {overlap} must lie in [0, window {window})")
    step = window - overlap
    rows = rows or (0, src.height)
    tops = window_rows(src.height, window, step, rows)
    cols = window_starts(src.width, window, step)
    for c0 in range(0, src.width, band_width):
        bcols = [c for c in cols if c < min(src.width, c0 + band_width) and c + window > c0]
        if c0 not in done_bands:
            if tops:
                _stream_band(src, dst, model_fn, band_idx, standardize, window, batch_size, c0,
                             min(src.width, c0 + band_width), tops, bcols, rows, progress)
            if on_band:
                on_band(c0)
        elif progress:
            progress(len(tops) * len(bcols))


def _stream_band(src, dst, model_fn, band_idx, standardize, window, batch_size, c0, c1, tops,
                 bcols, rows, progress) -> None:
    """One column band: a rolling buffer one window tall, flushed as rows are finished."""
    from rasterio.windows import Window

    weight = blend_weights(window)
    x0 = bcols[0]
    y0, y1 = rows
    num = np.zeros((dst.count, window, bcols[-1] + window - x0), np.float32)
    den = np.zeros(num.shape[1:], np.float32)
    r0 = tops[0]

    def flush(upto: int) -> int:
        upto = min(upto, y1)
        if upto <= r0:
            return r0
        n = upto - r0
        top = max(r0, y0)  # rows above y0 lack the windows above them: another share's
        if upto > top:
            d = den[top - r0:n, c0 - x0:c1 - x0]
            with np.errstate(invalid="ignore", divide="ignore"):
                p = np.where(d > 0, num[:, top - r0:n, c0 - x0:c1 - x0] / d, np.nan
                             ).astype(np.float32)
            dst.write(p, window=Window(c0, top - y0, c1 - c0, upto - top))
        num[:, :-n], den[:-n] = num[:, n:].copy(), den[n:].copy()
        num[:, -n:], den[-n:] = 0, 0
        return upto

    for r in tops:
        r0 = flush(r)
        # One read per row of windows, not per window (a GDAL call each, and every
        # horizontal overlap decoded again); vertical overlaps come from the block cache,
        # sized for them (STREAM_CACHE_MB). At 4096^2: reading 4.8 s per window, 1.6 s per row.
        strip = _read_block(src, band_idx, r, x0, window, num.shape[2])
        valid = np.isfinite(strip).all(axis=0)
        strip = standardize(strip)
        for i in range(0, len(bcols), batch_size):
            batch = bcols[i:i + batch_size]
            prob = model_fn(np.stack([strip[:, :, c - x0:c - x0 + window] for c in batch]))
            prob = prob[:, None] if prob.ndim == 3 else prob
            for c, p in zip(batch, prob):
                w = weight * valid[:, c - x0:c - x0 + window]
                if not np.isfinite(p[:, w > 0]).all():
                    raise NonFiniteProbability(
                        f"the model's output is not finite (nan or inf) where the stack has "
                        f"data, in the window at row {r}, column {c}")
                num[:, :, c - x0:c - x0 + window] += w * p
                den[:, c - x0:c - x0 + window] += w
            if progress:
                progress(len(batch))
    flush(y1)


def _read_block(src, band_idx, row: int, col: int, height: int, width: int) -> np.ndarray:
    """The bands of a block of `src`, NaN where it reaches past the scene."""
    from rasterio.windows import Window

    win = Window(col, row, width, height)
    inside = row + height <= src.height and col + width <= src.width
    return src.read(band_idx, window=win, boundless=not inside, fill_value=np.nan,
                    out_dtype="float32")
