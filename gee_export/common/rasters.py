"""GeoTIFFs: the one profile builder and the one writer every stage uses, the capped GDAL
cache of the streamed stages, and the check that a stack is the band table's."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .bands import BAND_NAMES
from .errors import InputError, StateError

if TYPE_CHECKING:
    import rasterio
    from affine import Affine
    from rasterio.crs import CRS
    from rasterio.io import DatasetReader

BLOCK = 256  # GeoTIFF tile side: every product is tiled, so QGIS and windowed reads stay fast
# ZSTD at level 1 writes about 4x faster than DEFLATE's default level for the same size on
# float stacks (measured on 11-band cells); GDAL reads it since 2.3, QGIS included.
COMPRESSION = {"compress": "zstd", "zstd_level": 1}
# GDAL's block cache for the streamed stages (tile, predict, evaluate): they read each block
# about once, so a bigger cache only makes memory grow with the scene (GDAL's default is 5 %
# of RAM).
GDAL_CACHE_MB = 64


def geotiff_profile(width: int, height: int, count: int, dtype: str, crs: str | CRS,
                    transform: Affine,
                    nodata: float | None = None, *, compress: bool = True,
                    band_interleaved: bool = True) -> dict:
    """A tiled GeoTIFF profile. Floats get the floating-point predictor and integers the
    horizontal one; band-interleaved so that reading one band decodes only that band."""
    profile = dict(driver="GTiff", width=width, height=height, count=count, dtype=dtype,
                   crs=crs, transform=transform, nodata=nodata, tiled=True,
                   blockxsize=_block(width), blockysize=_block(height), BIGTIFF="IF_SAFER")
    if band_interleaved and count > 1:
        profile["interleave"] = "band"
    if compress:
        profile.update(COMPRESSION, predictor=3 if np.dtype(dtype).kind == "f" else 2)
    return profile


def _block(side: int) -> int:
    """BLOCK, or the side rounded up to GDAL's multiple of 16 for rasters smaller than that."""
    return min(BLOCK, -(-side // 16) * 16)


def write_geotiff(path: Path, data: np.ndarray, profile: dict, names: Sequence[str] = (),
                  tags: dict[str, str] | None = None, resampling: str | None = "average") -> None:
    """Write a (bands, h, w) array atomically as a cloud-optimized GeoTIFF, with band
    descriptions, metadata tags and, when it is larger than one block, overviews made by
    `resampling` (`average`; `nearest` for classes; None for none)."""
    from .cog import write_cog

    write_cog(path, data, profile, names, tags, resampling)


def bounded_gdal_cache(megabytes: int = GDAL_CACHE_MB) -> rasterio.Env:
    """A rasterio environment with GDAL's block cache capped at `megabytes`."""
    import rasterio

    # rasterio hands the value to GDALSetCacheMax64, which counts bytes: a bare 64 would be a
    # 64-byte cache that decodes every block again for each overlapping window.
    return rasterio.Env(GDAL_CACHEMAX=megabytes * 2 ** 20)


def open_raster(path: Path, what: str = "raster") -> DatasetReader:
    """rasterio.open with one clear line for a missing or unreadable file."""
    import rasterio

    path = Path(path)
    if not path.exists():
        from .errors import InputNotFoundError

        raise InputNotFoundError(f"{what} {path}: no such file")
    try:
        return rasterio.open(path)
    except rasterio.errors.RasterioIOError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unreadable"
        raise InputError(f"{what} {path}: cannot be read ({first})") from None


def check_stack(path: Path) -> None:
    """Refuse a stack whose band names are not the band table's, or whose cells mix CRSs or
    cannot be read."""
    import rasterio

    with open_raster(path, "stack") as src:
        if tuple(src.descriptions) != BAND_NAMES:
            raise InputError(f"{path}: band names {list(src.descriptions)} do not match the "
                             f"band table {list(BAND_NAMES)}")
        crs = src.crs
        for f in src.files[1:]:
            try:
                with rasterio.open(f) as cell:
                    if cell.crs != crs:
                        raise StateError(f"{path}: cell {Path(f).name} is in {cell.crs}, the "
                                         f"stack in {crs}; rerun `prep export` with the same "
                                         "options: it exports that cell again")
            except rasterio.errors.RasterioIOError:
                raise StateError(f"{path}: cell {f} is missing or unreadable; rerun `prep "
                                 "export` with the same options: it exports that cell "
                                 "again") from None
