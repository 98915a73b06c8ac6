"""`prep export`, `prep status`, `prep pull`: thin commands over the export library."""
from __future__ import annotations

import json
from pathlib import Path

import click

from gee_export.common.cli import CONTEXT, quiet_option, user_errors, workspace_option
from gee_export.common.errors import GlacierError
from gee_export.common.layout import resolve_workspace


@click.command(context_settings=CONTEXT)
@click.option("--region", default=None,
              help="Built-in region: qilian (the paper's study area) or demo (synthetic, "
                   "no Earth Engine needed). Not needed with --bbox or --region-file.")
@click.option("--year", type=int, required=True, help="Year of the summer to composite (>= 2017).")
@click.option("--bbox", type=float, nargs=4, default=None, metavar="W S E N",
              help="Any other region as a lon/lat box in degrees.")
@click.option("--region-file", type=click.Path(path_type=Path), default=None,
              help="Any other region as a polygon file (GeoJSON, GeoPackage).")
@click.option("--crs", default=None, help="Grid CRS for --bbox/--region-file. "
              "[default: the UTM zone of the region's centre]")
@click.option("--name", default=None, help="Export directory name. [default: REGION-YEAR]")
@click.option("--outlines", type=click.Path(path_type=Path), default=None,
              help="Glacier outlines that choose the cells to export and serve the DEM offset "
                   "and tiling. [default: outlines.gpkg of the source dir; on Earth Engine "
                   "GLIMS (GLIMS/current)]")
@click.option("--buffer", "buffer_m", type=float, default=1000.0,
              help="Margin around outlines within which cells are exported, in metres.")
@click.option("--cell-size", type=int, default=768,
              help="Cell side in pixels; one request/task/file per cell (768 px x 11 float32 "
                   "bands is 26 MB, half the 48 MB computePixels limit).")
@click.option("--source-dir", type=click.Path(path_type=Path), default=None,
              help="Run the recipe locally on rasters in this directory instead of Earth "
                   "Engine (see README, 'Local sources').")
@click.option("--s1-window", nargs=2, default=None, metavar="MM-DD MM-DD",
              help="Sentinel-1 date window (end exclusive). [default: July; mid-June to "
                   "mid-August from 2022, after Sentinel-1B failed]")
@click.option("--s2-window", nargs=2, default=("07-01", "10-01"), metavar="MM-DD MM-DD",
              help="Sentinel-2 date window, end exclusive (paper: July-September).")
@click.option("--orbit", type=click.Choice(["both", "ascending", "descending"]), default="both",
              help="Sentinel-1 orbit direction(s).")
@click.option("--max-scene-cloud", type=float, default=5.0,
              help="Scene-level cloud limit for Sentinel-2, in percent (paper: 5).")
@click.option("--cloud-score-threshold", type=float, default=0.5,
              help="Cloud Score+ threshold (0-1); lower keeps more pixels (Earth Engine only).")
@click.option("--cloud-score-band", type=click.Choice(["cs_cdf", "cs"]), default="cs_cdf",
              help="Cloud Score+ band (Earth Engine only).")
@click.option("--s2-level", type=click.Choice(["l2a", "l1c"]), default="l2a",
              help="Sentinel-2 processing level; l1c only where L2A is missing (2017-2018).")
@click.option("--norm", "norm_mode", type=click.Choice(["fixed", "percentile"]), default="fixed",
              help="Normalization: fixed physical ranges or 2/98 percentiles over the region.")
@click.option("--norm-from", type=click.Path(path_type=Path), default=None,
              help="Reuse the normalization of another export (its export.json or directory).")
@click.option("--hma-asset", default=None,
              help="Earth Engine asset id of the HMA 8 m DEM mosaic (ellipsoidal heights).")
@click.option("--dem-source-map", is_flag=True,
              help="Also write dem_source/<cell>.tif: 1 where HMA, 2 where SRTM filled.")
@click.option("--to", "target", type=click.Choice(["download", "gcs", "drive"]),
              default="download", help="Earth Engine: computePixels download, or batch tasks "
                                       "to Cloud Storage or Drive.")
@click.option("--bucket", default=None, help="Cloud Storage bucket for --to gcs.")
@click.option("--folder", default=None, help="Drive folder for --to drive.")
@click.option("--project", default=None, help="Google Cloud project for Earth Engine. "
              "[default: $EE_PROJECT]")
@click.option("--workers", type=int, default=8,
              help="Earth Engine requests in flight (default quota allows about 40).")
@click.option("--dry-run", is_flag=True, help="Print the plan (cells, pixels, bytes, area) and "
                                              "stop; needs no network or credentials.")
@click.option("--force", is_flag=True, help="Replace an export made with other parameters.")
@click.option("--demo-size", type=int, default=2048,
              help="Side of the synthetic demo scene in pixels (region demo only).")
