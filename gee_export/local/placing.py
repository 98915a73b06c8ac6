"""Putting a source window onto a cell of the export grid: a plain copy where the source shares
the cell's pixel lattice, separable numpy resampling (GDAL's nearest and bilinear tent) where
it lies on the same axes, GDAL's warper otherwise."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np

from gee_export.common.grid import Cell, ExportGrid

if TYPE_CHECKING:
    from affine import Affine
    from rasterio.crs import CRS


def placer(crs: str | CRS, window_transform: Affine, grid: ExportGrid, cell: Cell,
           covers: bool = False) -> Callable[[np.ndarray, str], np.ndarray]:
    """A function putting (bands, h, w) arrays of a source window (its CRS and transform), NaN
    where it has no data, onto the cell; NaN where nothing lands: a plain copy where the
    source shares the cell's pixel lattice, numpy where it is only shifted or scaled on the
    same axes, GDAL's warper otherwise. Every local source goes through here."""
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    aligned = _aligned_offset(crs, window_transform, grid, cell)
    axes = _axis_sampling(crs, window_transform, grid, cell) if aligned is None else None

    def place(data: np.ndarray, resampling: str) -> np.ndarray:
        if aligned is not None:
            return _copy_aligned(data, aligned, cell)
        if axes is not None:
            return _resample_axes(data, axes, resampling)
        dst = np.full((len(data), cell.height, cell.width), np.nan, np.float32)
        # Where the window covers the whole cell and holds no gap, GDAL's warper can skip its
        # validity masks: 2.6x faster, the same values. With gaps, one band at a time: GDAL
        # would otherwise unify the bands' masks.
        gaps = not covers or np.isnan(data).any()
        for band, out in ([(data, dst)] if not gaps else zip(data, dst)):
            reproject(band, out, src_transform=window_transform, src_crs=crs,
                      src_nodata=np.nan if gaps else None, dst_transform=cell.transform(grid),
                      dst_crs=grid.crs, dst_nodata=np.nan if gaps else None,
                      resampling=getattr(Resampling, resampling), num_threads=1)
        return dst

    return place


def _aligned_offset(crs, t, grid: ExportGrid, cell: Cell) -> tuple[int, int] | None:
    """(row, col) of a window (transform t) on the cell's pixel lattice when the source shares
    the grid's CRS and pixel lattice (then a read needs no resampling), else None."""
    from rasterio.crs import CRS

    g = cell.transform(grid)
    if (t.b, t.d) != (0, 0) or abs(t.a - g.a) > 1e-9 or abs(t.e - g.e) > 1e-9 or \
            CRS.from_user_input(crs) != CRS.from_user_input(grid.crs):
        return None
    col, row = (t.c - g.c) / g.a, (t.f - g.f) / g.e
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        return None
    return int(round(row)), int(round(col))


def _copy_aligned(data: np.ndarray, offset: tuple[int, int], cell: Cell) -> np.ndarray:
    r, c = offset
    h, w = data.shape[1:]
    dst = np.full((len(data), cell.height, cell.width), np.nan, np.float32)
    rs = slice(max(r, 0), min(r + h, cell.height))
    cs = slice(max(c, 0), min(c + w, cell.width))
    dst[:, rs, cs] = data[:, rs.start - r:rs.stop - r, cs.start - c:cs.stop - c]
    return dst


def _axis_sampling(crs, t, grid: ExportGrid, cell: Cell):
    """Where each cell pixel centre falls in a window (transform t), per axis, and each axis'
    scale (source pixel size over cell pixel size), when the source is in the grid's CRS
    without rotation; else None."""
    from rasterio.crs import CRS

    g = cell.transform(grid)
    if (t.b, t.d, g.b, g.d) != (0, 0, 0, 0) or \
            CRS.from_user_input(crs) != CRS.from_user_input(grid.crs):
        return None
    cols = ((g.c + g.a * (np.arange(cell.width) + 0.5)) - t.c) / t.a
    rows = ((g.f + g.e * (np.arange(cell.height) + 0.5)) - t.f) / t.e
    return rows, cols, abs(t.e / g.e), abs(t.a / g.a)


def _resample_axes(data: np.ndarray, axes, resampling: str) -> np.ndarray:
    """Nearest or bilinear resampling along unrotated axes, as GDAL's warper does it for one
    band: a cell pixel has data where the source pixel under its centre has; bilinear weighs
    the source pixels around the centre with a tent (2 x 2 pixels, or wider when the source
    is finer than the cell, stretched by the scale), leaves masked (NaN) or missing ones out
    and renormalizes. Separable, so two 1-D passes: rows, then columns."""
    rows, cols, row_scale, col_scale = axes
    if row_scale >= 0.95 and col_scale >= 0.95:  # GDAL's switch to its plain 2x2 kernel
        row_scale = col_scale = 1.0
    h, w = data.shape[1:]
    if resampling == "nearest":
        r, c = np.floor(rows).astype(int), np.floor(cols).astype(int)
        ok = (r >= 0) & (r < h), (c >= 0) & (c < w)
        out = data[:, np.clip(r, 0, h - 1)][:, :, np.clip(c, 0, w - 1)]
        out[:, ~ok[0]] = np.nan
        out[:, :, ~ok[1]] = np.nan
        return out.astype(np.float32, copy=False)
    valid = np.isfinite(data)
    values = np.where(valid, data, np.float32(0))
    (ri, rw), (ci, cw) = _tent_taps(rows, h, row_scale), _tent_taps(cols, w, col_scale)
    num = _apply_taps(_apply_taps(values, ri, rw, axis=1), ci, cw, axis=2)
    den = _apply_taps(_apply_taps(valid.astype(np.float32), ri, rw, axis=1), ci, cw, axis=2)
    under = _resample_axes(valid.astype(np.float32), axes, "nearest") > 0  # centre's pixel
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(under & (den > 0), num / den,
                        np.float32(np.nan)).astype(np.float32, copy=False)


def _tent_taps(coords: np.ndarray, n: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """For pixel coordinates along one axis: the source indices around each centre and their
    weights under GDAL's bilinear tent, whose radius grows to 1 / scale where the source is
    finer than the cell (scale < 1); weight 0 for an index outside 0..n-1 (then clipped)."""
    scale = min(1.0, scale)
    radius = int(np.ceil(1 / scale - 1e-9))
    i0 = np.floor(coords - 0.5).astype(int)
    delta = 0.5 - (coords - i0)  # GDAL's dfDeltaX
    taps = np.arange(1 - radius, radius + 1)
    idx = i0[None, :] + taps[:, None]
    weights = np.maximum(0.0, 1 - np.abs((taps[:, None] + delta[None, :]) * scale))
    weights = weights * ((idx >= 0) & (idx < n))
    return np.clip(idx, 0, n - 1), weights.astype(np.float32)


def _apply_taps(a: np.ndarray, idx: np.ndarray, weights: np.ndarray, axis: int) -> np.ndarray:
    shape = [1, 1, 1]
    shape[axis] = -1
    out = None
    for i, wt in zip(idx, weights):
        term = np.take(a, i, axis=axis) * wt.reshape(shape)
        out = term if out is None else out + term
    return out
