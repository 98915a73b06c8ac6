"""change.tif: where ice was lost, gained or stayed between the first and the last year of a
change, on the predictions' grid, at full resolution (change.png shows it reduced), as a
cloud-optimized GeoTIFF with its QGIS style, change.qml, beside it."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from gee_export.common.atomic import atomic_output, remove_file
from gee_export.common.cog import copy_as_cog, uncompressed, working_path
from gee_export.common.layout import PREDICTION_MANIFEST, PROBABILITY_TIF, change_map_files, read_manifest
from gee_export.common.qml import (
    CHANGE_GAINED,
    CHANGE_LOST,
    CHANGE_NODATA,
    CHANGE_NONE,
    CHANGE_STABLE,
    write_change_qml,
)
from gee_export.common.rasters import geotiff_profile


def change_classes(first: np.ndarray, first_threshold: float, last: np.ndarray,
                   last_threshold: float) -> np.ndarray:
    """Per pixel: no ice in either year, ice in both (stable), lost, gained, or no data (a
    probability that is NaN in either year).

    Args:
        first, last: glacier probabilities of the first and the last year, same shape.
        first_threshold, last_threshold: each prediction's ice threshold.

    Returns:
        uint8 classes (qml.CHANGE_*).
    """
    a, b = first >= first_threshold, last >= last_threshold
    out = np.full(first.shape, CHANGE_NONE, np.uint8)
    out[a & b] = CHANGE_STABLE
    out[a & ~b] = CHANGE_LOST
    out[~a & b] = CHANGE_GAINED
    out[~(np.isfinite(first) & np.isfinite(last))] = CHANGE_NODATA
    return out


def write_change_map(out: Path, first: Path, last: Path, zone: str | None = None) -> Path:
    """change.tif (and change.qml) in `out` between two predictions (directories of `train
    predict`) on one grid, each at its own threshold; streamed block by block. Returns
    change.tif's path. With `zone`, the map of that UTM zone of a zoned change.

    Raises:
        InputError: the two predictions are not on one grid.
        WriteError: change.tif could not be written.
    """
    import rasterio

    from gee_export.common.errors import InputError

    tif, style = change_map_files(zone)
    dest = Path(out) / tif
    t_first, t_last = (read_manifest(Path(p) / PREDICTION_MANIFEST, "prediction")["parameters"]
                       ["config"]["threshold"] for p in (first, last))
    with rasterio.open(Path(first) / PROBABILITY_TIF) as a, \
            rasterio.open(Path(last) / PROBABILITY_TIF) as b:
        if (a.crs, a.transform, a.shape) != (b.crs, b.transform, b.shape):
            raise InputError(f"{first} and {last} are not on one grid; a change map needs "
                             "predictions of one region's exports")
        profile = geotiff_profile(a.width, a.height, 1, "uint8", a.crs, a.transform,
                                  CHANGE_NODATA)
        work = working_path(dest)
        try:
            with atomic_output(work) as tmp:
                with rasterio.open(tmp, "w", **uncompressed(profile)) as dst:
                    for _, win in dst.block_windows(1):
                        dst.write(change_classes(a.read(1, window=win), t_first,
                                                 b.read(1, window=win), t_last), 1,
                                  window=win)
            copy_as_cog(work, dest, profile, "nearest", ("change",),
                        {"CLASSES": f"{CHANGE_NONE} no ice, {CHANGE_STABLE} stable ice, "
                                    f"{CHANGE_LOST} lost, {CHANGE_GAINED} gained, "
                                    f"{CHANGE_NODATA} no data"})
        finally:
            remove_file(work)
    write_change_qml(Path(out) / style)
    return dest
