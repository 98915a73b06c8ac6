"""Landing a fetched cell in the export: the one step that downloads (`runner`) and pulled
batch files (`batch`) share."""
from __future__ import annotations

import numpy as np

from gee_export.common.bands import BAND_NAMES
from gee_export.common.grid import Cell
from gee_export.earthengine.recipe import EE_NODATA, QA_BANDS
from gee_export.local import mask_invalid_pixels
from gee_export.stack import ExportDir, write_cell_tif


def land_cell(exp: ExportDir, cell: Cell, data: np.ndarray, glacier: np.ndarray | None,
              save: bool = True, **info) -> None:
    """Write the 11 stack bands of an EXPORT_BANDS array as the cell's file, with its record.

    EE_NODATA becomes NaN (the stack's nodata); the QA bands give the share of glacier-outline
    observations the cloud mask removed in this cell and the pixels each validity rule removed.
    """
    n = len(BAND_NAMES)
    stack = data[:n].astype(np.float32, copy=True)
    stack[stack <= EE_NODATA + 1] = np.nan
    mask_invalid_pixels(stack)
    qa = dict(zip(QA_BANDS, data[n:n + len(QA_BANDS)]))
    removed = None
    if "s2_masked" in qa and glacier is not None and glacier.any():
        observed, masked = qa["s2_observed"][glacier].sum(), qa["s2_masked"][glacier].sum()
        removed = round(float(masked / observed), 4) if observed > 0 else None
    record = {"valid_fraction": round(float(np.isfinite(stack[0]).mean()), 4),
              "glacier_pixels_masked": {"all_scenes": removed},
              "removed_pixels": {"s1_noise_floor": int(qa["s1_removed"].sum()),
                                 "s2_cloud_mask": int(qa["s2_masked"].sum()),
                                 "missing_band": int(qa["missing_band"].sum())}
              if "missing_band" in qa else {}, **info}
    write_cell_tif(exp.cell_file(cell), exp.grid, cell, stack, info=record)
    exp.mark(cell, "done", save=save, **record)
