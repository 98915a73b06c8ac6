"""The stage bookkeeping of a tile set: its parameters named as `prep tile`'s options, the
integrity check the stage contract runs on a complete set, the files a resumed or repaired
run keeps, and which tile set `--verify` checks."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

from gee_export.common.atomic import remove_file
from gee_export.common.errors import InputError, StateError
from gee_export.common.layout import (
    IMAGES_DIR,
    LABELS_DIR,
    TILES_DIR,
    TILES_MANIFEST,
    check_files,
    describe_problems,
    read_manifest,
    require_complete,
    resolved_path,
    write_manifest,
)
from gee_export.common.stage import START, Decision, Stage

# prep tile's parameters as its options (the stage contract names differences so).
TILE_OPTIONS = {"export": "--export", "export_id": "--export (made again since)",
                "export_completed_at": "--export (completed again since)",
                "outlines_sha256": "--outlines (contents)",
                "outlines_features": "--outlines (ids and geometries)",
                "outlines_layer": "--outlines-layer",
                "split_algorithm": "the split's algorithm (this version's)",
                "zoned_split.*": "zone {key}'s export or outlines (the zones split together)",
                "config.min_area_km2": "--min-area", "config.val_fraction": "--val-fraction",
                "config.block_tiles": "--block-tiles", "config.small_glaciers":
                "--small-glaciers"}


def tiles_stage(out: Path) -> Stage:
    return Stage("tiles", out / TILES_MANIFEST, "tiles", TILE_OPTIONS, verb="are",
                 hint="use --force to replace them, or --name to tile beside them")


class _Damaged:
    """The stage contract's integrity check of a complete tile set: every file as recorded
    (its size; with --verify its checksum). Keeps what it found for the repair."""

    def __init__(self, out: Path, verify: bool):
        self.out, self.verify, self.problems, self.files = out, verify, {}, 0

    def __call__(self, old: dict) -> str | None:
        files = old.get("files", {})
        self.problems, self.files = check_files(self.out, files, full=self.verify), len(files)
        if not self.problems:
            return None
        return (f"{len(self.problems)} tile file(s) are corrupt or missing "
                f"({describe_problems(self.problems)})")

    def note(self) -> str:
        return f"; {self.files} files match their checksums" if self.verify else ""


def _intact(stage: Stage, params: dict, earlier: list, verify: bool,
            echo: Callable[[str], None]) -> bool:
    """Whether the tile set is complete and intact for these parameters, with no unfinished
    file; said when so. Reads only (no lock, nothing written)."""
    damaged = _Damaged(stage.dir, verify)
    return stage.done_without_lock(params, echo, earlier, damaged, damaged.note) is not None


def tiles_to_verify(workspace: Path, export_dir: Path | None, name: str | None,
                    echo: Callable[[str], None]) -> tuple[Path, dict]:
    """The tile set --verify checks and its manifest: --name, else the one cut from
    --export, else the only one in the workspace. Several candidates are refused, listed."""
    parent = Path(workspace) / TILES_DIR
    if name is not None:
        return parent / name, require_complete(parent / name, "tiles",
                                               "rerun `prep tile` to finish it first")
    sets = []
    for mf in sorted(parent.glob(f"*/{TILES_MANIFEST}")):
        try:
            m = read_manifest(mf, "tiles")
        except InputError:
            continue
        cut_from = (m.get("parameters") or {}).get("export") or m.get("export")  # or zoned
        if m.get("complete") and (export_dir is None or resolved_path(
                cut_from, mf.parent).resolve() == Path(export_dir).resolve()):
            sets.append((mf.parent, m))
    of = f" cut from {export_dir}" if export_dir is not None else ""
    if not sets:
        raise StateError(f"no complete tile set{of} in {parent} to verify; cut one with "
                         "`prep tile`")
    if len(sets) > 1:
        raise InputError(f"--verify: {len(sets)} tile sets{of} in {parent} "
                         f"({', '.join(d.name for d, _ in sets)}); choose one with --name")
    echo(f"verifying {sets[0][0]}")
    return sets[0]


def _check_same_tiles(stage: Stage, params: dict, earlier: list) -> None:
    """Refuse to verify a tile set whose inputs changed since it was cut: there is nothing
    to check the tiles against."""
    changed = stage.unchanged(params, earlier)
    if changed:
        raise StateError(f"{stage.dir}: its inputs changed since the tiles were cut "
                         f"({changed}); --verify only checks tiles against their own inputs: "
                         "cut them again with `prep tile --force`")


def _known_files(out: Path, decision: Decision, damaged: _Damaged) -> dict:
    """Make `out` ready for a run that starts over or resumes, and return the checksums
    recorded for the files it keeps (a kept file that no longer matches is cut again)."""
    if decision.action == START:
        if decision.old is not None or decision.replaced:
            shutil.rmtree(out, ignore_errors=True)  # another product, or made afresh
        else:
            for sub in (IMAGES_DIR, LABELS_DIR):  # tiles without a manifest belong to no run
                shutil.rmtree(out / sub, ignore_errors=True)
        return {}
    known = decision.old.get("files", {})
    if not decision.old.get("complete"):
        return known
    for rel in damaged.problems:  # a repair: the damaged files are cut again
        remove_file(out / rel)
    write_manifest(out / TILES_MANIFEST, dict(decision.old, complete=False))
    return known
