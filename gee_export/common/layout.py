"""The workspace on disk: where each stage writes, what its files are called, and the small
versioned manifest beside every product. This module is the one place that spells out file
names; the stages import them from here.

Paths inside a manifest are stored relative to the manifest's own directory when they lie in
the workspace, so a workspace can be moved or copied and every rerun is still a no-op; inputs
outside the workspace (a user's outline file) are stored as absolute paths and identified by
their checksum.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from .atomic import write_json
from .errors import InputError, InputNotFoundError, StateError

FORMAT_VERSION = 1


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("glacier-mapping")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


# -- the workspace ------------------------------------------------------------------------------

WORKSPACE_ENV = "GLACIER_WORKSPACE"
DEFAULT_WORKSPACE = "workspace"
EXPORTS_DIR, TILES_DIR, RUNS_DIR, PREDICTIONS_DIR, SOURCES_DIR = (
    "exports", "tiles", "runs", "predictions", "sources")
COMPARISONS_DIR = "comparisons"
STAC_DIR, STAC_CATALOG = "stac", "catalog.json"  # the workspace's STAC catalog (common/stac/)
# A product of a region across UTM zones: one product per zone (utm.part_name) and, in the
# product's own directory, this manifest naming them (zoned.py).
ZONES_MANIFEST = "zones.json"

# -- file names, by stage -------------------------------------------------------------------------

# sources (the demo generator)
SOURCES_MANIFEST = "sources.json"
# prep export
EXPORT_MANIFEST = "export.json"
STACK_DIR = "stack"
STACK_VRT = "stack.vrt"
OUTLINES_FILE = "outlines.gpkg"
TRUTH_OUTLINES_FILE = "truth_outlines.gpkg"  # synthetic scenes: the glaciers of the export's year
DEM_SOURCE_DIR = "dem_source"
# prep tile
TILES_MANIFEST = "manifest.json"
TILE_INDEX = "index.gpkg"
IMAGES_DIR, LABELS_DIR = "images", "labels"
OVERVIEW_PNG = "overview.png"
# train run
RUN_CONFIG = "config.json"
METRICS_CSV = "metrics.csv"
BEST_CKPT, LAST_CKPT = "best.pt", "last.pt"
CURVES_PNG, SAMPLES_PNG = "curves.png", "samples.png"
# train predict / evaluate
PREDICTION_MANIFEST = "prediction.json"
PROBABILITY_TIF = "probability.tif"
GLACIERS_GPKG = "glaciers.gpkg"
GLACIERS_PARQUET = "glaciers.parquet"  # train predict --format parquet|both: GeoParquet
PROBABILITY_QML, GLACIERS_QML = "probability.qml", "glaciers.qml"  # QGIS styles (qml.py)
OUTLINE_FILES = {"gpkg": GLACIERS_GPKG, "parquet": GLACIERS_PARQUET}
DEFAULT_REPORT = "report"  # train evaluate --name
# train compare / change
COMPARISON_FILES = ("comparison.json", "comparison.csv", "comparison.md", "comparison.png")
CHANGE_FILES = ("change.json", "change.csv", "change.gpkg", "change.png")
CHANGE_TIF, CHANGE_QML = "change.tif", "change.qml"  # classes: stable, lost, gained ice


def tif_name(item_id: str) -> str:
    """The file of one export cell or one tile: `<id>.tif`."""
    return f"{item_id}.tif"


def tile_files(tile_id: str) -> tuple[str, str]:
    """The image and label of a tile, relative to its tile directory."""
    return f"{IMAGES_DIR}/{tif_name(tile_id)}", f"{LABELS_DIR}/{tif_name(tile_id)}"


def change_map_files(zone: str | None = None) -> tuple[str, str]:
    """train change's map and its QGIS style: change.tif, or change-<zone>.tif for each UTM
    zone of a zoned change (a style beside a raster of the same stem is the one QGIS loads)."""
    if zone is None:
        return CHANGE_TIF, CHANGE_QML
    return f"change-{zone}.tif", f"change-{zone}.qml"


AGREEMENT_PNG = "agreement.png"  # the default report's figure


def report_files(name: str) -> tuple[str, str]:
    """train evaluate's report and figure for a report name (default `report`)."""
    return f"{name}.json", (AGREEMENT_PNG if name == DEFAULT_REPORT else f"{name}.png")


