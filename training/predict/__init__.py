"""Whole-scene prediction: blended overlapping windows streamed into a probability GeoTIFF,
then glacier outlines (the paper's section 2.2: merge patches by averaging overlaps, convert to
polygons, drop small isolated ones).

Memory is bounded by the window, the batch and a column band of `band_width` pixels, never by
the scene: windows are visited band by band and row by row, and a rolling buffer of one
window's height holds the running weighted sums until no later window can touch a row.
"""
from __future__ import annotations

import json
import os
import shutil
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from gee_export.common.atomic import as_stored, make_dirs, write_json
from gee_export.common.bands import BAND_NAMES
from gee_export.common.errors import GlacierError, InputError, StateError, WriteError
from gee_export.common.gdal_errors import disk_full, no_space_left
from gee_export.common.grid import ExportGrid
from gee_export.common.layout import (
    OUTLINE_FILES,
    OUTLINES_FILE,
    PREDICTION_MANIFEST,
    PROBABILITY_TIF,
    STACK_VRT,
    base_manifest,
    file_sha256,
    prediction_dir,
    read_manifest,
    require_complete,
    stored_path,
    write_manifest,
)
from gee_export.common.locks import output_lock
from gee_export.common.qml import write_prediction_styles
from gee_export.common.rasters import bounded_gdal_cache, geotiff_profile
from gee_export.common.stac import update_catalog
from gee_export.common.stage import DONE, RESUME, Stage
from gee_export.common.vectors import write_outline_files

from .config import PredictConfig
from .inputs import checkpoint_tiles, prediction_export, reference_default, training_export  # noqa: F401
from .model import checkpoint_model_fn, dihedral_view, load_model, torch_model_fn, undo_dihedral  # noqa: F401
from .normalization import normalization_warnings, sample_band_means
from .outlines import clean_polygons, outline_layers, polygonize_blocks  # noqa: F401
from .streaming import STREAM_CACHE_MB, ModelFn, NonFiniteProbability, stream_probability
from .windows import blend_weights, row_shares, window_rows, window_starts, windows_in_share  # noqa: F401

if TYPE_CHECKING:
    from rasterio.io import DatasetReader

    from training.runtime import Processes

RAW_SUFFIX = ".raw.tif"  # uncompressed working copy, kept between runs for resume
PARTS_DIR = PROBABILITY_TIF + ".parts"  # under torchrun: each rank's rows, and their records
# How long a rank waits for the others (for rank 0's decision, or for the slowest share):
# longer than any share takes, since a rank that dies is not waited for (torchrun stops every
# rank then); only a rank that hangs is.
RANKS_TIMEOUT = timedelta(hours=24)


def predict(checkpoint: Path, export_dir: Path, workspace: Path,
            cfg: PredictConfig = PredictConfig(), name: str | None = None, force: bool = False,
            quiet: bool = False, echo: Callable[[str], None] = print,
            model_fn: ModelFn | None = None, wait: bool = False,
            formats: tuple[str, ...] = ("gpkg",)) -> Path:
    """Probability GeoTIFF and glacier outlines (in `formats`, keys of OUTLINE_FILES) for
    one export; rerunning resumes. GDAL's block cache is capped: every block is read about
    once.

    Under torchrun (WORLD_SIZE > 1) the processes share the scene's rows (`row_shares`):
    rank 0 holds the output's lock and decides whether to predict, reuse or refuse; every
    rank streams its rows into a part of its own; rank 0 assembles the parts and writes the
    outlines. The result is the one-process result, bit for bit, where each process runs as
    many CPU threads as the one process (the thread count changes the order of the model's
    sums on the CPU).
    """
    from gee_export.common.layout import check_name
    from training.runtime import Processes, fast_matmul, resolve_device

    check_name(name, "--name", zone_part=True)  # a zoned prediction names its zones' so
    # Prediction exchanges only small decisions, on the CPU: gloo also beside GPUs.
    procs = Processes.start("gloo", RANKS_TIMEOUT)
    procs.leave_at_exit()
    with ExitStack() as held, bounded_gdal_cache(STREAM_CACHE_MB):
        job, manifest, todo = _follow(procs, lambda: _claimed(
            Path(checkpoint), Path(export_dir), Path(workspace), cfg, name, force, wait, echo,
            formats, held, procs.world))
        job.model_fn = model_fn
        if todo == "predict":
            held.enter_context(fast_matmul(resolve_device(cfg.device, procs.local_rank)))
            job.probability(manifest, quiet, echo, procs)
        # Only rank 0 goes on; no process waits for another. The process group stays for
        # the next prediction this process makes (a zoned export's parts, `train change`).
        if todo == "done" or not procs.main:
            return job.out
        job.outlines(manifest, echo, formats)
        write_prediction_styles(job.out, cfg.threshold)
    update_catalog(workspace, echo)
    return job.out


