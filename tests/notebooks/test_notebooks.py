"""The walkthrough notebook runs headless on a small demo; the Earth Engine notebook (which
needs an account) at least parses and only uses names the recipe module has."""
from __future__ import annotations

import ast
from pathlib import Path

import nbformat

NB = Path(__file__).resolve().parents[2] / "notebooks"


def test_walkthrough_runs_headless(tmp_path, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("GLACIER_WORKSPACE", str(tmp_path))
    monkeypatch.setenv("DEMO_SIZE", "512")
    monkeypatch.setenv("EPOCHS", "2")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel draws inline
    nb = nbformat.read(NB / "walkthrough.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert (tmp_path / "predictions" / "walkthrough" / "demo-2018" / "report.json").is_file()
    assert (tmp_path / "predictions" / "walkthrough" / "demo-change" / "change.csv").is_file()
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) >= 5  # stack bands, split, curves + samples, prediction map, change


def test_earth_engine_notebook_parses_and_uses_the_recipe():
    from gee_export.earthengine import recipe as ee_recipe

    nb = nbformat.read(NB / "earth_engine_recipe.ipynb", as_version=4)
    used = set()
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        tree = ast.parse(cell.source)
        used |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
                 and isinstance(n.value, ast.Name) and n.value.id == "R"}
    missing = [u for u in used if not hasattr(ee_recipe, u)]
    assert used and not missing, missing
