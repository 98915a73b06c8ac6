"""Where and when an item is: a projected rectangle's footprint in WGS84, the time an export's
images span (their composite windows), and a collection's extent over its items."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pystac


def composite_window(export_manifest: dict) -> tuple[datetime, datetime]:
    """The time the export's images span: from the first day of the earliest composite window
    (Sentinel-1 or -2) to the end of the last (the recorded windows end exclusively)."""
    recipe = export_manifest.get("recipe") or {}
    windows = [recipe[k] for k in ("s1_dates", "s2_dates") if recipe.get(k)]
    if not windows:
        return completed_window(export_manifest)
    start = min(_day(w[0]) for w in windows)
    end = max(_day(w[1]) for w in windows) - timedelta(seconds=1)
    return start, end


def footprint(crs: str, bounds: tuple[float, float, float, float]) -> tuple[dict, list[float]]:
    """A projected rectangle in WGS84, its edges densified (a UTM rectangle is not one in
    longitude and latitude): a GeoJSON polygon and its bbox."""
    from pyproj import Transformer

    w, s, e, n = bounds
    k = 8
    xs = ([w + (e - w) * i / k for i in range(k)] + [e] * k
          + [e - (e - w) * i / k for i in range(k)] + [w] * k)
    ys = ([s] * k + [s + (n - s) * i / k for i in range(k)]
          + [n] * k + [n - (n - s) * i / k for i in range(k)])
    lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(xs, ys)
    ring = [[round(x, 7), round(y, 7)] for x, y in zip(lon, lat)]
    ring.append(ring[0])
    return ({"type": "Polygon", "coordinates": [ring]},
            [min(lon), min(lat), max(lon), max(lat)])


def set_extent(col: pystac.Collection) -> None:
    """A collection's extent: the box and the time span of its items (none: left as it is)."""
    import pystac

    items = list(col.get_items())
    if not items:
        return
    boxes = [i.bbox for i in items]
    starts = [i.common_metadata.start_datetime or i.datetime for i in items]
    ends = [i.common_metadata.end_datetime or i.datetime for i in items]
    col.extent = pystac.Extent(
        pystac.SpatialExtent([[min(b[0] for b in boxes), min(b[1] for b in boxes),
                               max(b[2] for b in boxes), max(b[3] for b in boxes)]]),
        pystac.TemporalExtent([[min(starts), max(ends)]]))


def completed_window(m: dict) -> tuple[datetime, datetime]:
    """A product without composite windows: the moment it was completed (else created, else
    now), as a range of no length."""
    t = _parse(m.get("completed_at") or m.get("created_at")) or datetime.now(timezone.utc)
    return t, t


def _day(text: str) -> datetime:
    return datetime.strptime(text[:10], "%Y-%m-%d").replace(tzinfo=timezone.utc)


def _parse(text: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(text))
    except ValueError:
        return None
