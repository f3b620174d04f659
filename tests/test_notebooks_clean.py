"""Committed notebooks: valid, output-free, and parameterised the way the runner and papermill expect."""

from __future__ import annotations

import ast
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
