"""The contract between stages: the band table and the on-disk layout.

This module is the one home of DESIGN.md sections 1 and 2. Every other module imports band
names, band groups, manifest names and paths from here; nothing else spells them out.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

FORMAT_VERSION = 1
PACKAGE_VERSION = "0.1.0"


class GlacierError(Exception):
    """A problem with the user's input or environment, reported as one line without traceback."""


# --------------------------------------------------------------------------------------------
# Band table (DESIGN.md section 2). The order is part of the on-disk contract.


@dataclass(frozen=True)
class Band:
    name: str
    group: str  # the paper's band groups (section 3.4): A radar, B optical, C indices, D terrain
    source: str
    unit: str
    # Fixed physical range mapped to [0, 1] by the default normalization. Identical for every
    # year and region so that a model trained on one export reads another unchanged.
    fixed_range: tuple[float, float]


BANDS: tuple[Band, ...] = (
    # Residual GRD border noise sits below about -30 dB (DESIGN.md 3); bright layover reaches +5.
    Band("VV", "A", "Sentinel-1 GRD sigma0", "dB", (-30.0, 5.0)),
    # VH is about 5-8 dB weaker than VV over land.
    Band("VH", "A", "Sentinel-1 GRD sigma0", "dB", (-35.0, 0.0)),
    Band("B2", "B", "Sentinel-2 SR blue", "reflectance", (0.0, 1.0)),
    Band("B3", "B", "Sentinel-2 SR green", "reflectance", (0.0, 1.0)),
    Band("B4", "B", "Sentinel-2 SR red", "reflectance", (0.0, 1.0)),
    Band("B8", "B", "Sentinel-2 SR NIR", "reflectance", (0.0, 1.0)),
    Band("B11", "B", "Sentinel-2 SR SWIR1 (20 m, bilinear to 10 m)", "reflectance", (0.0, 1.0)),
    # Standard sign (B8 - B4); the paper's eq. (1) prints (B4 - B8).
    Band("NDVI", "C", "(B8 - B4) / (B8 + B4)", "ratio", (-1.0, 1.0)),
    Band("NDSI", "C", "(B3 - B11) / (B3 + B11)", "ratio", (-1.0, 1.0)),
    Band("NDWI", "C", "(B3 - B8) / (B3 + B8)", "ratio", (-1.0, 1.0)),
    # 0-9000 m: Qilian spans about 1300-5830 m; 9000 covers all of High Mountain Asia so the
    # same fixed range serves every region without clipping a summit.
    Band("elevation", "D", "HMA DEM, SRTM where HMA has no data (EGM96 heights)", "m",
         (0.0, 9000.0)),
)
BAND_NAMES: tuple[str, ...] = tuple(b.name for b in BANDS)
BAND_INDEX: dict[str, int] = {b.name: i for i, b in enumerate(BANDS)}
GROUPS = "ABCD"
S1_BANDS = tuple(b.name for b in BANDS if b.group == "A")
S2_BANDS = tuple(b.name for b in BANDS if b.group == "B")
INDEX_BANDS = tuple(b.name for b in BANDS if b.group == "C")
DEM_BAND = "elevation"
# The paper's seven band combinations (Fig. 4-5).
PAPER_BAND_SETS = ("AD", "ACD", "AC", "AB", "BD", "ABD", "ABCD")


def parse_bands(spec: str) -> list[str]:
    """Band names, in stack order, for a group string such as "ACD"."""
    letters = spec.strip().upper()
    bad = sorted({c for c in letters if c not in GROUPS})
    if not letters or bad:
        raise GlacierError(
            f"--bands {spec!r}: use letters from {GROUPS} only "
            f"(A radar VV VH, B optical B2-B11, C indices, D elevation)"
            + (f"; got {''.join(bad)!r}" if bad else ""))
    chosen = set(letters)
    return [b.name for b in BANDS if b.group in chosen]


def band_indices(names: Iterable[str]) -> list[int]:
    out = []
    for n in names:
        if n not in BAND_INDEX:
            raise GlacierError(f"unknown band {n!r}; the stack has {', '.join(BAND_NAMES)}")
        out.append(BAND_INDEX[n])
    return out


# --------------------------------------------------------------------------------------------
# On-disk layout (DESIGN.md section 1).

WORKSPACE_ENV = "GLACIER_WORKSPACE"
DEFAULT_WORKSPACE = "workspace"

EXPORTS_DIR, TILES_DIR, RUNS_DIR, PREDICTIONS_DIR, SOURCES_DIR = (
    "exports", "tiles", "runs", "predictions", "sources")
