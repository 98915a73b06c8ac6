"""How a file becomes part of an item: its asset (media type, roles, and for a GeoTIFF its
raster:bands read from the file), its href relative to the item's JSON, and `derived_from`
links to the items it was made from."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from ..layout import STAC_DIR

if TYPE_CHECKING:
    import pystac

GPKG = "application/geopackage+sqlite3"
PARQUET = "application/vnd.apache.parquet"
QML = "application/xml"  # a QGIS layer style (.qml)
CSV = "text/csv"


def raster_asset(item: pystac.Item, key: str, href: str, path: Path, roles: list[str],
                 title: str) -> None:
    """A GeoTIFF asset with its raster:bands (type, nodata, resolution) read from the file."""
    import math

    import pystac
    import rasterio
    from pystac.extensions.raster import RasterBand, RasterExtension

    asset = pystac.Asset(href, title, media_type=pystac.MediaType.COG, roles=roles)
    item.add_asset(key, asset)
    with rasterio.open(path) as f:
        nodata = f.nodata
        bands = [RasterBand.create(
            nodata=None if nodata is None else "nan" if math.isnan(nodata) else nodata,
            data_type=f.dtypes[i], spatial_resolution=abs(f.res[0]))
            for i in range(f.count)]
        names = [n or "" for n in f.descriptions]
    RasterExtension.ext(asset, add_if_missing=True).apply(bands)
    asset.extra_fields["glacier:band_names"] = names


def add_files(item: pystac.Item, href: Callable[[Path], str], files: list[tuple]) -> None:
    """Assets (key, file, roles, title, media type) for the files that exist."""
    import pystac

    for key, f, roles, title, kind in files:
        if f.is_file():
            item.add_asset(key, pystac.Asset(href(f), title, media_type=kind, roles=roles))


def relative_hrefs(workspace: Path, collection: str, item_id: str) -> Callable[[Path], str]:
    """Relative hrefs from where the item's JSON will be: stac/<collection>/<id>/<id>.json."""
    item_dir = Path(workspace) / STAC_DIR / collection / item_id
    return lambda p: Path(os.path.relpath(Path(p), item_dir)).as_posix()


def derived_from(item: pystac.Item, sources: Iterable[pystac.Item]) -> None:
    """A `derived_from` link to each item `item` was made from."""
    import pystac

    for s in sources:
        item.add_link(pystac.Link("derived_from", s, media_type=pystac.MediaType.JSON,
                                  title=s.id))
