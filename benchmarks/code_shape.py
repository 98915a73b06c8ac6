"""How big the rooms are: module, class and function sizes in the three packages, against the
limits a reader can hold (issue 33): a module of 500 lines, a class of 150, a function of 60.

A function or class is counted from its first decorator to its last line, so a click command
carries its options. Prints the largest of each kind and everything over its limit; exits 1
when anything is.

    .venv/bin/python benchmarks/code_shape.py [--top 10]
"""
from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gee_export", "tiling", "training")
LIMITS = {"module": 500, "class": 150, "function": 60}


def sizes(root: Path = ROOT) -> dict[str, list[tuple[int, str]]]:
    """Lines of every module, class and function (methods and nested ones included), largest
    first, each named `path` or `path:Qualified.name`."""
    found: dict[str, list[tuple[int, str]]] = {kind: [] for kind in LIMITS}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            text = path.read_text()
            rel = path.relative_to(root).as_posix()
            found["module"].append((len(text.splitlines()), rel))
            _defs(ast.parse(text), rel, "", found)
    return {kind: sorted(rows, key=lambda r: (-r[0], r[1])) for kind, rows in found.items()}


def _defs(node: ast.AST, rel: str, prefix: str, found: dict) -> None:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            first = min([d.lineno for d in child.decorator_list] + [child.lineno])
            kind = "class" if isinstance(child, ast.ClassDef) else "function"
            found[kind].append((child.end_lineno - first + 1, f"{rel}:{prefix}{child.name}"))
            _defs(child, rel, f"{prefix}{child.name}.", found)
        else:
            _defs(child, rel, prefix, found)


def over_limits(found: dict[str, list[tuple[int, str]]]) -> list[str]:
    return [f"{kind} {name}: {n} lines (limit {LIMITS[kind]})"
            for kind, rows in found.items() for n, name in rows if n > LIMITS[kind]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=5, help="how many of each kind to list")
    args = parser.parse_args()
    found = sizes()
    for kind, rows in found.items():
        total = sum(n for n, _ in rows)
        print(f"{kind}{'es' if kind == 'class' else 's'}: {len(rows)}, {total} lines, largest:")
        for n, name in rows[:args.top]:
            print(f"  {n:5d}  {name}")
    over = over_limits(found)
    print(f"over the limits: {len(over)}")
    for line in over:
        print(f"  {line}")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
