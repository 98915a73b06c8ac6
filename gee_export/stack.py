"""The export directory: cell GeoTIFFs, the VRT that mosaics them, and export.json.

Shared by the Earth Engine and the local path, so both write the same product. A cell file is
written under a temporary name and renamed when complete; export.json is rewritten atomically
after every cell and says `complete: true` only once all cells and the VRT are in place.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Callable, Sequence
from xml.sax.saxutils import escape

import numpy as np

from gee_export.common.atomic import as_stored, write_text
from gee_export.common.bands import BAND_NAMES
from gee_export.common.errors import StateError
from gee_export.common.grid import Cell, ExportGrid
from gee_export.common.layout import (
    EXPORT_MANIFEST,
    EXPORTS_DIR,
    STACK_DIR,
    STACK_VRT,
    base_manifest,
    read_manifest,
    tif_name,
    write_manifest,
)
from gee_export.common.rasters import BLOCK, geotiff_profile, write_geotiff
from gee_export.common.stac import update_catalog
from gee_export.common.stage import RESUME, START, Decision, Stage


def cell_profile(grid: ExportGrid, cell: Cell, count: int = len(BAND_NAMES)) -> dict:
    return geotiff_profile(cell.width, cell.height, count, "float32", grid.crs,
                           cell.transform(grid), np.nan)


CLASS_BANDS = {"dem_source"}  # classes: their overviews take the nearest value, not the mean
CELL_INFO_TAG = "GLACIER_CELL_INFO"  # the cell's record (valid fraction, masks...) as JSON


def write_cell_tif(path: Path, grid: ExportGrid, cell: Cell, data: np.ndarray,
                   names: Sequence[str] = BAND_NAMES, info: dict | None = None) -> None:
    """Write one cell's (bands, h, w) float32 stack atomically, band descriptions set and the
    cell's record in its metadata, so a cell file describes itself even if the manifest was
    last saved before it landed.

    Raises:
        ValueError: `data` is not (len(names), cell.height, cell.width). A caller's bug, not
            a user's input: what users supply is checked before it gets here (a downloaded
            cell by earthengine.runner's fetch, a pulled file by batch.check_cell_file, both
            as the toolkit's errors naming the cell).
    """
    if data.shape != (len(names), cell.height, cell.width):
        raise ValueError(f"cell {cell.id}: data shape {data.shape} does not match the cell")
    tags = {CELL_INFO_TAG: json.dumps(info)} if info is not None else None
    write_geotiff(path, data.astype(np.float32, copy=False), cell_profile(grid, cell, len(names)),
                  names, tags, "nearest" if set(names) <= CLASS_BANDS else "average")


def read_cell_info(path: Path) -> dict:
    import rasterio

    with rasterio.open(path) as f:
        raw = f.tags().get(CELL_INFO_TAG)
    return json.loads(raw) if raw else {}


def write_vrt(path: Path, grid: ExportGrid, cells: list[tuple[Cell, str]],
              names: Sequence[str] = BAND_NAMES) -> None:
    """A GDAL VRT mosaicking cell files (paths relative to the VRT) onto the region grid."""
    from rasterio.crs import CRS

    wkt = escape(CRS.from_string(grid.crs).to_wkt())
    t = grid.transform
    lines = [f'<VRTDataset rasterXSize="{grid.width}" rasterYSize="{grid.height}">',
             f"  <SRS>{wkt}</SRS>",
             f"  <GeoTransform>{t.c!r}, {t.a!r}, {t.b!r}, {t.f!r}, {t.d!r}, {t.e!r}</GeoTransform>"]
    for b, name in enumerate(names, 1):
        lines += [f'  <VRTRasterBand dataType="Float32" band="{b}">',
                  f"    <Description>{escape(name)}</Description>",
                  "    <NoDataValue>nan</NoDataValue>"]
        for cell, rel in cells:
            lines += ["    <SimpleSource>",
                      f'      <SourceFilename relativeToVRT="1">{escape(rel)}</SourceFilename>',
                      f"      <SourceBand>{b}</SourceBand>",
                      f'      <SourceProperties RasterXSize="{cell.width}" '
                      f'RasterYSize="{cell.height}" DataType="Float32" '
                      f'BlockXSize="{BLOCK}" BlockYSize="{BLOCK}"/>',
                      f'      <SrcRect xOff="0" yOff="0" xSize="{cell.width}" '
                      f'ySize="{cell.height}"/>',
                      f'      <DstRect xOff="{cell.col_off}" yOff="{cell.row_off}" '
                      f'xSize="{cell.width}" ySize="{cell.height}"/>',
                      "    </SimpleSource>"]
        lines.append("  </VRTRasterBand>")
    lines.append("</VRTDataset>\n")
    write_text(path, "\n".join(lines))


class ExportDir:
    """One export on disk and its manifest; every state change is saved atomically."""

    SAVE_EVERY_S = 15.0  # cells carry their own records, so the manifest need not be
    # rewritten after each of thousands of cells

    def __init__(self, path: Path, manifest: dict, decision: Decision | None = None):
        self.path = Path(path)
        self.manifest = manifest
        self.decision = decision  # what open_or_create decided (start, resume or done)
        self._saved_at = 0.0

    # -- creation and reopening ---------------------------------------------------------------
    @classmethod
    def open_or_create(cls, workspace: Path, name: str, parameters: dict, fields: dict,
                       force: bool = False, echo: Callable[[str], None] = print,
                       earlier: dict | list | None = None, upgrade: dict | None = None
                       ) -> "ExportDir":
        """Reopen an export with the same parameters (resume, repair, or nothing to do: its
        `decision`) or start a new one, by the stage contract.

        An export made with other parameters is replaced with --force, or without it when it
        never finished a cell (nothing would be lost); otherwise the changed parameters are
        named. One recorded with `earlier`, the same parameters as an older version wrote
        them, is reopened and its record upgraded to `parameters` and the `upgrade` fields.
        A complete export with broken cells is reopened with them to make again.
        """
        path = Path(workspace) / EXPORTS_DIR / name
        parameters = as_stored(parameters)
        decision = export_stage(path).decide(
            parameters, force, echo, earlier if isinstance(earlier, list) else [earlier],
            intact=broken_note(path),
            nothing_lost=lambda old: None if old.get("complete") or any(
                (path / STACK_DIR).glob("*.tif")) else "it finished no cell")
        if decision.action != START:
            d = cls(path, decision.old, decision)
            if decision.old.get("parameters") != parameters:  # an older version's record
                d.manifest.update(upgrade or {}, parameters=parameters)
                d.save()
            if decision.action == RESUME and d.manifest.get("complete"):
                d.reopen_broken(lambda _: None)  # the decision said which cells
            return d
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True, exist_ok=True)
        d = cls(path, base_manifest("export", parameters=parameters, **fields), decision)
        d.save()
        return d

    @classmethod
    def open(cls, path: Path) -> "ExportDir":
        return cls(Path(path), read_manifest(Path(path), "export"))

    def save(self) -> None:
        write_manifest(self.path / EXPORT_MANIFEST, self.manifest)
        self._saved_at = time.monotonic()

    def save_now_and_then(self) -> None:
        if time.monotonic() - self._saved_at > self.SAVE_EVERY_S:
            self.save()

    # -- accessors ----------------------------------------------------------------------------
    @property
    def grid(self) -> ExportGrid:
        return ExportGrid.from_dict(self.manifest["grid"])

    @property
    def stack_dir(self) -> Path:
        return self.path / STACK_DIR

    @property
    def vrt(self) -> Path:
        return self.path / STACK_VRT

    @property
    def cells(self) -> dict[str, dict]:
        return self.manifest.setdefault("cells", {})

    def cell_file(self, cell: Cell) -> Path:
        return self.stack_dir / tif_name(cell.id)

    def set_plan(self, cells: list[Cell]) -> None:
        known = self.cells
        for c in cells:
            known.setdefault(c.id, {**c.to_dict(), "state": "pending"})
        self.save()

    def pending(self) -> list[Cell]:
        """Cells still to do; a cell whose file exists is done (files appear only by rename),
        and its record is restored from the file when the manifest missed it."""
        out = []
        for cid, c in self.cells.items():
            cell = Cell.from_dict(c)
            f = self.cell_file(cell)
            if f.is_file():
                if c.get("state") != "done":
                    c.update(read_cell_info(f), state="done")
                continue
            out.append(cell)
        return out

    def broken_cells(self) -> list[Cell]:
        """The cells whose file is missing, unreadable or not on the cell's grid (size, CRS,
        transform, bands): what `prep tile` refuses. Reads only."""
        grid = self.grid
        return [cell for cell in map(Cell.from_dict, self.cells.values())
                if not _on_grid(self.cell_file(cell), grid, cell)]

    def reopen_broken(self, echo: Callable[[str], None] = print) -> int:
        """For a complete export: remove cell files that are missing, unreadable or not on
        their cell's grid (a disk error, a stray copy, a file in another CRS), so that the
        same command exports them again; how many. What `prep tile` checks, with the remedy
        it names."""
        broken = [cell.id for cell in self.broken_cells()]
        for cid in broken:
            self.cell_file(Cell.from_dict(self.cells[cid])).unlink(missing_ok=True)
            self.cells[cid]["state"] = "pending"
        if broken:
            echo(f"{self.path}: {len(broken)} cell(s) missing, unreadable or off their grid "
                 f"({', '.join(broken[:5])}); exporting them again")
            self.manifest["complete"] = False
            self.vrt.unlink(missing_ok=True)
            self.save()
        return len(broken)

    def mark(self, cell: Cell, state: str, save: bool = True, **info) -> None:
        self.cells[cell.id].update(state=state, **info)
        if save:
            self.save()
        else:
            self.save_now_and_then()

    def finish(self, **fields) -> None:
        self.pending()  # restores the records of cells that landed after the last save
        done = [(Cell.from_dict(c), f"{STACK_DIR}/{tif_name(cid)}")
                for cid, c in self.cells.items() if self.cell_file(Cell.from_dict(c)).is_file()]
        if len(done) != len(self.cells):
            missing = sorted(set(self.cells) - {c.id for c, _ in done})
            raise StateError(f"{self.path}: cells {', '.join(missing[:5])} are not finished")
        write_vrt(self.vrt, self.grid, sorted(done, key=lambda t: t[0].id))
        export_stage(self.path).complete(self.manifest, **fields)
        self._saved_at = time.monotonic()
        update_catalog(self.path.parent.parent)


# prep export's parameters as its options (the stage contract names differences so).
EXPORT_OPTIONS = {"inputs.*": "--source-dir file {key}", "recipe.*": "the recipe's {key}",
                  "grid.*": "the region's grid ({key}; --region, --bbox, --region-file, --crs)",
                  "outlines": "--outlines (ids and geometries)", "norm_from": "--norm-from",
                  "cloud_mask": "--cloud-mask", "target": "--to",
                  **{f"recipe.{key}": option for key, option in (
                      ("s1_window", "--s1-window"), ("s1_dates", "--s1-window (dates)"),
                      ("s2_window", "--s2-window"), ("s2_dates", "--s2-window (dates)"),
                      ("s1_orbit", "--orbit"), ("s2_level", "--s2-level"),
                      ("s2_collection", "--s2-level (collection)"),
                      ("s2_max_scene_cloud", "--max-scene-cloud"),
                      ("cloud_score_band", "--cloud-score-band"),
                      ("cloud_score_threshold", "--cloud-score-threshold"),
                      ("norm_mode", "--norm"), ("outline_buffer_m", "--buffer"),
                      ("year", "--year"))}}


def export_stage(path: Path) -> Stage:
    return Stage("export", Path(path) / EXPORT_MANIFEST, names=EXPORT_OPTIONS,
                 hint="rerun with --force to replace it, or --name to export beside it")


def broken_note(path: Path) -> Callable[[dict], str | None]:
    """The stage contract's integrity check of a complete export: its broken cells, named."""
    def note(old: dict) -> str | None:
        broken = [c.id for c in ExportDir(path, old).broken_cells()]
        return (f"{len(broken)} cell(s) missing, unreadable or off their grid "
                f"({', '.join(broken[:5])})") if broken else None
    return note


def season_note(exp: ExportDir, echo: Callable[[str], None]) -> None:
    """For a complete export reused as it is: when it was started before the end of its
    season, that it lacks the later scenes."""
    from datetime import date

    from gee_export.config import started_before_season_end

    note = started_before_season_end(exp.manifest, date.today())
    if note:
        echo(note)


def _on_grid(path: Path, grid: ExportGrid, cell: Cell) -> bool:
    """Whether a cell file opens with the cell's size, transform and band count in the
    grid's CRS."""
    import rasterio
    from rasterio.crs import CRS

    try:
        with rasterio.open(path) as src:
            return ((src.width, src.height, src.count) == (cell.width, cell.height,
                                                           len(BAND_NAMES))
                    and src.crs == CRS.from_user_input(grid.crs)
                    and src.transform.almost_equals(cell.transform(grid)))
    except rasterio.errors.RasterioIOError:
        return False