def _claimed(checkpoint: Path, export_dir: Path, workspace: Path, cfg: PredictConfig,
             name: str | None, force: bool, wait: bool, echo, formats: tuple[str, ...],
             held: ExitStack, world: int) -> tuple["_PredictJob", dict | None, str]:
    """Rank 0's decision, under the output's lock (held by `held`): the job, its manifest and
    what is left to do: "predict", "outlines" (the probability raster is done) or "done"."""
    job = _PredictJob.open(checkpoint, export_dir, workspace, cfg, name, None)
    held.enter_context(output_lock(job.out, wait, echo))
    manifest = job.claim(force, echo)
    if manifest is None:
        if all((job.out / OUTLINE_FILES[f]).is_file() for f in formats):
            return job, None, "done"
        echo(f"writing the outlines as {', '.join(formats)}")  # polygonized again
        return job, read_manifest(job.out / PREDICTION_MANIFEST, "prediction"), "outlines"
    if (job.out / PROBABILITY_TIF).is_file():
        return job, manifest, "outlines"
    job.prepare(manifest, echo, world)
    return job, manifest, "predict"


def _follow(procs: Processes, decision: Callable[[], Any]) -> Any:
    """Rank 0's decision on every rank. Rank 0 says why it failed; the others stop quietly."""
    from training.runtime import OtherProcessFailed

    try:
        return procs.decide(decision)
    except Exception:
        if procs.main:
            raise
        raise OtherProcessFailed("rank 0 stopped with an error") from None


def _together(procs: Processes, step: Callable[[], None]) -> None:
    """Every rank does its `step`, then waits for all. An error on any rank stops every rank,
    said in one line by the first rank that failed (the others stop quietly)."""
    from training.runtime import OtherProcessFailed

    if procs.world == 1:
        return step()
    error = None
    try:
        step()
    except Exception as e:  # reported below, once all have finished or failed
        error = e
    try:
        failed = procs.gather(error is not None)
    except Exception as e:  # a rank died (torchrun stops the others) or hung
        if not procs.main:
            raise OtherProcessFailed("a process of the run stopped") from None
        raise StateError("a process of this torchrun run stopped without a word (killed, or "
                         f"out of memory: torchrun names it) or did not answer within "
                         f"{RANKS_TIMEOUT.total_seconds() / 3600:g} h; rerun the same "
                         "command to resume "
                         f"({str(e).strip().splitlines()[0] if str(e).strip() else e!r})"
                         ) from None
    first = failed.index(True) if True in failed else None
    if first == procs.rank:
        raise error
    if first is not None:
        raise OtherProcessFailed(f"rank {first} stopped with an error")


