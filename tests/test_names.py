"""Every ``redpo.…`` name, ``redpo/…`` path and ``python -m redpo …`` command that the docs quote resolves.

A renamed or split module leaves its old name behind in prose, where no import fails; this test is the import.

Where names are collected:
- ``redpo/**/*.py``: comments and string literals (docstrings, messages) only, read with ``tokenize``; code is
  left out because Python itself resolves what code imports. ``redpo/**/*.yaml``: the whole text (comments).
- ``notebooks/*.ipynb``: every markdown and code cell. ``README.md``, ``CONTRIBUTING.md``, the site's pages
  (``docs/**/*.md``) and the run logs (``results/*/RUNLOG.md``): the whole text.

How each is resolved:
- A dotted name is ``redpo`` and one or more ``.identifier`` parts. It is a file name, not a Python name, when a
  word character, ``.``, ``/``, ``-`` or ``~`` stands right before it (``<results>/.redpo.lock``) or ``/`` right
  after it; those are skipped. A last part ``py`` names a source file (``redpo.core.io.py``): the rest must be a
  module. Any other file suffix (``json``, ``lock``, …) names a data file and is skipped. Otherwise the longest
  prefix that is a module is imported and ``getattr`` walks the rest; a pydantic or dataclass field, which is
  no class attribute, counts too.
- A name in backticks that starts at a redpo subpackage without ``redpo.`` (generation.engines) resolves as
  ``redpo.<name>``, or as a profile field path (dpo.kind_mix), which prose writes the same way. In a list such
  as the module map's "`dpo.pairs`, `.train`", ``.train`` is a sibling of the name before it on the line.
- A path is ``redpo/``, ``tests/`` or ``notebooks/`` and more, ending in a ``.py``/``.yaml``/``.ipynb`` file or
  a folder ``/``, with the same rule for what may stand before it; it must exist in the repository.
- ``python -m redpo SUB [SUB2]`` (also ``accelerate launch -m``): the subcommand words are given to
  ``redpo.__main__.build_parser()`` with ``--help``, which must exit 0; a word is taken only while the parser
  expects a subcommand there, so options and prose after the command are not read as one.
  ``python -m redpo.some.module`` must be an importable module with a ``main`` (or a package with ``__main__``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import importlib.util
import io
import json
import pkgutil
import re
import tokenize
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redpo
from redpo.__main__ import build_parser
from redpo.config import REPO_ROOT, Profile

BEFORE = r"(?<![\w./~-])"
NAME_RE = re.compile(BEFORE + r"redpo(?:\.[A-Za-z_]\w*+)++(?![\w/])")  # possessive: no shorter name of a path
PATH_RE = re.compile(
    BEFORE + r"(?:redpo|tests|notebooks)/(?:[\w.-]+/)*(?:[\w.-]+\.(?:py|yaml|ipynb)\b|(?=[\s`'\")*,;:<{]|$))"
)
COMMAND_RE = re.compile(r"(?:python3?|accelerate launch)\s+-m\s+(redpo(?:\.\w+)*)((?:[ \t]+[a-z][\w-]*)*)")
DATA_SUFFIXES = {"json", "jsonl", "yaml", "yml", "md", "txt", "csv", "ipynb", "lock", "log", "owner", "gguf"}
DOC_FILES = ("README.md", "CONTRIBUTING.md")
SUBPACKAGES = {m.name for m in pkgutil.iter_modules(redpo.__path__) if not m.name.startswith("_")}
SHORT_RE = re.compile(r"(?<![\w.])`{1,2}~?(\.?[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)`")


# ---- collecting ---------------------------------------------------------------------------------------------
def python_texts(path: Path) -> Iterator[tuple[int, str]]:
    """``(line, text)`` of every comment and string literal, docstrings included."""
    with path.open("rb") as fh:
        for tok in tokenize.tokenize(fh.readline):
            if tok.type in (tokenize.COMMENT, tokenize.STRING):
                yield tok.start[0], tok.string


def notebook_texts(path: Path) -> Iterator[tuple[int, str]]:
    """``(cell number, source)`` of every cell, markdown and code (cells count from 1)."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    for number, cell in enumerate(cells, 1):
        yield number, "".join(cell["source"])


