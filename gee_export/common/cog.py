"""Cloud-optimized GeoTIFFs: every raster a stage writes is laid out so that a browser,
`rio-tiler` or QGIS over HTTP can read its header, one overview or one block with a range
request.

The layout is GDAL's COG one, made by the GTiff driver with `COPY_SRC_OVERVIEWS=YES` from a
working copy that already holds its overviews (what rio-cogeo does): the header and every
IFD come first, then the overviews, smallest last, then the full-resolution blocks. GDAL's
own COG driver would do the same, but in GDAL 3.10 it always interleaves pixels, and our
profiles (`rasters.geotiff_profile`, the one home of every creation option) interleave bands
so that reading one band decodes only that band.

Overviews halve the raster until it fits one block, with `average` for continuous values
(the stack, probabilities) and `nearest` for classes (labels, DEM sources, change classes),
and inherit the nodata of the full resolution, so averages never mix no data in.
A raster that fits in one block (or is only ever read whole) needs no overview: it is written in one pass with its
metadata set before its pixels, which leaves the header first, and that is a valid COG too.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .atomic import atomic_output, partial_path, remove_file

RESAMPLINGS = ("average", "nearest")
# Options of a profile that describe the raster rather than how its bytes are laid out.
_NOT_CREATION_OPTIONS = ("driver", "width", "height", "count", "dtype", "crs", "transform",
                         "nodata")


def overview_factors(width: int, height: int, block: int) -> list[int]:
    """Decimation factors 2, 4, 8... until the smallest overview fits in one block."""
    factors, f = [], 2
    while -(-max(width, height) // (f // 2)) > block:
        factors.append(f)
        f *= 2
    return factors


def write_cog(path: Path, data: np.ndarray, profile: dict, names: Sequence[str] = (),
              tags: dict[str, str] | None = None, resampling: str | None = "average") -> None:
    """Write a (bands, h, w) array atomically as a cloud-optimized GeoTIFF of `profile`
    (a `geotiff_profile`), with band descriptions and metadata tags.

    Args:
        path: the file to write; replaced only once complete.
        data: the pixels, shaped (count, height, width) of the profile.
        profile: a tiled GeoTIFF profile from `rasters.geotiff_profile`.
        names: band descriptions.
        tags: dataset metadata.
        resampling: how overviews are made, `average` or `nearest`; None for none (small
            rasters read whole, such as training tiles).

    Raises:
        WriteError: the file could not be written (one line naming it).
    """
    import rasterio

    if resampling is None or not overview_factors(profile["width"], profile["height"],
                                                  _block(profile)):
        with atomic_output(path) as tmp:
            with rasterio.open(tmp, "w", **profile) as dst:
                _describe(dst, names, tags)  # before the pixels: the header stays first
                dst.write(data)
        return
    work = working_path(path)
    try:
        with atomic_output(work) as tmp:
            with rasterio.open(tmp, "w", **uncompressed(profile)) as dst:
                _describe(dst, names, tags)
                dst.write(data)
        copy_as_cog(work, path, profile, resampling)
    finally:
        remove_file(work)


def working_path(path: Path) -> Path:
    """An uncompressed working copy's name beside `path`: a partial name, so a killed
    writer's leftover is removed like any other unfinished file."""
    path = Path(path)
    return partial_path(path.with_name(f"{path.stem}-work{path.suffix}"))


def uncompressed(profile: dict) -> dict:
    """`profile` without compression, for a working copy that is written once and copied."""
    return {k: v for k, v in profile.items()
            if k not in ("compress", "zstd_level", "predictor")}


def copy_as_cog(src: Path, dest: Path, profile: dict, resampling: str = "average",
                names: Sequence[str] = (), tags: dict[str, str] | None = None) -> None:
    """Copy the GeoTIFF `src` (a working copy: its overviews are built in place) to `dest`
    as a cloud-optimized GeoTIFF with the creation options of `profile`, atomically.

    Args:
        src: a GeoTIFF this process may modify (it gains overviews, names and tags).
        dest: the file to write; replaced only once complete.
        profile: the creation options, a `rasters.geotiff_profile`.
        resampling: how overviews are made, `average` or `nearest`.
        names: band descriptions to set on the copy (else `src`'s own).
        tags: metadata tags to add.

    Raises:
        WriteError: `dest` could not be written (one line naming it).
    """
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.shutil import copy as rio_copy

    _check_resampling(resampling)
    with rasterio.open(src, "r+") as f:
        _describe(f, names, tags)
        factors = overview_factors(f.width, f.height, _block(profile))
        if factors:
            f.build_overviews(factors, Resampling[resampling])
    options = {k: v for k, v in profile.items() if k not in _NOT_CREATION_OPTIONS}
    with atomic_output(dest) as tmp:
        rio_copy(src, tmp, driver="GTiff", COPY_SRC_OVERVIEWS="YES", **options)


def _block(profile: dict) -> int:
    return int(profile.get("blockxsize") or 256)


def _check_resampling(resampling: str) -> None:
    if resampling not in RESAMPLINGS:
        raise ValueError(f"overview resampling {resampling!r}: one of {', '.join(RESAMPLINGS)}")


def _describe(dst, names: Sequence[str], tags: dict[str, str] | None) -> None:
    for i, n in enumerate(names, 1):
        dst.set_band_description(i, n)
    if tags:
        dst.update_tags(**tags)
