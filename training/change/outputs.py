"""Writing a change: change.csv, change.gpkg (the outlines), change.png and change.json (with
the method, the imagery and the truth check), and the line that says the total."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from gee_export.common.atomic import write_bytes, write_json
from gee_export.common.layout import CHANGE_FILES, base_manifest, now_iso

from ..trend import METHOD as RATE_METHOD
from ..uncertainty import CORRELATION_MODEL
from .imagery_record import imagery
from .measure import YearAreas
from .method import AREAS_METHOD, TOTAL_METHOD, UNCERTAINTY_METHOD
from .truth import truth_check

if TYPE_CHECKING:
    from gee_export.common.outlines import Outlines


def write_change(out: Path, params: dict, ref: Outlines, per_year: list[YearAreas],
                 table: list[dict], manifests: list[dict], models: int, pooled: dict,
                 echo: Callable[[str], None]) -> None:
    """change.csv, change.gpkg, change.png and change.json (last: it says the change is
    complete), then the line that says the total."""
    from ..plots import change_png

    manifest_name, csv_name, gpkg_name, png_name = CHANGE_FILES
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, list(table[0]))
    w.writeheader()
    w.writerows(table)
    write_bytes(out / csv_name, buf.getvalue().encode())
    _write_outlines(out / gpkg_name, ref, per_year)
    change_png(out / png_name, ref, per_year, table)
    total = table[-1]
    tta = per_year[0].bounds == "tta spread"
    model_term = " and ".join(filter(None, [f"ensemble of {models} checkpoints" if models > 1
                                            else "", "TTA spread" if tta else ""]))
    write_json(out / manifest_name, base_manifest(
        "change", parameters=params, complete=True, completed_at=now_iso(),
        years=[y.year for y in per_year], glaciers=len(ref), models=models, total=total,
        imagery=imagery(per_year, manifests), uncertainty=pooled,
        truth_check=truth_check(table, per_year, manifests),
        method={"areas": AREAS_METHOD, "uncertainty": UNCERTAINTY_METHOD, "rate": RATE_METHOD,
                "total": TOTAL_METHOD, "correlation_model": CORRELATION_MODEL,
                "model_term": model_term or "not estimated: one checkpoint without --tta "
                                            "(repeat --checkpoint with other seeds, or add "
                                            "--tta); its columns are empty",
                "min_observed": params["config"]["min_observed"],
                "edge_envelope": f"rate_edge_low/high: the extreme least-squares slopes within "
                                 f"each year's areas at {per_year[0].bounds} (a sensitivity "
                                 "to the ice edge, not a confidence interval)"}))
    _say_total(out, total, per_year, table, pooled, echo)


def _say_total(out: Path, total: dict, per_year: list[YearAreas], table: list[dict],
               pooled: dict, echo: Callable[[str], None]) -> None:
    lo, hi = total["rate_ci90_low"], total["rate_ci90_high"]
    flagged = [r["glacier_id"] for r in table[:-1] if r["flags"]]
    significant = sum(bool(r["significant"]) for r in table[:-1])
    rated = sum(r["rate_km2_per_year"] is not None for r in table[:-1])
    echo(f"change complete: {out} (total {_signed(total['rate_km2_per_year'])} km^2/yr, 90 % "
         f"interval [{_signed(lo)}, {_signed(hi)}], over {per_year[0].year}-"
         f"{per_year[-1].year}; {significant} of {rated} glaciers change significantly"
         + ("" if pooled["bias_corrected"] else "; areas NOT bias-corrected (no error model)")
         + (f"; years left out for {', '.join(flagged)} (seen too little, see flags)"
            if flagged else "") + ")")


def _signed(v: float | None) -> str:
    return "n/a" if v is None else f"{v:+.3f}"


def _write_outlines(path: Path, ref: Outlines, per_year: list[YearAreas]) -> None:
    import geopandas as gpd

    from gee_export.common.outlines import ellipsoidal_area_km2
    from gee_export.common.vectors import write_gpkg

    rows, geoms = [], []
    for y in per_year:
        for k in sorted(y.outlines):
            rows.append({"glacier_id": ref.ids[k - 1], "year": y.year})
            geoms.append(y.outlines[k])
    crs = ref.frame.crs
    frame = gpd.GeoDataFrame(rows, geometry=geoms, crs=crs) if rows else gpd.GeoDataFrame(
        {"glacier_id": [], "year": []}, geometry=[], crs=crs)
    frame["area_km2"] = ellipsoidal_area_km2(frame.geometry.values, crs) if rows else []
    write_gpkg(frame, path, "outlines")
