"""One HTTP client for inference servers: llama.cpp's ``llama-server`` here, vLLM or SGLang on GPUs.

All pending requests of a loop step go out at once (one thread per server slot), so the server batches them
continuously. Two APIs are spoken:

- ``llama_cpp``: the native ``/completion`` endpoint. It takes the sampler chain explicitly, so redpo sets the one
  transformers uses (repetition penalty over the whole context, then top-k, temperature and top-p, no ``min_p``);
  llama.cpp's own default (``min_p`` 0.05, a 64-token penalty window, top-p before temperature) makes a different,
  copy-prone generator. Each request also names a slot (``id_slot``) and keeps ``cache_prompt`` on: a prompt is
  sent to the slot whose last prompt shares the longest prefix with it, so an OBO chain, whose every step is the
  previous prompt plus one demonstration, only computes the new tokens.
- ``openai``: ``/v1/completions`` of ``vllm serve`` or SGLang, which reuse prefixes on their own (prefix caching);
  the adapter is chosen by naming it as the ``model``.
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

from redpo.config import SamplingConfig
from redpo.generation import prompts
from redpo.generation.backends import GenerationOutput
from redpo.generation.backends.llama_server import ServerError

ServerKind = Literal["llama_cpp", "openai"]
TRANSFORMERS_SAMPLER_ORDER = ("penalties", "top_k", "temperature", "top_p")
"""transformers' logits processors in order; top-k before temperature selects the same tokens as after it."""
REQUEST_TIMEOUT = 3600.0
CONTEXT_ERRORS = ("exceed_context_size_error", "maximum context length")
"""How llama-server and vLLM/OpenAI-compatible servers say a prompt does not fit (their answers name no setting)."""


@dataclass
class ServerStats:
    """What the server reports computing: prompt tokens evaluated (cached prefixes excluded), tokens generated."""

    requests: int = 0
    prompt_tokens: int = 0
    new_tokens: int = 0


def request_seed(batch_seed: int, index: int) -> int:
    """A 32-bit seed per request (the servers take uint32), derived from the batch seed and the position."""
    digest = hashlib.sha256(f"{batch_seed}:{index}".encode()).hexdigest()
    return int(digest[:8], 16)


def common_prefix(a: str, b: str) -> int:
    """Characters two prompts share at the start: what a slot's cached prompt saves for the next request."""
    limit = min(len(a), len(b))
    return next((i for i in range(limit) if a[i] != b[i]), limit)


class ServerBackend:
    """A :class:`~redpo.generation.backends.Backend` over an HTTP server; ``render`` uses the HF tokenizer's chat
    template, so prompts are byte-identical to the transformers backend's."""

    def __init__(
        self,
        url: str,
        tokenizer: Any,
        *,
        kind: ServerKind = "llama_cpp",
        slots: int = 1,
        lora: Sequence[dict[str, float]] | None = None,
        served_model: str | None = None,
        context: int = 4096,
    ) -> None:
        self.url = url.rstrip("/")
        self.tokenizer = tokenizer
        self.kind = kind
        self.batch_size = slots
        self.slots = slots
        self.lora = list(lora or [])
        self.served_model = served_model
        self.context = context
        """Tokens per slot: the repetition-penalty window, so it covers the whole context as transformers' does."""
        self._slot_prompts: list[str] = [""] * slots
        self.stats = ServerStats()

    def render(self, messages: prompts.Messages) -> str:
        return prompts.render(messages, self.tokenizer)

    def assign_slots(self, batch: Sequence[str]) -> list[int]:
        """One distinct slot per prompt: the free slot whose last prompt shares the longest prefix with it."""
        if len(batch) > self.slots:
            raise ValueError(f"{len(batch)} prompts for {self.slots} slots; send at most one batch of slots")
        free = set(range(self.slots))
        chosen = []
        for prompt in batch:
            slot = max(sorted(free), key=lambda s: common_prefix(self._slot_prompts[s], prompt))
            free.remove(slot)
            chosen.append(slot)
        return chosen

    def generate(self, prompts: list[str], sampling: SamplingConfig, seed: int) -> list[GenerationOutput]:
        out: list[GenerationOutput] = []
        for start in range(0, len(prompts), self.slots):
            batch = prompts[start : start + self.slots]
            slots = self.assign_slots(batch)
            bodies = [self.body(p, sampling, request_seed(seed, start + i), slot)
                      for i, (p, slot) in enumerate(zip(batch, slots, strict=True))]
            with ThreadPoolExecutor(max_workers=len(batch)) as pool:
                replies = list(pool.map(self._post, bodies))
            for prompt, slot, reply in zip(batch, slots, replies, strict=True):
                self._slot_prompts[slot] = prompt
                out.append(self._output(reply))
        return out

    # ---- the two APIs ------------------------------------------------------------------------------------
    def body(self, prompt: str, sampling: SamplingConfig, seed: int, slot: int) -> dict[str, Any]:
        """The request for one prompt, with every sampling parameter set explicitly (no server defaults)."""
        if self.kind == "openai":
            return {
                "model": self.served_model, "prompt": prompt, "max_tokens": sampling.max_new_tokens,
                "temperature": sampling.temperature, "top_p": sampling.top_p if sampling.temperature > 0 else 1.0,
                "top_k": sampling.top_k if sampling.temperature > 0 and sampling.top_k > 0 else -1,
                "repetition_penalty": sampling.repetition_penalty, "seed": seed, "stop": list(sampling.stop),
            }
        body: dict[str, Any] = {
            "prompt": prompt, "n_predict": sampling.max_new_tokens, "seed": seed,
            "temperature": sampling.temperature, "top_k": sampling.top_k, "top_p": sampling.top_p,
            "min_p": 0.0, "typical_p": 1.0, "repeat_penalty": sampling.repetition_penalty,
            "repeat_last_n": self.context,
            "presence_penalty": 0.0, "frequency_penalty": 0.0, "dry_multiplier": 0.0,
            "samplers": list(TRANSFORMERS_SAMPLER_ORDER), "cache_prompt": True, "id_slot": slot,
            "stop": list(sampling.stop),
        }
        if self.lora:
            body["lora"] = self.lora
        return body

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        path = "/v1/completions" if self.kind == "openai" else "/completion"
        request = urllib.request.Request(
            self.url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as err:
            detail = err.read().decode(errors="replace")[:500]
            hint = ""
            if any(marker in detail for marker in CONTEXT_ERRORS):
                hint = (f"; the prompt does not fit the server's context: raise generator.server.ctx_per_slot "
                        f"(now {self.context} tokens per slot) or, for a remote server, its maximum model length")
            raise ServerError(f"{self.url}{path} answered {err.code}: {detail}{hint}") from None
        except (urllib.error.URLError, OSError) as err:
            raise ServerError(f"{self.url}{path} unreachable ({err}); is the server running?") from None

    def _output(self, reply: dict[str, Any]) -> GenerationOutput:
        if self.kind == "openai":
            choice, usage = reply["choices"][0], reply.get("usage") or {}
            n_new = int(usage.get("completion_tokens", 0))
            self.stats.prompt_tokens += int(usage.get("prompt_tokens", 0))
            text = choice["text"]
        else:
            timings = reply.get("timings") or {}
            n_new = int(timings.get("predicted_n", reply.get("tokens_predicted", 0)))
            self.stats.prompt_tokens += int(timings.get("prompt_n", 0))
            text = reply["content"]
        self.stats.requests += 1
        self.stats.new_tokens += n_new
        return GenerationOutput(text, n_new)
