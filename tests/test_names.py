"""Names are names: every --name of every command is one plain path component, refused in one
line naming --name before anything is read, written or removed (issue 31, item 2)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from gee_export.common.cli import prep, train
from gee_export.common.errors import StateError
from gee_export.common.layout import check_name
from gee_export.common.stage import Stage

# Each command with a --name, and the arguments that take it to the point of using the name.
COMMANDS = {
    "prep export": (prep, lambda ws, f: ["export", "--region", "demo", "--year", 2018]),
    "prep tile": (prep, lambda ws, f: ["tile"]),
    "train run": (train, lambda ws, f: ["run"]),
    "train predict": (train, lambda ws, f: ["predict", "--checkpoint", f["checkpoint"]]),
    "train evaluate": (train, lambda ws, f: ["evaluate", "--prediction", f["prediction"]]),
    "train change": (train, lambda ws, f: ["change", "--checkpoint", f["checkpoint"],
                                            "--region", "demo", "--years", "2018"]),
    "train compare": (train, lambda ws, f: ["compare"]),
}
BAD = [".", "..", "", "a/b", "../../../outside", "/abs/path", "a\\b", ".hidden", "-x",
       "zones", "zones.json", "prediction.json", "manifest.json", "glaciers", "agreement",
       "demo-2018-utm47N"]


def _workspace(tmp_path: Path) -> tuple[Path, dict]:
    """A workspace with a product of every kind (and files beside it) that a name could reach."""
    ws = tmp_path / "ws"
    files = {"checkpoint": ws / "runs" / "r" / "best.pt",
             "prediction": ws / "predictions" / "r" / "demo-2018" / "prediction.json"}
    for rel in ("exports/demo-2018/export.json", "exports/demo-2018-utm47N/export.json",
                "tiles/demo-2018/manifest.json", "runs/r/config.json",
                "predictions/r/demo-2018/probability.tif", "predictions/r/zoned/zones.json",
                "predictions/r/demo-change/change.json", "comparisons/compare/comparison.json",
                "stac/catalog.json", "../outside/keep.txt", "../abs/keep.txt"):
        (ws / rel).parent.mkdir(parents=True, exist_ok=True)
        (ws / rel).write_text(rel)
    for f in files.values():
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("{}")
    return ws, {k: str(v.parent if k == "prediction" else v) for k, v in files.items()}


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_refuses_a_name_that_is_not_one_plain_component(tmp_path, cli, command):
    group, args = COMMANDS[command]
    ws, files = _workspace(tmp_path)
    before = _tree(tmp_path)
    for name in BAD:
        name = name.replace("/abs/path", str(tmp_path / "abs" / "keep.txt"))
        argv = args(ws, files)
        workspace = [] if command == "train evaluate" else ["--workspace", ws]
        # --name first: click converts options in the order given
        res = cli(group, [argv[0], "--name", name, *argv[1:], *workspace], ok=False)
        lines = [line for line in res.output.splitlines() if line.strip()]
        assert res.exit_code != 0 and len(lines) == 1 and "--name" in lines[0], \
            (command, name, res.output)
        assert "Traceback" not in res.output
        assert _tree(tmp_path) == before, (command, name)  # nothing written or removed


def test_a_plain_name_passes():
    for name in ("report", "demo-2018", "tiny_fixture.v2", "run1"):
        check_name(name)
    check_name("demo-2018-utm47N", zone_part=True)  # a zoned product names its zones' so


@pytest.mark.parametrize("kind,manifest", [("prediction", "prediction.json"),
                                           ("change", "change.json"),
                                           ("zoned prediction", "zones.json"),
                                           ("export", "export.json"), ("run", "config.json")])
def test_no_stage_starts_in_a_directory_another_product_owns(tmp_path, kind, manifest):
    """A good name that another kind of product already has: refused, and that product kept
    (predict used to remove a change's directory, a zoned merge to write into a prediction)."""
    others = {"prediction.json", "change.json", "zones.json", "export.json", "config.json"}
    for other in sorted(others - {manifest}):
        d = tmp_path / other.split(".")[0]
        d.mkdir()
        (d / other).write_text("{}")
        (d / "data.tif").write_text("kept")
        with pytest.raises(StateError, match=f"holds a .*{other}.*another --name"):
            Stage(kind, d / manifest).decide({"a": 1}, False, print)
        assert (d / "data.tif").read_text() == "kept"
    empty = tmp_path / "fresh"
    assert Stage(kind, empty / manifest).decide({"a": 1}, False, print).action == "start"


def test_a_good_name_of_another_kind_of_product_is_refused_and_kept(demo_export, tiny_run,
                                                                    tmp_path, cli):
    """`train predict --name` of a change's (or a zoned prediction's) directory, and `prep
    export --name` of a zoned export's: each refused in one line, the other product whole
    (predict used to remove such a directory before writing its own)."""
    import shutil

    shared, run = tiny_run
    ws = tmp_path / "ws"
    shutil.copytree(shared, ws, ignore=shutil.ignore_patterns("predictions", "comparisons",
                                                              "stac", "tiles"))
    ck, exp = ws / "runs" / run.name / "best.pt", ws / "exports" / demo_export[1].name
    cases = [(train, ["predict", "--checkpoint", ck, "--export", exp, "--name", "taken"],
              ws / "predictions" / run.name / "taken", "change.json"),
             (train, ["predict", "--checkpoint", ck, "--export", exp, "--name", "zoned"],
              ws / "predictions" / run.name / "zoned", "zones.json"),
             (prep, ["export", "--region", "demo", "--year", 2018, "--demo-size", 512,
                     "--cell-size", 256, "--name", "zoned"], ws / "exports" / "zoned",
              "zones.json")]
    for group, args, other, manifest in cases:
        other.mkdir(parents=True)
        (other / manifest).write_text('{"complete": true}')
        (other / "data.csv").write_text("kept")
        before = _tree(other)
        res = cli(group, [*args, "--workspace", ws, "--quiet"], ok=False)
        lines = [line for line in res.output.splitlines() if line.strip()]
        assert res.exit_code == 1 and "holds a" in lines[-1] and manifest in lines[-1], \
            res.output
        assert lines[-1].startswith("Error:") and res.output.count("Error:") == 1
        assert _tree(other) == before