@dataclass
class _PredictJob:
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
             name: str | None, model_fn: ModelFn | None) -> "_PredictJob":
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
        out = prediction_dir(workspace, checkpoint, name or export_dir.name)
        return cls(checkpoint, export_dir, export, workspace, cfg, meta, window, overlap, out,
                   model_fn)

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

    def claim(self, force: bool, echo) -> dict | None:
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

    def prepare(self, manifest: dict, echo, world: int) -> None:
        """Rank 0, before any rank streams: the normalization warnings, and only the working
        files of `world` processes kept (another number cuts the scene into other rows)."""
        import rasterio

        with rasterio.open(self.export_dir / STACK_VRT) as src:
            if "warnings" not in manifest:
                band_idx = [BAND_NAMES.index(b) + 1 for b in self.meta["band_names"]]
                manifest["warnings"] = normalization_warnings(
                    self.meta, self.export, sample_band_means(src, band_idx,
                                                              self.meta["band_names"]))
                for w in manifest["warnings"]:
                    echo(f"warning: {w}")
            shares = row_shares(src.height, self.window, self.window - self.overlap, world)
        parts = self.out / PARTS_DIR
        keep = {self._part(rows).name for rows in shares} if world > 1 else set()
        stale = [f for f in sorted(parts.glob("*")) if f.name.split(".")[0] not in keep]
        whole = self.out / (PROBABILITY_TIF + RAW_SUFFIX)
        if world > 1 and whole.is_file():
            stale.append(whole)
            manifest["bands_done"], manifest["bands_sha256"] = [], {}
        if stale:
            echo(f"note: the working files of a run by another number of processes are "
                 f"dropped ({len(stale)}); {world} process(es) predict their rows again")
        for f in stale:
            f.unlink()
        write_manifest(self.out / PREDICTION_MANIFEST, manifest)

    def probability(self, manifest: dict, quiet: bool, echo,
                    procs: Processes | None = None) -> None:
        """probability.tif, streamed into uncompressed working copies that survive an
        interruption (finished column bands are recorded), then compressed. Under torchrun
        every rank streams its rows into a part of its own, and rank 0 assembles the parts
        once all are done."""
        from training.runtime import Processes

        procs = procs or Processes()
        say = echo if procs.main else (lambda m: echo(f"rank {procs.rank}: {m}"))
        _together(procs, lambda: self._stream_share(manifest, quiet or not procs.main, say,
                                                    procs))
        if not procs.main:
            return
        raw = self._assembled(procs.world, len(manifest["probability_bands"]))
        _compress(raw, self.out / PROBABILITY_TIF, manifest["probability_bands"])
        raw.unlink()
        shutil.rmtree(self.out / PARTS_DIR, ignore_errors=True)

    def _part(self, rows: tuple[int, int]) -> Path:
        """A rank's part, without suffix: its working copy and its record share the name."""
        return self.out / PARTS_DIR / f"rows-{rows[0]}-{rows[1]}"

    def _share(self, manifest: dict, rows: tuple[int, int], world: int) -> "_Share":
        """Where this process streams its rows and records its finished column bands: the
        whole scene's working copy and the manifest in one process; under torchrun its part
        and a record of its own beside it, as the ranks cannot share one file."""
        if world == 1:
            mf = self.out / PREDICTION_MANIFEST
            return _Share(self.out / (PROBABILITY_TIF + RAW_SUFFIX), manifest,
                          lambda: write_manifest(mf, manifest))
        part = self._part(rows)
        make_dirs(part.parent)
        path = part.with_name(part.name + ".json")
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):  # none yet, or unreadable: its bands are made again
            record = {}
        record = {"bands_done": record.get("bands_done") or [],
                  "bands_sha256": record.get("bands_sha256") or {}}
        return _Share(part.with_name(part.name + RAW_SUFFIX), record,
                      lambda: write_json(path, record))

    def _stream_share(self, manifest: dict, quiet: bool, echo, procs: Processes) -> None:
        """This process's rows into its working copy, column band by column band; a band is
        recorded only once it is on disk and reads back as it was written."""
        import rasterio

        with rasterio.open(self.export_dir / STACK_VRT) as src:
            rows = row_shares(src.height, self.window, self.window - self.overlap,
                              procs.world)[procs.rank]
            if rows[0] == rows[1]:
                return
            share = self._share(manifest, rows, procs.world)
            raw = share.raw
            self._keep_verified_bands(raw, share.record, echo)
            share.save()
            dst = _BandByBand(raw, _working_profile(src, rows, len(manifest["probability_bands"])))

            def band_done(c0: int) -> None:
                """Recorded only once the band is on disk and reads back as it was written."""
                written = dst.close()
                if _band_sha256(raw, c0, c0 + self.cfg.band_width) != written:
                    raise WriteError(f"cannot write {raw}: " + (
                        "no space left on device; free some and rerun the same command to "
                        "continue" if disk_full(raw) else f"the column band from column {c0} "
                        "does not read back as it was written"))
                share.record["bands_done"].append(c0)
                share.record["bands_sha256"][str(c0)] = written
                share.save()

            try:
                self._stream(src, dst, set(share.record["bands_done"]), band_done, quiet, rows,
                             procs.local_rank)
            except NonFiniteProbability as e:
                raise NonFiniteProbability(f"{self.checkpoint}: {e}; no prediction is made "
                                           "from it") from None
            except Exception as e:
                raise _disk_full_or(e, raw) from None
            finally:
                dst.close(quietly=True)

    def _assembled(self, world: int, bands: int) -> Path:
        """Rank 0: the working copy of the whole scene; under torchrun the ranks' parts
        copied into it in row order, block by block (memory does not grow with the scene)."""
        import rasterio
        from rasterio.windows import Window

        raw = self.out / (PROBABILITY_TIF + RAW_SUFFIX)
        if world == 1:
            return raw
        with rasterio.open(self.export_dir / STACK_VRT) as src:
            profile = _working_profile(src, (0, src.height), bands)
            shares = row_shares(src.height, self.window, self.window - self.overlap, world)
        width, bw = profile["width"], self.cfg.band_width
        try:
            with rasterio.open(raw, "w", **profile) as dst:
                for y0, y1 in (s for s in shares if s[1] > s[0]):
                    part = self._part((y0, y1))
                    with rasterio.open(part.with_name(part.name + RAW_SUFFIX)) as f:
                        for r, c in ((r, c) for r in range(0, y1 - y0, 1024)
                                     for c in range(0, width, bw)):
                            win = Window(c, r, min(bw, width - c), min(1024, y1 - y0 - r))
                            dst.write(f.read(window=win), window=Window(
                                c, y0 + r, win.width, win.height))
        except Exception as e:
            raise _disk_full_or(e, raw) from None
        return raw

    def _keep_verified_bands(self, raw: Path, manifest: dict, echo) -> None:
        """Keep the working copy only if every column band it recorded as done reads back
        with the checksum recorded for it; else start it again (a full disk or a kill can
        leave a file that its manifest overstates)."""
        done = manifest.get("bands_done") or []
        if raw.is_file() and done:
            sums = manifest.get("bands_sha256") or {}
            try:
                bad = [c0 for c0 in done if sums.get(str(c0)) != _band_sha256(
                    raw, c0, c0 + self.cfg.band_width)]
                if not bad:
                    return
                why = f"column bands from column {', '.join(map(str, bad[:3]))} differ"
            except Exception:  # unreadable: GDAL's errors are of many kinds
                why = "it cannot be read"
            echo(f"note: {raw} does not hold what it recorded as done ({why}); predicting "
                 "them again")
        raw.unlink(missing_ok=True)
        manifest["bands_done"], manifest["bands_sha256"] = [], {}

    def _stream(self, src, dst: "_BandByBand", done: set[int], band_done, quiet: bool,
                rows: tuple[int, int], local_rank: int = 0) -> None:
        from tqdm import tqdm

        from training.data import NormStats

        cfg = self.cfg
        model_fn = self.model_fn
        if model_fn is None:
            model_fn = checkpoint_model_fn(self.checkpoint, cfg, local_rank)
        band_idx = [BAND_NAMES.index(b) + 1 for b in self.meta["band_names"]]
        total = windows_in_share(src.width, src.height, self.window, self.window - self.overlap,
                                 rows, cfg.band_width)
        with tqdm(total=total, desc="predict", unit="window", disable=quiet,
                  leave=False) as bar:
            stream_probability(src, dst, model_fn, band_idx,
                               NormStats.from_dict(self.meta["norm_stats"]).apply, self.window,
                               self.overlap, cfg.batch_size, cfg.band_width, done, band_done,
                               bar.update, rows)

    def outlines(self, manifest: dict, echo, formats: tuple[str, ...] = ("gpkg",)) -> None:
        """glaciers.gpkg: the predicted glaciers and, where the export recorded an inventory,
        the predicted ice of each inventory glacier (by zones); glaciers.parquet: the
        predicted glaciers (`formats`)."""
        echo("polygonizing")
        inventory = self._inventory()
        layers, valid_km2 = outline_layers(self.out / PROBABILITY_TIF, self.cfg, inventory)
        write_outline_files(layers, self.out, formats)
        g = layers["glaciers"]
        prediction_stage(self.out).complete(
            manifest, glaciers=len(g), glacier_area_km2=float(g["area_km2"].sum()),
            glacier_area_planar_km2=float(g.geometry.area.sum() / 1e6),
            valid_area_km2=valid_km2, inventory_layer=inventory is not None)
        echo(f"prediction complete: {self.out} ({len(g)} glaciers, "
             f"{manifest['glacier_area_km2']:.2f} km^2)")

    def _inventory(self):
        from gee_export.common.outlines import read_outlines

        path = self.export_dir / OUTLINES_FILE
        if not path.is_file():
            return None
        return read_outlines(path, ExportGrid.from_dict(self.export["grid"]).crs)


