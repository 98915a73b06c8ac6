"""What `prep tile` reads: a complete export and the outlines that label it, and the
parameters that make two tile sets the same (what the stage contract compares)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from gee_export.common.atomic import as_stored
from gee_export.common.errors import InputError
from gee_export.common.grid import ExportGrid
from gee_export.common.layout import (
    OUTLINES_FILE,
    STACK_VRT,
    export_identity,
    file_sha256,
    require_complete,
    stored_path,
)
from gee_export.common.outlines import Outlines, features_id, read_outlines
from gee_export.common.rasters import check_stack

from .config import SMALL_GLACIER_LABELS, TileConfig

SPLIT_ALGORITHM = 5  # bump when the split changes, so old tiles are not taken as current
# 5: the zones of a zoned tile set split once, together (tiling/zoned.py). The split of a tile
# set of one zone is algorithm 4's, unchanged: such sets record 4 and stay current.
SINGLE_ZONE_SPLIT_ALGORITHM = 4


@dataclass
class TileInputs:
    """A complete export and the outlines that label it, split by the size limit."""
    export_dir: Path
    export: dict  # the export manifest
    grid: ExportGrid
    outlines: Outlines  # glaciers of at least --min-area
    small: Outlines  # the ones under it

    @classmethod
    def open(cls, export_dir: Path, cfg: TileConfig, outlines_path: Path | None,
             echo: Callable[[str], None], outlines_layer: str | None = None) -> "TileInputs":
        from shapely.geometry import box

        export_dir = Path(export_dir)
        exp = require_complete(export_dir, "export",
                               "rerun `prep export` with the same options to finish it")
        grid = ExportGrid.from_dict(exp["grid"])
        cfg.check(grid)
        check_stack(export_dir / STACK_VRT)
        if outlines_path is None:
            outlines_path = export_dir / OUTLINES_FILE
            if not outlines_path.is_file():
                raise InputError(f"{export_dir} recorded no outlines; give --outlines FILE")
        every = read_outlines(outlines_path, grid.crs, layer=outlines_layer)
        for line in every.notes():
            echo(line)
        if not every.frame.intersects(box(*grid.bounds)).any():
            raise InputError(
                f"outlines {outlines_path} do not overlap the stack: outlines bounds "
                f"{tuple(round(v) for v in every.frame.total_bounds)}, stack bounds "
                f"{tuple(round(v) for v in grid.bounds)} (both in {grid.crs})")
        large, small = every.split_by_area(cfg.min_area_km2)
        return cls(export_dir, exp, grid, large, small)

    def parameters(self, out: Path, workspace: Path, cfg: TileConfig,
                   zoned_split: dict | None = None) -> dict:
        """What makes two tile sets the same. Paths are stored relative to the workspace and
        the outlines by checksum, so a moved workspace is still up to date. The export counts
        by its identity, not by when it last completed: a cell it made again with the same
        options (a repair) leaves the tiles current. A zone of a zoned tile set records what
        its split, made with the other zones', depends on (`zoned_split`)."""
        algorithm = SPLIT_ALGORITHM if zoned_split else SINGLE_ZONE_SPLIT_ALGORITHM
        return as_stored({"export": stored_path(self.export_dir, out, workspace),
                          "export_id": export_identity(self.export),
                          "outlines_features": features_id(self.outlines, self.small),
                          "config": asdict(cfg), "split_algorithm": algorithm,
                          **({"outlines_layer": self.outlines.layer} if self.outlines.layer
                             else {}),
                          **({"zoned_split": zoned_split} if zoned_split else {})})

    def earlier_parameters(self, params: dict) -> list[dict]:
        """`params` as tile sets made before this version recorded them: before export_id
        (by the export's completion time: current while the export has not completed again
        since) and before outlines_features (by the outlines file's checksum: current while
        its bytes are the same)."""
        by_bytes = {**{k: v for k, v in params.items() if k != "outlines_features"},
                    "outlines_sha256": file_sha256(self.outlines.path)}
        return [as_stored(by_bytes)] + [as_stored(
            {**{k: v for k, v in p.items() if k != "export_id"},
             "export_completed_at": self.export.get("completed_at")}) for p in (params, by_bytes)]

    def worker_args(self, out: Path, cfg: TileConfig) -> tuple:
        return (str(self.export_dir / STACK_VRT), self.outlines.geometries,
                self.small.geometries, SMALL_GLACIER_LABELS[cfg.small_glaciers],
                self.grid.transform, str(out))
