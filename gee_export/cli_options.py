"""`prep export`'s options, in the groups a reader looks for: the region, the cells, the
source of the scenes, the recipe, Earth Engine's delivery, and the synthetic demo. Each group
is one decorator (common/cli.option_group); `--help` lists the options in the order here."""
from __future__ import annotations

from pathlib import Path

import click

from gee_export.common.cli import AutoInt, FiniteFloat, Name, multiple_of, option_group
from gee_export.config import DEM_SOURCE_HMA, DEM_SOURCE_SRTM, FIRST_YEAR, ORBITS
from gee_export.demo.scene import DEMO_SEED, DEMO_SIZE


def _this_year() -> int:
    from datetime import date

    return date.today().year


region_options = option_group(
    click.option("--region", default=None,
                 help="Built-in region: qilian (the paper's study area), hma (High Mountain "
                      "Asia, one part per UTM zone) or demo (synthetic, no Earth Engine "
                      "needed). Not needed with --bbox or --region-file."),
    click.option("--year", type=click.IntRange(FIRST_YEAR, _this_year()), required=True,
                 help="Year of the summer to composite."),
    click.option("--bbox", type=FiniteFloat(), nargs=4, default=None, metavar="W S E N",
                 help="Any other region as a lon/lat box in degrees."),
    click.option("--region-file", type=click.Path(path_type=Path, dir_okay=False),
                 default=None, help="Any other region as a polygon file (GeoJSON, "
                                    "GeoPackage)."),
    click.option("--crs", default=None, help="One grid CRS for all of --bbox/--region-file. "
                 "[default: the UTM zone of the region; a region across zones is exported in "
                 "one part per zone, each on its zone's grid]"),
    click.option("--name", type=Name(), default=None,
                 help="Export directory name. [default: REGION-YEAR]"))

cell_options = option_group(
    click.option("--outlines", type=click.Path(path_type=Path, dir_okay=False), default=None,
                 help="Glacier outlines that choose the cells to export and serve the DEM "
                      "offset and tiling. [default: outlines.gpkg of the source dir; on Earth "
                      "Engine GLIMS (GLIMS/current)]"),
    click.option("--outlines-layer", default=None,
                 help="The layer of the outlines file that holds the glacier polygons, in a "
                      "file of several (e.g. a GeoPackage). [default: the file's only polygon "
                      "layer]"),
    click.option("--buffer", "buffer_m", type=FiniteFloat(min=0), default=1000.0,
                 help="Margin around outlines within which cells are exported, in metres."),
    click.option("--cell-size", type=click.IntRange(64, 4096), default=768,
                 help="Cell side in pixels; one request/task/file per cell (768 px x 11 "
                      "float32 bands is 26 MB, half the 48 MB computePixels limit)."))

source_options = option_group(
    click.option("--source-dir", type=click.Path(path_type=Path, file_okay=False),
                 default=None, help="Run the recipe locally on rasters in this directory "
                                    "instead of Earth Engine (see README, 'Local sources')."),
    click.option("--source", "source_kind",
                 type=click.Choice(["earthengine", "local", "stac"]), default=None,
                 help="Where the scenes come from: Earth Engine, local rasters (--source-dir) "
                      "or public STAC APIs (see README, 'Without Earth Engine'). [default: "
                      "local with --source-dir or --region demo, else Earth Engine]"),
    click.option("--stac-provider", type=click.Choice(["planetary-computer", "earth-search"]),
                 default=None, help="--source stac: the API and collection layout to read."),
    click.option("--stac-api", default=None, metavar="URL",
                 help="--source stac: search this STAC API instead (a mirror), with the "
                      "layout of --stac-provider. [default layout: planetary-computer]"),
    click.option("--stac-collection", multiple=True, metavar="SENSOR=NAME",
                 help="--source stac: another collection name for s2, s1 or dem "
                      "(repeatable)."),
    click.option("--hma-file", type=click.Path(path_type=Path, dir_okay=False), default=None,
                 help="--source stac: the HMA 8 m DEM mosaic as a GeoTIFF (ellipsoidal "
                      "heights); Copernicus GLO-30 fills where it has no data. [default: "
                      "GLO-30 alone]"),
    click.option("--dask", "dask_address", default=None, metavar="ADDRESS",
                 help="Local sources or STAC: run the cells on this Dask scheduler's workers "
                      "(tcp://host:8786; the workspace on a file system they share)."),
    click.option("--cloud-mask", type=click.Choice(["auto", "cloudscore", "scl"]),
                 default="auto", help="Local sources: Cloud Score+ (CS_<date>*.tif, as on "
                                      "Earth Engine) or SCL; auto uses Cloud Score+ when "
                                      "every scene has it."))

