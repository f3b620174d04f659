"""The layout of ``results/<profile>/`` and the small I/O helpers every notebook uses.

Notebooks never share variables: each reads what earlier notebooks wrote here. Keeping paths in one place
keeps that contract explicit.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from redpo.config import Profile, results_root
from redpo.data import iter_jsonl
from redpo.sample import RESample

SUBDIRS = ("notebooks", "kshot", "generations", "metrics", "dpo", "adapters", "figures", "tables", "cache")


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


def write_json(path: Path, obj: Any) -> Path:
    """Write pretty, key-sorted JSON atomically (a crash never leaves half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def read_json(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; run the notebook that writes it first")
    return json.loads(path.read_text())


def write_samples(path: Path, samples: Iterable[RESample]) -> Path:
    """Samples as KnowPrompt-shaped JSONL, written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w") as f:
        for s in samples:
            f.write(json.dumps(s.to_json(), ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def read_samples(path: Path) -> list[RESample]:
    out = []
    for lineno, row in iter_jsonl(path):
        try:
            out.append(RESample.from_json(row))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path}:{lineno}: not a valid sample ({err})") from None
    return out
