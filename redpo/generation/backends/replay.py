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
from redpo.generation.backends import GenerationOutput
from redpo.generation.prompts import Messages, render


class ReplayBackend:
    """Renders with ``tokenizer``'s chat template; ``generate`` raises :class:`~redpo.core.replay.ReplayMiss`."""

    batch_size = 1
    """Irrelevant: the call cache sends a backend only its misses, and here the first miss stops the run."""

    def __init__(self, tokenizer: Any, results: ResultsDir, *, label: str = "generator") -> None:
        self.tokenizer = tokenizer
        self.results = results
        self.label = label

    def render(self, messages: Messages) -> str:
        """The prompt exactly as the committed run rendered it: the key of its cached answer."""
        return render(messages, self.tokenizer)

    def generate(self, prompts: list[str], sampling: SamplingConfig, seed: int) -> list[GenerationOutput]:
        """Every request that reaches here missed the archive: stop, naming it."""
        first = prompts[0][-160:].replace("\n", " ") if prompts else ""
        raise miss(self.results, f"a {self.label} call ({len(prompts)} prompts; the first ends {first!r})")
