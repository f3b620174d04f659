"""``python -m redpo bench generation``: what batching requests across relations buys on this machine.

Both measurements use the same loaded model, the same prompts (one OBO step over every relation) and the same
sampling, and bypass the LLM cache so that every number is a real model call:

(a) batched: the step's requests in batches of ``generator.batch_size``, as the loops send them;
(b) single: the same requests one at a time.

Tokens/s counts generated tokens (up to EOS); valid samples/min counts replies the parser accepts.

Each mode also times the *prefill* alone (one forward pass over the same prompts, in the same batches) and
reports decode tokens/s = new tokens / (seconds - prefill seconds). Why: on a few CPU cores the prompts
(~500 tokens each) cost about as much compute batched as one by one, so the end-to-end ratio is capped by the
prefill's share; the decode ratio is what batching itself buys, and what a GPU's end-to-end ratio approaches.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from redpo.config import Profile
from redpo.core.relations import RelationSchema
from redpo.data.splits import load_split, profile_schema
from redpo.generation.arms import prepare_generator
from redpo.generation.backends.transformers import TransformersBackend
from redpo.generation.loops import first_prompt
from redpo.generation.parse import parse_response


def _obo_prompts(profile: Profile, backend: TransformersBackend) -> tuple[list[str], list[str], RelationSchema]:
    """The first OBO step of every relation, demonstrations drawn from the TRAIN split as the loops draw them."""
    schema = profile_schema(profile)
    train = load_split(profile, "train")
    relations = [r for r in schema.labels if any(s.relation == r for s in train)]
    texts = [
        first_prompt("obo", profile, schema, rel, [s for s in train if s.relation == rel], backend)
        for rel in relations
    ]
    return relations, texts, schema


def _measure(
    backend: TransformersBackend,
    prompts: list[str],
    relations: Sequence[str],
    profile: Profile,
    schema: RelationSchema,
    batch_size: int,
) -> dict[str, Any]:
    sampling, gen = profile.generator.sampling, profile.generation
    backend.batch_size = batch_size
    prefill = _prefill_seconds(backend, prompts, batch_size)
    t0 = time.perf_counter()
    outputs = backend.generate(prompts, sampling, seed=gen.seed)
    seconds = time.perf_counter() - t0
    valid = sum(
        len(parse_response(o.text, rel, schema, expect="one", min_tokens=gen.min_tokens,
                           max_tokens=gen.max_tokens).valid)
        for o, rel in zip(outputs, relations, strict=True)
    )
    tokens = sum(o.n_new_tokens for o in outputs)
    return {
        "batch_size": batch_size,
        "requests": len(prompts),
        "seconds": round(seconds, 2),
        "new_tokens": tokens,
        "tokens_per_s": round(tokens / seconds, 2),
        "prefill_seconds": round(prefill, 2),
        # None when timing noise exceeds the decode time (tiny models): no ratio is better than a wild one
        "decode_tokens_per_s": round(tokens / (seconds - prefill), 2) if seconds > prefill else None,
        "valid": valid,
        "valid_per_min": round(60 * valid / seconds, 2),
    }


def _prefill_seconds(backend: TransformersBackend, prompts: list[str], batch_size: int) -> float:
    """Wall time of one forward pass over ``prompts`` in batches of ``batch_size``, as ``generate`` pads them."""
    t0 = time.perf_counter()
    for start in range(0, len(prompts), batch_size):
        enc = backend.tokenizer(prompts[start : start + batch_size], return_tensors="pt", padding=True,
                                add_special_tokens=False).to(backend.model.device)
        with torch.inference_mode():
            backend.model(**enc, logits_to_keep=1)
    return time.perf_counter() - t0


def bench_generation(profile: Profile, results: Any = None, *, loaded: Any | None = None) -> dict[str, Any]:
    """Batched-across-relations vs one-at-a-time generation with one loaded model; prints and returns both.

    ``results`` (the CLI's results folder) is accepted for the bench registry's calling convention; the CLI
    saves the returned dict itself.
    """
    loaded = loaded or prepare_generator(profile)
    backend = TransformersBackend(loaded, profile.generator.batch_size)
    relations, prompts, schema = _obo_prompts(profile, backend)
    backend.generate(prompts[:1], profile.generator.sampling, seed=0)  # warm-up: first-call allocations
    batched = _measure(backend, prompts, relations, profile, schema, profile.generator.batch_size)
    single = _measure(backend, prompts, relations, profile, schema, 1)
    result = {
        "profile": profile.name,
        "model": loaded.info.name,
        "model_sha256": loaded.info.sha256,
        "torch_threads": torch.get_num_threads(),
        "batched": batched,
        "single": single,
        "speedup_tokens_per_s": round(batched["tokens_per_s"] / max(single["tokens_per_s"], 1e-9), 2),
        "speedup_decode_tokens_per_s": (
            round(batched["decode_tokens_per_s"] / single["decode_tokens_per_s"], 2)
            if batched["decode_tokens_per_s"] and single["decode_tokens_per_s"] else None
        ),
    }
    print(
        f"batched (batch {batched['batch_size']}): {batched['tokens_per_s']} tok/s, "
        f"{batched['valid_per_min']} valid/min\n"
        f"single  (batch 1): {single['tokens_per_s']} tok/s, {single['valid_per_min']} valid/min\n"
        f"ratio: {result['speedup_tokens_per_s']}x tokens/s end to end; decode only (prefill "
        f"{batched['prefill_seconds']} s vs {single['prefill_seconds']} s): {result['speedup_decode_tokens_per_s']}x"
    )
    return result
