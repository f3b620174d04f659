"""Committed notebooks: valid, output-free, and parameterised the way the runner and papermill expect."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest

from redpo.run.runner import NOTEBOOKS_DIR

NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
PARAMETERS = {"profile": "str", "results_dir": "str", "overrides": "dict"}


def test_there_are_notebooks() -> None:
    assert NOTEBOOKS, f"no notebooks in {NOTEBOOKS_DIR}"


@pytest.fixture(params=NOTEBOOKS, ids=lambda p: p.name)
def notebook(request: pytest.FixtureRequest) -> nbformat.NotebookNode:
    path: Path = request.param
    nb = nbformat.read(path, as_version=4)  # raises on invalid JSON
    nbformat.validate(nb)
    return nb


def test_no_outputs_or_execution_counts(notebook: nbformat.NotebookNode) -> None:
    for i, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            assert not cell.outputs, f"cell {i} has outputs: run `make strip`"
            assert cell.execution_count is None, f"cell {i} has an execution count: run `make strip`"


def test_first_code_cell_is_typed_parameters(notebook: nbformat.NotebookNode) -> None:
    first = next(c for c in notebook.cells if c.cell_type == "code")
    assert "parameters" in first.metadata.get("tags", []), "first code cell must be tagged 'parameters'"
    annotated = {
        node.target.id: ast.unparse(node.annotation)
        for node in ast.parse(first.source).body
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None
    }
    for name, type_name in PARAMETERS.items():
        assert annotated.get(name) == type_name, f"parameters cell needs `{name}: {type_name} = ...`"
    assert "injected-parameters" not in str(notebook.cells), "papermill's injected cell was committed"


# ---- no logic copied between notebooks ----------------------------------------------------------------------
REPEAT_LINES = 6
"""A run of this many code lines (imports, comments and blank lines aside) standing in two cells is copied logic:
it belongs in the package, called once from each notebook. The same size as the ``duplicates`` tool's rows."""


LITERAL_RE = re.compile(r"""(?P<q>["'])(?:\\.|(?!(?P=q)).)*(?P=q)|\b\d+(?:\.\d+)?\b""")
"""String and number literals: a copy that differs only in a file name or a constant is still a copy."""


def code_lines(source: str) -> list[str]:
    """A cell's code as compared: stripped lines with literals blanked, without blanks, comments and imports
    (every notebook imports alike, which is not logic)."""
    lines = [LITERAL_RE.sub("_", line.strip()) for line in source.splitlines()]
    return [line for line in lines if line and not line.startswith(("#", "import ", "from "))]


def repeated_runs(cells: dict[str, str], size: int = REPEAT_LINES) -> list[str]:
    """Every run of ``size`` consecutive code lines that stands in more than one of ``cells`` (name -> source)."""
    places: dict[tuple[str, ...], set[str]] = {}
    for name, source in cells.items():
        lines = code_lines(source)
        for start in range(len(lines) - size + 1):
            places.setdefault(tuple(lines[start:start + size]), set()).add(name)
    return [f"{sorted(where)}: {run[0]} ... {run[-1]}" for run, where in places.items() if len(where) > 1]


def notebook_cells(paths: list[Path]) -> dict[str, str]:
    return {f"{path.name} cell {i}": cell.source for path in paths
            for i, cell in enumerate(nbformat.read(path, as_version=4).cells) if cell.cell_type == "code"}


def test_no_code_is_repeated_across_notebooks() -> None:
    repeats = repeated_runs(notebook_cells(NOTEBOOKS))
    assert not repeats, f"code repeated across notebooks (move it into redpo and call it once): {repeats}"


def test_the_repeat_check_finds_a_copied_cell() -> None:
    copied = "\n".join(f'value_{i} = compute({i}, "metrics/a.json")  # step {i}' for i in range(REPEAT_LINES))
    renamed = copied.replace('compute(1, "metrics/a.json")', 'compute(2.5, "metrics/b.json")')  # other literals
    cells = {"01 cell 3": "import pandas as pd\n\n" + copied, "02 cell 5": renamed + "\nshow(value_0)",
             "03 cell 1": "\n".join(copied.splitlines()[:REPEAT_LINES - 1])}  # one line short of a run: not a copy
    assert [r.split(":")[0] for r in repeated_runs(cells)] == ["['01 cell 3', '02 cell 5']"]
