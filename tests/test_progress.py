"""Progress everywhere a step runs long, and one switch for all of it: the notebooks' ``progress`` parameter,
which ``python -m redpo run --no-progress`` sets to False."""

from __future__ import annotations

import ast
import importlib
import inspect
import io
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from redpo.config import load_profile
from redpo.core.io import ResultsDir
from redpo.core.relations import get_schema
from redpo.core.sample import RESample
from redpo.extraction import llm_scoring
from redpo.models import llama_cpp
from redpo.run import runner

NOTEBOOKS = sorted(runner.NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))


def _code_cells(path: Path) -> list[tuple[list[str], str]]:
    cells = json.loads(path.read_text())["cells"]
    return [(c.get("metadata", {}).get("tags", []), "".join(c["source"])) for c in cells if c["cell_type"] == "code"]


def _imported(tree: ast.AST) -> dict[str, object]:
    """The names a cell's ``from redpo... import`` lines bind, as the objects they are."""
    names: dict[str, object] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("redpo"):
            module = importlib.import_module(node.module)
            for alias in node.names:
                names[alias.asname or alias.name] = getattr(module, alias.name, None) or importlib.import_module(
                    f"{node.module}.{alias.name}")
    return names


def _callee(call: ast.Call, names: dict[str, object]) -> object | None:
    """The redpo function a call names (``module.func`` or ``func``), or None."""
    func = call.func
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id in names:
        return getattr(names[func.value.id], func.attr, None)
    if isinstance(func, ast.Name):
        return names.get(func.id)
    return None


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_step_that_can_show_progress_gets_the_notebooks_progress_parameter(path: Path) -> None:
    """Each call of a redpo function that takes ``progress`` passes the parameter on, so the notebook (and ``run
    --no-progress``) decides, never a literal in a cell."""
    cells = _code_cells(path)
    assert "parameters" in cells[0][0] and "progress: bool = True" in cells[0][1]
    tree = ast.parse("\n".join(src for _, src in cells[1:]))
    names = _imported(tree)
    checked = 0
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        given = {kw.arg: kw.value for kw in node.keywords}
        if "progress" in given:
            assert isinstance(given["progress"], ast.Name) and given["progress"].id == "progress", ast.unparse(node)
        callee = _callee(node, names)
        if callable(callee) and "progress" in inspect.signature(callee).parameters:
            assert "progress" in given, f"{path.name}: {ast.unparse(node)} does not pass progress=progress"
            checked += 1
    assert checked or path.name.startswith("00_"), f"{path.name}: no long step found; is the check still looking?"


def test_run_no_progress_sets_every_notebooks_progress_parameter(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import papermill

    monkeypatch.setenv("REDPO_DATA_DIR", str(data_root))
    seen: list[tuple[dict, bool]] = []

    def execute(source: str, output: str, *, parameters: dict, progress_bar: bool, **_: object) -> None:
        seen.append((parameters, progress_bar))
        Path(output).write_text(Path(source).read_text())

    monkeypatch.setattr(papermill, "execute_notebook", execute)
    for progress in (False, True):
        runner.run("smoke", only=["00", "01"], results_dir=tmp_path, progress=progress)
        assert [(p["progress"], bar) for p, bar in seen] == [(progress, progress)] * 2
        seen.clear()


class _FakeScorer:
    """Scores without a model: the statement's length, so the test needs no weights."""

    model_key = "fake:0"
    tokenizer = SimpleNamespace(chat_template=None)

    def prefill_head(self, prompts: list[str]) -> int:
        return 0

    def score(self, prompt: str, continuations: list[str]) -> list[float]:
        return [float(len(c)) for c in continuations]


def test_closed_set_scoring_shows_a_bar_over_its_sentences_unless_told_not_to(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prof = load_profile("smoke")
    schema = get_schema("semeval")
    test = [RESample.from_marked(f"the <e1>storm {i}</e1> caused the <e2>flood</e2> .", "Cause-Effect(e1,e2)")
            for i in range(5)]
    n = len(test) + len(prof.llm_re.calibration_inputs)
    for progress in (True, False):
        results = ResultsDir(prof, root=tmp_path / str(progress))
        llm_scoring.run_closed_set(prof, results, schema, test, test[:2], k=4, split_seed=1, scorer=_FakeScorer(),
                                   progress=progress)
        err = capsys.readouterr().err
        if progress:
            assert "closed-set scoring k4_s1" in err and f"{n}/{n}" in err, err
        else:
            assert err == ""


@pytest.mark.parametrize(("line", "percent"), [
    ("[ 42%] Building CXX object common/CMakeFiles/common.dir/arg.cpp.o\n", 42),
    ("[100%] Linking CXX executable ../../bin/llama-server\n", 100),
    ("[12/48] Building CXX object ggml/src/ggml.c.o\n", 25),
    ("-- Configuring done\n", None),
])
def test_cmake_build_lines_say_how_far_the_build_is(line: str, percent: int | None) -> None:
    assert llama_cpp.build_percent(line) == percent


def test_the_build_step_feeds_its_bar_as_it_runs_and_keeps_the_whole_log(tmp_path: Path) -> None:
    from tqdm import tqdm

    out = io.StringIO()
    bar = tqdm(total=100, file=out)
    script = "for p in 10 40 30 90; do echo \"[ $p%] Building CXX object x$p.o\"; done; echo done"
    log = tmp_path / "build.log"
    llama_cpp._run(["sh", "-c", script], log, "build", on_line=lambda line: llama_cpp.advance(bar, line))
    assert bar.n == 90  # never back (30 after 40), never past the last percentage seen
    assert log.read_text().splitlines()[1:] == [f"[ {p}%] Building CXX object x{p}.o" for p in (10, 40, 30, 90)] + [
        "done"]
    with pytest.raises(llama_cpp.EngineBuildError, match="exit 3"):
        llama_cpp._run([sys.executable, "-c", "print('[ 5%] x'); raise SystemExit(3)"], log, "build",
                       on_line=lambda line: None)
