"""A job's probability raster: every process streams its share of the scene's rows into a
working file that survives an interruption, column band by column band, each band verified
before it is recorded as done; rank 0 then assembles the shares and compresses the result
into probability.tif.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from gee_export.common.bands import BAND_NAMES
from gee_export.common.layout import PREDICTION_MANIFEST, PROBABILITY_TIF, STACK_VRT, write_manifest

from .job import PredictJob
from .model import checkpoint_model_fn
from .normalization import normalization_warnings, sample_band_means
from .shares import PARTS_DIR, assemble_parts, drop_stale_parts, share_of, together
from .streaming import NonFiniteProbability, stream_probability
from .windows import windows_in_share
from .working_file import (
    RAW_SUFFIX,
    BandByBand,
    check_band,
    compress,
    disk_full_or,
    keep_verified_bands,
    working_profile,
)

if TYPE_CHECKING:
    from rasterio.io import DatasetReader

    from training.runtime import Processes

Echo = Callable[[str], None]


def prepare(job: PredictJob, manifest: dict, echo: Echo, world: int) -> None:
    """Rank 0, before any rank streams: the normalization warnings, and only the working
    files of `world` processes kept (another number cuts the scene into other rows)."""
    import rasterio

    with rasterio.open(job.export_dir / STACK_VRT) as src:
        if "warnings" not in manifest:
            band_idx = [BAND_NAMES.index(b) + 1 for b in job.meta["band_names"]]
            manifest["warnings"] = normalization_warnings(
                job.meta, job.export, sample_band_means(src, band_idx,
                                                        job.meta["band_names"]))
            for w in manifest["warnings"]:
                echo(f"warning: {w}")
        shares = job.shares(src.height, world)
    drop_stale_parts(job.out, manifest, shares, world, echo)
    write_manifest(job.out / PREDICTION_MANIFEST, manifest)


def probability(job: PredictJob, manifest: dict, quiet: bool, echo: Echo,
                procs: Processes | None = None) -> None:
    """probability.tif, streamed into uncompressed working copies that survive an
    interruption (finished column bands are recorded), then compressed. Under torchrun
    every rank streams its rows into a part of its own, and rank 0 assembles the parts
    once all are done."""
    from training.runtime import Processes

    procs = procs or Processes()
    say = echo if procs.main else (lambda m: echo(f"rank {procs.rank}: {m}"))
    together(procs, lambda: _stream_share(job, manifest, quiet or not procs.main, say, procs))
    if not procs.main:
        return
    raw = _assembled(job, procs.world, len(manifest["probability_bands"]))
    compress(raw, job.out / PROBABILITY_TIF, manifest["probability_bands"])
    raw.unlink()
    shutil.rmtree(job.out / PARTS_DIR, ignore_errors=True)


def _stream_share(job: PredictJob, manifest: dict, quiet: bool, echo: Echo,
                  procs: Processes) -> None:
    """This process's rows into its working copy, column band by column band; a band is
    recorded only once it is on disk and reads back as it was written."""
    import rasterio

    with rasterio.open(job.export_dir / STACK_VRT) as src:
        rows = job.shares(src.height, procs.world)[procs.rank]
        if rows[0] == rows[1]:
            return
        share = share_of(job.out, manifest, rows, procs.world)
        raw = share.raw
        keep_verified_bands(raw, share.record, job.cfg.band_width, echo)
        share.save()
        dst = BandByBand(raw, working_profile(src, rows, len(manifest["probability_bands"])))

        def band_done(c0: int) -> None:
            """Recorded only once the band is on disk and reads back as it was written."""
            written = dst.close()
            check_band(raw, c0, job.cfg.band_width, written)
            share.record["bands_done"].append(c0)
            share.record["bands_sha256"][str(c0)] = written
            share.save()

        try:
            _stream(job, src, dst, set(share.record["bands_done"]), band_done, quiet, rows,
                    procs.local_rank)
        except NonFiniteProbability as e:
            raise NonFiniteProbability(f"{job.checkpoint}: {e}; no prediction is made "
                                       "from it") from None
        except Exception as e:
            raise disk_full_or(e, raw) from None
        finally:
            dst.close(quietly=True)


def _stream(job: PredictJob, src: DatasetReader, dst: BandByBand, done: set[int],
            band_done: Callable[[int], None], quiet: bool, rows: tuple[int, int],
            local_rank: int = 0) -> None:
    """The model's blended windows over `rows` into `dst`, skipping the column bands `done`,
    with a progress bar counting windows."""
    from tqdm import tqdm

    from training.data import NormStats

    cfg = job.cfg
    model_fn = job.model_fn
    if model_fn is None:
        model_fn = checkpoint_model_fn(job.checkpoint, cfg, local_rank)
    band_idx = [BAND_NAMES.index(b) + 1 for b in job.meta["band_names"]]
    total = windows_in_share(src.width, src.height, job.window, job.window - job.overlap,
                             rows, cfg.band_width)
    with tqdm(total=total, desc="predict", unit="window", disable=quiet,
              leave=False) as bar:
        stream_probability(src, dst, model_fn, band_idx,
                           NormStats.from_dict(job.meta["norm_stats"]).apply, job.window,
                           job.overlap, cfg.batch_size, cfg.band_width, done, band_done,
                           bar.update, rows)


def _assembled(job: PredictJob, world: int, bands: int) -> Path:
    """Rank 0: the working copy of the whole scene; under torchrun the ranks' parts
    assembled into it first."""
    import rasterio

    raw = job.out / (PROBABILITY_TIF + RAW_SUFFIX)
    if world == 1:
        return raw
    with rasterio.open(job.export_dir / STACK_VRT) as src:
        profile = working_profile(src, (0, src.height), bands)
        shares = job.shares(src.height, world)
    assemble_parts(raw, job.out, profile, shares, job.cfg.band_width)
    return raw
