"""A prediction job: one checkpoint on one export, its window and overlap checked against
both, and the directory it writes; what makes two predictions the same (the parameters the
stage contract compares) and the manifest a fresh prediction starts from.
"""
from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from gee_export.common.atomic import as_stored
from gee_export.common.bands import BAND_NAMES
from gee_export.common.errors import InputError
from gee_export.common.layout import (
    PREDICTION_MANIFEST,
    STACK_VRT,
    base_manifest,
    file_sha256,
    prediction_dir,
    require_complete,
    stored_path,
    write_manifest,
)
from gee_export.common.stage import DONE, RESUME, Stage

from .config import PredictConfig
from .inputs import checkpoint_tiles
from .streaming import ModelFn
from .windows import row_shares

# train predict's parameters as its options (the stage contract names differences so).
PREDICTION_OPTIONS = {"checkpoint": "--checkpoint", "checkpoint_sha256":
                      "--checkpoint (contents)", "export": "--export",
                      "export_completed_at": "--export (remade since)",
                      "config.min_area_km2": "--min-area", "config.max_hole_km2": "--max-hole",
                      "config.simplify_m": "--simplify"}
PROBABILITY_BANDS = ("glacier_probability", "tta_spread")


def prediction_stage(out: Path, view: Callable[[dict], dict] | None = None) -> Stage:
    """The stage contract of the prediction in `out`, its differences named as options."""
    return Stage("prediction", out / PREDICTION_MANIFEST, names=PREDICTION_OPTIONS,
                 hint="use --force to replace it, or --name to predict beside it", view=view)


@dataclass
class PredictJob:
    """One checkpoint on one export: their records, the window and overlap the options come
    to, and where the prediction goes; `model_fn`, where given, stands for the checkpoint's
    model."""
    checkpoint: Path
    export_dir: Path
    export: dict
    workspace: Path
    cfg: PredictConfig
    meta: dict
    window: int
    overlap: int
    out: Path
    model_fn: ModelFn | None

    @classmethod
    def open(cls, checkpoint: Path, export_dir: Path, workspace: Path, cfg: PredictConfig,
             name: str | None, model_fn: ModelFn | None) -> PredictJob:
        """The job of `checkpoint` on `export_dir`, named `name` (else the export's name);
        refused where the export is unfinished or the checkpoint needs a band it lacks."""
        from gee_export.common.rasters import check_stack
        from training.runtime import load_checkpoint

        export = require_complete(export_dir, "export", "finish it with `prep export`")
        check_stack(export_dir / STACK_VRT)
        ck = load_checkpoint(checkpoint)
        meta = {**ck["meta"], "trained_on": checkpoint_tiles(checkpoint, ck.get("config") or {})}
        missing = [b for b in meta["band_names"] if b not in BAND_NAMES]
        if missing:
            raise InputError(f"{checkpoint}: trained on band(s) {', '.join(missing)} that the "
                             "stack lacks")
        window, overlap = window_and_overlap(cfg, meta, export)
        out = prediction_dir(workspace, checkpoint, name or export_dir.name)
        return cls(checkpoint, export_dir, export, workspace, cfg, meta, window, overlap, out,
                   model_fn)

    def shares(self, height: int, world: int) -> list[tuple[int, int]]:
        """The output rows of each of `world` processes on this job's window lattice."""
        return row_shares(height, self.window, self.window - self.overlap, world)

    def parameters(self) -> dict:
        """What makes two predictions the same: the checkpoint by content, the export by
        its place in the workspace and its completion, the options."""
        return as_stored({
            "checkpoint": self.checkpoint.name, "checkpoint_sha256": file_sha256(self.checkpoint),
            "export": stored_path(self.export_dir, self.out, self.workspace),
            "export_completed_at": self.export.get("completed_at"),
            "config": {**asdict(self.cfg), "window": self.window, "overlap": self.overlap}})

    def _trained_on(self) -> dict | None:
        """The tile set the model trained on, stored as the workspace stores paths, so that
        evaluation can tell held-out pixels from training ones."""
        rec = self.meta.get("trained_on")
        return rec and {**rec, "tiles": stored_path(rec["tiles"], self.out, self.workspace)}

    def claim(self, force: bool, echo: Callable[[str], None]) -> dict | None:
        """By the stage contract: the manifest to continue, a fresh one, or None when the
        prediction is done."""
        from training.runtime import effective_config, resolve_device

        device = resolve_device(self.cfg.device)
        as_here = lambda p: {**p, "config": effective_config(p.get("config", {}), device)}  # noqa: E731
        stage = prediction_stage(self.out, as_here)
        decision = stage.decide(as_here(self.parameters()), force, echo)
        if decision.action == DONE:
            return None
        if decision.action == RESUME:
            return decision.old
        params = self.parameters()
        shutil.rmtree(self.out, ignore_errors=True)
        ex = self.export
        manifest = base_manifest(
            "prediction", parameters=params, bands=self.meta["band_names"], grid=ex["grid"],
            export=stored_path(self.export_dir, self.out, self.workspace),
            region=ex.get("region", {}).get("name"), year=ex.get("year"),
            synthetic=ex.get("synthetic"), bands_done=[], bands_sha256={},
            trained_on=self._trained_on(),
            probability_bands=list(PROBABILITY_BANDS[:2 if self.cfg.tta else 1]))
        write_manifest(stage.manifest, manifest)
        return manifest


def window_and_overlap(cfg: PredictConfig, meta: dict, export: dict) -> tuple[int, int]:
    """The window (--window, else the checkpoint's tile size) and the overlap (--overlap,
    else a quarter of the window), refused where the encoder or the scene cannot take them."""
    window = cfg.window or meta["tile_size"]
    if window % 32 or window < 32:
        raise InputError(f"--window {window}: must be a multiple of 32 (the encoder's "
                         "stride)")
    scene = max(export["grid"]["width"], export["grid"]["height"])
    most = max(-(-scene // 32) * 32, meta["tile_size"])  # the scene in one window
    if cfg.window and window > most:
        raise InputError(f"--window {window}: larger than the scene needs ({scene} px on "
                         f"its longer side: at most {most}); a larger one only holds more "
                         "empty pixels in memory")
    overlap = window // 4 if cfg.overlap is None else cfg.overlap
    if not 0 <= overlap < window:
        raise InputError(f"--overlap {overlap} must lie in [0, window {window})")
    return window, overlap
