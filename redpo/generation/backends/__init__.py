"""Model runtimes behind one protocol: the loops and the call cache never know which engine answers.

A backend turns a batch of rendered prompts into texts: :mod:`redpo.generation.backends.transformers` in this
process, :mod:`redpo.generation.backends.server` over HTTP (llama.cpp, vLLM, SGLang), and
:mod:`redpo.generation.backends.replay` for a replaying results folder. Another engine only has to implement
``render`` and ``generate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from redpo.config import SamplingConfig
from redpo.generation.prompts import Messages


@dataclass(frozen=True)
class GenerationOutput:
    """One response: the decoded new text (prompt excluded) and how many tokens the model produced."""

    text: str
    n_new_tokens: int


class Backend(Protocol):
    """What the loops need from a model runtime. Add an engine by implementing this; the loops stay as they are."""

    batch_size: int

    def render(self, messages: Messages) -> str:
        """The prompt string in the model's own chat format (it is part of the cache key)."""
        ...

    def generate(self, prompts: list[str], sampling: SamplingConfig, seed: int) -> list[GenerationOutput]:
        """One output per prompt, in order; ``seed`` makes sampling reproducible for this exact batch."""
        ...

