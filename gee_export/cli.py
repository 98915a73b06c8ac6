"""`prep export`, `prep status`, `prep pull`: thin commands over the export library."""
from __future__ import annotations

import json
from pathlib import Path

import click

from gee_export.common.cli import (
    CONTEXT,
    AutoInt,
    FiniteFloat,
    Name,
    force_option,
    multiple_of,
    quiet_option,
    user_errors,
    wait_option,
    workspace_option,
)
from gee_export.common.errors import InputError, InputNotFoundError
from gee_export.common.layout import resolve_workspace
from gee_export.config import DEM_SOURCE_HMA, DEM_SOURCE_SRTM, FIRST_YEAR, ORBITS
from gee_export.demo.scene import DEMO_SEED, DEMO_SIZE
from gee_export.export import NoOutlinesHere
from gee_export.remote.options import source_kind_of, stac_options


def _today():
    from datetime import date

    return date.today()


def _this_year() -> int:
    return _today().year


@click.command(context_settings=CONTEXT)
@click.option("--region", default=None,
              help="Built-in region: qilian (the paper's study area), hma (High Mountain "
                   "Asia, one part per UTM zone) or demo (synthetic, no Earth Engine needed). "
                   "Not needed with --bbox or --region-file.")
@click.option("--year", type=click.IntRange(FIRST_YEAR, _this_year()), required=True,
              help="Year of the summer to composite.")
@click.option("--bbox", type=FiniteFloat(), nargs=4, default=None, metavar="W S E N",
              help="Any other region as a lon/lat box in degrees.")
@click.option("--region-file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Any other region as a polygon file (GeoJSON, GeoPackage).")
@click.option("--crs", default=None, help="One grid CRS for all of --bbox/--region-file. "
              "[default: the UTM zone of the region; a region across zones is exported in "
              "one part per zone, each on its zone's grid]")
@click.option("--name", type=Name(), default=None,
              help="Export directory name. [default: REGION-YEAR]")
@click.option("--outlines", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Glacier outlines that choose the cells to export and serve the DEM offset "
                   "and tiling. [default: outlines.gpkg of the source dir; on Earth Engine "
                   "GLIMS (GLIMS/current)]")
@click.option("--outlines-layer", default=None,
              help="The layer of the outlines file that holds the glacier polygons, in a file "
                   "of several (e.g. a GeoPackage). [default: the file's only polygon layer]")
@click.option("--buffer", "buffer_m", type=FiniteFloat(min=0), default=1000.0,
              help="Margin around outlines within which cells are exported, in metres.")
@click.option("--cell-size", type=click.IntRange(64, 4096), default=768,
              help="Cell side in pixels; one request/task/file per cell (768 px x 11 float32 "
                   "bands is 26 MB, half the 48 MB computePixels limit).")
@click.option("--source-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Run the recipe locally on rasters in this directory instead of Earth "
                   "Engine (see README, 'Local sources').")
@click.option("--source", "source_kind", type=click.Choice(["earthengine", "local", "stac"]),
              default=None, help="Where the scenes come from: Earth Engine, local rasters "
              "(--source-dir) or public STAC APIs (see README, 'Without Earth Engine'). "
              "[default: local with --source-dir or --region demo, else Earth Engine]")
@click.option("--stac-provider", type=click.Choice(["planetary-computer", "earth-search"]),
              default=None, help="--source stac: the API and collection layout to read.")
@click.option("--stac-api", default=None, metavar="URL",
              help="--source stac: search this STAC API instead (a mirror), with the layout "
                   "of --stac-provider. [default layout: planetary-computer]")
@click.option("--stac-collection", multiple=True, metavar="SENSOR=NAME",
              help="--source stac: another collection name for s2, s1 or dem (repeatable).")
@click.option("--hma-file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="--source stac: the HMA 8 m DEM mosaic as a GeoTIFF (ellipsoidal heights); "
                   "Copernicus GLO-30 fills where it has no data. [default: GLO-30 alone]")
@click.option("--dask", "dask_address", default=None, metavar="ADDRESS",
              help="Local sources or STAC: run the cells on this Dask scheduler's workers "
                   "(tcp://host:8786; the workspace on a file system they share).")