@quiet_option
@workspace_option
@user_errors
def export(region, year, bbox, region_file, crs, name, outlines, buffer_m, cell_size, source_dir,
           s1_window, s2_window, orbit, max_scene_cloud, cloud_score_threshold, cloud_score_band,
           s2_level, norm_mode, norm_from, hma_asset, dem_source_map, target, bucket, folder,
           project, workers, dry_run, force, demo_size, quiet, workspace):
    """Export the 11-band 10 m stack of a region and year (DESIGN.md section 1-3)."""
    from gee_export.common.outlines import read_outlines
    from gee_export.config import RecipeConfig
    from gee_export.export import demo_source_dir, load_norm_from, plan_cells, run_local_export
    from gee_export.regions import resolve_region

    ws = resolve_workspace(workspace)
    if region is None and bbox is None and region_file is None:
        raise GlacierError("give --region NAME, --bbox W S E N or --region-file FILE")
    reg = resolve_region(region, bbox, region_file, crs)
    if reg.synthetic and demo_size != reg.grid.width:
        from gee_export.demo import demo_region

        reg = demo_region(demo_size)
    if cell_size < 64:
        raise GlacierError(f"--cell-size {cell_size}: use at least 64 pixels")
    cfg = RecipeConfig(year=year, s1_window=tuple(s1_window) if s1_window else None,
                       s2_window=tuple(s2_window), s1_orbit=orbit,
                       s2_max_scene_cloud=max_scene_cloud,
                       cloud_score_threshold=cloud_score_threshold,
                       cloud_score_band=cloud_score_band, s2_level=s2_level,
                       norm_mode=norm_mode, outline_buffer_m=buffer_m)
    norm = load_norm_from(norm_from) if norm_from else None

    if reg.synthetic and source_dir is None:
        from gee_export.demo import write_demo_sources

        source_dir = demo_source_dir(ws, year, demo_size)
        if not dry_run:
            click.echo(f"generating SYNTHETIC demo sources in {source_dir}")
            write_demo_sources(source_dir, year, size=demo_size, progress=None if quiet else
                               lambda i, n, what: click.echo(f"  [{i + 1}/{n}] {what}"))
    if dry_run:
        outl = None
        if outlines:
            outl = read_outlines(outlines, reg.crs).frame
        elif source_dir and (Path(source_dir) / "outlines.gpkg").is_file():
            outl = read_outlines(Path(source_dir) / "outlines.gpkg", reg.crs).frame
        plan = plan_cells(reg, outl, buffer_m, cell_size)
        click.echo(plan.describe())
        click.echo(json.dumps(plan.summary(), indent=2))
        return
    if source_dir is not None:
        run_local_export(ws, reg, cfg, Path(source_dir), outlines, cell_size, norm, force,
                         name, dem_source_map, quiet, click.echo)
        return
    from gee_export.earthengine.runner import run_ee_export

    run_ee_export(ws, reg, cfg, project=project, outlines_path=outlines, cell_size=cell_size,
                  norm_from=norm, hma_asset=hma_asset, target=target, bucket=bucket,
                  folder=folder, workers=workers, dem_source_map=dem_source_map, force=force,
                  name=name, quiet=quiet, echo=click.echo)


def _export_dir(ws: Path, export: Path | None):
    """The given export, else the most recently touched one, complete or not (status and pull
    are about exports still in progress)."""
    from gee_export.common.layout import EXPORT_MANIFEST, EXPORTS_DIR
    from gee_export.stack import ExportDir

    if export is not None:
        return ExportDir.open(Path(export))
    found = sorted((ws / EXPORTS_DIR).glob(f"*/{EXPORT_MANIFEST}"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise GlacierError(f"no export in {ws / EXPORTS_DIR}; run `prep export` first")
    return ExportDir.open(found[-1].parent)


export_option = click.option("--export", "export_dir", type=click.Path(path_type=Path),
                             default=None, help="Export directory. [default: the newest one, "
                                                "complete or not]")


@click.command(context_settings=CONTEXT)
@export_option
@click.option("--project", default=None, help="Google Cloud project. [default: $EE_PROJECT]")
@workspace_option
@user_errors
def status(export_dir, project, workspace):
    """Show an export's cells by state; for batch exports, ask Earth Engine for task states."""
    from gee_export.earthengine.runner import EarthEngineClient, refresh_status, state_counts

    exp = _export_dir(resolve_workspace(workspace), export_dir)
    if exp.manifest.get("batch") and not exp.manifest.get("complete"):
        counts = refresh_status(exp, EarthEngineClient.connect(project or
                                                               exp.manifest.get("project")))
    else:
        exp.pending()
        counts = state_counts(exp)
    total = sum(counts.values())
    click.echo(f"{exp.path}: {'complete' if exp.manifest.get('complete') else 'incomplete'}, "
               f"{total} cells")
    for state, n in counts.items():
        click.echo(f"  {state:<10} {n}")
    failed = [(cid, c.get("error", "")) for cid, c in exp.cells.items()
              if c.get("state") in ("failed", "FAILED")]
    for cid, err in failed[:10]:
        click.echo(f"  {cid}: {err}")


@click.command(context_settings=CONTEXT)
@export_option
@click.option("--from-dir", type=click.Path(path_type=Path, exists=True, file_okay=False),
              default=None, help="Take finished cell files (<cell>.tif) from this folder, e.g. "
                                 "a downloaded Drive folder, instead of Cloud Storage.")
@click.option("--project", default=None, help="Google Cloud project. [default: $EE_PROJECT]")
@workspace_option
@user_errors
def pull(export_dir, from_dir, project, workspace):
    """Bring finished batch-export cells into the export's stack/ and complete it."""
    from gee_export.earthengine.runner import EarthEngineClient, pull_cells

    exp = _export_dir(resolve_workspace(workspace), export_dir)
    if exp.manifest.get("complete"):
        click.echo(f"export {exp.path} is complete; nothing to pull")
        return
    client = None if from_dir else EarthEngineClient.connect(project or
                                                             exp.manifest.get("project"))
    pull_cells(exp, client, from_dir, click.echo)
