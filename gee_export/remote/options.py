"""Which source `prep export` reads, and the STAC source's options, from its command line."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from gee_export.common.errors import InputError


def source_kind_of(requested: str | None, source_dir: Path | None, synthetic: bool,
                   dask_address: str | None = None) -> str:
    """earthengine, local or stac: as --source says, else local with --source-dir or the
    demo region, else Earth Engine; --dask only where this toolkit computes the cells."""
    if requested == "stac" and source_dir is not None:
        raise InputError("--source stac reads scenes from a STAC API; --source-dir is for "
                         "--source local")
    if requested == "local" and source_dir is None and not synthetic:
        raise InputError("--source local: give --source-dir DIR")
    if requested == "earthengine" and (source_dir is not None or synthetic):
        raise InputError("--source earthengine: the demo region and --source-dir are local")
    kind = requested or ("local" if source_dir is not None or synthetic else "earthengine")
    if dask_address and kind == "earthengine":
        raise InputError("--dask runs local or STAC exports; Earth Engine computes the cells "
                         "itself")
    return kind


def stac_options(kind: str, provider: str | None, api: str | None, collections: tuple[str, ...],
                 hma_file: Path | None, cloud_mask: str):
    """The STAC source's options (StacOptions) for --source stac; None otherwise, where its
    options are refused."""
    if kind != "stac":
        if provider or api or collections or hma_file:
            raise InputError("--stac-provider, --stac-api, --stac-collection and --hma-file "
                             "are for --source stac")
        return None
    from gee_export.remote.export import StacOptions, check_cloud_mask
    from gee_export.remote.providers import resolve_provider

    check_cloud_mask(cloud_mask)
    names = {}
    for pair in collections:
        sensor, eq, name = pair.partition("=")
        if not eq or not name:
            raise InputError(f"--stac-collection {pair!r}: give SENSOR=NAME (s2, s1 or dem)")
        names[sensor.strip()] = name.strip()
    return StacOptions(resolve_provider(provider, api, names), hma_file)


def dry_run_scenes(plans: list, stac, cfg, echo: Callable[[str], None]) -> None:
    """The STAC source's dry run: it searches (the network, no reads) and lists each cell's
    scenes and the assets whose windows the export would read."""
    from gee_export.remote.catalogue import describe, search_cells

    for plan in plans:
        cat = search_cells(stac.provider, cfg, plan.grid, plan.cells, stac.net)
        for line in describe(cat, stac.provider):
            echo(line)
