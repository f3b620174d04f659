"""The import contract in ``pyproject.toml``: the stages point one way; analysis and the site import no model library.

Each test runs ``lint-imports`` on a copy of the package, so breaking a layer on purpose proves the contract is
checked rather than merely declared.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from redpo.config import REPO_ROOT

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on the package under ``root`` (first on PYTHONPATH, so the copy is what gets analysed)."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True, timeout=300,
    )


@pytest.fixture()
def package_copy(tmp_path: Path) -> Path:
    shutil.copytree(REPO_ROOT / "redpo", tmp_path / "redpo", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_contract_holds(package_copy: Path) -> None:
    proc = lint(package_copy)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("core/io.py", "import redpo.analysis.tables", "Stages point one way"),  # a lower layer imports a higher one
        ("data/splits.py", "import redpo.models.load", "Stages point one way"),  # independent siblings
        ("extraction/grid.py", "import redpo.dpo.pairs", "Stages point one way"),  # RE and DPO are siblings:
        ("dpo/pairs.py", "import redpo.extraction.grid", "Stages point one way"),  # neither imports the other
        ("plateau/curves.py", "import redpo.analysis.stats", "Stages point one way"),  # plateau sits below
        # analysis may import generation, but not a module that (indirectly) brings torch in
        ("analysis/tables.py", "import redpo.generation.arms", "Analysis and the site import no model library"),
        ("site/results.py", "import redpo.generation.arms", "Analysis and the site import no model library"),
        ("run/runner.py", "import redpo.site.readme", "Stages point one way"),  # run and site are siblings
    ],
)
def test_breaking_a_layer_fails_the_contract(package_copy: Path, module: str, line: str, contract: str) -> None:
    path = package_copy / "redpo" / module
    path.write_text(path.read_text() + f"\n{line}  # noqa\n")
    proc = lint(package_copy)
    assert proc.returncode != 0
    broken = [ln for ln in proc.stdout.splitlines() if "BROKEN" in ln]
    assert any(contract in ln for ln in broken), proc.stdout


MAX_MODULE_LINES = 400
"""A module longer than this holds more than one concept; ``config.py`` is the exception (every profile section
with its field docs, so the profile reference is one file)."""


def test_no_module_is_longer_than_one_concept() -> None:
    long = {str(p.relative_to(REPO_ROOT)): n for p in (REPO_ROOT / "redpo").rglob("*.py")
            if p.name != "config.py" and (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"split these modules by job: {long}"