def sources(root: Path) -> Iterator[tuple[str, int, str]]:
    """``(location, line, text)`` from every place the module docstring lists."""
    for path in sorted((root / "redpo").rglob("*.py")):
        for line, text in python_texts(path):
            yield str(path.relative_to(root)), line, text
    for path in sorted((root / "redpo").rglob("*.yaml")):
        yield str(path.relative_to(root)), 1, path.read_text(encoding="utf-8")
    for path in sorted((root / "notebooks").glob("*.ipynb")):
        for cell, text in notebook_texts(path):
            yield f"{path.relative_to(root)} cell {cell}", 1, text
    for path in doc_files(root):
        yield str(path.relative_to(root)), 1, path.read_text(encoding="utf-8")


def doc_files(root: Path) -> list[Path]:
    """README, CONTRIBUTING, every page of the documentation site and every run log."""
    named = [root / name for name in DOC_FILES if (root / name).is_file()]
    return [*named, *sorted((root / "docs").rglob("*.md")), *sorted((root / "results").glob("*/RUNLOG.md"))]


def short_names(text: str) -> Iterator[tuple[int, str]]:
    """``(position, name)`` of each backticked name that starts at a redpo subpackage (``generation.arms``),
    written without ``redpo.``; ``.sibling`` after such a name on the same line (``dpo.pairs``, ``.train``) is
    read as ``dpo.train``."""
    for line_start, line in zip(_line_starts(text), text.split("\n"), strict=True):
        previous: list[str] = []
        for match in SHORT_RE.finditer(line):
            name = match.group(1)
            parts = name.lstrip(".").split(".")
            if name.startswith("."):
                if previous and len(parts) == 1 and parts[0] not in DATA_SUFFIXES | {"py"}:
                    yield line_start + match.start(), ".".join([*previous[:-1], parts[0]])
            elif parts[0] in SUBPACKAGES | {"redpo"} and len(parts) > 1:
                previous = parts[1:] if parts[0] == "redpo" else parts
                if parts[0] != "redpo":  # a full name is NAME_RE's
                    yield line_start + match.start(), name


