"""The workspace's STAC catalog, written with pystac: what each file is, where it lies, in
which projection, when its images were taken, and what it was made from.

`update_catalog` rebuilds `stac/` from the stages' manifests (every command that writes to a
workspace calls it when it ends) and `write_catalog` does so unlocked; `build_catalog` is the
catalog in memory; `footprint` and `composite_window` say where and when an item is.
"""
from .build import CATALOG_ID, COLLECTIONS, build_catalog
from .extents import composite_window, footprint
from .write import update_catalog, write_catalog

__all__ = ["CATALOG_ID", "COLLECTIONS", "build_catalog", "composite_window", "footprint",
           "update_catalog", "write_catalog"]