@click.option("--cloud-mask", type=click.Choice(["auto", "cloudscore", "scl"]), default="auto",
              help="Local sources: Cloud Score+ (CS_<date>*.tif, as on Earth Engine) or SCL; "
                   "auto uses Cloud Score+ when every scene has it.")
@click.option("--s1-window", nargs=2, default=None, metavar="MM-DD MM-DD",
              help="Sentinel-1 date window (end exclusive). [default: July; mid-June to "
                   "mid-August from 2022, after Sentinel-1B failed]")
@click.option("--s2-window", nargs=2, default=("07-01", "10-01"), metavar="MM-DD MM-DD",
              help="Sentinel-2 date window, end exclusive (paper: July-September).")
@click.option("--orbit", type=click.Choice(ORBITS), default="both",
              help="Sentinel-1 orbit direction(s).")
@click.option("--max-scene-cloud", type=FiniteFloat(0, 100), default=5.0,
              help="Scene-level cloud limit for Sentinel-2, in percent (paper: 5).")
@click.option("--cloud-score-threshold", type=FiniteFloat(0, 1), default=0.5,
              help="Cloud Score+ threshold; lower keeps more pixels.")
@click.option("--cloud-score-band", type=click.Choice(["cs_cdf", "cs"]), default="cs_cdf",
              help="Cloud Score+ band.")
@click.option("--s2-level", type=click.Choice(["l2a", "l1c"]), default="l2a",
              help="Sentinel-2 processing level; l1c only where L2A is missing (2017-2018).")
@click.option("--norm", "norm_mode", type=click.Choice(["fixed", "percentile"]), default="fixed",
              help="Normalization: fixed physical ranges or 2/98 percentiles over the region.")
@click.option("--norm-from", type=click.Path(path_type=Path), default=None,
              help="Reuse the normalization of another export (its export.json or directory).")
@click.option("--hma-asset", default=None,
              help="Earth Engine asset id of the HMA 8 m DEM mosaic (ellipsoidal heights).")
@click.option("--dem-source-map", is_flag=True,
              help=f"Also write dem_source/<cell>.tif: {DEM_SOURCE_HMA} where HMA, "
                   f"{DEM_SOURCE_SRTM} where SRTM filled.")
@click.option("--to", "target", type=click.Choice(["download", "gcs", "drive"]),
              default="download", help="Earth Engine: computePixels download, or batch tasks "
                                       "to Cloud Storage or Drive.")
@click.option("--bucket", default=None, help="Cloud Storage bucket for --to gcs.")
@click.option("--folder", default=None, help="Drive folder for --to drive.")
@click.option("--project", default=None, help="Google Cloud project for Earth Engine. "
              "[default: $EE_PROJECT]")
@click.option("--workers", type=AutoInt(1), default="auto",
              help="Local sources: processes (auto: the CPUs, up to 8). Earth Engine: "
                   "requests in flight (auto: 8; the default quota allows about 40).")
@click.option("--dry-run", is_flag=True, help="Print the plan (cells, pixels, bytes, area) and "
                                              "stop; needs no network or credentials.")
@click.option("--demo-size", type=click.IntRange(512, 16384), default=DEMO_SIZE,
              callback=multiple_of(256),
              help="Side of the synthetic demo scene in pixels (region demo only).")
@click.option("--demo-seed", type=click.IntRange(0, 2 ** 31 - 1), default=DEMO_SEED,
              help="Seed of the synthetic demo scene (region demo only): each seed is another "
                   "scene with its own glaciers, touching pairs, debris tongue and known change. "
                   "A seed other than the default names the region demo-sSEED (exports "
                   "demo-sSEED-YEAR; `train change --region demo-sSEED`).")
