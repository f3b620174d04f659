"""The backend of a replaying results folder (:mod:`redpo.core.replay`): it renders prompts, and refuses to run.

Rendering needs only the generator's tokenizer (its chat template), so the cache keys of a committed run can be
recomputed without its weights. Every call the cache answers never reaches ``generate``; one that does is a
call the committed run never made, and the error says so instead of quietly starting a model.
"""

from __future__ import annotations

from typing import Any

from redpo.config import SamplingConfig
from redpo.core.io import ResultsDir
from redpo.core.replay import miss
from redpo.generation import prompts
from redpo.generation.backends import GenerationOutput


class ReplayBackend:
    """Renders with ``tokenizer``'s chat template; ``generate`` raises :class:`~redpo.core.replay.ReplayMiss`."""

    def __init__(self, tokenizer: Any, results: ResultsDir, *, batch_size: int = 1, label: str = "generator") -> None:
        self.tokenizer = tokenizer
        self.results = results
        self.batch_size = batch_size
        self.label = label

    def render(self, messages: prompts.Messages) -> str:
        return prompts.render(messages, self.tokenizer)

    def generate(self, prompts_: list[str], sampling: SamplingConfig, seed: int) -> list[GenerationOutput]:
        first = prompts_[0][-160:].replace("\n", " ") if prompts_ else ""
        raise miss(self.results, f"a {self.label} call ({len(prompts_)} prompts; the first ends {first!r})")