def _line_starts(text: str) -> list[int]:
    return [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n"]


def references(text: str) -> list[tuple[int, str, str]]:
    """``(line offset, kind, reference)`` in ``text``, in order; kind is ``name``, ``short`` (a name without
    ``redpo.``), ``path`` or ``command`` (``redpo SUB…`` or the ``-m`` module)."""
    found = [(m.start(), "path", m.group(0)) for m in PATH_RE.finditer(text)]
    found += [(m.start(), "command", " ".join([m.group(1), *m.group(2).split()])) for m in COMMAND_RE.finditer(text)]
    found += [(m.start(), "name", m.group(0)) for m in NAME_RE.finditer(text)
              if not text[: m.start()].endswith(("-m ", "-m\t"))]  # a `-m` module is checked as a command
    found += [(pos, "short", name) for pos, name in short_names(text)]
    return [(text.count("\n", 0, pos), kind, ref) for pos, kind, ref in sorted(found)]


# ---- resolving ----------------------------------------------------------------------------------------------
def is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a parent is not a package
        return False


def member(obj: Any, attr: str) -> tuple[bool, Any]:
    """``(found, value)``: an attribute, or a pydantic / dataclass field, whose value is its type (a field with
    no default is no class attribute, and its type is what a further dotted part names into)."""
    if hasattr(obj, attr):
        return True, getattr(obj, attr)
    fields = getattr(obj, "model_fields", None)
    if isinstance(fields, dict) and attr in fields:
        return True, fields[attr].annotation
    if dataclasses.is_dataclass(obj) and attr in {f.name for f in dataclasses.fields(obj)}:
        return True, typing.get_type_hints(obj).get(attr)
    return False, None


def resolve_name(name: str) -> str | None:
    """``None`` when ``name`` resolves (or names a data file), else why not."""
    parts = name.split(".")
    if parts[-1] == "py":
        return None if is_module(".".join(parts[:-1])) else "no such module"
    if parts[-1] in DATA_SUFFIXES:
        return None
    split = max(i for i in range(1, len(parts) + 1) if is_module(".".join(parts[:i])))
    if split == len(parts):
        return None  # a module: found without running it, so the test stays fast
    obj: Any = importlib.import_module(".".join(parts[:split]))
    for i, attr in enumerate(parts[split:], split):
        found, obj = member(obj, attr)
        if not found:
            return f"{'.'.join(parts[:i])} has no {attr!r}"
    return None


def resolve_short(name: str) -> str | None:
    """A profile field path (``dpo.kind_mix``) is not a module name, and resolves too."""
    obj: Any = Profile
    for attr in name.split("."):
        found, obj = member(obj, attr)
        if not found:
            return resolve_name(f"redpo.{name}")
    return None


def resolve_path(path: str, root: Path) -> str | None:
    return None if (root / path).exists() else "no such file or folder"


def subcommand_words(parser: argparse.ArgumentParser, words: list[str]) -> list[str]:
    """The leading ``words`` that the parser reads as (nested) subcommands."""
    taken: list[str] = []
    for word in words:
        actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not actions:
            break
        taken.append(word)
        if word not in actions[0].choices:
            break
        parser = actions[0].choices[word]
    return taken


def resolve_command(command: str) -> str | None:
    module, *words = command.split()
    if module != "redpo":
        if not is_module(module):
            return "no such module"
        if is_module(module + ".__main__") or hasattr(importlib.import_module(module), "main"):
            return None
        return f"{module} has no main() and no __main__"
    argv = [*subcommand_words(build_parser(), words), "--help"]
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            build_parser().parse_args(argv)
        except SystemExit as exit_:
            if exit_.code == 0:
                return None
            return err.getvalue().strip().splitlines()[-1]
    return "--help did not exit"


def unresolved(root: Path) -> list[str]:
    """``file:line: kind 'reference': why`` for every reference that does not resolve."""
    seen: dict[tuple[str, str], str | None] = {}
    problems = []
    for location, line, text in sources(root):
        for offset, kind, ref in references(text):
            if (kind, ref) not in seen:
                resolver = {"name": resolve_name, "short": resolve_short, "command": resolve_command}.get(kind)
                seen[kind, ref] = resolver(ref) if resolver else resolve_path(ref, root)
            if seen[kind, ref] is not None:
                problems.append(f"{location}:{line + offset}: {kind} {ref!r}: {seen[kind, ref]}")
    return problems


# ---- tests --------------------------------------------------------------------------------------------------
def test_every_quoted_name_resolves() -> None:
    problems = unresolved(REPO_ROOT)
    assert not problems, f"{len(problems)} stale reference(s):\n" + "\n".join(problems)


def test_a_stale_name_is_reported(tmp_path: Path) -> None:
    """The collector reads every kind of place and reports each stale kind; good names and file names pass."""
    pkg = tmp_path / "redpo" / "stage"
    pkg.mkdir(parents=True)
    (pkg / "mod.py").write_text(
        '"""Run ``python -m redpo.dpo_train`` or ``python -m redpo dpo_train``; see redpo/stage/gone.py."""\n'
        "import os  # redpo.dpo_train, redpo.config.no_such_thing, but redpo.config.identity is fine\n"
        'LOCK = "<results>/.redpo.lock"  # a file, as is redpo/stage/mod.py; python -m redpo bench lora is fine\n'
    )
    (tmp_path / "notebooks").mkdir()
    notebook = {"cells": [{"cell_type": "markdown", "source": ["`redpo.generation.parse.parse_response` ok\n"]},
                          {"cell_type": "code", "source": ["from redpo.analysis import plots\n", "redpo.llm_re\n"]}]}
    (tmp_path / "notebooks" / "01_x.ipynb").write_text(json.dumps(notebook))
    (tmp_path / "docs" / "method").mkdir(parents=True)
    (tmp_path / "docs" / "method" / "x.md").write_text("see `python -m redpo figures` and redpo.site.gone\n")
    (tmp_path / "README.md").write_text(
        "`dpo.kind_mix` is a field, `core.io.write_json` a function\n\n"
        "    accelerate launch -m redpo dpo --half A\n    redpo.re_metrics\n"
        "| `dpo.pairs`, `.dpo_train` | `generation.arms.identity_settings` |\n"
    )

    problems = unresolved(tmp_path)

    assert [p.split(": ", 2)[:2] for p in problems] == [
        ["redpo/stage/mod.py:1", "command 'redpo.dpo_train'"],
        ["redpo/stage/mod.py:1", "command 'redpo dpo_train'"],
        ["redpo/stage/mod.py:1", "path 'redpo/stage/gone.py'"],
        ["redpo/stage/mod.py:2", "name 'redpo.dpo_train'"],
        ["redpo/stage/mod.py:2", "name 'redpo.config.no_such_thing'"],
        ["notebooks/01_x.ipynb cell 2:2", "name 'redpo.llm_re'"],
        ["README.md:4", "name 'redpo.re_metrics'"],
        ["README.md:5", "short 'dpo.dpo_train'"],
        ["README.md:5", "short 'generation.arms.identity_settings'"],
        ["docs/method/x.md:1", "name 'redpo.site.gone'"],
    ]
    assert problems[0].endswith("no such module")
    assert "invalid choice: 'dpo_train'" in problems[1]
    assert problems[3].endswith("redpo has no 'dpo_train'")
