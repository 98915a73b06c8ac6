"""`prep tile`: a thin command over tiling.tiles.make_tiles."""
from __future__ import annotations

from pathlib import Path

import click

from gee_export.common.cli import CONTEXT, quiet_option, user_errors, workspace_option
from gee_export.common.layout import newest_complete, resolve_workspace

from .tiles import TileConfig


@click.command(context_settings=CONTEXT)
@click.option("--export", "export_dir", type=click.Path(path_type=Path), default=None,
              help="Export directory. [default: the newest complete export in the workspace]")
@click.option("--outlines", type=click.Path(path_type=Path), default=None,
              help="Glacier outlines (any format GDAL reads, any CRS). "
                   "[default: the outlines the export recorded]")
@click.option("--min-area", type=float, default=0.05,
              help="Drop outlines smaller than this, in km^2 (paper: 0.05).")
@click.option("--size", type=int, default=512, help="Tile side in pixels (paper: 512).")
@click.option("--stride", type=int, default=None, help="Step between tiles in pixels. "
              "[default: --size, no overlap]")
@click.option("--min-valid", type=float, default=0.5,
              help="Drop tiles whose valid (non-nodata) fraction is below this (0-1).")
@click.option("--background-ratio", type=float, default=None,
              help="Keep at most this many glacier-free tiles per glacier tile. [default: all]")
@click.option("--split", type=click.Choice(["spatial", "random"]), default="spatial",
              help="spatial: blocks with a one-tile guard gap; random: the paper's split.")
@click.option("--val-fraction", type=float, default=0.3, help="Validation share (paper: 0.3).")
@click.option("--block-tiles", type=int, default=4,
              help="Spatial split: blocks of N x N tiles go to one side together.")
@click.option("--seed", type=int, default=0, help="Seed of the split.")
@click.option("--name", default=None, help="Tile directory name. [default: the export's name]")
@click.option("--workers", type=int, default=1, help="Processes writing tiles in parallel.")
@click.option("--force", is_flag=True, help="Replace tiles made with other parameters.")
@quiet_option
@workspace_option
@user_errors
def tile(export_dir, outlines, min_area, size, stride, min_valid, background_ratio, split,
         val_fraction, block_tiles, seed, name, workers, force, quiet, workspace):
    """Rasterize outlines into labels and cut labelled tiles with a train/val split."""
    from .tiles import make_tiles

    ws = resolve_workspace(workspace)
    export_dir = Path(export_dir) if export_dir else newest_complete(ws, "export")
    cfg = TileConfig(size=size, stride=stride, min_valid=min_valid,
                     background_ratio=background_ratio, split=split, val_fraction=val_fraction,
                     block_tiles=block_tiles, seed=seed, min_area_km2=min_area)
    make_tiles(export_dir, ws, cfg, outlines, name, workers, force, quiet, click.echo)
