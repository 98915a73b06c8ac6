"""Reading one source file onto one cell: its band names, what counts as no data, the window
that covers the cell, and one read of all its bands warped onto the cell (through placing)."""
from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from gee_export.common.errors import InputError
from gee_export.common.grid import Cell, ExportGrid

from .placing import placer

if TYPE_CHECKING:
    from affine import Affine
    from rasterio.crs import CRS
    from rasterio.io import DatasetReader
    from rasterio.windows import Window

# What "no data" means in a file without a nodata tag, by kind of source (NaN always does):
# DEMs use -9999 (HMA's fill), -32768 and -32767 (SRTM voids, int16 fills); Sentinel-2 DN 0 is
# L2A's no-data value; Sentinel-1 GRD products are filled with 0 outside the swath.
# "none": every value is data (an asset ingested without a mask).
NODATA_DEFAULTS: dict[str, tuple[float, ...]] = {
    "dem": (-9999.0, -32768.0, -32767.0), "s2": (0.0,), "s1": (0.0,), "cloudscore": (),
    "none": ()}


_CANONICAL = {"CS": "cs", "CS_CDF": "cs_cdf"}  # Cloud Score+ keeps its lower-case names


def band_map(src: DatasetReader) -> dict[str, int]:
    """Band name -> 1-based index from band descriptions (B02 and B2 both accepted)."""
    out = {}
    for i, d in enumerate(src.descriptions, 1):
        if d:
            name = re.sub(r"^B0(\d)$", r"B\1", d.strip().upper())
            out[_CANONICAL.get(name, name)] = i
    return out


def _open(path: Path):
    import rasterio

    try:
        src = rasterio.open(path)
    except rasterio.errors.RasterioIOError as e:
        raise InputError(f"{path}: cannot be read as a raster ({str(e).splitlines()[0]})"
                         ) from None
    if src.crs is None:
        src.close()
        raise InputError(f"{path}: has no CRS")
    return src


def _valid_mask(src, data: np.ndarray, indexes: list[int], window, kind: str) -> np.ndarray:
    """Where the source has data: its nodata tag, alpha band or internal mask when it has
    one, else the documented defaults for its kind; never NaN."""
    from rasterio.enums import MaskFlags

    valid = ~np.isnan(data)
    flags = [src.mask_flag_enums[i - 1] for i in indexes]
    if src.nodata is not None and not np.isnan(src.nodata):
        valid &= data != np.float32(src.nodata)
    elif any(MaskFlags.per_dataset in f or MaskFlags.alpha in f for f in flags):
        valid &= src.read_masks(indexes, window=window) > 0
    elif src.nodata is None:
        for v in NODATA_DEFAULTS[kind]:
            valid &= data != np.float32(v)
    return valid


def source_window(crs: str | CRS, transform: Affine, shape: tuple[int, int], grid: ExportGrid,
                  cell: Cell) -> Window | None:
    """The window of a source (its CRS, transform and (height, width)) that covers the cell
    plus a margin for interpolation, clipped to the source (None when they do not overlap),
    and whether it covers the whole cell. The margin holds every pixel an interpolation
    kernel can reach, which widens where the source is finer than the grid, so that a pixel's
    value never depends on which cell (or half cell) it is computed in."""
    from rasterio.warp import transform_bounds
    from rasterio.windows import Window, from_bounds

    b = transform_bounds(grid.crs, crs, *cell.bounds(grid), densify_pts=21)
    w = from_bounds(*b, transform=transform)
    per_pixel = max(w.width / cell.width, w.height / cell.height)  # source px per cell px
    margin = 2 + int(np.ceil(per_pixel))
    c0, r0 = int(np.floor(w.col_off)) - margin, int(np.floor(w.row_off)) - margin
    c1 = int(np.ceil(w.col_off + w.width)) + margin
    r1 = int(np.ceil(w.row_off + w.height)) + margin
    height, width = shape
    covers = c0 >= 0 and r0 >= 0 and c1 <= width and r1 <= height
    c0, r0, c1, r1 = max(c0, 0), max(r0, 0), min(c1, width), min(r1, height)
    if c1 <= c0 or r1 <= r0:
        return None, False
    return Window(c0, r0, c1 - c0, r1 - r0), covers


def read_source(source: Path, kind: str, grid: ExportGrid, cell: Cell, bands: list[str] | None,
                resampling: str = "bilinear",
                native_rule: Callable[[dict[str, np.ndarray]], np.ndarray] | None = None
                ) -> tuple[dict[str, np.ndarray], int]:
    """Bands of one file (a path or an open dataset) on one cell of the export grid, NaN
    wherever the file has no data (outside its footprint included), all bands in one pass.
    `native_rule` masks values on the file's own grid before resampling and returns where it
    did; the second result is how many cell pixels that removed. `bands=None` reads band 1 as
    "value"."""
    with _opened(source) as src:
        names = _band_indices(src, bands)
        if not names:
            return {}, 0
        window, covers = source_window(src.crs, src.transform, src.shape, grid, cell)
        if window is None:
            return {b: np.full((cell.height, cell.width), np.nan, np.float32) for b in names}, 0
        idx = list(names.values())
        data = src.read(idx, window=window, out_dtype="float32")
        data[~_valid_mask(src, data, idx, window, kind)] = np.nan
        removed = native_rule(dict(zip(names, data))) if native_rule else None
        place = placer(src.crs, src.window_transform(window), grid, cell, covers)
        out = dict(zip(names, place(data, resampling)))
        if removed is None or not removed.any():
            return out, 0
        return out, int((place(removed[None].astype(np.float32), "nearest")[0] > 0.5).sum())


@contextmanager
def _opened(source):
    """An open dataset for a path (closed after), or the dataset given (left open)."""
    if isinstance(source, (str, Path)):
        with _open(Path(source)) as src:
            yield src
    else:
        yield source


def _band_indices(src, bands: list[str] | None) -> dict[str, int]:
    if bands is None:
        return {"value": 1}
    names = band_map(src)
    if not names and src.count == len(bands):
        names = {b: i for i, b in enumerate(bands, 1)}
    return {b: names[b] for b in bands if b in names}
