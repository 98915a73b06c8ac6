"""The stage contract every stage keeps (gee_export/common/stage.py), on its own; the stages'
own tests check that each keeps it (refusals naming `option: old -> new`, --force, resume)."""
import json

import pytest

from gee_export.common.errors import StateError
from gee_export.common.layout import base_manifest
from gee_export.common.stage import DONE, RESUME, START, Stage, differences


def test_differences_are_named_as_options_old_to_new():
    old = {"lr": 0.002, "augment": True, "config": {"min_area_km2": 0.05, "tta": False},
           "inputs": {"a.tif": "0" * 64}, "same": 1}
    new = {"lr": 0.001, "augment": False, "config": {"min_area_km2": 0.1, "tta": False},
           "inputs": {"a.tif": "f" * 64}, "same": 1, "added": None}
    names = {"config.min_area_km2": "--min-area", "inputs.*": "--source-dir file {key}"}
    assert differences(old, new, names) == [
        "--augment: on -> off", "--min-area: 0.05 -> 0.1",
        "--source-dir file a.tif: 000000000000 -> ffffffffffff", "--lr: 0.002 -> 0.001"]
    assert differences(old, old) == []
    assert differences({"device": "cpu"}, {"device": "cuda"}, ignore=("device",)) == []
    assert differences({}, {"deterministic": True}) == ["--deterministic: off -> on"]


def _product(tmp_path, parameters, complete):
    m = base_manifest("tiles", parameters=parameters)
    m["complete"] = complete
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    return Stage("tiles", tmp_path / "manifest.json", "tiles", verb="are")


def test_each_decision(tmp_path):
    said = []
    assert Stage("tiles", tmp_path / "none.json").decide({"a": 1}, False, said.append).action \
        == START
    stage = _product(tmp_path, {"a": 1}, complete=False)
    assert stage.decide({"a": 1}, False, said.append).action == RESUME
    stage = _product(tmp_path, {"a": 1}, complete=True)
    assert stage.decide({"a": 1}, False, said.append).action == DONE
    assert said[-1] == f"tiles {tmp_path} are complete; nothing to do"
    assert stage.decide({"a": 1}, True, said.append).action == START  # --force redoes
    assert said[-1] == f"--force: making {tmp_path} afresh"
    with pytest.raises(StateError, match=r"was made with other options \(--a: 1 -> 2\); use "
                                         r"--force"):
        stage.decide({"a": 2}, False, said.append)
    d = stage.decide({"a": 2}, True, said.append)
    assert d.action == START and d.replaced == "--a: 1 -> 2"
    with pytest.raises(StateError):  # complete: something would be lost
        stage.decide({"a": 2}, False, said.append,
                     nothing_lost=lambda old: None if old["complete"] else "unfinished")
    stage = _product(tmp_path, {"a": 1}, complete=False)
    assert stage.decide({"a": 2}, False, said.append,
                        nothing_lost=lambda old: None if old["complete"] else "it finished nothing"
                        ).action == START
    assert said[-1] == f"replacing {tmp_path} (made with --a: 1 -> 2): it finished nothing"
    stage = _product(tmp_path, {"a": 1}, complete=True)
    assert stage.decide({"a": 2}, False, said.append, earlier=[{"a": 1}]).action == DONE
    d = stage.decide({"a": 1}, False, said.append, intact=lambda old: "2 files missing")
    assert d.action == RESUME and said[-1].endswith("2 files missing; making that again")


def test_an_unreadable_manifest_is_refused_without_force(tmp_path):
    (tmp_path / "manifest.json").write_text("{not json")
    stage = Stage("tiles", tmp_path / "manifest.json")
    with pytest.raises(StateError, match="not a valid JSON manifest.*rerun with --force"):
        stage.decide({"a": 1}, False, print)
    assert stage.decide({"a": 1}, True, lambda s: None).action == START


def test_complete_is_the_last_write(tmp_path):
    stage = Stage("tiles", tmp_path / "manifest.json")
    m = stage.complete(base_manifest("tiles", parameters={"a": 1}), counts=3)
    on_disk = json.loads((tmp_path / "manifest.json").read_text())
    assert on_disk["complete"] and on_disk["counts"] == 3 and on_disk == m


def test_done_without_lock_only_when_complete_intact_and_nothing_half_written(tmp_path):
    said = []
    stage = _product(tmp_path, {"a": 1}, complete=True)
    assert stage.done_without_lock({"a": 1}, said.append).action == DONE
    assert said == [f"tiles {tmp_path} are complete; nothing to do"]
    assert stage.done_without_lock({"a": 2}, said.append) is None  # refused under the lock
    assert stage.done_without_lock({"a": 1}, said.append, intact=lambda old: "bad") is None
    (tmp_path / ".x.partial.tif").write_bytes(b"")  # a killed writer's file
    assert stage.done_without_lock({"a": 1}, said.append) is None
    assert len(said) == 1