recipe_options = option_group(
    click.option("--s1-window", nargs=2, default=None, metavar="MM-DD MM-DD",
                 help="Sentinel-1 date window (end exclusive). [default: July; mid-June to "
                      "mid-August from 2022, after Sentinel-1B failed]"),
    click.option("--s2-window", nargs=2, default=("07-01", "10-01"), metavar="MM-DD MM-DD",
                 help="Sentinel-2 date window, end exclusive (paper: July-September)."),
    click.option("--orbit", type=click.Choice(ORBITS), default="both",
                 help="Sentinel-1 orbit direction(s)."),
    click.option("--max-scene-cloud", type=FiniteFloat(0, 100), default=5.0,
                 help="Scene-level cloud limit for Sentinel-2, in percent (paper: 5)."),
    click.option("--cloud-score-threshold", type=FiniteFloat(0, 1), default=0.5,
                 help="Cloud Score+ threshold; lower keeps more pixels."),
    click.option("--cloud-score-band", type=click.Choice(["cs_cdf", "cs"]), default="cs_cdf",
                 help="Cloud Score+ band."),
    click.option("--s2-level", type=click.Choice(["l2a", "l1c"]), default="l2a",
                 help="Sentinel-2 processing level; l1c only where L2A is missing "
                      "(2017-2018)."),
    click.option("--norm", "norm_mode", type=click.Choice(["fixed", "percentile"]),
                 default="fixed", help="Normalization: fixed physical ranges or 2/98 "
                                       "percentiles over the region."),
    click.option("--norm-from", type=click.Path(path_type=Path), default=None,
                 help="Reuse the normalization of another export (its export.json or "
                      "directory)."),
    click.option("--hma-asset", default=None,
                 help="Earth Engine asset id of the HMA 8 m DEM mosaic (ellipsoidal "
                      "heights)."),
    click.option("--dem-source-map", is_flag=True,
                 help=f"Also write dem_source/<cell>.tif: {DEM_SOURCE_HMA} where HMA, "
                      f"{DEM_SOURCE_SRTM} where SRTM filled."))

earth_engine_options = option_group(
    click.option("--to", "target", type=click.Choice(["download", "gcs", "drive"]),
                 default="download", help="Earth Engine: computePixels download, or batch "
                                          "tasks to Cloud Storage or Drive."),
    click.option("--bucket", default=None, help="Cloud Storage bucket for --to gcs."),
    click.option("--folder", default=None, help="Drive folder for --to drive."),
    click.option("--project", default=None, help="Google Cloud project for Earth Engine. "
                 "[default: $EE_PROJECT]"),
    click.option("--workers", type=AutoInt(1), default="auto",
                 help="Local sources: processes (auto: the CPUs, up to 8). Earth Engine: "
                      "requests in flight (auto: 8; the default quota allows about 40)."))

dry_run_option = click.option("--dry-run", is_flag=True,
                              help="Print the plan (cells, pixels, bytes, area) and stop; "
                                   "needs no network or credentials.")

demo_options = option_group(
    click.option("--demo-size", type=click.IntRange(512, 16384), default=DEMO_SIZE,
                 callback=multiple_of(256),
                 help="Side of the synthetic demo scene in pixels (region demo only)."),
    click.option("--demo-seed", type=click.IntRange(0, 2 ** 31 - 1), default=DEMO_SEED,
                 help="Seed of the synthetic demo scene (region demo only): each seed is "
                      "another scene with its own glaciers, touching pairs, debris tongue and "
                      "known change. A seed other than the default names the region "
                      "demo-sSEED (exports demo-sSEED-YEAR; `train change --region "
                      "demo-sSEED`)."))
