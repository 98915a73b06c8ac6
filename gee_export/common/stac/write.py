"""Writing the catalog into the workspace: rebuilt whole, then synced file by file.

Every command that writes to a workspace rebuilds the catalog when it ends, a rerun with
nothing to do included (common/cli.user_errors), so a product deleted by hand leaves no item
behind. The catalog is rebuilt from the stages' manifests (they are the record; the catalog
is a view of them), so it never disagrees with them: it is written by pystac into a scratch
directory, then copied file by file under temporary names and renamed (a reader sees whole
files, `catalog.json` last), under the workspace's catalog lock. Every href is relative, so
the workspace stays relocatable.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Callable

from ..atomic import make_dirs, write_bytes
from ..errors import GlacierError
from ..layout import STAC_CATALOG, STAC_DIR
from .build import build_catalog


def update_catalog(workspace: Path, echo: Callable[[str], None] = print) -> Path | None:
    """Rebuild the workspace's STAC catalog from the complete products' manifests.

    A catalog that cannot be written (a read-only or full workspace) is said in one warning
    line and never fails the stage that calls it: the products are complete without it, and
    the next stage writes it.

    Args:
        workspace: the workspace directory.
        echo: where the warning goes.

    Returns:
        The path of `catalog.json`, or None when it could not be written.
    """
    from ..locks import output_lock

    root = Path(workspace) / STAC_DIR
    left_out: list[str] = []
    try:
        with output_lock(root, wait=True, echo=lambda _: None):
            write_catalog(Path(workspace), left_out)
    except Exception as e:  # noqa: BLE001 (GDAL's and pystac's errors are of many kinds)
        echo(f"warning: the STAC catalog {root} was not updated ({_first_line(e)}); the "
             "next stage writes it")
        return None
    if left_out:
        echo(f"warning: the STAC catalog leaves out {len(left_out)} product(s) whose record "
             f"it cannot read: {'; '.join(left_out[:3])}")
    return root / STAC_CATALOG


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text and not isinstance(
        e, GlacierError) else (text or type(e).__name__)


def write_catalog(workspace: Path, left_out: list[str] | None = None) -> Path:
    """Write `stac/` (unlocked: see update_catalog); the path of catalog.json. Products whose
    manifest lacks what an item needs are named in `left_out`."""
    import pystac

    workspace = Path(workspace)
    root = workspace / STAC_DIR
    catalog = build_catalog(workspace, left_out)
    scratch = Path(tempfile.mkdtemp(prefix=".stac-", dir=make_dirs(workspace)))
    try:
        catalog.normalize_hrefs(str(scratch))
        catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
        _sync(scratch, root)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return root / STAC_CATALOG


def _sync(scratch: Path, root: Path) -> None:
    """Copy the files of `scratch` over `root` (each under a temporary name, renamed; unchanged
    ones left alone; catalog.json last), then remove what `root` holds that `scratch` does not."""
    files = sorted(p.relative_to(scratch) for p in scratch.rglob("*.json"))
    files.sort(key=lambda p: p == Path(STAC_CATALOG))
    for rel in files:
        data, dest = (scratch / rel).read_bytes(), root / rel
        if not (dest.is_file() and dest.read_bytes() == data):
            write_bytes(dest, data)
    keep = set(files)
    for p in sorted(root.rglob("*.json"), reverse=True):
        if p.relative_to(root) not in keep:
            p.unlink()
    for d in sorted((d for d in root.rglob("*") if d.is_dir()), reverse=True):
        if not any(d.iterdir()):
            d.rmdir()
