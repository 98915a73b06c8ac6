"""The working file a prediction streams into: an uncompressed GeoTIFF, kept between runs for
resume, written column band by column band. A band counts as done only once it is on disk and
reads back with the checksum recorded for it; a file that its record overstates (a full disk,
a kill) is started again. Once every band is done it is compressed into the product.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from gee_export.common.errors import GlacierError, WriteError
from gee_export.common.gdal_errors import disk_full, no_space_left
from gee_export.common.rasters import geotiff_profile

if TYPE_CHECKING:
    from rasterio.io import DatasetReader
    from rasterio.windows import Window

RAW_SUFFIX = ".raw.tif"  # uncompressed working copy, kept between runs for resume


class BandByBand:
    """The working copy as `stream_probability` writes it, closed after each column band, so
    that what a band wrote is on disk (GDAL reports a failed write at the latest when it
    closes) before the band is recorded as done."""

    def __init__(self, path: Path, profile: dict) -> None:
        import hashlib

        self.path, self.profile, self.count = Path(path), profile, profile["count"]
        self._ds, self._sha, self._new_sha = None, hashlib.sha256(), hashlib.sha256

    def write(self, data: np.ndarray, window: Window) -> None:
        """Write rows of the band (in order, as stream_probability does), and hash them."""
        import rasterio

        if self._ds is None:
            self._ds = (rasterio.open(self.path, "r+") if self.path.is_file() else
                        rasterio.open(self.path, "w", **self.profile))
        self._ds.write(data, window=window)
        self._sha.update(row_major(data))

    def close(self, quietly: bool = False) -> str:
        """Close (flush) and sync the file; the checksum of what was written since the last
        close, as `band_sha256` computes it from the file."""
        ds, self._ds = self._ds, None
        written, self._sha = self._sha.hexdigest(), self._new_sha()
        if ds is None:
            return written
        try:
            ds.close()
            fd = os.open(self.path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except Exception:
            if not quietly:
                raise
        return written


def working_profile(src: DatasetReader, rows: tuple[int, int], bands: int) -> dict:
    """An uncompressed working copy of rows rows[0]..rows[1] of `src`'s grid, which may grow
    band by band (sparse)."""
    from affine import Affine

    return {**geotiff_profile(src.width, rows[1] - rows[0], bands, "float32", src.crs,
                              src.transform * Affine.translation(0, rows[0]), np.nan,
                              compress=False), "sparse_ok": True}


def keep_verified_bands(raw: Path, manifest: dict, band_width: int,
                        echo: Callable[[str], None]) -> None:
    """Keep the working copy only if every column band it recorded as done reads back
    with the checksum recorded for it; else start it again (a full disk or a kill can
    leave a file that its manifest overstates)."""
    done = manifest.get("bands_done") or []
    if raw.is_file() and done:
        sums = manifest.get("bands_sha256") or {}
        try:
            bad = [c0 for c0 in done if sums.get(str(c0)) != band_sha256(
                raw, c0, c0 + band_width)]
            if not bad:
                return
            why = f"column bands from column {', '.join(map(str, bad[:3]))} differ"
        except Exception:  # unreadable: GDAL's errors are of many kinds
            why = "it cannot be read"
        echo(f"note: {raw} does not hold what it recorded as done ({why}); predicting "
             "them again")
    raw.unlink(missing_ok=True)
    manifest["bands_done"], manifest["bands_sha256"] = [], {}


def check_band(raw: Path, c0: int, band_width: int, written: str) -> None:
    """The column band from column c0 reads back from `raw` as it was written (`written`, its
    checksum as BandByBand.close gave it); else the write failed, said in one line."""
    if band_sha256(raw, c0, c0 + band_width) != written:
        raise WriteError(f"cannot write {raw}: " + (
            "no space left on device; free some and rerun the same command to "
            "continue" if disk_full(raw) else f"the column band from column {c0} "
            "does not read back as it was written"))


def band_sha256(path: Path, c0: int, c1: int) -> str:
    """Checksum of columns c0..c1 (clipped to the raster) of every band of a raster, as read
    back: what a finished column band is verified by."""
    import hashlib

    import rasterio
    from rasterio.windows import Window

    with rasterio.open(path) as f:
        c1 = min(c1, f.width)
        h = hashlib.sha256()
        for r in range(0, f.height, 1024):
            h.update(row_major(f.read(window=Window(c0, r, c1 - c0,
                                                      min(1024, f.height - r)))))
    return h.hexdigest()


def row_major(a: np.ndarray) -> bytes:
    """(bands, rows, cols) as bytes row by row, each row all its bands: the same whatever
    blocks of rows the array is cut into."""
    return np.ascontiguousarray(a.transpose(1, 0, 2)).tobytes()


def disk_full_or(e: Exception, raw: Path) -> Exception:
    """A full disk while writing `raw` as one line that says how to go on; else `e`."""
    if isinstance(e, GlacierError) or not no_space_left(e, raw):
        return e
    return WriteError(f"cannot write {raw}: no space left on device; free some and rerun the "
                      "same command to continue")


def compress(raw: Path, dest: Path, names: list[str]) -> None:
    """The working file as a compressed cloud-optimized GeoTIFF with average overviews
    (built into the working file first), renamed when done."""
    import rasterio

    from gee_export.common.cog import copy_as_cog

    with rasterio.open(raw) as src:
        profile = geotiff_profile(src.width, src.height, src.count, "float32", src.crs,
                                  src.transform, np.nan)
    copy_as_cog(raw, dest, profile, "average", names)
