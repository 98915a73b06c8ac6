"""A tool the README tells users to run is provided by what the README says to install
(issue 31: `rio cogeo validate` came with nothing `make demo` installs, and it said so
nowhere)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Commands the README names that no console script of this package provides, and the
# package that does.
TOOLS = {"rio cogeo validate": "rio-cogeo"}


def _dev_extras() -> str:
    """The `dev` extras of pyproject.toml as written (tomllib is 3.11+; we support 3.10)."""
    found = re.search(r"^dev = \[(.*?)\]", (ROOT / "pyproject.toml").read_text(),
                      re.DOTALL | re.MULTILINE)
    assert found, "pyproject.toml has no dev extras"
    return found.group(1)


def test_each_tool_the_readme_names_says_how_to_get_it_and_that_works():
    text = " ".join((ROOT / "README.md").read_text().split())
    for command, package in TOOLS.items():
        said = [m.start() for m in re.finditer(re.escape(command), text)]
        assert said, f"the README no longer names {command}"
        for at in said:  # the README says, beside it, what installs it
            near = text[at:at + 300]
            assert package in near and "make install-dev" in near, near
        assert package in _dev_extras()  # ... and `make install-dev` does install it
        bin_dir = Path(sys.executable).parent
        res = subprocess.run([str(bin_dir / command.split()[0]), *command.split()[1:],
                              "--help"], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
