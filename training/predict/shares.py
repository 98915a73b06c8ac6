"""A scene shared among torchrun's processes: each rank streams the rows `row_shares` gives it
into a part of its own, beside a record of its finished column bands (the ranks cannot share
one file); rank 0 decides for all, drops the parts of a run by another number of processes,
and assembles the parts in row order. `follow` and `together` are how the ranks keep step,
each error said once.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from gee_export.common.atomic import make_dirs, write_json
from gee_export.common.errors import StateError
from gee_export.common.layout import PREDICTION_MANIFEST, PROBABILITY_TIF, write_manifest

from .working_file import RAW_SUFFIX, disk_full_or

if TYPE_CHECKING:
    from training.runtime import Processes

PARTS_DIR = PROBABILITY_TIF + ".parts"  # under torchrun: each rank's rows, and their records
# How long a rank waits for the others (for rank 0's decision, or for the slowest share):
# longer than any share takes, since a rank that dies is not waited for (torchrun stops every
# rank then); only a rank that hangs is.
RANKS_TIMEOUT = timedelta(hours=24)


@dataclass
class Share:
    """A process's working copy and the record of its finished column bands (`bands_done`,
    `bands_sha256`), with how to store that record."""
    raw: Path
    record: dict
    save: Callable[[], None]


def part_path(out: Path, rows: tuple[int, int]) -> Path:
    """A rank's part, without suffix: its working copy and its record share the name."""
    return out / PARTS_DIR / f"rows-{rows[0]}-{rows[1]}"


def share_of(out: Path, manifest: dict, rows: tuple[int, int], world: int) -> Share:
    """Where this process streams its rows and records its finished column bands: the
    whole scene's working copy and the manifest in one process; under torchrun its part
    and a record of its own beside it, as the ranks cannot share one file."""
    if world == 1:
        mf = out / PREDICTION_MANIFEST
        return Share(out / (PROBABILITY_TIF + RAW_SUFFIX), manifest,
                     lambda: write_manifest(mf, manifest))
    part = part_path(out, rows)
    make_dirs(part.parent)
    path = part.with_name(part.name + ".json")
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):  # none yet, or unreadable: its bands are made again
        record = {}
    record = {"bands_done": record.get("bands_done") or [],
              "bands_sha256": record.get("bands_sha256") or {}}
    return Share(part.with_name(part.name + RAW_SUFFIX), record,
                 lambda: write_json(path, record))


def drop_stale_parts(out: Path, manifest: dict, shares: list[tuple[int, int]], world: int,
                     echo: Callable[[str], None]) -> None:
    """Rank 0: only the working files of `world` processes kept (another number cuts the
    scene into other rows); the whole scene's working copy counts as another number's under
    torchrun, and its finished bands are forgotten with it."""
    parts = out / PARTS_DIR
    keep = {part_path(out, rows).name for rows in shares} if world > 1 else set()
    stale = [f for f in sorted(parts.glob("*")) if f.name.split(".")[0] not in keep]
    whole = out / (PROBABILITY_TIF + RAW_SUFFIX)
    if world > 1 and whole.is_file():
        stale.append(whole)
        manifest["bands_done"], manifest["bands_sha256"] = [], {}
    if stale:
        echo(f"note: the working files of a run by another number of processes are "
             f"dropped ({len(stale)}); {world} process(es) predict their rows again")
    for f in stale:
        f.unlink()


def assemble_parts(raw: Path, out: Path, profile: dict, shares: list[tuple[int, int]],
                   band_width: int) -> None:
    """Rank 0: the ranks' parts copied into the whole scene's working copy `raw` (of
    `profile`) in row order, block by block (memory does not grow with the scene)."""
    import rasterio
    from rasterio.windows import Window

    width, bw = profile["width"], band_width
    try:
        with rasterio.open(raw, "w", **profile) as dst:
            for y0, y1 in (s for s in shares if s[1] > s[0]):
                part = part_path(out, (y0, y1))
                with rasterio.open(part.with_name(part.name + RAW_SUFFIX)) as f:
                    for r, c in ((r, c) for r in range(0, y1 - y0, 1024)
                                 for c in range(0, width, bw)):
                        win = Window(c, r, min(bw, width - c), min(1024, y1 - y0 - r))
                        dst.write(f.read(window=win), window=Window(
                            c, y0 + r, win.width, win.height))
    except Exception as e:
        raise disk_full_or(e, raw) from None


def follow(procs: Processes, decision: Callable[[], Any]) -> Any:
    """Rank 0's decision on every rank. Rank 0 says why it failed; the others stop quietly."""
    from training.runtime import OtherProcessFailed

    try:
        return procs.decide(decision)
    except Exception:
        if procs.main:
            raise
        raise OtherProcessFailed("rank 0 stopped with an error") from None


def together(procs: Processes, step: Callable[[], None]) -> None:
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
