import json
from pathlib import Path

import pytest

from gee_export.common import bands as c
from gee_export.common import layout as L
from gee_export.common.atomic import write_json
from gee_export.common.errors import GlacierError


def test_band_table_order_and_groups():
    assert c.BAND_NAMES == ("VV", "VH", "B2", "B3", "B4", "B8", "B11", "NDVI", "NDSI", "NDWI",
                            "elevation")
    assert "".join(b.group for b in c.BANDS) == "AABBBBBCCCD"
    assert all(b.fixed_range[1] > b.fixed_range[0] for b in c.BANDS)


@pytest.mark.parametrize("spec,expected", [
    ("ABCD", list(c.BAND_NAMES)),
    ("ad", ["VV", "VH", "elevation"]),
    ("DA", ["VV", "VH", "elevation"]),  # stack order, whatever the letter order
    ("C", ["NDVI", "NDSI", "NDWI"]),
])
def test_parse_bands(spec, expected):
    assert c.parse_bands(spec) == expected


@pytest.mark.parametrize("spec", ["ABE", "", "A1", "xyz"])
def test_parse_bands_rejects_other_letters(spec):
    with pytest.raises(GlacierError, match="letters from ABCD"):
        c.parse_bands(spec)


def test_paper_band_sets_are_valid():
    for s in c.PAPER_BAND_SETS:
        assert c.parse_bands(s)


def test_workspace_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv(L.WORKSPACE_ENV, raising=False)
    assert L.resolve_workspace(None).name == "workspace"
    monkeypatch.setenv(L.WORKSPACE_ENV, str(tmp_path / "env"))
    assert L.resolve_workspace(None) == tmp_path / "env"
    assert L.resolve_workspace(tmp_path / "opt") == tmp_path / "opt"  # option beats env
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(GlacierError, match="is a file"):
        L.resolve_workspace(f)


def _manifest(d, kind, complete, when, version=L.FORMAT_VERSION):
    d.mkdir(parents=True)
    m = {**L.base_manifest(kind), "complete": complete, "completed_at": when,
         "format_version": version}
    (d / L.MANIFEST_OF[kind]).write_text(json.dumps(m))


def test_newest_complete_skips_incomplete(tmp_path):
    ex = tmp_path / L.EXPORTS_DIR
    _manifest(ex / "a-2018", "export", True, "2026-01-01T00:00:00")
    _manifest(ex / "b-2019", "export", True, "2026-02-01T00:00:00")
    _manifest(ex / "c-2020", "export", False, "")
    assert L.newest_complete(tmp_path, "export").name == "b-2019"


def test_newest_complete_names_the_maker(tmp_path):
    with pytest.raises(GlacierError, match="prep tile"):
        L.newest_complete(tmp_path, "tiles")


def test_read_manifest_rejects_future_and_foreign(tmp_path):
    _manifest(tmp_path / "x", "export", True, "t", version=L.FORMAT_VERSION + 1)
    with pytest.raises(GlacierError, match="newer than this toolkit"):
        L.read_manifest(tmp_path / "x", "export")
    (tmp_path / "y").mkdir()
    (tmp_path / "y" / L.EXPORT_MANIFEST).write_text('{"hello": 1}')
    with pytest.raises(GlacierError, match="not a manifest"):
        L.read_manifest(tmp_path / "y", "export")
    _manifest(tmp_path / "z", "tiles", True, "t")
    (tmp_path / "z" / L.EXPORT_MANIFEST).write_text((tmp_path / "z" / L.TILES_MANIFEST).read_text())
    with pytest.raises(GlacierError, match="'tiles' manifest where a 'export' one was "
                       "expected; make the export again with `prep export --region REGION "
                       "--year YEAR --force`"):  # how to recover, e.g. from a report over it
        L.read_manifest(tmp_path / "z", "export")


def test_atomic_write_leaves_no_partial(tmp_path):
    p = tmp_path / "m.json"
    write_json(p, {"a": 1})
    assert json.loads(p.read_text()) == {"a": 1}
    assert [f.name for f in tmp_path.iterdir()] == ["m.json"]


def test_a_moved_workspace_reruns_every_stage_as_a_no_op(demo_years, tiny_run, tmp_path):
    """Manifests store paths relative to the workspace: after a move, every command of the
    chain (export, tile, run, predict, evaluate, change) finds its work done."""
    import shutil

    from gee_export.common.cli import prep, train
    from tests.helpers import DEMO_TEST_SIZE, invoke

    first = tmp_path / "a" / "ws"
    shutil.copytree(tiny_run[0], first, ignore=shutil.ignore_patterns("predictions"))
    ckpt = Path("runs") / "tiny-fixture" / "best.pt"

    def chain(ws: Path) -> list[str]:
        said = []
        for year in (2018, 2019):
            said.append(invoke(prep, ["export", "--region", "demo", "--year", year,
                                      "--demo-size", DEMO_TEST_SIZE, "--cell-size", 256,
                                      "--workspace", ws, "--quiet"]).output)
        said.append(invoke(prep, ["tile", "--export", ws / "exports" / "demo-2018",
                                  "--workspace", ws, "--size", 128, "--block-tiles", 1,
                                  "--quiet"]).output)
        said.append(invoke(train, ["run", "--tiles", ws / "tiles" / "demo-2018", "--workspace",
                                   ws, "--preset", "tiny", "--epochs", 2, "--lr", "2e-3",
                                   "--batch-size", 4, "--name", "tiny-fixture",
                                   "--quiet"]).output)
        said.append(invoke(train, ["predict", "--checkpoint", ws / ckpt, "--export",
                                   ws / "exports" / "demo-2018", "--workspace", ws,
                                   "--quiet"]).output)
        # evaluated before the change, as `make demo` does: the change takes its error model
        said.append(invoke(train, ["evaluate", "--prediction",
                                   ws / "predictions" / "tiny-fixture" / "demo-2018"]).output)
        said.append(invoke(train, ["change", "--checkpoint", ws / ckpt, "--region", "demo",
                                   "--years", "2018-2019", "--workspace", ws,
                                   "--quiet"]).output)
        return said

    chain(first)
    moved = tmp_path / "b" / "deeper" / "ws"
    moved.parent.mkdir(parents=True)
    shutil.move(first, moved)
    said = chain(moved)
    assert all(("nothing to do" in s) for s in said), said
    assert sum(s.count("nothing to do") for s in said) == 9  # change: 2 predictions + itself