# -- names users give products (--name) -----------------------------------------------------------

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
# A zone's product of a zoned one, NAME-utmZONE (utm.part_name): made by the zoned product.
ZONE_PART = re.compile(r".*-utm\d{1,2}[NS]")
# The names this toolkit itself gives files and directories in a workspace, and their stems:
# a product named so would be taken for (or written over) one of them.
OWN_NAMES = frozenset(n for f in (
    EXPORTS_DIR, TILES_DIR, RUNS_DIR, PREDICTIONS_DIR, SOURCES_DIR, COMPARISONS_DIR, STAC_DIR,
    STAC_CATALOG, ZONES_MANIFEST, SOURCES_MANIFEST, EXPORT_MANIFEST, STACK_DIR, STACK_VRT,
    OUTLINES_FILE, TRUTH_OUTLINES_FILE, DEM_SOURCE_DIR, TILES_MANIFEST, TILE_INDEX, IMAGES_DIR,
    LABELS_DIR, OVERVIEW_PNG, RUN_CONFIG, METRICS_CSV, BEST_CKPT, LAST_CKPT, CURVES_PNG,
    SAMPLES_PNG, PREDICTION_MANIFEST, PROBABILITY_TIF, GLACIERS_GPKG, GLACIERS_PARQUET,
    PROBABILITY_QML, GLACIERS_QML, AGREEMENT_PNG, *COMPARISON_FILES, *CHANGE_FILES, CHANGE_TIF,
    CHANGE_QML) for n in (f, f.split(".")[0]))


def check_name(name: str | None, option: str = "--name", zone_part: bool = False) -> None:
    """Refuse a product name that is not one plain path component of its own: empty, `.`,
    `..`, absolute, holding a separator, hidden (`.NAME`, like the locks beside products), a
    name the toolkit gives its own files (zones.json, prediction, ...) or, unless `zone_part`
    (choosing an existing product), a zone's part of a zoned product (NAME-utm47N). None (the
    default name) passes.

    Raises:
        InputError: one line naming `option` (where given) and what a name may be.
    """
    if name is None:
        return
    said = f"{option} {name!r}" if option else repr(name)
    rule = (f"{said}: a name is one plain file name (1-100 letters, digits, . _ -, starting "
            "with a letter or digit)")
    if not NAME_PATTERN.fullmatch(name):
        raise InputError(rule)
    if name in OWN_NAMES or name.split(".")[0] in OWN_NAMES:
        raise InputError(f"{rule} other than the toolkit's own file names; "
                         f"{name!r} is one of them")
    if not zone_part and ZONE_PART.fullmatch(name):
        raise InputError(f"{rule}; NAME-utmZONE is the name of a zone's part of a product "
                         "across UTM zones, which that product makes")


# The manifests of the products that own a directory each: a directory holding one of them is
# that product's, and no other stage writes into it or removes it.
DIRECTORY_MANIFESTS = {EXPORT_MANIFEST: "export", TILES_MANIFEST: "tile set", RUN_CONFIG: "run",
                       PREDICTION_MANIFEST: "prediction", ZONES_MANIFEST: "zoned product",
                       SOURCES_MANIFEST: "demo sources", CHANGE_FILES[0]: "change"}

MANIFEST_OF = {"export": EXPORT_MANIFEST, "tiles": TILES_MANIFEST, "run": RUN_CONFIG,
               "prediction": PREDICTION_MANIFEST, "sources": SOURCES_MANIFEST,
               "zoned export": ZONES_MANIFEST, "zoned prediction": ZONES_MANIFEST}
