"""The imagery record: each year's sensors, dates and pixel size as its export recorded them,
for change.json."""
from __future__ import annotations

import math

from gee_export.common.errors import InputError
from gee_export.common.layout import read_manifest, resolved_path

from .measure import YearAreas


def imagery(per_year: list[YearAreas], manifests: list[dict]) -> list[dict]:
    """Each year's imagery as its export recorded it: the windows (dates) of each sensor,
    the sensors and the pixel size."""
    out = []
    for y, m in zip(per_year, manifests):
        exp = {}
        if m.get("export") and m.get("kind") == "prediction":
            try:
                exp = read_manifest(resolved_path(m["export"], y.prediction), "export")
            except (InputError, OSError):
                exp = {}
        recipe = (exp.get("parameters") or {}).get("recipe") or exp.get("recipe") or {}
        out.append({"year": y.year, "pixel_m": round(math.sqrt(y.pixel_km2) * 1e3, 6),
                    "sentinel1_dates": recipe.get("s1_dates"),
                    "sentinel2_dates": recipe.get("s2_dates"),
                    "dates_note": "[first day, day after the last)",
                    "sentinel2_collection": recipe.get("s2_collection"),
                    "sensors": ["Sentinel-1 GRD (VV, VH)", "Sentinel-2 "
                                f"{str(recipe.get('s2_level', '')).upper()}",
                                "DEM (HMA mosaic, SRTM fallback)"] if recipe else None,
                    "source": exp.get("source")})
    return out
