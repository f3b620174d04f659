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

A fleet (``generator.server.url`` as a list) is one client over every server's slots: the slots of the servers
interleave, so prompts that share no prefix with any slot spread over the servers, while a prompt that extends a
slot's last prompt (an OBO chain's next step) goes back to that slot and so to that server, whose prefix cache
holds it. A server that cannot be reached or does not answer (:class:`ServerDown`) is dropped for the rest of
the run, and its requests in flight are sent again, with the same seeds, to the others.

Every request carries the server's API key when there is one, and waits at most the profile's
``generator.server.connect_timeout`` for a connection and ``read_timeout`` for the reply: a server that accepts
and never answers fails the step with one line, and the resumed run answers the finished steps from the cache.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import urllib.parse
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

from redpo.config import LlamaServerConfig, SamplingConfig
from redpo.generation import prompts
from redpo.generation.backends import GenerationOutput
from redpo.generation.backends.llama_server import ServerError

ServerKind = Literal["llama_cpp", "openai"]
TRANSFORMERS_SAMPLER_ORDER = ("penalties", "top_k", "temperature", "top_p")
"""transformers' logits processors in order; top-k before temperature selects the same tokens as after it."""
_DEFAULTS = LlamaServerConfig()
"""The profile's defaults: a client made outside a profile (a tool, a test) times out as a profile's would."""
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


class ServerDown(ServerError):
    """A server that cannot be reached or sends no reply in time: on a fleet, its requests go to the others."""


