"""Products of a region across UTM zones: one ordinary product per zone, and a small manifest
(zones.json) in the product's own directory that names them, their zones and the strip of
longitudes each owns. Every stage reads a zoned input through `zoned_parts`, runs on each part
as on any product, and merges what it measures (`merge_outlines`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from .layout import ZONES_MANIFEST, base_manifest, read_manifest, resolved_path, stored_path
from .stage import Stage
from .utm import Strip, clip_to_strip

if TYPE_CHECKING:
    from geopandas import GeoDataFrame

OUTPUT_CRS = "EPSG:4326"  # merged outlines: one CRS for every zone, as inventories ship them


@dataclass(frozen=True)
class Part:
    zone: str
    strip: Strip
    path: Path  # the part's own product directory

    def to_dict(self, manifest_dir: Path, workspace: Path) -> dict:
        return {"zone": self.zone, "strip": self.strip.to_list(),
                "path": stored_path(self.path, manifest_dir, workspace)}


def is_zoned(path: Path) -> bool:
    return (Path(path) / ZONES_MANIFEST).is_file()


def zoned_parts(path: Path, kind: str) -> list[Part] | None:
    """The parts of a zoned product of `kind` ("export", "prediction"), or None when `path`
    is a product of one zone."""
    path = Path(path)
    if not is_zoned(path):
        return None
    m = read_manifest(path / ZONES_MANIFEST, f"zoned {kind}")
    return [Part(p["zone"], Strip.from_list(p["strip"]), resolved_path(p["path"], path))
            for p in m["parts"]]


def write_zoned(path: Path, kind: str, parts: Sequence[Part], workspace: Path,
                **fields) -> dict:
    """The manifest of a zoned product, written last: complete when every part is."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    m = base_manifest(f"zoned {kind}", parts=[p.to_dict(path, workspace) for p in parts],
                      **fields)
    return Stage(f"zoned {kind}", path / ZONES_MANIFEST).complete(m)


def merge_outlines(frames: Sequence[GeoDataFrame], strips: Sequence[Strip],
                   key: str | None = None, area_means: Sequence[str] = ()) -> GeoDataFrame:
    """Outlines of the parts as one layer in EPSG:4326: each part cut to its strip, then the
    pieces that meet at a zone line united, so a glacier cut by the line is one polygon again
    (its area the sum of its parts'). With `key`, pieces are united by that column (a
    glacier id); without, by touching. Columns in `area_means` become the means of their
    pieces weighted by the pieces' ellipsoidal areas; others keep the first piece's value."""
    import geopandas as gpd
    import pandas as pd
    import shapely

    from .outlines import ellipsoidal_area_km2

    cut = [clip_to_strip(f, s) for f, s in zip(frames, strips) if len(f)]
    if not cut:
        return gpd.GeoDataFrame(geometry=[], crs=OUTPUT_CRS)
    pieces = pd.concat(cut, ignore_index=True)
    if key is None:
        # Pieces of a part do not touch (they are separate polygons of its map), so every
        # touch is across a zone line: unite the connected groups.
        geoms = list(pieces.geometry)
        left, right = shapely.STRtree(geoms).query(geoms, predicate="intersects")
        pieces, key = pieces.assign(_group=_components(len(geoms), left, right)), "_group"
    if area_means:
        area = ellipsoidal_area_km2(list(pieces.geometry), OUTPUT_CRS)
        pieces = pieces.assign(_area=area, **{f"_w_{c}": pieces[c] * area for c in area_means})
    sums = {c: "sum" for c in pieces.columns if c == "_area" or c.startswith("_w_")}
    merged = pieces.dissolve(by=key, as_index=False,
                             aggfunc={c: sums.get(c, "first") for c in pieces.columns
                                      if c not in (key, pieces.geometry.name)})
    for c in area_means:
        merged[c] = merged[f"_w_{c}"] / merged["_area"]
    return merged.drop(columns=[c for c in merged.columns
                                if c in sums or c == "_group"])


def _components(n: int, left, right) -> list[int]:
    """Connected components of n nodes from edge lists (scipy's sparse graph routine)."""
    import numpy as np
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(left)), (left, right)), shape=(n, n))
    return list(connected_components(graph, directed=False)[1])
