"""Every command, driven with bad values: one 'Error:' line naming the culprit, a non-zero
exit, no traceback, and nothing left in the workspace that could block the corrected rerun."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from gee_export.common.cli import prep, train

GROUPS = {"prep": prep, "train": train}
NO_WORKSPACE = {("train", "evaluate"), ("train", "models")}

# (command, arguments, what the one line must name). Placeholders: {ws} the workspace,
# {exp} a complete export, {tiles} complete tiles, {ckpt} a checkpoint, {text} a text file,
# {empty} an empty directory, {pred} a complete prediction.
CASES = [
    # prep export
    ("prep export", "--region atlantis --year 2018", "atlantis"),
    ("prep export", "--region demo --year 2015", "--year"),
    ("prep export", "--region demo --year x", "--year"),
    ("prep export", "--region demo --year 2018 --cell-size 0", "--cell-size"),
    ("prep export", "--region demo --year 2018 --cell-size 32", "--cell-size"),
    ("prep export", "--region demo --year 2018 --buffer -5", "--buffer"),
    ("prep export", "--region demo --year 2018 --max-scene-cloud 140", "--max-scene-cloud"),
    ("prep export", "--region demo --year 2018 --cloud-score-threshold 2",
     "--cloud-score-threshold"),
    ("prep export", "--region demo --year 2018 --s2-window 13-01 14-01", "MM-DD"),
    ("prep export", "--region demo --year 2018 --orbit sideways", "--orbit"),
    ("prep export", "--region demo --year 2018 --orbit descending", "--orbit descending"),
    ("prep export", "--region demo --year 2018 --norm zscore", "--norm"),
    ("prep export", "--region demo --year 2018 --workers -1", "--workers"),
    ("prep export", "--region demo --year 2018 --demo-size 100", "--demo-size"),
    ("prep export", "--bbox 100 40 99 41 --year 2018", "--bbox"),
    ("prep export", "--bbox 200 38 201 39 --year 2018", "-180 <= W < E <= 180"),
    ("prep export", "--region demo --year 2018 --to gcs --bucket b", "--to"),
    ("prep export", "--region qilian --year 2018 --to gcs --bucket b --folder f --dry-run",
     "--folder"),
    ("prep export", "--region demo --year 2018 --outlines {text}", "{text}"),
    ("prep export", "--region demo --year 2018 --norm-from {empty}", "{empty}"),
    ("prep export", "--region qilian --year 2018 --to gcs --dry-run", "--bucket"),
    ("prep export", "--region demo --bbox 1 2 3 4 --year 2018", "--region demo"),
    ("prep export", "--bbox 1 2 3 4 --region-file {text} --year 2018", "not both"),
    ("prep export", "--bbox 93 37 94 38 --year 2018 --crs EPSG:4326 --dry-run", "--crs"),
    ("prep export", "--bbox 93 37 94 38 --year 2018 --crs EPSG:2227 --dry-run", "--crs"),
    ("prep export", "--bbox 93 37 94 --year 2018", "--bbox needs a value"),
    # prep tile
    ("prep tile", "--export {exp} --size 100", "--size"),
    ("prep tile", "--export {exp} --size 0", "--size"),
    ("prep tile", "--export {exp} --stride 0", "--stride"),
    ("prep tile", "--export {exp} --min-area -1", "--min-area"),
    ("prep tile", "--export {exp} --min-valid 1.5", "--min-valid"),
    ("prep tile", "--export {exp} --background-ratio -1", "--background-ratio"),
    ("prep tile", "--export {exp} --val-fraction 1", "--val-fraction"),
    ("prep tile", "--export {exp} --block-tiles 0", "--block-tiles"),
    ("prep tile", "--export {exp} --block-tiles -3", "--block-tiles"),
    ("prep tile", "--export {exp} --split diagonal", "--split"),
    ("prep tile", "--export {exp} --small-glaciers maybe", "--small-glaciers"),
    ("prep tile", "--export {exp} --workers many", "--workers"),
    ("prep tile", "--export {empty}", "{empty}"),
    ("prep tile", "--export {exp} --outlines {text} --name other", "{text}"),
    ("prep tile", "--export {exp} --outlines-layer nope --name other-layer",
     "--outlines-layer 'nope'"),
    ("prep tile", "--verify --size 64", "--size"),
    ("prep status", "--export {empty}", "{empty}"),
    ("prep pull", "--export {exp} --from-dir {text}", "--from-dir"),
    # train run
    ("train run", "--tiles {tiles} --lr -1", "--lr"),
    ("train run", "--tiles {tiles} --lr 0", "--lr"),
    ("train run", "--tiles {tiles} --weight-decay -1", "--weight-decay"),
    ("train run", "--tiles {tiles} --workers -1", "--workers"),
    ("train run", "--tiles {tiles} --device tpu", "--device"),
    ("train run", "--tiles {tiles} --epochs 0", "--epochs"),
    ("train run", "--tiles {tiles} --batch-size 0", "--batch-size"),
    ("train run", "--tiles {tiles} --preset huge", "--preset"),
    ("train run", "--tiles {tiles} --bands XYZ --name bad-bands", "XYZ"),
    ("train run", "--tiles {tiles} --bands --size 256", "--bands needs a value"),
    ("train run", "--tiles {tiles} --model nosuchnet --name bad-model", "nosuchnet"),
    ("train run", "--tiles {tiles} --init {text} --name bad-init", "{text}"),
    ("train run", "--tiles {empty}", "{empty}"),
    # train predict
    ("train predict", "--checkpoint {ckpt} --export {exp} --window 48", "--window"),
    ("train predict", "--checkpoint {ckpt} --export {exp} --window -64", "--window"),
    ("train predict", "--checkpoint {ckpt} --export {exp} --window 64 --overlap 64", "--overlap"),
    ("train predict", "--checkpoint {ckpt} --export {exp} --threshold 1.5", "--threshold"),
    ("train predict", "--checkpoint {ckpt} --export {exp} --batch-size 0", "--batch-size"),
    ("train predict", "--checkpoint {ckpt} --export {exp} --min-area -1", "--min-area"),
    ("train predict", "--checkpoint {text} --export {exp} --name from-text", "{text}"),
    ("train predict", "--checkpoint {ckpt} --export {empty}", "{empty}"),
    ("train predict", "--checkpoint {ws}/none.pt --export {exp}", "--checkpoint"),
    # train evaluate
    ("train evaluate", "--prediction {empty}", "{empty}"),
    ("train evaluate", "--prediction {pred} --reference {text} --name bad-ref", "{text}"),
    ("train evaluate", "--prediction {pred} --id-field nope --name bad-id", "nope"),
    ("train evaluate", "--prediction {pred} --zone-buffer -1", "--zone-buffer"),
    ("train evaluate", "--prediction {pred} --min-area -1", "--min-area"),
    # train change
    ("train change", "--checkpoint {ckpt} --region demo --years 2018", "--years"),
    ("train change", "--checkpoint {ckpt} --region demo --years 2018-x", "--years"),
    ("train change", "--checkpoint {ckpt} --region demo --years 2020-2018", "FIRST comes"),
    ("train change", "--checkpoint {ckpt} --region demo --years 2030-2031", "--region"),
    ("train change", "--checkpoint {ckpt} --years 2018-2020", "--region"),
    ("train change", "--region demo --years 2018-2020", "--checkpoint"),
    ("train change", "--predictions {pred}", "--predictions"),
    ("train change", "--predictions {pred} --predictions {pred}", "--predictions"),
    ("train change", "--predictions {empty} --predictions {pred}", "{empty}"),
    ("train change", "--predictions {pred} --predictions {pred} --tta", "--tta"),
    ("train change", "--predictions {pred} --predictions {pred} --years 2018-2020", "--years"),
    # train compare, models
    ("train compare", "--tiles {tiles} --models unet,nosuchnet", "--models: 'nosuchnet'"),
    ("train compare", "--tiles {tiles} --bands AB,XY", "XY"),
    ("train compare", "--tiles {tiles} --epochs 0", "--epochs"),
    ("train models", "--preset huge", "--preset"),
    ("train models", "--bands Q", "Q"),
]


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture(scope="module")
def places(tiny_run, tmp_path_factory) -> dict[str, str]:
    from tests.helpers import invoke

    ws, run = tiny_run
    exp, tiles = ws / "exports" / "demo-2018", ws / "tiles" / "demo-2018"
    invoke(train, ["predict", "--checkpoint", run / "best.pt", "--export", exp,
                   "--workspace", ws, "--name", "cli-cases", "--quiet"])
    other = tmp_path_factory.mktemp("inputs")
    (other / "empty").mkdir()
    (other / "notes.txt").write_text("not a raster, a checkpoint or outlines\n")
    return {"ws": str(ws), "exp": str(exp), "tiles": str(tiles), "ckpt": str(run / "best.pt"),
            "text": str(other / "notes.txt"), "empty": str(other / "empty"),
            "pred": str(ws / "predictions" / run.name / "cli-cases")}


def test_there_are_enough_cases_and_every_command_has_some():
    assert len(CASES) >= 40
    assert {c for c, _, _ in CASES} == {f"{g} {n}" for g, grp in GROUPS.items()
                                        for n in grp.list_commands(None)}


@pytest.mark.parametrize("command,args,culprit", CASES,
                         ids=[f"{c} {a}"[:60] for c, a, _ in CASES])
def test_bad_value_is_one_line_naming_the_culprit(command, args, culprit, places):
    group, name = command.split()
    argv = [name, *args.format(**places).split()]
    if (group, name) not in NO_WORKSPACE:
        argv += ["--workspace", places["ws"]]
    before = snapshot(Path(places["ws"]))
    res = CliRunner().invoke(GROUPS[group], argv)
    assert res.exit_code not in (0, None), res.output
    assert isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("Error: ")]
    assert len(errors) == 1, res.output
    assert culprit.format(**places) in errors[0], errors[0]
    assert snapshot(Path(places["ws"])) ^ before == set()  # nothing left behind


@pytest.mark.parametrize("argv,message", [
    ("train run --bands --size 256", "--bands needs a value; it was followed by the option "
                                     "--size"),
    ("train models --bands --preset tiny", "--bands needs a value"),
    ("train models --preset -h", "--preset needs a value; it was followed by the option -h"),
    ("prep tile --size --stride 64", "--size needs a value"),
    ("prep export --year 2018 --bbox 93 37 94 --crs EPSG:32647", "--bbox needs a value"),
])
def test_an_option_without_its_value_does_not_swallow_the_next(argv, message):
    group, *args = argv.split()
    res = CliRunner().invoke(GROUPS[group], args)
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert lines[0].startswith(f"Error: {message}"), res.output


def test_negative_numbers_are_still_values():
    res = CliRunner().invoke(prep, ["export", "--bbox", "-70", "-33", "-69", "-32", "--year",
                                    "2018", "--crs", "EPSG:4326", "--dry-run"])
    assert "--crs" in res.output and "needs a value" not in res.output, res.output


def test_glaciers_gpkg_lists_the_glacier_polygons_first(places):
    """Readers that name no layer of glaciers.gpkg get its first: the predicted glaciers."""
    import pyogrio

    from gee_export.common.outlines import check_outlines_readable

    path = Path(places["pred"]) / "glaciers.gpkg"
    assert [n for n, _ in pyogrio.list_layers(path)] == ["glaciers", "by_glacier"]
    assert check_outlines_readable(path) == "glaciers"  # as an inventory, without a warning


def test_version_and_help_cite_only_what_ships():
    from gee_export.common.layout import package_version

    for group in GROUPS.values():
        res = CliRunner().invoke(group, ["--version"])
        assert res.exit_code == 0 and package_version() in res.output
        for name in group.list_commands(None):
            text = CliRunner().invoke(group, [name, "--help"]).output
            assert "DESIGN.md" not in text and "MODEL.md" not in text, name


def test_manifests_follow_the_umask(tmp_path):
    from gee_export.common.atomic import write_json

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "m.json", {"a": 1})
        assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        write_json(tmp_path / "n.json", {"a": 1})
        assert (tmp_path / "n.json").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": 1}


# A wrong combination of options, or a missing input, found in a command's body: the
# toolkit's InputError (exit status 1) in every command, as the library raises it too. Only
# one option's own value refused while click parses it is click's (status 2).
COMBINATIONS = [
    (prep, "export --region demo --bbox 1 2 3 4 --year 2018", "--region demo"),
    (prep, "tile --verify --size 64", "--size: --verify checks a tile set"),
    (prep, "tile --size 64 --stride 128", "--stride 128: larger than --size 64"),
    (train, "change --region demo --years 2018-2020", "give either --checkpoint"),
    (train, "change --checkpoint {file} --years 2018-2020", "--checkpoint needs --region"),
    (train, "change --checkpoint {file} --checkpoint {file} --region demo --years 2018-2020",
     "--checkpoint: the same file twice"),
    (train, "change --predictions {dir} --predictions {dir} --tta", "--tta: these choose"),
    (train, "evaluate --prediction {pred}", "its export recorded no outlines"),
]


@pytest.mark.parametrize("group,args,message", COMBINATIONS,
                         ids=[a[:50] for _, a, _ in COMBINATIONS])
def test_a_wrong_combination_is_an_input_error_in_every_command(group, args, message, tmp_path):
    from gee_export.common.atomic import write_json
    from gee_export.common.layout import PREDICTION_MANIFEST, base_manifest

    (tmp_path / "file.pt").write_bytes(b"")
    (tmp_path / "dir").mkdir()
    (tmp_path / "exp").mkdir()  # an export that recorded no outlines
    (tmp_path / "pred").mkdir()
    write_json(tmp_path / "pred" / PREDICTION_MANIFEST,
               base_manifest("prediction", export=str(tmp_path / "exp")))
    argv = args.format(file=tmp_path / "file.pt", dir=tmp_path / "dir",
                       pred=tmp_path / "pred").split()
    if "evaluate" not in args:
        argv += ["--workspace", str(tmp_path / "ws")]
    res = CliRunner().invoke(group, argv)
    assert res.exit_code == 1 and res.output.startswith("Error: "), res.output
    assert message in res.output and len(res.output.strip().splitlines()) == 1, res.output
