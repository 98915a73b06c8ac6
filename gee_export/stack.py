"""The export directory: cell GeoTIFFs, the VRT that mosaics them, and export.json.

Shared by the Earth Engine and the local path, so both write the same product. A cell file is
written under a temporary name and renamed when complete; export.json is rewritten atomically
after every cell and says `complete: true` only once all cells and the VRT are in place.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

from .contract import (BAND_NAMES, EXPORT_MANIFEST, EXPORTS_DIR, STACK_DIR, STACK_VRT,
                       GlacierError, as_stored, base_manifest, now_iso, read_manifest, tmp_path,
                       write_json)
from .grid import Cell, ExportGrid

CELL_BLOCK = 256


def cell_profile(grid: ExportGrid, cell: Cell, count: int = len(BAND_NAMES)) -> dict:
    return dict(driver="GTiff", width=cell.width, height=cell.height, count=count,
                dtype="float32", crs=grid.crs, transform=cell.transform(grid), nodata=np.nan,
                tiled=True, blockxsize=CELL_BLOCK, blockysize=CELL_BLOCK, compress="deflate",
                # Band-interleaved: reading one band (prep tile's validity scan) decodes only
                # that band's blocks, not all eleven.
                predictor=3, interleave="band")


def write_tif_atomic(path: Path, data: np.ndarray, profile: dict, names) -> None:
    """Write a GeoTIFF under a temporary name with band descriptions, then rename it."""
    import rasterio

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    try:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(data)
            for i, n in enumerate(names, 1):
                dst.set_band_description(i, n)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_gpkg_atomic(df, path: Path, layer: str) -> None:
    """Write a GeoDataFrame as a GeoPackage layer under a temporary name, then rename it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Hidden and marked partial, but still ending in .gpkg: GDAL's GeoPackage driver wants it.
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    tmp.unlink(missing_ok=True)
    try:
        df.to_file(tmp, driver="GPKG", layer=layer)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_cell_tif(path: Path, grid: ExportGrid, cell: Cell, data: np.ndarray,
                   names=BAND_NAMES) -> None:
    """Write one cell's (bands, h, w) float32 stack atomically, band descriptions set."""
    if data.shape != (len(names), cell.height, cell.width):
        raise ValueError(f"cell {cell.id}: data shape {data.shape} does not match the cell")
    write_tif_atomic(path, data.astype(np.float32, copy=False),
                     cell_profile(grid, cell, len(names)), names)


def write_vrt(path: Path, grid: ExportGrid, cells: list[tuple[Cell, str]],
              names=BAND_NAMES) -> None:
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
                      f'BlockXSize="{CELL_BLOCK}" BlockYSize="{CELL_BLOCK}"/>',
                      f'      <SrcRect xOff="0" yOff="0" xSize="{cell.width}" '
                      f'ySize="{cell.height}"/>',
                      f'      <DstRect xOff="{cell.col_off}" yOff="{cell.row_off}" '
                      f'xSize="{cell.width}" ySize="{cell.height}"/>',
                      "    </SimpleSource>"]
        lines.append("  </VRTRasterBand>")
    lines.append("</VRTDataset>\n")
    tmp = tmp_path(path)
    tmp.write_text("\n".join(lines))
    tmp.replace(path)


class ExportDir:
    """One export on disk and its manifest; every state change is saved atomically."""

    def __init__(self, path: Path, manifest: dict):
        self.path = Path(path)
        self.manifest = manifest

    # -- creation and reopening ---------------------------------------------------------------
    @classmethod
    def open_or_create(cls, workspace: Path, name: str, parameters: dict, fields: dict,
                       force: bool = False) -> "ExportDir":
        """Reopen an export with the same parameters (resume) or start a new one."""
        path = workspace / EXPORTS_DIR / name
        parameters = as_stored(parameters)
        mf = path / EXPORT_MANIFEST
        if mf.is_file():
            old = read_manifest(mf, "export")
            if old.get("parameters") == parameters and not force:
                return cls(path, old)
            if not force:
                changed = sorted(k for k in set(parameters) | set(old.get("parameters", {}))
                                 if parameters.get(k) != old.get("parameters", {}).get(k))
                raise GlacierError(
                    f"{path} holds an export made with other parameters ({', '.join(changed)}); "
                    "rerun with --force to replace it or --name to export beside it")
        if force and path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)
        d = cls(path, base_manifest("export", parameters=parameters, **fields))
        d.save()
        return d

    @classmethod
    def open(cls, path: Path) -> "ExportDir":
        return cls(Path(path), read_manifest(Path(path), "export"))

    def save(self) -> None:
        self.manifest["updated_at"] = now_iso()
        write_json(self.path / EXPORT_MANIFEST, self.manifest)

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
        return self.stack_dir / f"{cell.id}.tif"

    def set_plan(self, cells: list[Cell]) -> None:
        known = self.cells
        for c in cells:
            known.setdefault(c.id, {**c.to_dict(), "state": "pending"})
        self.save()

    def pending(self) -> list[Cell]:
        """Cells still to do; a cell whose file exists is done (files appear only by rename)."""
        out = []
        for cid, c in self.cells.items():
            cell = Cell.from_dict(c)
            if self.cell_file(cell).is_file():
                if c.get("state") != "done":
                    c["state"] = "done"
                continue
            out.append(cell)
        return out

    def mark(self, cell: Cell, state: str, **info) -> None:
        self.cells[cell.id].update(state=state, **info)
        self.save()

    def finish(self, **fields) -> None:
        done = [(Cell.from_dict(c), f"{STACK_DIR}/{cid}.tif") for cid, c in self.cells.items()
                if self.cell_file(Cell.from_dict(c)).is_file()]
        if len(done) != len(self.cells):
            missing = sorted(set(self.cells) - {c.id for c, _ in done})
            raise GlacierError(f"{self.path}: cells {', '.join(missing[:5])} are not finished")
        write_vrt(self.vrt, self.grid, sorted(done, key=lambda t: t[0].id))
        self.manifest.update(fields)
        self.manifest.update(complete=True, completed_at=now_iso())
        self.save()


def check_stack(path: Path) -> None:
    """Refuse a stack whose band names are not the band table's, or whose cells mix CRSs."""
    import rasterio

    try:
        src = rasterio.open(path)
    except rasterio.errors.RasterioIOError as e:
        raise GlacierError(f"{path}: cannot be opened as a raster ({e})") from None
    with src:
        if tuple(src.descriptions) != BAND_NAMES:
            raise GlacierError(f"{path}: band names {list(src.descriptions)} do not match the "
                               f"band table {list(BAND_NAMES)}")
        crs = src.crs
        for f in src.files[1:]:
            with rasterio.open(f) as cell:
                if cell.crs != crs:
                    raise GlacierError(f"{path}: cell {Path(f).name} is in {cell.crs}, the stack "
                                       f"in {crs}; cells of one stack must share one CRS")
