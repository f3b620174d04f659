"""Batched generation with HF transformers on a loaded causal LM (CPU or GPU), with shared-prefix reuse."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch

from redpo.config import SamplingConfig
from redpo.generation import prompts
from redpo.generation.backends import GenerationOutput

SHARED_PREFIX_MIN_TOKENS = 256
"""Greedy batches whose prompts share at least this many leading tokens prefill them once (direct-LLM RE)."""


class TransformersBackend:
    """Left-padded batched ``model.generate`` on a loaded HF causal LM (CPU or GPU)."""

    def __init__(self, loaded: Any, batch_size: int, *, min_shared_prefix: int = SHARED_PREFIX_MIN_TOKENS) -> None:
        self.model = loaded.model.eval()
        self.min_shared_prefix = min_shared_prefix
        self.tokenizer = loaded.tokenizer
        self.info = loaded.info
        self.batch_size = batch_size
        self.tokenizer.padding_side = "left"  # decoder-only batching: the new tokens must all start at one column
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        self._eos_ids = set(eos if isinstance(eos, list) else [eos])
        self.calls = 0
        self._prefix: tuple[list[int], Any] | None = None
        """(token ids, KV cache) of the last shared prompt prefix; see :meth:`_reuse_shared_prefix`."""

    def render(self, messages: prompts.Messages) -> str:
        return prompts.render(messages, self.tokenizer)

    def generate(self, prompts: list[str], sampling: SamplingConfig, seed: int) -> list[GenerationOutput]:
        if sampling.grammar is not None:  # the profile check refuses this first; a direct caller hears it here
            raise ValueError("the transformers backend cannot sample within a grammar; use generator.backend "
                             "llama_cpp for generation.constrained")
        torch.manual_seed(seed)
        if sampling.temperature == 0:
            encoded = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
            if self._reuse_shared_prefix(encoded):
                return [self._greedy_after_prefix(ids, sampling) for ids in encoded]
        out: list[GenerationOutput] = []
        for start in range(0, len(prompts), self.batch_size):
            out.extend(self._generate_batch(prompts[start : start + self.batch_size], sampling))
        return out

    def _generate_kwargs(self, sampling: SamplingConfig) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            **({"stop_strings": list(sampling.stop), "tokenizer": self.tokenizer} if sampling.stop else {}),
            "max_new_tokens": sampling.max_new_tokens,
            "repetition_penalty": sampling.repetition_penalty,
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        if sampling.temperature > 0:
            kwargs.update(
                do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k
            )
        else:  # greedy; clear the model's sampling defaults so they neither apply nor warn
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kwargs

    def _generate_batch(self, batch: list[str], sampling: SamplingConfig) -> list[GenerationOutput]:
        # The rendered chat template already holds any BOS; adding special tokens again would double it.
        enc = self.tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False)
        enc = enc.to(self.model.device)
        with torch.inference_mode():
            seqs = self.model.generate(**enc, **self._generate_kwargs(sampling))
        new = seqs[:, enc["input_ids"].shape[1] :].tolist()
        self.calls += 1
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return [GenerationOutput(t, self._n_generated(ids)) for t, ids in zip(texts, new, strict=True)]

    def _reuse_shared_prefix(self, encoded: list[list[int]]) -> bool:
        """Make ``self._prefix`` the KV cache of the leading tokens all of ``encoded`` share, if that is long.

        Why: the direct-LLM RE prompts repeat ~1,200 tokens of label explanations and differ only in the final
        sentence, so prefilling the shared part once and each sentence alone is many times cheaper than
        prefilling every prompt in full. A later batch that shares less of the cached prefix gets the common part
        prefilled anew (once: the batches after it share that part too). Greedy decoding only, so the answers
        equal full-prompt decoding up to float rounding.
        """
        shared = min(len(ids) for ids in encoded) - 1  # every prompt keeps >= 1 token to feed the model
        for ids in encoded[1:]:
            shared = _common_length(ids, encoded[0], shared)
        if self._prefix is not None:
            shared = _common_length(self._prefix[0], encoded[0], shared)
            if shared == len(self._prefix[0]):
                return True
        if shared < self.min_shared_prefix:
            return False
        prefix_ids = encoded[0][:shared]
        with torch.inference_mode():
            out = self.model(torch.tensor([prefix_ids], device=self.model.device), use_cache=True)
        self._prefix = (prefix_ids, out.past_key_values)
        return True

    def _greedy_after_prefix(self, ids: list[int], sampling: SamplingConfig) -> GenerationOutput:
        assert self._prefix is not None
        cache = copy.deepcopy(self._prefix[1])  # generate() extends the cache in place
        input_ids = torch.tensor([ids], device=self.model.device)
        with torch.inference_mode():
            seqs = self.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                past_key_values=cache,
                **self._generate_kwargs(sampling),
            )
        new = seqs[0, len(ids) :].tolist()
        self.calls += 1
        return GenerationOutput(self.tokenizer.decode(new, skip_special_tokens=True), self._n_generated(new))

    def _n_generated(self, ids: list[int]) -> int:
        """Tokens the model actually produced: up to and including the first EOS (the rest is padding)."""
        for i, tok in enumerate(ids):
            if tok in self._eos_ids:
                return i + 1
        return len(ids)


def _common_length(a: Sequence[int], b: Sequence[int], limit: int) -> int:
    """How many leading tokens ``a`` and ``b`` share, counting at most ``limit``."""
    limit = min(limit, len(a), len(b))
    return next((i for i in range(limit) if a[i] != b[i]), limit)

