"""Test doubles shared by several test modules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat

from redpo.config import SamplingConfig
from redpo.generation.backends import GenerationOutput


class Fault(RuntimeError):
    """The injected crash."""


class FaultyBackend:
    """Delegates to a real backend and raises after ``limit`` batch calls: a run killed mid-generation."""

    def __init__(self, inner: Any, limit: int | None) -> None:
        self.inner, self.limit, self.calls = inner, limit, 0
        self.batch_size = inner.batch_size

    def render(self, messages: list[dict[str, str]]) -> str:
        return self.inner.render(messages)

    def generate(self, prompts: list[str], sampling: SamplingConfig, seed: int) -> list[GenerationOutput]:
        if self.limit is not None and self.calls >= self.limit:
            raise Fault("injected")
        self.calls += 1
        return self.inner.generate(prompts, sampling, seed)


def write_notebook(path: Path, *sources: str) -> Path:
    """A minimal notebook honouring the contract: typed ``parameters`` cell first, then ``sources``."""
    params = nbformat.v4.new_code_cell(
        'profile: str = "cpu"\nresults_dir: str = ""\noverrides: dict = {}', metadata={"tags": ["parameters"]}
    )
    nb = nbformat.v4.new_notebook(cells=[params, *(nbformat.v4.new_code_cell(s) for s in sources)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path