PARENT_OF = {"export": EXPORTS_DIR, "tiles": TILES_DIR, "run": RUNS_DIR}
# Which command makes which product, for errors that say what to run first.
MAKER = {
    "export": "prep export --region REGION --year YEAR",
    "tiles": "prep tile",
    "run": "train run",
    "sources": "prep export --region demo (generates them)",
    "prediction": "train predict --checkpoint RUN/best.pt",
    "evaluation": "train evaluate --prediction DIR",
    "zoned export": "prep export --region REGION --year YEAR (a region across UTM zones)",
    "zoned prediction": "train predict --export EXPORT (of a region across UTM zones)",
}


def product_name(region: str, year: int) -> str:
    return f"{region}-{year}"


def prediction_dir(workspace: Path, checkpoint: Path, name: str) -> Path:
    """Where `train predict` writes: predictions/<the checkpoint's run>/<name>."""
    return Path(workspace) / PREDICTIONS_DIR / Path(checkpoint).resolve().parent.name / name


def resolve_workspace(path: str | os.PathLike | None = None) -> Path:
    """The workspace from the option, else $GLACIER_WORKSPACE, else ./workspace."""
    raw = path if path is not None else os.environ.get(WORKSPACE_ENV) or DEFAULT_WORKSPACE
    ws = Path(raw).expanduser()
    if ws.exists() and not ws.is_dir():
        raise InputError(f"workspace {ws} is a file, not a directory")
    return ws


# -- paths inside manifests -----------------------------------------------------------------------

def stored_path(path: Path, manifest_dir: Path, workspace: Path) -> str:
    """How a manifest in `manifest_dir` records `path`: relative to that directory when the
    path lies in the workspace (so the workspace can move), absolute otherwise."""
    path, ws = Path(path).resolve(), Path(workspace).resolve()
    if path == ws or ws in path.parents:
        return Path(os.path.relpath(path, Path(manifest_dir).resolve())).as_posix()
    return str(path)


def resolved_path(stored: str, manifest_dir: Path) -> Path:
    """The path a manifest in `manifest_dir` recorded with `stored_path`."""
    p = Path(stored)
    return p if p.is_absolute() else Path(os.path.normpath(Path(manifest_dir) / p))


def workspace_of(product_dir: Path, kind: str) -> Path:
    """The workspace a product directory belongs to (predictions sit one level deeper)."""
    depth = {"prediction": 3, "sources": 2}.get(kind, 2)
    return Path(product_dir).resolve().parents[depth - 1]


# -- manifests ----------------------------------------------------------------------------------

def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def base_manifest(kind: str, **fields: Any) -> dict:
    return {"format_version": FORMAT_VERSION, "kind": kind,
            "package_version": package_version(), "created_at": now_iso(), "complete": False,
            **fields}


