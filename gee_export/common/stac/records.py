"""What the catalog reads of the stages' records: their manifests (the record; the catalog is a
view of them), the properties every item takes from one, and the files an item derives from
beyond other items (an export's source files, a prediction's model checkpoint)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from ..layout import RUNS_DIR, resolved_path


def products(parent: Path | Iterable[Path], manifest: str,
             left_out: list[str] | None = None) -> list[tuple[Path, dict]]:
    """Complete products (directory, manifest) under `parent` (or among the directories given),
    by name; unreadable manifests are left out, and named in `left_out`."""
    dirs = sorted(parent.iterdir()) if isinstance(parent, Path) and parent.is_dir() else (
        [] if isinstance(parent, Path) else list(parent))
    found = []
    for d in dirs:
        try:
            m = json.loads((d / manifest).read_text())
        except OSError:
            continue
        except ValueError as e:
            if left_out is not None:
                left_out.append(f"{d} ({manifest} is not JSON: {e})")
            continue
        if isinstance(m, dict) and m.get("complete"):
            found.append((d, m))
    return found


def read_manifest(d: Path, name: str) -> dict | None:
    """The manifest `name` of directory `d`, or None where it is missing or not a JSON object."""
    try:
        m = json.loads((Path(d) / name).read_text())
    except (OSError, ValueError):
        return None
    return m if isinstance(m, dict) else None


def common_props(m: dict, d: Path, workspace: Path) -> dict:
    """The properties every item takes from its product's manifest (None ones are dropped)."""
    region = m.get("region")
    return {"synthetic": True if m.get("synthetic") else None,
            "glacier:region": region.get("name") if isinstance(region, dict) else region,
            "glacier:year": m.get("year"),
            "glacier:kind": m.get("kind"),
            "glacier:package_version": m.get("package_version"),
            "created": m.get("created_at"), "updated": m.get("completed_at")}


def input_links(workspace: Path, d: Path, m: dict) -> list[tuple[Path, str]]:
    """The local source files an export read (those that still exist), for provenance."""
    src = m.get("source_dir")
    if not src:
        return []
    src_dir = resolved_path(src, d)
    return [(src_dir / name, f"source: {name}") for name in sorted(m.get("input_files") or {})
            if (src_dir / name).is_file()]


def checkpoint(workspace: Path, d: Path, m: dict) -> Path | None:
    """The model checkpoint a prediction was made with, where it still exists."""
    name = (m.get("parameters") or {}).get("checkpoint")
    if not name:
        return None
    p = Path(workspace) / RUNS_DIR / d.parent.name / name
    return p if p.is_file() else None
