"""`prep export`, `prep status`, `prep pull`: thin commands over the export library."""
from __future__ import annotations

import json
from pathlib import Path

import click

from gee_export.cli_options import (
    cell_options,
    demo_options,
    dry_run_option,
    earth_engine_options,
    recipe_options,
    region_options,
    source_options,
)
from gee_export.common.cli import CONTEXT, force_option, quiet_option, user_errors, wait_option, workspace_option
from gee_export.common.errors import InputError, InputNotFoundError
from gee_export.common.grid import Region
from gee_export.common.layout import resolve_workspace
from gee_export.config import RecipeConfig
from gee_export.demo.scene import DEMO_SEED, DEMO_SIZE
from gee_export.dry_run import print_dry_run
from gee_export.export import NoOutlinesHere
from gee_export.remote.options import source_kind_of, stac_options


def _today():
    from datetime import date

    return date.today()


@click.command(context_settings=CONTEXT)
@region_options
@cell_options
@source_options
@recipe_options
@earth_engine_options
@dry_run_option
@demo_options
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
    from gee_export.common.layout import product_name
    from gee_export.export import load_norm_from

    ws = resolve_workspace(workspace)
    reg, parts = _region_parts(region, bbox, region_file, crs, demo_size, demo_seed, quiet)
    cfg = _recipe_config(year, s1_window, s2_window, orbit, max_scene_cloud,
                         cloud_score_threshold, cloud_score_band, s2_level, norm_mode, buffer_m)
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
        return print_dry_run(parts, outlines, source_dir, buffer_m, cell_size, outlines_layer,
                             options if on_earth_engine else None,
                             (stac, cfg) if stac else None, click.echo)
    if stac is not None:
        source_dir = stac
    elif reg.synthetic and source_dir is None:
        source_dir = _demo_sources(ws, reg, cfg, name, year, demo_size, demo_seed, quiet)
        if source_dir is None:
            return
    _export_parts(ws, reg, parts, name or product_name(reg.name, year), cfg, options,
                  source_dir, outlines, outlines_layer, project, force, wait, quiet)


def _region_parts(region: str | None, bbox: tuple | None, region_file: Path | None,
                  crs: str | None, demo_size: int, demo_seed: int,
                  quiet: bool) -> tuple[Region, list[Region]]:
    """The region asked for and its parts (one per UTM zone, or one on --crs), the demo's
    scene generated for its size and seed; a grid that stretches lengths is warned of."""
    from gee_export.common.grid import scale_warning
    from gee_export.regions import region_parts, resolve_region

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
    return reg, parts


def _recipe_config(year: int, s1_window: tuple | None, s2_window: tuple, orbit: str,
                   max_scene_cloud: float, cloud_score_threshold: float, cloud_score_band: str,
                   s2_level: str, norm_mode: str, buffer_m: float) -> RecipeConfig:
    """The recipe the options ask for; a season still in progress is said."""
    cfg = RecipeConfig(year=year, s1_window=tuple(s1_window) if s1_window else None,
                       s2_window=tuple(s2_window), s1_orbit=orbit,
                       s2_max_scene_cloud=max_scene_cloud,
                       cloud_score_threshold=cloud_score_threshold,
                       cloud_score_band=cloud_score_band, s2_level=s2_level,
                       norm_mode=norm_mode, outline_buffer_m=buffer_m)
    if (season := cfg.incomplete_season(_today())) is not None:
        click.echo(season)
    return cfg


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


def _export_parts(ws: Path, reg: Region, parts: list[Region], base: str, cfg: RecipeConfig,
                  options, source_dir, outlines: Path | None, outlines_layer: str | None,
                  project: str | None, force: bool, wait: bool, quiet: bool) -> None:
    """The region's export, or one per UTM zone with a glacier then the zoned export's own
    manifest; with percentiles, every zone takes those of the first."""
    from dataclasses import replace

    from gee_export.common.layout import EXPORTS_DIR
    from gee_export.common.utm import part_name
    from gee_export.export import load_norm_from

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
        if options.norm_from is None and cfg.norm_mode == "percentile":
            options = replace(options, norm_from=load_norm_from(part_dir))
            click.echo(f"note: every zone takes the percentiles of {part_dir.name}, so that "
                       "one model reads every zone alike")
    _finish_zoned(ws, base, reg, cfg.year, done)


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
