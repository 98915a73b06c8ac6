"""`prep export --dry-run`: the plan a real run would make, per UTM zone and in total, printed
without network or credentials (with Earth Engine's requests or tasks and hours, and with a
STAC source the scenes its search would find)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from gee_export.common.grid import Region
from gee_export.export import NoOutlinesHere, Plan


def print_dry_run(parts: list[Region], outlines: Path | None, source_dir: Path | None,
                  buffer_m: float, cell_size: int, layer: str | None, earth_engine,
                  stac: tuple | None = None, echo: Callable[[str], None] = print) -> None:
    """Print what a real run would plan, per UTM zone and in total, without network or
    credentials; with `earth_engine` (its EEOptions), the requests or tasks and hours."""
    from gee_export.export import earth_engine_estimate

    path = outlines or (Path(source_dir) / "outlines.gpkg" if source_dir else None)
    plans = _plans(parts, path, layer, buffer_m, cell_size, echo)
    summaries = [{**p.summary(), **({"zone": p.region.zone} if p.region.zone else {})}
                 for p in plans]
    total = {k: sum(s[k] for s in summaries) for k in ("cells", "pixels", "bytes_float32",
                                                       "area_km2")}
    if len(parts) > 1:
        chosen = parts[0].synthetic or path is not None and Path(path).is_file()
        total["region_km2"] = _region_km2(parts)
        echo(f"total over {len(plans)} UTM zones "
             f"{'with glaciers' if chosen else 'of the box (no outlines to choose them)'}"
             f": {total['cells']} cells, {total['pixels'] / 1e6:.1f} Mpx, "
             f"{total['bytes_float32'] / 1e9:.2f} GB as 11 float32 bands, "
             f"{total['area_km2']:.0f} km^2 of planned cells (planar, on the zones' UTM "
             "grids, which overlap past each zone line); the region itself is "
             f"{total['region_km2']:.0f} km^2 on the ellipsoid")
    estimate = earth_engine_estimate(total["cells"], earth_engine.target,
                                     earth_engine.workers) if earth_engine else None
    if estimate:
        echo(estimate["says"])
    if path is None and source_dir is None and not parts[0].synthetic:
        echo("note: an upper bound. A real Earth Engine run without --outlines chooses its "
             "cells near GLIMS outlines, which it fetches first; a dry run has no "
             "network, so the whole bounding box above is planned. Give --outlines to "
             "see the real plan.")
    out = summaries[0] if len(parts) == 1 else {"zones": summaries, "total": total}
    echo(json.dumps({**out, **({"earth_engine": estimate} if estimate else {})}, indent=2))
    if stac is not None:
        from gee_export.remote.options import dry_run_scenes

        dry_run_scenes(plans, *stac, echo)


def _plans(parts: list[Region], path: Path | None, layer: str | None, buffer_m: float,
           cell_size: int, echo: Callable[[str], None]) -> list[Plan]:
    """Each part's plan, said as it is made; a UTM zone with no glacier outline is said and
    left out (a region of one part with none fails, as does a region with none in any)."""
    from gee_export.export import plan_cells

    plans = []
    for part in parts:
        frame, source = _dry_run_outlines(part, path, layer, echo)
        try:
            plans.append(plan_cells(part, frame, buffer_m, cell_size,
                                    f"{source} buffered by {buffer_m:g} m" if source else ""))
        except NoOutlinesHere:
            if len(parts) == 1:
                raise
            echo(f"UTM zone {part.zone}: no glacier outline lies in it; nothing to export")
            continue
        if len(parts) > 1:
            echo(f"UTM zone {part.zone}: " + plans[-1].describe())
        else:
            echo(plans[-1].describe())
    if not plans:
        raise NoOutlinesHere("no glacier outline lies in any UTM zone of the region")
    return plans


def _region_km2(parts: list[Region]) -> float:
    """The region's own area on the WGS84 ellipsoid: its polygon, else its lon/lat box
    (edges along the parallels, not geodesics), which its zones' parts cover together."""
    import numpy as np
    import shapely
    from shapely import wkt
    from shapely.geometry import box

    from gee_export.common.outlines import ellipsoidal_area_km2

    if parts[0].geometry_wkt:
        shape = wkt.loads(parts[0].geometry_wkt)
    else:
        bounds = np.array([p.lonlat_bounds for p in parts])
        shape = box(bounds[:, 0].min(), bounds[:, 1].min(), bounds[:, 2].max(),
                    bounds[:, 3].max())
    return float(ellipsoidal_area_km2([shapely.segmentize(shape, 0.01)], "EPSG:4326")[0])


def _dry_run_outlines(part: Region, path: Path | None, layer: str | None,
                      echo: Callable[[str], None]):
    """The outlines that choose a part's cells, and their name; (None, "") without."""
    from gee_export.common.outlines import read_outlines

    if part.synthetic and path is None:
        from gee_export.demo.scene import DemoScene, demo_outlines_frame

        return demo_outlines_frame(DemoScene(size=part.grid.width)), "the demo's outlines"
    if path is not None and Path(path).is_file():
        found = read_outlines(path, part.crs, layer=layer)
        for line in found.notes():
            echo(line)
        return found.frame, Path(path).name
    return None, ""