@force_option
@wait_option
@quiet_option
@workspace_option
@user_errors
def export(region, year, bbox, region_file, crs, name, outlines, outlines_layer, buffer_m,
           cell_size, source_dir, source_kind, stac_provider, stac_api, stac_collection,
           hma_file, dask_address, cloud_mask, s1_window, s2_window, orbit, max_scene_cloud,
           cloud_score_threshold, cloud_score_band, s2_level, norm_mode, norm_from, hma_asset,
           dem_source_map, target, bucket, folder, project, workers, dry_run, demo_size,
           demo_seed, force, wait, quiet, workspace):
    """Export the 11-band 10 m stack of a region and year: on Earth Engine, or with
    --source-dir on local rasters (--region demo generates synthetic ones)."""
    from dataclasses import replace

    from gee_export.common.grid import scale_warning
    from gee_export.common.layout import EXPORTS_DIR, product_name
    from gee_export.common.utm import part_name
    from gee_export.config import RecipeConfig
    from gee_export.export import load_norm_from
    from gee_export.regions import region_parts, resolve_region

    ws = resolve_workspace(workspace)
    if region is None and bbox is None and region_file is None:
        raise InputError("give --region NAME, --bbox W S E N or --region-file FILE")
    reg = resolve_region(region, bbox, region_file, crs)
    if not reg.synthetic and (demo_seed != DEMO_SEED or demo_size != DEMO_SIZE):
        raise InputError("--demo-seed and --demo-size are for --region demo")
    parts = region_parts(reg, crs is not None)
    stretched = scale_warning(reg) if len(parts) == 1 else None
    if stretched and not quiet:
        click.echo(stretched)
    if reg.synthetic:
        from gee_export.demo.scene import demo_region

        reg = parts[0] = demo_region(demo_size, demo_seed)
    cfg = RecipeConfig(year=year, s1_window=tuple(s1_window) if s1_window else None,
                       s2_window=tuple(s2_window), s1_orbit=orbit,
                       s2_max_scene_cloud=max_scene_cloud,
                       cloud_score_threshold=cloud_score_threshold,
                       cloud_score_band=cloud_score_band, s2_level=s2_level,
                       norm_mode=norm_mode, outline_buffer_m=buffer_m)
    if (season := cfg.incomplete_season(_today())) is not None:
        click.echo(season)
    norm = load_norm_from(norm_from) if norm_from else None
    kind = source_kind_of(source_kind, source_dir, reg.synthetic, dask_address)
    stac = stac_options(kind, stac_provider, stac_api, stac_collection, hma_file, cloud_mask)
    on_earth_engine = kind == "earthengine"
    _check_outlines(outlines, outlines_layer, on_earth_engine)
    _check_earth_engine_options(on_earth_engine, target, bucket, folder, orbit, kind == "stac")
    options = _export_options(on_earth_engine, cell_size, hma_asset, norm, target, bucket,
                              folder, workers, dem_source_map, cloud_mask, outlines_layer,
                              dask_address)
    if dry_run:
        return _dry_run(parts, outlines, source_dir, buffer_m, cell_size, outlines_layer,
                        options if on_earth_engine else None, (stac, cfg) if stac else None)
    if stac is not None:
        source_dir = stac
    elif reg.synthetic and source_dir is None:
        source_dir = _demo_sources(ws, reg, cfg, name, year, demo_size, demo_seed, quiet)
        if source_dir is None:
            return
    base = name or product_name(reg.name, year)
    if len(parts) == 1:
        _export_one(ws, parts[0], base, cfg, options, source_dir, outlines, outlines_layer,
                    project, force, wait, quiet)
        return
    done = []
    for part in parts:
        part_dir = ws / EXPORTS_DIR / part_name(base, part.zone)
        click.echo(f"UTM zone {part.zone} ({part.crs}): {part_dir.name}")
        try:
            _export_one(ws, part, part_dir.name, cfg, options, source_dir, outlines,
                        outlines_layer, project, force, wait, quiet)
        except NoOutlinesHere:
            click.echo(f"UTM zone {part.zone}: no glacier outline lies in it; nothing to export")
            continue
        done.append((part, part_dir))
        if options.norm_from is None and norm_mode == "percentile":
            options = replace(options, norm_from=load_norm_from(part_dir))
            click.echo(f"note: every zone takes the percentiles of {part_dir.name}, so that "
                       "one model reads every zone alike")
    _finish_zoned(ws, base, reg, year, done)


def _check_outlines(outlines: Path | None, layer: str | None, on_earth_engine: bool) -> None:
    """An outlines file that can be read, with its layer; a layer only with a file (or the
    source directory's outlines)."""
    if outlines is not None:
        from gee_export.common.outlines import check_outlines_readable

        check_outlines_readable(outlines, layer)
    elif layer is not None and on_earth_engine:
        raise InputError("--outlines-layer names a layer of --outlines; give --outlines FILE")


