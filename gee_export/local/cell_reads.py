"""The recipe's inputs on one cell: both DEMs, every Sentinel-1 acquisition (border noise
removed on its own grid) and one Sentinel-2 scene with the pixels its cloud mask keeps. Every
read goes through reading.read_source, on datasets the recipe keeps open across cells."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from gee_export.common.bands import S1_BANDS, S2_BANDS
from gee_export.common.errors import InputError
from gee_export.common.grid import Cell, ExportGrid
from gee_export.config import RecipeConfig

from .composite import s1_noise_rule
from .reading import read_source
from .spectral import keep_by_cloud_score, keep_by_scl

if TYPE_CHECKING:
    from rasterio.io import DatasetReader


@dataclass
class S2Scene:
    refl: dict[str, np.ndarray]
    keep: np.ndarray
    observed: np.ndarray


class CellReader:
    """Reads the sources of one grid and config onto its cells; `dataset` opens a source (the
    recipe's, which keeps each one open so that consecutive cells share GDAL's block cache)."""

    def __init__(self, grid: ExportGrid, cfg: RecipeConfig,
                 dataset: Callable[[Path], DatasetReader]):
        self.grid, self.cfg, self.dataset = grid, cfg, dataset

    def dem(self, hma: list[Path], srtm: list[Path], cell: Cell, grid: ExportGrid | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
        """HMA and SRTM on the cell (the first file with data wins where tiles overlap)."""
        grid = grid or self.grid
        out = []
        for files in (hma, srtm):
            acc = np.full((cell.height, cell.width), np.nan, np.float32)
            for f in files:
                a = read_source(self.dataset(f), "dem", grid, cell, None)[0]["value"]
                acc = np.where(np.isfinite(acc), acc, a)
            out.append(acc)
        return out[0], out[1]

    def s1(self, dates: dict[str, list[Path]], cell: Cell
           ) -> tuple[dict[str, list[np.ndarray]], int]:
        """VV and VH of every acquisition, border noise removed on the native grid."""
        s1 = {b: [] for b in S1_BANDS}
        removed = 0
        for d, files in sorted(dates.items()):
            got: dict[str, np.ndarray] = {}
            for f in files:
                arrays, n = read_source(self.dataset(f), "s1", self.grid, cell, list(S1_BANDS),
                                        "bilinear", lambda bands: s1_noise_rule(bands, self.cfg))
                removed += n
                for b, a in arrays.items():
                    got[b] = a if b not in got else np.where(np.isfinite(got[b]), got[b], a)
            missing = [b for b in S1_BANDS if b not in got]
            if missing:
                raise InputError(f"{files[0]}: lacks band(s) {', '.join(missing)} (set band "
                                 "descriptions VV, VH)")
            for b in S1_BANDS:
                s1[b].append(got[b])
        return s1, removed

    def s2_scene(self, d: str, files: list[Path], cell: Cell, cloud_mask: str,
                 cloud_score: dict[str, list[Path]]) -> S2Scene:
        """One scene's reflectance and the pixels its cloud mask keeps (`cloud_score`: the
        Cloud Score+ files by date, read when `cloud_mask` is 'cloudscore')."""
        cfg = self.cfg
        refl = self._read_date(files, "s2", cell, list(S2_BANDS), "bilinear")
        scl = self._read_date(files, "s2", cell, ["SCL"], "nearest").get("SCL")
        missing = [b for b in S2_BANDS if b not in refl] + ([] if scl is not None else ["SCL"])
        if missing:
            raise InputError(f"Sentinel-2 {d}: lacks band(s) {', '.join(missing)}")
        refl = {b: (a - np.float32(cfg.boa_offset)) / np.float32(10000.0)
                for b, a in refl.items()}
        scl = np.nan_to_num(scl, nan=0).astype(np.uint8)
        if cloud_mask == "cloudscore":
            band = cfg.cloud_score_band
            score = self._read_date(cloud_score[d], "cloudscore", cell, [band],
                                    "nearest").get(band)
            if score is None:
                raise InputError(f"Cloud Score+ {d}: lacks band {band}")
            keep = keep_by_cloud_score(score, scl if cfg.s2_level == "l2a" else None, refl,
                                       cfg)
        else:
            keep = keep_by_scl(scl, refl, cfg)
        return S2Scene(refl, keep, np.isfinite(refl["B3"]))  # as Earth Engine: B3's mask

    def _read_date(self, files: list[Path], kind: str, cell: Cell, bands: list[str],
                   resampling: str) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for f in files:
            for b, a in read_source(self.dataset(f), kind, self.grid, cell, bands,
                                    resampling)[0].items():
                out.setdefault(b, a)
        return out
