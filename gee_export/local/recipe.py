"""One cell of the recipe over local sources: the scenes chosen in the config's windows, the
inputs read onto the cell (cell_reads), and the composite of the 11 bands in physical and
normalized units."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gee_export.common.bands import BAND_NAMES, S2_BANDS
from gee_export.common.errors import InputError, InputNotFoundError
from gee_export.common.grid import Cell, ExportGrid, coarse_cell, coarse_grid
from gee_export.common.outlines import OutlineRasterizer
from gee_export.config import DEM_OFFSET_SCALE_M, Normalization, RecipeConfig, normalize

from .cell_reads import CellReader
from .composite import fuse_dem, mask_invalid_pixels, nan_median
from .histograms import OffsetHistogram
from .reading import _open
from .sources import LocalSources, resolve_cloud_mask, scene_cloud_percent
from .spectral import indices

if TYPE_CHECKING:
    from rasterio.io import DatasetReader


@dataclass
class CellResult:
    stack: np.ndarray  # (11, h, w) normalized float32
    physical: np.ndarray  # (11, h, w) before normalization
    dem_source: np.ndarray
    glacier_removed: dict[str, float]  # S2 date -> share of glacier pixels the mask removed
    removed: dict[str, int]  # validity rule -> pixels it removed


class LocalRecipe:
    """The recipe over local sources for one grid and config."""

    def __init__(self, sources: LocalSources, grid: ExportGrid, cfg: RecipeConfig,
                 cloud_mask: str = "auto", glaciers=None):
        self.grid, self.cfg = grid, cfg
        self.coarse = coarse_grid(grid, DEM_OFFSET_SCALE_M)
        self._glaciers = None if glaciers is None else (
            OutlineRasterizer(glaciers, grid.transform),
            OutlineRasterizer(glaciers, self.coarse.transform))
        self._datasets: dict[Path, object] = {}
        # bound to this recipe's dataset(); a copy (with_sources) shares its datasets
        self._read = CellReader(grid, cfg, self.dataset)
        self._requested_mask = cloud_mask
        self._use(sources)

    def _use(self, sources: LocalSources) -> None:
        """Choose the scenes of `sources` in the config's windows and the cloud mask."""
        cfg = self.cfg
        self.src = sources
        self.s1_dates = sources.in_window("s1", cfg.s1_dates)
        s2_all = sources.in_window("s2", cfg.s2_dates)
        self.s2_cloud = {d: sources.cloud_percent[d] if d in sources.cloud_percent else
                         scene_cloud_percent(fs) for d, fs in s2_all.items()}
        self.s2_dates = {d: fs for d, fs in s2_all.items()
                         if self.s2_cloud[d] is None or self.s2_cloud[d] < cfg.s2_max_scene_cloud}
        self._check(s2_all)
        self.cloud_mask = resolve_cloud_mask(self._requested_mask, sources, sorted(self.s2_dates))

    def with_sources(self, sources: LocalSources) -> "LocalRecipe":
        """This recipe (grid, config, glacier rasters, open datasets) over other sources: one
        cell's scenes found in a catalogue. Closing either closes the datasets of both."""
        from copy import copy

        new = copy(self)
        new._use(sources)
        return new

    def _check(self, s2_all: dict) -> None:
        cfg = self.cfg
        if not self.s1_dates:
            raise InputNotFoundError(f"no Sentinel-1 file (S1_<date>*.tif) dated {cfg.s1_dates[0]}"
                                     f" to {cfg.s1_dates[1]} in the source directory")
        if not s2_all:
            raise InputNotFoundError(f"no Sentinel-2 file (S2_<date>*.tif) dated {cfg.s2_dates[0]}"
                                     f" to {cfg.s2_dates[1]} in the source directory")
        if not self.s2_dates:
            clouds = ", ".join(f"{d}: {p:.1f} %" for d, p in self.s2_cloud.items())
            raise InputError(f"all {len(s2_all)} Sentinel-2 scenes exceed the scene cloud limit "
                             f"of {cfg.s2_max_scene_cloud:g} % ({clouds}); raise "
                             "--max-scene-cloud")
        if not self.src.srtm and not self.src.hma:
            raise InputNotFoundError("no DEM (DEM_HMA*.tif or DEM_SRTM*.tif) in the source "
                                     "directory")

    def report(self) -> dict:
        return {"s1_images": sorted(self.s1_dates), "s1_count": len(self.s1_dates),
                "s2_scenes_in_window": len(self.s2_cloud),
                "s2_scene_cloud_percent": {d: (None if p is None else round(p, 2))
                                           for d, p in sorted(self.s2_cloud.items())},
                "s2_images": sorted(self.s2_dates), "s2_count": len(self.s2_dates),
                "cloud_mask": self.cloud_mask}

    # -- sources ------------------------------------------------------------------------------
    def dataset(self, path: Path) -> DatasetReader:
        """The source opened once and kept open: consecutive cells then share GDAL's block
        cache for the blocks their windows overlap."""
        if path not in self._datasets:  # a file, or a remote asset that opens itself
            opener = getattr(path, "open_dataset", None)
            self._datasets[path] = opener() if opener else _open(path)
        return self._datasets[path]

    def close(self) -> None:
        for ds in self._datasets.values():
            ds.close()
        self._datasets.clear()

    def _glacier_mask(self, cell: Cell, coarse: bool = False) -> np.ndarray | None:
        if self._glaciers is None:
            return None
        return self._glaciers[coarse].mask(cell.row_off, cell.col_off, cell.height, cell.width)

    # -- the recipe ---------------------------------------------------------------------------
    def offset_counts(self, cell: Cell) -> np.ndarray | None:
        """The histogram (OffsetHistogram bins) of HMA - SRTM off the glaciers, at 30 m, over
        the coarse pixels whose centres lie in this cell; None without both DEMs."""
        coarse = coarse_cell(self.grid, cell, DEM_OFFSET_SCALE_M)
        if not (self.src.hma and self.src.srtm) or coarse is None:
            return None
        hma, srtm = self._read.dem(self.src.hma, self.src.srtm, coarse, self.coarse)
        diff = hma - srtm
        glaciers = self._glacier_mask(coarse, coarse=True)
        if glaciers is not None:
            diff[glaciers] = np.nan  # glacier surfaces changed between the acquisitions
        hist = OffsetHistogram()
        hist.add(diff)
        return hist.counts

    def physical(self, cell: Cell, dem_offset: float
                 ) -> tuple[np.ndarray, np.ndarray, dict[str, float], dict[str, int]]:
        """The 11 bands in physical units, the DEM source per pixel, the share of glacier
        pixels the cloud mask removed per scene and the pixels each validity rule removed."""
        s1, s1_removed = self._read.s1(self.s1_dates, cell)
        s2 = {b: [] for b in S2_BANDS}
        glacier_removed, cloud_removed = {}, 0
        glaciers = self._glacier_mask(cell)
        for d, files in sorted(self.s2_dates.items()):
            scene = self._read.s2_scene(d, files, cell, self.cloud_mask, self.src.cloud_score)
            cloud_removed += int((scene.observed & ~scene.keep).sum())
            if glaciers is not None and glaciers.any():
                seen = glaciers & scene.observed
                glacier_removed[d] = round(float((seen & ~scene.keep).sum())
                                           / max(1, int(seen.sum())), 4)
            for b in S2_BANDS:
                s2[b].append(np.where(scene.keep, scene.refl[b], np.float32(np.nan)))
        comp = {b: nan_median(np.stack(v)) for b, v in {**s1, **s2}.items()}
        comp.update(indices(comp))
        hma, srtm = self._read.dem(self.src.hma, self.src.srtm, cell)
        comp["elevation"], dem_source = fuse_dem(hma, srtm, dem_offset)
        stack = np.stack([comp[b] for b in BAND_NAMES]).astype(np.float32, copy=False)
        return stack, dem_source, glacier_removed, {"s1_noise_floor": s1_removed,
                                                    "s2_cloud_mask": cloud_removed}

    def cell(self, cell: Cell, dem_offset: float, norm: Normalization) -> CellResult:
        phys, dem_source, glacier_removed, removed = self.physical(cell, dem_offset)
        some = np.isfinite(phys).any(axis=0)
        phys = mask_invalid_pixels(phys)
        removed["missing_band"] = int((some & ~np.isfinite(phys[0])).sum())
        return CellResult(normalize(phys.copy(), norm), phys, dem_source, glacier_removed,
                          removed)
