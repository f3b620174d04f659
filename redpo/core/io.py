"""The layout of ``results/<profile>/`` and the file I/O every stage shares: JSON, JSONL and one atomic write.

Notebooks never share variables: each reads what earlier notebooks wrote here. Keeping paths in one place
keeps that contract explicit, and keeping every write behind :func:`atomic_write` means a crash never leaves
half a file behind, whichever stage was writing.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from redpo.config import Profile, results_root
from redpo.core.sample import RESample

SUBDIRS = (
    "notebooks", "kshot", "generations", "metrics", "dpo", "adapters", "figures", "tables", "cache", "logs",
    "audit",
)


CALLS_CACHE = "llm_calls.jsonl"
"""``cache/`` file of every LLM generation call (:mod:`redpo.generation.cache`)."""
SCORES_CACHE = "llm_scores.jsonl"
"""``cache/`` file of the direct LLM's closed-set scores (:mod:`redpo.extraction.llm_scoring`)."""
RUNS_CACHE = "re_runs.jsonl"
"""``cache/`` file of finished RE runs (:mod:`redpo.extraction.run_store`)."""


class DataError(ValueError):
    """A data file is missing or malformed; the message names the file (and line) and how to fix it."""


class MissingMetrics(FileNotFoundError):
    """A figure's or table's input file does not exist yet, or holds no rows (the notebook that writes it has not
    run, or had nothing to write)."""


class ResultsDir:
    """``results/<profile>/`` with named sub-folders (created on first use)."""

    def __init__(self, profile: Profile | str, root: Path | None = None) -> None:
        name = profile if isinstance(profile, str) else profile.name
        self.root = Path(root or results_root()) / name

    def sub(self, name: str) -> Path:
        if name not in SUBDIRS:
            raise ValueError(f"unknown results sub-folder {name!r}; known: {SUBDIRS}")
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def __getattr__(self, name: str) -> Path:
        if name in SUBDIRS:
            return self.sub(name)
        raise AttributeError(name)

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"


# ---- writing ------------------------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_writer(path: Path) -> Iterator[BinaryIO]:
    """A binary file that appears at ``path`` only when the block ends without an error.

    It is written as a uniquely named temporary file in the same folder and renamed into place: the rename is
    atomic on POSIX, so readers see the old file or the new one, never a mix, and two writers never trip over
    each other's temporary file. Streams of any size pass through it without being held in memory.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: Path, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_writer`)."""
    with atomic_writer(path) as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


def write_json(path: Path, obj: Any) -> Path:
    """Pretty, key-sorted JSON, written atomically."""
    return atomic_write(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def write_samples(path: Path, samples: Iterable[RESample]) -> Path:
    """Samples as KnowPrompt-shaped JSONL, written atomically."""
    return atomic_write(path, "".join(json.dumps(s.to_json(), ensure_ascii=False) + "\n" for s in samples))


# ---- reading ------------------------------------------------------------------------------------------
def read_json(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; run the notebook that writes it first")
    return json.loads(path.read_text())


def read_metrics(results: ResultsDir, name: str) -> Any:
    """``metrics/<name>`` of a results folder, or :class:`MissingMetrics` when no notebook has written it yet."""
    path = results.root / "metrics" / name
    if not path.is_file():
        raise MissingMetrics(f"{path} does not exist")
    return json.loads(path.read_text())


def require_file(path: Path, what: str, fix: str) -> Path:
    """``path`` if it is a file, else a :class:`DataError` naming it, what it should hold and the fix."""
    if not Path(path).is_file():
        raise DataError(f"{path}: {what} not found; {fix}")
    return Path(path)


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line_number, row)`` for every non-blank line (KnowPrompt skips blank lines too).

    Read as bytes and decoded line by line, so a bad byte is reported with its file, line and byte offset; a UTF-8
    byte-order mark at the start (some editors write one) is accepted."""
    require_file(Path(path), "JSONL file", "check the path, or run `make data` for SemEval")
    offset = 0
    with Path(path).open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            start, offset = offset, offset + len(raw)
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as err:
                raise DataError(
                    f"{path}:{lineno}: not UTF-8 (byte 0x{raw[err.start]:02x} at byte offset {start + err.start} "
                    "of the file); re-save the file as UTF-8"
                ) from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(
                    f"{path}:{lineno}: not valid JSON ({err.msg} at column {err.colno}); "
                    "fix or delete the line (one JSON object per line)"
                ) from None
            if not isinstance(row, dict):
                raise DataError(
                    f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}; fix the line"
                )
            yield lineno, row


def read_samples(path: Path) -> list[RESample]:
    out = []
    for lineno, row in iter_jsonl(path):
        try:
            out.append(RESample.from_json(row))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path}:{lineno}: not a valid sample ({err})") from None
    return out