def _check_earth_engine_options(on_earth_engine: bool, target: str, bucket, folder,
                                orbit: str, stac: bool = False) -> None:
    """Options only Earth Engine honours, refused for local sources."""
    if not on_earth_engine and (target != "download" or bucket or folder):
        raise InputError("--to, --bucket and --folder are for Earth Engine exports; this one "
                         "runs on local sources")
    if not on_earth_engine and not stac and orbit != "both":
        raise InputError(f"--orbit {orbit}: local Sentinel-1 files (S1_<date>*.tif) do not "
                         "record their orbit direction, so the export cannot choose it; put "
                         f"only the {orbit} scenes in the source directory and leave --orbit "
                         "at both (Earth Engine exports honour --orbit)")


def _export_one(ws: Path, region, name: str, cfg, options, source_dir: Path | None,
                outlines: Path | None, outlines_layer: str | None, project: str | None,
                force: bool, wait: bool, quiet: bool) -> None:
    """One export (of a region, or of one UTM zone of it): local, STAC or on Earth Engine
    (`source_dir` is the STAC source's options for a STAC export)."""
    from gee_export.remote.export import StacOptions, run_stac_export

    if isinstance(source_dir, StacOptions):
        run_stac_export(ws, region, cfg, source_dir, outlines, options, force, name, wait,
                        quiet, click.echo)
        return
    if source_dir is not None:
        from gee_export.local_export import run_local_export

        run_local_export(ws, region, cfg, Path(source_dir), outlines, options, force, name,
                         wait, quiet, click.echo)
        return
    from gee_export.earthengine.runner import run_ee_export

    run_ee_export(ws, region, cfg, options, project=project, outlines_path=outlines,
                  outlines_layer=outlines_layer, force=force, name=name, wait=wait,
                  quiet=quiet, echo=click.echo)


def _export_options(on_earth_engine: bool, cell_size: int, hma_asset, norm, target, bucket,
                    folder, workers, dem_source_map: bool, cloud_mask: str, outlines_layer,
                    dask_address: str | None = None):
    """The export path's options: Earth Engine's or the local recipe's."""
    if on_earth_engine:
        from gee_export.earthengine.runner import EEOptions

        return EEOptions(cell_size, hma_asset, norm, target, bucket, folder,
                         8 if workers == "auto" else workers, dem_source_map)
    from gee_export.local_export import LocalOptions

    return LocalOptions(cell_size, cloud_mask, norm, dem_source_map, workers, outlines_layer,
                        dask_address)


def _finish_zoned(ws: Path, base: str, reg, year: int, done: list) -> None:
    """The zoned export's own manifest, once every zone is complete."""
    from gee_export.common.layout import EXPORTS_DIR, OUTLINES_FILE, ZONES_MANIFEST
    from gee_export.common.stage import Stage
    from gee_export.common.zoned import Part, write_zoned
    from gee_export.export import merge_zone_outlines

    if not done:
        raise NoOutlinesHere(f"region {reg.name}: no glacier outline lies in any of its UTM "
                             "zones")
    out = ws / EXPORTS_DIR / base
    Stage("zoned export", out / ZONES_MANIFEST).check_own()  # not into a plain export
    glaciers = merge_zone_outlines(out, [d for _, d in done])  # before the manifest: complete
    write_zoned(out, "export", [Part(p.zone, p.strip, d) for p, d in done], ws,
                region=reg.to_dict(), year=year,
                outlines={"file": OUTLINES_FILE, "count": glaciers} if glaciers else None)
    click.echo(f"zoned export complete: {ws / EXPORTS_DIR / base} ({len(done)} UTM zones: "
               f"{', '.join(p.zone for p, _ in done)}); give it as --export to `prep tile` and "
               "`train predict`")