def read_manifest(path: Path, kind: str) -> dict:
    """A manifest of the given kind (or the directory holding it), checked for version and
    kind; one clear line otherwise."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_OF[kind]
    if not path.is_file():
        raise InputNotFoundError(f"{path}: no {kind} manifest here; it is made by "
                                 f"`{MAKER[kind]}`")
    try:
        m = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not a valid JSON manifest ({e})") from None
    if not isinstance(m, dict) or "format_version" not in m:
        raise InputError(f"{path}: not a manifest of this toolkit (no format_version)")
    v = m["format_version"]
    if not isinstance(v, int) or v > FORMAT_VERSION:
        raise InputError(f"{path}: format_version {v!r} is newer than this toolkit reads "
                         f"({FORMAT_VERSION}); upgrade glacier-mapping")
    if m.get("kind") != kind:
        again = f"; make the {kind} again with `{MAKER[kind]} --force`" if kind in MAKER else ""
        raise InputError(f"{path}: a {m.get('kind')!r} manifest where a {kind!r} one was "
                         f"expected{again}")
    return m


def write_manifest(path: Path, manifest: dict) -> None:
    manifest["updated_at"] = now_iso()
    write_json(path, manifest)


def export_identity(export: dict) -> str:
    """What identifies one export, from its manifest: its parameters and when it was created.
    Resuming or repairing it (a cell made again with the same options) keeps both; replacing
    it (--force, other parameters) changes them. Products made from an export record this,
    not its completion time, which a repair changes."""
    key = json.dumps([export.get("parameters"), export.get("created_at")], sort_keys=True,
                     default=str)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def require_complete(path: Path, kind: str, what: str) -> dict:
    """The manifest of an upstream product that must be complete before this stage runs."""
    m = read_manifest(path, kind)
    if not m.get("complete"):
        raise StateError(f"{path}: the {kind} is not complete; {what}")
    return m


def newest_complete(workspace: Path, kind: str, option: str | None = None,
                    echo: Callable[[str], None] | None = None) -> Path:
    """The directory of the newest complete product of a kind, or a clear error naming its
    maker. Chosen for a command's `option` that was not given, it says which in one line
    through `echo`."""
    products = complete_products(workspace, kind)
    parent = Path(workspace) / PARENT_OF[kind]
    if not products:
        raise InputNotFoundError(f"no complete {kind} in {parent}; make one first with "
                                 f"`{MAKER[kind]}`")
    chosen = products[-1][0]
    if echo is not None:
        echo(f"{option or kind}: {chosen} (the newest complete {kind} of {len(products)} in "
             f"{parent}{f'; give {option} to choose another' if option else ''})")
    return chosen


def complete_products(workspace: Path, kind: str) -> list[tuple[Path, dict]]:
    """The complete products of a kind in a workspace with their manifests, oldest first."""
    parent = Path(workspace) / PARENT_OF[kind]
    found = []
    if parent.is_dir():
        for d in parent.iterdir():
            mf = d / MANIFEST_OF[kind]
            if not mf.is_file():
                continue
            try:
                m = json.loads(mf.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError, OSError):
                continue
            if isinstance(m, dict) and m.get("complete") and m.get("kind") == kind:
                found.append((m.get("completed_at") or "", mf.stat().st_mtime, d.name, d, m))
    return [(d, m) for *_, d, m in sorted(found)]


def file_sha256(path: Path, limit: int | None = None) -> str:
    """Checksum of a file (or of its first `limit` bytes, for very large inputs)."""
    h = hashlib.sha256()
    read = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            read += len(chunk)
            if limit is not None and read >= limit:
                break
    return h.hexdigest()


# -- checksums of the files a manifest lists ----------------------------------------------------

def file_record(path: Path) -> list:
    """[size in bytes, sha256] of a file, as a manifest's "files" table records it."""
    return [Path(path).stat().st_size, file_sha256(path)]


def check_files(directory: Path, records: dict[str, list], full: bool = True) -> dict[str, str]:
    """What is wrong with the files a manifest recorded (paths relative to `directory`), by
    path: missing, a different size or, with `full`, a different checksum. Without `full` the
    check costs one stat per file."""
    problems = {}
    for rel, (size, sha) in records.items():
        path = Path(directory) / rel
        if not path.is_file():
            problems[rel] = "missing"
        elif path.stat().st_size != size:
            problems[rel] = f"{path.stat().st_size} bytes where {size} were written"
        elif full and file_sha256(path) != sha:
            problems[rel] = "checksum differs from the one recorded at write time"
    return problems


def describe_problems(problems: dict[str, str], shown: int = 3) -> str:
    """The first few of check_files' problems on one line."""
    items = [f"{rel}: {why}" for rel, why in list(problems.items())[:shown]]
    more = len(problems) - shown
    return "; ".join(items) + (f"; and {more} more" if more > 0 else "")
