"""GeoPackages: the one writer for every vector product."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .atomic import atomic_output

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