def _dry_run(parts: list, outlines: Path | None, source_dir: Path | None, buffer_m: float,
             cell_size: int, layer: str | None, earth_engine, stac=None) -> None:
    """Print what a real run would plan, per UTM zone and in total, without network or
    credentials; with `earth_engine` (its EEOptions), the requests or tasks and hours."""
    from gee_export.export import earth_engine_estimate, plan_cells

    path = outlines or (Path(source_dir) / "outlines.gpkg" if source_dir else None)
    plans = []
    for part in parts:
        frame, source = _dry_run_outlines(part, path, layer)
        try:
            plans.append(plan_cells(part, frame, buffer_m, cell_size,
                                    f"{source} buffered by {buffer_m:g} m" if source else ""))
        except NoOutlinesHere:
            if len(parts) == 1:
                raise
            click.echo(f"UTM zone {part.zone}: no glacier outline lies in it; nothing to export")
            continue
        if len(parts) > 1:
            click.echo(f"UTM zone {part.zone}: " + plans[-1].describe())
        else:
            click.echo(plans[-1].describe())
    if not plans:
        raise NoOutlinesHere("no glacier outline lies in any UTM zone of the region")
    summaries = [{**p.summary(), **({"zone": p.region.zone} if p.region.zone else {})}
                 for p in plans]
    total = {k: sum(s[k] for s in summaries) for k in ("cells", "pixels", "bytes_float32",
                                                       "area_km2")}
    if len(parts) > 1:
        chosen = parts[0].synthetic or path is not None and Path(path).is_file()
        total["region_km2"] = _region_km2(parts)
        click.echo(f"total over {len(plans)} UTM zones "
                   f"{'with glaciers' if chosen else 'of the box (no outlines to choose them)'}"
                   f": {total['cells']} cells, {total['pixels'] / 1e6:.1f} Mpx, "
                   f"{total['bytes_float32'] / 1e9:.2f} GB as 11 float32 bands, "
                   f"{total['area_km2']:.0f} km^2 of planned cells (planar, on the zones' UTM "
                   "grids, which overlap past each zone line); the region itself is "
                   f"{total['region_km2']:.0f} km^2 on the ellipsoid")
    estimate = earth_engine_estimate(total["cells"], earth_engine.target,
                                     earth_engine.workers) if earth_engine else None
    if estimate:
        click.echo(estimate["says"])
    if path is None and source_dir is None and not parts[0].synthetic:
        click.echo("note: an upper bound. A real Earth Engine run without --outlines chooses its "
                   "cells near GLIMS outlines, which it fetches first; a dry run has no "
                   "network, so the whole bounding box above is planned. Give --outlines to "
                   "see the real plan.")
    out = summaries[0] if len(parts) == 1 else {"zones": summaries, "total": total}
    click.echo(json.dumps({**out, **({"earth_engine": estimate} if estimate else {})},
                          indent=2))
    if stac is not None:
        from gee_export.remote.options import dry_run_scenes

        dry_run_scenes(plans, *stac, click.echo)



def _region_km2(parts: list) -> float:
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


def _dry_run_outlines(part, path: Path | None, layer: str | None):
    """The outlines that choose a part's cells, and their name; (None, "") without."""
    from gee_export.common.outlines import read_outlines

    if part.synthetic and path is None:
        from gee_export.demo.scene import DemoScene, demo_outlines_frame

        return demo_outlines_frame(DemoScene(size=part.grid.width)), "the demo's outlines"
    if path is not None and Path(path).is_file():
        found = read_outlines(path, part.crs, layer=layer)
        for line in found.notes():
            click.echo(line)
        return found.frame, Path(path).name
    return None, ""


def _demo_sources(ws: Path, reg, cfg, name: str | None, year: int, size: int, seed: int,
                  quiet: bool) -> Path | None:
    """The synthetic demo sources for a year, generated only when needed; None when the
    export they would feed is already complete."""
    from gee_export.common.layout import EXPORTS_DIR, SOURCES_DIR, product_name
    from gee_export.common.locks import output_lock
    from gee_export.demo.sources import demo_sources_ready, write_demo_sources
    from gee_export.export import demo_source_dir

    source_dir = demo_source_dir(ws, year, size, seed)
    exp_dir = ws / EXPORTS_DIR / (name or product_name(reg.name, year))
    if not demo_sources_ready(source_dir, year, seed, size) and _complete_for(exp_dir, cfg, reg):
        click.echo(f"export {exp_dir} is complete; nothing to do (its SYNTHETIC sources were "
                   "removed, and are not needed)")
        return None
    if demo_sources_ready(source_dir, year, seed, size):  # reading needs no lock
        click.echo(f"using SYNTHETIC demo sources in {source_dir}")
        return source_dir
    with output_lock(ws / SOURCES_DIR / source_dir.name, echo=click.echo):
        if demo_sources_ready(source_dir, year, seed, size):
            click.echo(f"using SYNTHETIC demo sources in {source_dir}")
        else:
            click.echo(f"generating SYNTHETIC demo sources in {source_dir}")
            write_demo_sources(source_dir, year, seed, size, progress=None if quiet else
                               lambda i, n, what: click.echo(f"  [{i + 1}/{n}] {what}"))
    return source_dir