def prediction_stage(out: Path, view: Callable[[dict], dict] | None = None) -> Stage:
    return Stage("prediction", out / PREDICTION_MANIFEST, names=PREDICTION_OPTIONS,
                 hint="use --force to replace it, or --name to predict beside it", view=view)


# train predict's parameters as its options (the stage contract names differences so).
PREDICTION_OPTIONS = {"checkpoint": "--checkpoint", "checkpoint_sha256":
                      "--checkpoint (contents)", "export": "--export",
                      "export_completed_at": "--export (remade since)",
                      "config.min_area_km2": "--min-area", "config.max_hole_km2": "--max-hole",
                      "config.simplify_m": "--simplify"}


PROBABILITY_BANDS = ("glacier_probability", "tta_spread")


class _BandByBand:
    """The working copy as `stream_probability` writes it, closed after each column band, so
    that what a band wrote is on disk (GDAL reports a failed write at the latest when it
    closes) before the band is recorded as done."""

    def __init__(self, path: Path, profile: dict):
        import hashlib

        self.path, self.profile, self.count = Path(path), profile, profile["count"]
        self._ds, self._sha, self._new_sha = None, hashlib.sha256(), hashlib.sha256

    def write(self, data: np.ndarray, window) -> None:
        """Write rows of the band (in order, as stream_probability does), and hash them."""
        import rasterio

        if self._ds is None:
            self._ds = (rasterio.open(self.path, "r+") if self.path.is_file() else
                        rasterio.open(self.path, "w", **self.profile))
        self._ds.write(data, window=window)
        self._sha.update(_row_major(data))

    def close(self, quietly: bool = False) -> str:
        """Close (flush) and sync the file; the checksum of what was written since the last
        close, as `_band_sha256` computes it from the file."""
        ds, self._ds = self._ds, None
        written, self._sha = self._sha.hexdigest(), self._new_sha()
        if ds is None:
            return written
        try:
            ds.close()
            fd = os.open(self.path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except Exception:
            if not quietly:
                raise
        return written


@dataclass
class _Share:
    """A process's working copy and the record of its finished column bands (`bands_done`,
    `bands_sha256`), with how to store that record."""
    raw: Path
    record: dict
    save: Callable[[], None]


def _working_profile(src: DatasetReader, rows: tuple[int, int], bands: int) -> dict:
    """An uncompressed working copy of rows rows[0]..rows[1] of `src`'s grid, which may grow
    band by band (sparse)."""
    from affine import Affine

    return {**geotiff_profile(src.width, rows[1] - rows[0], bands, "float32", src.crs,
                              src.transform * Affine.translation(0, rows[0]), np.nan,
                              compress=False), "sparse_ok": True}


def _disk_full_or(e: Exception, raw: Path) -> Exception:
    """A full disk while writing `raw` as one line that says how to go on; else `e`."""
    if isinstance(e, GlacierError) or not no_space_left(e, raw):
        return e
    return WriteError(f"cannot write {raw}: no space left on device; free some and rerun the "
                      "same command to continue")


def _row_major(a: np.ndarray) -> bytes:
    """(bands, rows, cols) as bytes row by row, each row all its bands: the same whatever
    blocks of rows the array is cut into."""
    return np.ascontiguousarray(a.transpose(1, 0, 2)).tobytes()


def _band_sha256(path: Path, c0: int, c1: int) -> str:
    """Checksum of columns c0..c1 (clipped to the raster) of every band of a raster, as read
    back: what a finished column band is verified by."""
    import hashlib

    import rasterio
    from rasterio.windows import Window

    with rasterio.open(path) as f:
        c1 = min(c1, f.width)
        h = hashlib.sha256()
        for r in range(0, f.height, 1024):
            h.update(_row_major(f.read(window=Window(c0, r, c1 - c0,
                                                       min(1024, f.height - r)))))
    return h.hexdigest()


def _compress(raw: Path, dest: Path, names: list[str]) -> None:
    """The working file as a compressed cloud-optimized GeoTIFF with average overviews
    (built into the working file first), renamed when done."""
    import rasterio

    from gee_export.common.cog import copy_as_cog

    with rasterio.open(raw) as src:
        profile = geotiff_profile(src.width, src.height, src.count, "float32", src.crs,
                                  src.transform, np.nan)
    copy_as_cog(raw, dest, profile, "average", names)