COMPARISONS_DIR = "comparisons"
EXPORT_MANIFEST = "export.json"
TILES_MANIFEST = "manifest.json"
RUN_CONFIG = "config.json"
STACK_DIR = "stack"
STACK_VRT = "stack.vrt"
OUTLINES_FILE = "outlines.gpkg"
TILE_INDEX = "index.gpkg"
IMAGES_DIR, LABELS_DIR = "images", "labels"
METRICS_CSV = "metrics.csv"
BEST_CKPT, LAST_CKPT = "best.pt", "last.pt"

# Which stage makes which product, for error messages that say what to run first.
MAKER = {
    "export": "prep export --region REGION --year YEAR",
    "tiles": "prep tile",
    "run": "train run",
    "sources": "prep export --region demo (generates them)",
    "prediction": "train predict --checkpoint RUN/best.pt",
}
PREDICTION_MANIFEST = "prediction.json"
REPORT_JSON = "report.json"
MANIFEST_OF = {"export": EXPORT_MANIFEST, "tiles": TILES_MANIFEST, "run": RUN_CONFIG,
               "prediction": PREDICTION_MANIFEST}
PARENT_OF = {"export": EXPORTS_DIR, "tiles": TILES_DIR, "run": RUNS_DIR}

LABEL_GLACIER, LABEL_BACKGROUND, LABEL_IGNORE = 1, 0, 255

# GDAL's block cache for the streamed stages (tile, predict): they read each block about once,
# so a bigger cache only makes memory grow with the scene (GDAL's default is 5 % of RAM).
GDAL_CACHE_MB = 64


def bounded_gdal_cache():
    """A rasterio environment with GDAL's block cache capped at GDAL_CACHE_MB."""
    import rasterio

    return rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB)


def product_name(region: str, year: int) -> str:
    return f"{region}-{year}"


def resolve_workspace(path: str | os.PathLike | None = None) -> Path:
    """The workspace from the option, else $GLACIER_WORKSPACE, else ./workspace."""
    raw = path if path is not None else os.environ.get(WORKSPACE_ENV) or DEFAULT_WORKSPACE
    ws = Path(raw).expanduser()
    if ws.exists() and not ws.is_dir():
        raise GlacierError(f"workspace {ws} is a file, not a directory")
    return ws


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def base_manifest(kind: str, **fields) -> dict:
    return {"format_version": FORMAT_VERSION, "kind": kind, "package_version": PACKAGE_VERSION,
            "created_at": now_iso(), "complete": False, **fields}


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write next to the target and rename, so a reader never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: dict) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=_json_default) + "\n").encode())


def as_stored(obj):
    """obj as it reads back from a manifest (tuples become lists, numpy scalars numbers), so
    parameters can be compared with the ones an earlier run stored."""
    return json.loads(json.dumps(obj, default=_json_default))


def _json_default(o):
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def tmp_path(path: Path) -> Path:
    """The temporary name a product file is written under before its rename."""
    return path.with_name(f".{path.name}.partial")


def read_manifest(path: Path, kind: str) -> dict:
    """A manifest of the given kind, checked for version and kind; clear errors otherwise."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_OF[kind]
    if not path.is_file():
        raise GlacierError(f"{path}: no {kind} manifest here; it is made by `{MAKER[kind]}`")
    try:
        m = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GlacierError(f"{path}: not a valid JSON manifest ({e})") from None
    if not isinstance(m, dict) or "format_version" not in m:
        raise GlacierError(f"{path}: not a manifest of this toolkit (no format_version)")
    v = m["format_version"]
    if not isinstance(v, int) or v > FORMAT_VERSION:
        raise GlacierError(f"{path}: format_version {v!r} is newer than this toolkit reads "
                           f"({FORMAT_VERSION}); upgrade glacier-mapping")
    if m.get("kind") != kind:
        raise GlacierError(f"{path}: a {m.get('kind')!r} manifest where a {kind!r} one was expected")
    return m


def newest_complete(workspace: Path, kind: str) -> Path:
    """The directory of the newest complete product of a kind, or a clear error naming its maker."""
    parent = workspace / PARENT_OF[kind]
    found = []
    if parent.is_dir():
        for d in parent.iterdir():
            mf = d / MANIFEST_OF[kind]
            if not mf.is_file():
                continue
            try:
                m = json.loads(mf.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if m.get("complete") and m.get("kind") == kind:
                found.append((m.get("completed_at", ""), mf.stat().st_mtime, d))
    if not found:
        raise GlacierError(f"no complete {kind} in {parent}; make one first with `{MAKER[kind]}`")
    return max(found)[2]


def file_sha256(path: Path, limit: int | None = None) -> str:
    """Checksum of a file (or of its first `limit` bytes, for very large inputs)."""
    import hashlib

    h = hashlib.sha256()
    read = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            read += len(chunk)
            if limit is not None and read >= limit:
                break
    return h.hexdigest()