def _complete_for(exp_dir: Path, cfg, reg) -> bool:
    """Whether a complete export of this recipe and grid is already at exp_dir."""
    from gee_export.common.atomic import as_stored

    mf = exp_dir / "export.json"
    if not mf.is_file():
        return False
    m = json.loads(mf.read_text())
    p = m.get("parameters", {})
    return bool(m.get("complete")) and p.get("recipe") == as_stored(cfg.to_dict()) and \
        p.get("grid") == as_stored(reg.grid.to_dict())


def _export_dir(ws: Path, export: Path | None):
    """The given export, else the most recently touched one, complete or not (status and pull
    are about exports still in progress)."""
    from gee_export.common.layout import EXPORT_MANIFEST, EXPORTS_DIR
    from gee_export.stack import ExportDir

    if export is not None:
        return ExportDir.open(Path(export))
    found = sorted((ws / EXPORTS_DIR).glob(f"*/{EXPORT_MANIFEST}"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise InputNotFoundError(f"no export in {ws / EXPORTS_DIR}; run `prep export` first")
    click.echo(f"--export: {found[-1].parent} (the most recently changed of {len(found)} in "
               f"{ws / EXPORTS_DIR}; give --export to choose another)")
    return ExportDir.open(found[-1].parent)


export_option = click.option("--export", "export_dir", type=click.Path(path_type=Path),
                             default=None, help="Export directory. [default: the newest one, "
                                                "complete or not]")


@click.command(context_settings=CONTEXT)
@export_option
@click.option("--project", default=None, help="Google Cloud project. [default: $EE_PROJECT]")
@wait_option
@workspace_option
@user_errors
def status(export_dir, project, wait, workspace):
    """Show an export's cells by state; for batch exports, ask Earth Engine for the task
    states and submit the cells still waiting for room in its queue."""
    from gee_export.common.locks import output_lock
    from gee_export.earthengine.batch import continue_queue, refresh_status, state_counts
    from gee_export.earthengine.client import EarthEngineClient

    exp = _export_dir(resolve_workspace(workspace), export_dir)
    if exp.manifest.get("batch") and not exp.manifest.get("complete"):
        with output_lock(exp.path, wait, click.echo):  # it records task states
            client = EarthEngineClient.connect(project or exp.manifest.get("project"))
            refresh_status(exp, client)
            continue_queue(exp, client, echo=click.echo)
    else:
        exp.pending()  # reads only: a read-only workspace shows its status too
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
@wait_option
@workspace_option
@user_errors
def pull(export_dir, from_dir, project, wait, workspace):
    """Bring finished batch-export cells into the export's stack/ and complete it."""
    from gee_export.common.locks import output_lock
    from gee_export.earthengine.batch import pull_cells
    from gee_export.earthengine.client import EarthEngineClient
    from gee_export.stack import ExportDir

    exp = _export_dir(resolve_workspace(workspace), export_dir)
    if exp.manifest.get("complete"):  # read without the lock: a read-only workspace too
        click.echo(f"export {exp.path} is complete; nothing to pull")
        return
    with output_lock(exp.path, wait, click.echo):
        exp = ExportDir.open(exp.path)  # as the holder of the lock left it
        if exp.manifest.get("complete"):
            click.echo(f"export {exp.path} is complete; nothing to pull")
            return
        client = None if from_dir else EarthEngineClient.connect(project or
                                                                 exp.manifest.get("project"))
        pull_cells(exp, client, from_dir, click.echo)
