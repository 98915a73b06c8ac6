"""Imports run one way: the shared foundation (gee_export.common) imports nothing of ours; the
export core builds on it; Earth Engine on the core; tiling and training on the foundation
only; the thin CLI modules sit on top. No module imports another that (directly or not)
imports it back, counting imports inside functions too; every module imports first in a
fresh interpreter; every declared dependency is used."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from benchmarks.code_shape import over_limits, sizes

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gee_export", "tiling", "training")
# layer -> the layers it may import (besides itself)
ALLOWED = {
    "common": set(),
    "export": {"common"},
    "earthengine": {"common", "export"},
    "tiling": {"common"},
    "training": {"common"},
    "cli": {"common", "export", "earthengine", "tiling", "training"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    if module.startswith("gee_export.common"):
        return "common"
    if module.endswith(".cli"):
        return "cli"
    if module.startswith("gee_export.earthengine"):
        return "earthengine"
    return "export" if module.startswith("gee_export") else module.split(".")[0]


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def imports(path: Path, module: str, known: set[str]) -> set[str]:
    """Our modules that `module` imports anywhere in its file (functions included)."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] \
                if node.level else []
            stem = ".".join(base + ([node.module] if node.module else []))
            names = [stem] + [f"{stem}.{a.name}" for a in node.names]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imports(p, m, set(mods)) for m, p in mods.items()}


def test_layers_import_one_way():
    wrong = sorted(f"{m} ({layer(m)}) imports {t} ({layer(t)})"
                   for m, targets in graph().items() for t in targets
                   if layer(t) != layer(m) and layer(t) not in ALLOWED[layer(m)])
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle_between_modules():
    g = graph()
    # A package's __init__ is imported with each of its modules; edges into a parent package
    # are that, not a dependency.
    g = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in g.items()}
    order, low, stack, on, cycles = {}, {}, [], set(), []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        order[v] = low[v] = len(order)
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w not in order:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], order[w])
        if low[v] == order[v]:
            comp = []
            while not comp or comp[-1] != v:
                comp.append(stack.pop())
                on.discard(comp[-1])
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(g):
        if v not in order:
            visit(v)
    assert not cycles, cycles


def test_the_checks_see_a_cycle_and_a_wrong_way_import(tmp_path, monkeypatch):
    """The two tests above on a package that breaks both rules."""
    pkg = tmp_path / "training"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from .b import g\n")
    (pkg / "b.py").write_text("from training import a\nfrom tiling import x\n")
    (tmp_path / "tiling").mkdir()
    (tmp_path / "tiling" / "__init__.py").write_text("")
    (tmp_path / "tiling" / "x.py").write_text("")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    with pytest.raises(AssertionError, match=r"training.b \(training\) imports tiling.x"):
        test_layers_import_one_way()
    with pytest.raises(AssertionError, match=r"training.a.*training.b"):
        test_no_import_cycle_between_modules()


@pytest.mark.slow
def test_every_module_imports_first_in_a_fresh_interpreter():
    def first_import(module: str) -> tuple[str, str]:
        r = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=ROOT,
                           capture_output=True, text=True)
        return module, (r.stderr.strip().splitlines() or [""])[-1] if r.returncode else ""

    with ThreadPoolExecutor(4) as pool:
        failed = {m: e for m, e in pool.map(first_import, sorted(modules())) if e}
    assert not failed, failed


def test_every_dependency_is_used():
    text = (ROOT / "pyproject.toml").read_text()
    block = text.split("dependencies = [", 1)[1].split("]", 1)[0]
    declared = re.findall(r'^\s*"([A-Za-z0-9_.-]+)', block, re.M)
    module_of = {"earthengine-api": "ee", "pyyaml": "yaml"}
    source = "\n".join(p.read_text() for p in modules().values())
    unused = [d for d in declared
              if not re.search(rf"^\s*(import|from) {module_of.get(d, d).replace('-', '_')}\b",
                               source, re.M)]
    assert declared and not unused, unused


def _absolute_imports(node: ast.AST) -> list[str]:
    """The modules an import statement or an __import__("name") call names (not relative)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom) and not node.level:
        return [node.module or ""]
    if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "__import__" and \
            node.args and isinstance(node.args[0], ast.Constant):
        return [str(node.args[0].value)]
    return []


def test_tests_import_what_they_share_by_its_package_path():
    """A test imports shared helpers as tests.helpers or tests.<dir>.<module>: never a
    conftest (pytest imports those itself, and a second import runs them twice), and never a
    bare name that only resolves because pytest put the test's own folder on sys.path."""
    tests = ROOT / "tests"
    local = {p.stem for p in tests.rglob("*.py")} - {"__init__"}
    wrong = [f"{path.relative_to(ROOT)}:{node.lineno} imports {name}"
             for path in sorted(tests.rglob("*.py"))
             for node in ast.walk(ast.parse(path.read_text()))
             for name in _absolute_imports(node)
             if name.split(".")[-1] == "conftest" or name.split(".")[0] in local]
    assert (tests / "__init__.py").is_file() and not wrong, "\n".join(wrong)


def test_the_test_import_check_sees_a_conftest_and_a_bare_helper(tmp_path, monkeypatch):
    (tmp_path / "tests" / "sub").mkdir(parents=True)
    (tmp_path / "tests" / "__init__.py").write_text("")
    (tmp_path / "tests" / "sub" / "double.py").write_text("")
    (tmp_path / "tests" / "sub" / "test_a.py").write_text(
        "from tests.conftest import invoke\nimport double\nx = __import__('double')\n"
        "from tests.sub.double import y\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    with pytest.raises(AssertionError) as e:
        test_tests_import_what_they_share_by_its_package_path()
    assert [ln.split(" imports ")[1] for ln in str(e.value).splitlines()[:3]] == \
        ["tests.conftest", "double", "double"]


def test_rooms_stay_small_enough_to_read():
    """Issue 33's limits: no module over 500 lines, no class over 150, no function over 60
    (from its first decorator, so a click command carries its options)."""
    over = over_limits(sizes(ROOT))
    assert not over, "\n".join(over)


def test_the_size_check_sees_a_long_function_a_long_class_and_a_long_module(tmp_path):
    pkg = tmp_path / "training"
    pkg.mkdir()
    lines = [f"        x{i} = {i}" for i in range(58)]
    # f: 2 decorators + def + 57 lines = 60 (at the limit); C.g: decorator + def + 58 = 60 + 1
    (pkg / "short.py").write_text("\n".join(["@d", "@d", "def f():"] + lines[:57]) + "\n")
    (pkg / "long.py").write_text("\n".join(
        ["class C:", "    @d", "    @d", "    def g():"] + lines          # lines 1-62
        + [f"    y{i} = {i}" for i in range(89)]                          # class ends at 151
        + [""] * 349 + ["z = 1"]) + "\n")                                 # module: 501 lines
    found = sizes(tmp_path)
    assert over_limits(found) == [
        "module training/long.py: 501 lines (limit 500)",
        "class training/long.py:C: 151 lines (limit 150)",
        "function training/long.py:C.g: 61 lines (limit 60)"]
    assert (60, "training/short.py:f") in found["function"]