class ServerBackend:
    """A :class:`~redpo.generation.backends.Backend` over an HTTP server, or a fleet of them serving one model;
    ``render`` uses the HF tokenizer's chat template, so prompts are byte-identical to the transformers
    backend's."""

    def __init__(
        self,
        url: str | Sequence[str],
        tokenizer: Any,
        *,
        kind: ServerKind = "llama_cpp",
        slots: int = 1,
        lora: Sequence[dict[str, float]] | None = None,
        served_model: str | None = None,
        context: int = 4096,
        api_key: str | Sequence[str | None] | None = None,
        connect_timeout: float = _DEFAULTS.connect_timeout,
        read_timeout: float = _DEFAULTS.read_timeout,
    ) -> None:
        self.urls = [u.rstrip("/") for u in ([url] if isinstance(url, str) else url)]
        if not self.urls:
            raise ValueError("ServerBackend needs at least one server URL")
        self.url = self.urls[0]
        self.tokenizer = tokenizer
        self.kind = kind
        self.slots = slots
        """Slots per server."""
        self.batch_size = slots * len(self.urls)
        """Every slot of the fleet: the cache's chunk size, the same whichever servers are up, so a resumed run
        forms the same chunks (same keys, same seeds)."""
        self.down: set[int] = set()
        self.answered = [0] * len(self.urls)
        """Replies per server: how the fleet shared the work (a request lost with its server is not counted)."""
        """Servers (indices into ``urls``) found down: no request goes to them again in this client's life."""
        self.lora = list(lora or [])
        self.served_model = served_model
        self.context = context
        """Tokens per slot: the repetition-penalty window, so it covers the whole context as transformers' does."""
        keys = api_key if isinstance(api_key, list | tuple) else [api_key] * len(self.urls)
        if len(keys) != len(self.urls):
            raise ValueError(f"{len(keys)} API keys for {len(self.urls)} servers: give one key, or one per server")
        self.api_keys: list[str | None] = list(keys)
        """The key of each server (a fleet someone else runs shares one; servers this process started have their
        own)."""
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self._slot_prompts: list[str] = [""] * self.batch_size
        self.stats = ServerStats()

    def render(self, messages: prompts.Messages) -> str:
        return prompts.render(messages, self.tokenizer)

    def server_of(self, slot: int) -> int:
        """The server of a fleet-wide slot: slots interleave (slot 0 on server 0, slot 1 on server 1, ...), so
        ties in the longest-prefix choice, the first step of every chain included, alternate between servers."""
        return slot % len(self.urls)

    def live_slots(self) -> list[int]:
        """The slots of the servers not found down."""
        return [s for s in range(self.batch_size) if self.server_of(s) not in self.down]

    def assign_slots(self, batch: Sequence[str]) -> list[int]:
        """One distinct slot per prompt: the free live slot whose last prompt shares the longest prefix with it."""
        free = set(self.live_slots())
        if len(batch) > len(free):
            raise ValueError(f"{len(batch)} prompts for {len(free)} slots; send at most one batch of slots")
        chosen = []
        for prompt in batch:
            slot = max(sorted(free), key=lambda s: common_prefix(self._slot_prompts[s], prompt))
            free.remove(slot)
            chosen.append(slot)
        return chosen

    def generate(self, prompts: list[str], sampling: SamplingConfig, seed: int) -> list[GenerationOutput]:
        """One reply per prompt, in order; each request's seed comes from ``seed`` and the prompt's position, so a
        request sent again to another server asks the same question."""
        out: dict[int, GenerationOutput] = {}
        pending = list(range(len(prompts)))
        while pending:
            room = len(self.live_slots())
            batch, pending = pending[:room], pending[room:]
            slots = self.assign_slots([prompts[i] for i in batch])
            bodies = [self.body(prompts[i], sampling, request_seed(seed, i), slot // len(self.urls))
                      for i, slot in zip(batch, slots, strict=True)]
            with ThreadPoolExecutor(max_workers=len(batch)) as pool:
                replies = list(pool.map(self._attempt, [self.server_of(s) for s in slots], bodies))
            lost = []
            for i, slot, reply in zip(batch, slots, replies, strict=True):
                if isinstance(reply, ServerDown):
                    self._lose(self.server_of(slot), reply)
                    lost.append(i)
                else:
                    self._slot_prompts[slot] = prompts[i]
                    self.answered[self.server_of(slot)] += 1
                    out[i] = self._output(reply)
            pending = lost + pending
        return [out[i] for i in range(len(prompts))]

    def _attempt(self, server: int, body: dict[str, Any]) -> dict[str, Any] | ServerDown:
        try:
            return self._complete(body, server)
        except ServerDown as err:
            return err

    def _lose(self, server: int, err: ServerDown) -> None:
        """Drop a server that is down; with none left, fail with its error."""
        if server in self.down:
            return
        self.down.add(server)
        if len(self.down) == len(self.urls):
            if len(self.urls) == 1:
                raise err
            raise ServerDown(f"{err}; every server of generator.server.url is down now") from None
        warnings.warn(f"{err}; its requests in flight go to the other {len(self.urls) - len(self.down)} server(s) "
                      "of generator.server.url", stacklevel=2)

    # ---- the two APIs ------------------------------------------------------------------------------------
    def body(self, prompt: str, sampling: SamplingConfig, seed: int, slot: int) -> dict[str, Any]:
        """The request for one prompt, with every sampling parameter set explicitly (no server defaults)."""
        if self.kind == "openai":
            body = {
                "model": self.served_model, "prompt": prompt, "max_tokens": sampling.max_new_tokens,
                "temperature": sampling.temperature, "top_p": sampling.top_p if sampling.temperature > 0 else 1.0,
                "top_k": sampling.top_k if sampling.temperature > 0 and sampling.top_k > 0 else -1,
                "repetition_penalty": sampling.repetition_penalty, "seed": seed, "stop": list(sampling.stop),
            }
            if sampling.grammar is not None:  # vLLM's structured outputs; llama-server reads the top-level field
                body.update(structured_outputs={"grammar": sampling.grammar}, grammar=sampling.grammar)
            return body
        body: dict[str, Any] = {
            "prompt": prompt, "n_predict": sampling.max_new_tokens, "seed": seed,
            "temperature": sampling.temperature, "top_k": sampling.top_k, "top_p": sampling.top_p,
            "min_p": 0.0, "typical_p": 1.0, "repeat_penalty": sampling.repetition_penalty,
            "repeat_last_n": self.context,
            "presence_penalty": 0.0, "frequency_penalty": 0.0, "dry_multiplier": 0.0,
            "samplers": list(TRANSFORMERS_SAMPLER_ORDER), "cache_prompt": True, "id_slot": slot,
            "stop": list(sampling.stop),
        }
        if sampling.grammar is not None:
            body["grammar"] = sampling.grammar
        if self.lora:
            body["lora"] = self.lora
        return body

    def _complete(self, body: dict[str, Any], server: int = 0) -> dict[str, Any]:
        return self.post("/v1/completions" if self.kind == "openai" else "/completion", body, server)

    def post(self, path: str, body: dict[str, Any], server: int = 0) -> Any:
        """POST JSON to ``path`` of server ``server`` (the first by default) with the key and the time-outs; the
        JSON reply, or a one-line :class:`ServerError` that names the endpoint and, for a time-out, the setting
        (:class:`ServerDown` when the server is unreachable or silent)."""
        where = self.urls[server] + path
        parts = urllib.parse.urlsplit(where)
        connection = (http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection)(
            parts.hostname or "", parts.port, timeout=self.connect_timeout)
        headers = {"Content-Type": "application/json"}
        if self.api_keys[server]:
            headers["Authorization"] = f"Bearer {self.api_keys[server]}"
        try:
            try:
                connection.connect()
            except TimeoutError:
                raise ServerDown(f"{where}: no connection within {self.connect_timeout:g} s "
                                  "(generator.server.connect_timeout); is the server overloaded or gone?") from None
            assert connection.sock is not None
            connection.sock.settimeout(self.read_timeout)
            connection.request("POST", parts.path, json.dumps(body).encode(), headers)
            response = connection.getresponse()
            payload = response.read()
        except TimeoutError:
            raise ServerDown(f"{where} sent no reply within {self.read_timeout:g} s (generator.server.read_timeout):"
                              " the server hangs, or a reply takes longer and the setting must be raised; a rerun "
                              "answers the finished steps from the cache") from None
        except (OSError, http.client.HTTPException) as err:
            raise ServerDown(f"{where} unreachable ({type(err).__name__}: {err}); is the server running?") from None
        finally:
            connection.close()
        if response.status >= 400:
            detail = " ".join(payload.decode(errors="replace")[:500].split())
            hint = ""
            if any(marker in detail for marker in CONTEXT_ERRORS):
                hint = (f"; the prompt does not fit the server's context: raise generator.server.ctx_per_slot "
                        f"(now {self.context} tokens per slot) or, for a remote server, its maximum model length")
            elif response.status == 401:
                hint = "; the server wants an API key: set generator.server.api_key_env to the variable holding it"
            raise ServerError(f"{where} answered {response.status}: {detail}{hint}")
        try:
            return json.loads(payload)
        except ValueError:
            raise ServerError(f"{where} answered with something that is not JSON: {payload[:200]!r}") from None

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
