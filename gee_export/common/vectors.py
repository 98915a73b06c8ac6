"""GeoPackages and GeoParquet: the one writer for every vector product."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from .atomic import atomic_output
from .layout import OUTLINE_FILES

if TYPE_CHECKING:
    from geopandas import GeoDataFrame


def write_gpkg(df: GeoDataFrame, path: Path, layer: str) -> None:
    """Write a GeoDataFrame as one GeoPackage layer, atomically."""
    with atomic_output(path) as tmp:
        df.to_file(tmp, driver="GPKG", layer=layer)


def write_gpkg_layers(layers: dict, path: Path) -> None:
    """Write several layers (name -> GeoDataFrame) into one GeoPackage, atomically, in the
    given order: GDAL lists them so, and readers that name no layer get the first one (with
    a warning from pyogrio), so put the layer users want first."""
    with atomic_output(path) as tmp:
        for i, (name, df) in enumerate(layers.items()):
            df.to_file(tmp, driver="GPKG", layer=name, mode="w" if i == 0 else "a")


def write_geoparquet(df: GeoDataFrame, path: Path) -> None:
    """Write a GeoDataFrame as GeoParquet (GeoParquet 1.x metadata, WKB geometry), atomically,
    the geometry column last, where GeoPackage readers put it, so both read back alike."""
    import pyarrow  # noqa: F401 (geopandas writes GeoParquet with it: a missing one is named here)

    geom = df.geometry.name
    with atomic_output(path) as tmp:
        df[[c for c in df.columns if c != geom] + [geom]].to_parquet(tmp, index=False)


def write_outline_files(layers: dict, directory: Path, formats: Sequence[str]) -> list[Path]:
    """Write outlines in each of `formats` (keys of OUTLINE_FILES) into `directory`: the
    GeoPackage holds every layer, in order; GeoParquet, one table a file, the first layer
    (the outlines). Returns the files written.

    Raises:
        ValueError: a format that is not one of OUTLINE_FILES.
    """
    unknown = [f for f in formats if f not in OUTLINE_FILES]
    if unknown:
        raise ValueError(f"outline format(s) {unknown}: one of {', '.join(OUTLINE_FILES)}")
    written = []
    for fmt in formats:
        path = Path(directory) / OUTLINE_FILES[fmt]
        if fmt == "gpkg":
            write_gpkg_layers(layers, path)
        else:
            write_geoparquet(next(iter(layers.values())), path)
        written.append(path)
    return written
