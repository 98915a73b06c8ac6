"""`prep tile`: a thin command over tiling.cut.cut_tiles (tiling.tiles.make_tiles per export
or zone) and tiling.verify.verify_tiles."""
from __future__ import annotations

from pathlib import Path

import click

from gee_export.common.cli import (
    CONTEXT,
    AutoInt,
    FiniteFloat,
    Name,
    force_option,
    multiple_of,
    option_group,
    quiet_option,
    user_errors,
    wait_option,
    workspace_option,
)
from gee_export.common.errors import InputError
from gee_export.common.layout import check_name, newest_complete, resolve_workspace
from gee_export.common.outlines import MIN_GLACIER_AREA_KM2

from .config import SMALL_GLACIER_LABELS, TileConfig
from .plan import AUTO_BLOCKS

UNIT = FiniteFloat(0, 1)


# The outlines and what they label.
outline_options = option_group(
    click.option("--outlines", type=click.Path(path_type=Path), default=None,
                 help="Glacier outlines (any format GDAL reads, any CRS). "
                      "[default: the outlines the export recorded]"),
    click.option("--outlines-layer", default=None,
                 help="The layer of --outlines that holds the glacier polygons, in a file of "
                      "several. [default: the file's only polygon layer]"),
    click.option("--min-area", type=FiniteFloat(min=0), default=MIN_GLACIER_AREA_KM2,
                 help="Glaciers smaller than this, in km^2 (ellipsoidal), get the --small-glaciers "
                      "label (paper: 0.05)."),
    click.option("--small-glaciers", type=click.Choice(list(SMALL_GLACIER_LABELS)),
                 default="ignore", help="Label of glaciers under --min-area: ignore (255, left out "
                 "of loss and metrics), background (the paper: dropped outlines), or glacier."),
)
# Which windows become tiles.
window_options = option_group(
    click.option("--size", type=click.IntRange(min=32), default=512, callback=multiple_of(32),
                 help="Tile side in pixels, a multiple of 32 (paper: 512)."),
    click.option("--stride", type=click.IntRange(min=1), default=None,
                 help="Step between tiles in pixels, at most --size. [default: --size, no overlap]"),
    click.option("--min-valid", type=UNIT, default=0.5,
                 help="Drop tiles whose valid (non-nodata) fraction is below this (0-1)."),
    click.option("--background-ratio", type=FiniteFloat(min=0), default=None,
                 help="Keep at most this many glacier-free tiles per glacier tile. [default: all]"),
)
# How the tiles split into training and validation.
split_options = option_group(
    click.option("--split", type=click.Choice(["spatial", "random"]), default="spatial",
                 help="spatial: blocks with a one-tile guard gap; random: the paper's split."),
    click.option("--val-fraction", type=FiniteFloat(0, 1, min_open=True, max_open=True),
                 default=0.3, help="Validation share (paper: 0.3)."),
    click.option("--block-tiles", type=AutoInt(minimum=1), default="auto",
                 help="Spatial split: blocks of N x N tiles go to one side together; auto: the "
                      f"largest of {', '.join(map(str, AUTO_BLOCKS))} that leaves both sides tiles."),
    click.option("--seed", type=click.IntRange(min=0), default=0, help="Seed of the split."),
)


@click.command(context_settings=CONTEXT)
@click.option("--export", "export_dir", type=click.Path(path_type=Path), default=None,
              help="Export directory. [default: the newest complete export in the workspace]")
@outline_options
@window_options
@split_options
@click.option("--name", type=Name(zone_part=True), default=None,
              help="Tile directory name. [default: the export's name]")
@click.option("--workers", type=AutoInt(minimum=1, processes=True), default="auto",
              help="Processes writing tiles in parallel; auto: the CPUs available, up to 8.")
@click.option("--verify", is_flag=True, help="Only verify: check every tile of one complete "
              "set (--name, else the one cut from --export, else the only one) against the "
              "checksum recorded when it was written, and rewrite the bad ones with the "
              "parameters the set was cut with. Never cuts a new set.")
@force_option
@wait_option
@quiet_option
@workspace_option
@user_errors
def tile(export_dir: Path | None, outlines: Path | None, outlines_layer: str | None,
         min_area: float, small_glaciers: str,
         size: int, stride: int | None, min_valid: float, background_ratio: float | None,
         split: str, val_fraction: float, block_tiles: int | str, seed: int, name: str | None,
         workers: int | str, verify: bool, force: bool, wait: bool, quiet: bool,
         workspace: Path | None) -> None:
    """Rasterize outlines into labels and cut labelled tiles with a train/val split."""
    from gee_export.common.workers import cpu_workers

    from .cut import cut_tiles

    if stride is not None and stride > size:
        raise InputError(f"--stride {stride}: larger than --size {size}")
    ws = resolve_workspace(workspace)
    if verify:
        return _verify(ws, export_dir, name, cpu_workers(workers), wait, quiet)
    check_name(name, "--name")  # a zone's part is chosen (--verify), not cut, by its name
    export_dir = Path(export_dir) if export_dir else newest_complete(ws, "export", "--export",
                                                                     click.echo)
    cfg = TileConfig(size=size, stride=stride, min_valid=min_valid,
                     background_ratio=background_ratio, split=split, val_fraction=val_fraction,
                     block_tiles=None if block_tiles == "auto" else block_tiles, seed=seed,
                     min_area_km2=min_area, small_glaciers=small_glaciers)
    cut_tiles(export_dir, ws, cfg, outlines, outlines_layer, name, workers, force, wait, quiet,
              click.echo)


# Options that decide how tiles are cut: --verify checks a tile set as it was cut.
CUTTING = ("outlines", "outlines_layer", "min_area", "small_glaciers", "size", "stride",
           "min_valid", "background_ratio", "split", "val_fraction", "block_tiles", "seed",
           "force")


def _verify(ws: Path, export_dir: Path | None, name: str | None, workers: int, wait: bool,
            quiet: bool) -> None:
    """--verify: only verify one existing tile set, with the parameters it was cut with."""
    from click.core import ParameterSource

    from .verify import verify_tiles

    ctx = click.get_current_context()
    given = [f"--{p.replace('_', '-')}" for p in CUTTING
             if ctx.get_parameter_source(p) is ParameterSource.COMMANDLINE]
    if given:
        raise InputError(f"{', '.join(given)}: --verify checks a tile set with the "
                         "parameters it was cut with; give only --name or --export")
    verify_tiles(ws, export_dir, name, workers, wait, quiet, click.echo)
