"""The smoke profile's generator: a tiny random Llama fitted for a few seconds so it writes marker-shaped text.

A random tiny model emits no ``<e1>``/``<e2>`` markers, so every smoke arm would be empty and nothing downstream
would run. Instead the tiny Llama is fitted on real (rendered prompt -> gold marked sentence) pairs built from
the TRAIN split: the same prompt builders, the same chat template, the same loops and parser as the real runs.
Nothing is scripted; the model just learned the output format (and copies, and fails, like a weak LLM).

The fitted directory is cached under ``REDPO_CACHE/models/tiny-fitted-llama-<hash>/``; the hash covers the
training corpus and every fit setting, and the ``redpo_model.json`` marker is written last, so an interrupted
fit is redone. The fit runs a fixed number of steps (``generator.fit.steps``), so it is the same on any machine.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from redpo.config import Profile, TinyFitConfig, cache_dir, identity
from redpo.core.relations import RelationSchema
from redpo.core.sample import MARKERS, RESample
from redpo.data.splits import load_split, profile_schema
from redpo.generation import prompts
from redpo.generation.specs import ARMS, ArmSpec
from redpo.models.load import load_causal_lm
from redpo.models.packaged import cached_build
from redpo.models.registry import LoadedModel, ModelInfo
from redpo.models.tiny import build_tiny_llama

FIT_VERSION = 4
"""Bump when the pair recipe or the training loop changes, so cached fitted models are rebuilt."""
FITTED_NAME = "tiny-fitted-llama"


@dataclass(frozen=True)
class FitPair:
    messages: prompts.Messages
    completion: str


def build_pairs(profile: Profile, train: Sequence[RESample], schema: RelationSchema) -> list[FitPair]:
    """``generator.fit.examples`` pairs over every arm's prompt shape, each with held-out gold completions.

    OBO prompts get a growing number of demonstrations, as the OBO loop produces; baseline/AAO prompts ask
    for ``n_per_relation`` samples and their completion is that many gold lines.
    """
    gen = profile.generation
    rng = random.Random(profile.seed)
    by_rel: dict[str, list[RESample]] = defaultdict(list)
    for s in train:
        by_rel[s.relation].append(s)
    relations = sorted(r for r, rows in by_rel.items() if len(rows) > gen.num_demos + gen.n_per_relation)
    if not relations:
        raise ValueError("the TRAIN split has too few samples per relation to build fitting pairs")
    arms = list(gen.arms) or ["obo"]
    pairs: list[FitPair] = []
    for _ in range(profile.generator.fit.examples):
        rel, arm = rng.choice(relations), rng.choice(arms)
        spec: ArmSpec = ARMS[arm]
        n_demos = gen.num_demos + (0 if spec.many else rng.randint(0, gen.n_per_relation - 1))
        n_out = gen.n_per_relation if spec.many else 1
        drawn = rng.sample(by_rel[rel], n_demos + n_out)
        demos, targets = drawn[:n_demos], drawn[n_demos:]
        if spec.prompt == "baseline":
            messages = prompts.baseline_prompt(schema, rel, demos, n_out)
        else:
            messages = prompts.icl_prompt(schema, rel, demos, mode=spec.prompt, n=n_out, dissimilar=spec.dissimilar)
        lines = [prompts.demo_text(t, schema, with_relation=spec.prompt == "baseline") for t in targets]
        pairs.append(FitPair(messages, "\n".join(lines)))
    return pairs


def fit_tokens(schema: RelationSchema) -> list[str]:
    """Single tokens of the fitted model's tokenizer: the entity markers and the relation labels to generate for.

    Why the labels: the baseline format repeats the label on every line (``Relation: Cause-Effect(e1,e2) | ...``),
    and a sub-million-parameter model spelling a label out of a 1,000-token BPE garbles it (``Cause) | ...``), so
    whether the baseline arm keeps any sample would hang on float rounding. A real LLM's tokenizer knows such
    words; one token each gives the tiny model the same footing, and the parser still checks the label it writes.
    """
    return [*MARKERS, *(label for label in schema.labels if label != schema.negative_label)]


def _corpus(pairs: Sequence[FitPair]) -> list[str]:
    return [m["content"] for p in pairs for m in p.messages] + [p.completion for p in pairs]


def _encode(pairs: Sequence[FitPair], tokenizer: Any, max_length: int) -> list[tuple[list[int], int]]:
    """(token ids, prompt length): loss is taken on the completion and its end-of-turn token only."""
    out = []
    for p in pairs:
        prompt_ids = tokenizer(prompts.render(p.messages, tokenizer), add_special_tokens=False)["input_ids"]
        completion_ids = tokenizer(p.completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids = (prompt_ids + completion_ids)[-max_length:]
        out.append((ids, max(len(ids) - len(completion_ids), 0)))
    return out


def _batch(rows: Sequence[tuple[list[int], int]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (ids, n_prompt) in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        mask[i, : len(ids)] = 1
        labels[i, n_prompt : len(ids)] = torch.tensor(ids[n_prompt:])
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def fit_model(
    model: Any, tokenizer: Any, pairs: Sequence[FitPair], settings: TinyFitConfig, seed: int
) -> dict[str, Any]:
    """A plain AdamW loop over shuffled mini-batches for ``settings.steps`` steps."""
    rows = _encode(pairs, tokenizer, settings.max_length)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    optim = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=0.0)
    losses: list[float] = []
    order: list[int] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    model.train()
    t0 = time.perf_counter()
    try:
        for _ in range(settings.steps):
            if len(order) < settings.batch_size:  # next epoch, reshuffled
                order = list(range(len(rows)))
                rng.shuffle(order)
            idx, order = order[: settings.batch_size], order[settings.batch_size :]
            loss = model(**_batch([rows[i] for i in idx], tokenizer.pad_token_id)).loss
            optim.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            losses.append(loss.item())
    finally:
        torch.set_num_threads(threads)
        model.eval()
    tail = losses[-20:] or [float("nan")]
    return {
        "steps": len(losses),
        "seconds": round(time.perf_counter() - t0, 2),
        "final_loss": round(sum(tail) / len(tail), 4),
    }


def fitted_dir_name(pairs: Sequence[FitPair], config: dict[str, Any]) -> str:
    blob = json.dumps({"pairs": [[p.messages, p.completion] for p in pairs], "config": config}, sort_keys=True)
    return f"{FITTED_NAME}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def fitted_tiny_llama(profile: Profile) -> LoadedModel:
    """Build (once, cached) and load the fitted tiny generator of ``profile``; returns a ``LoadedModel``."""
    # a marked build: loads under its name and hash
    return load_causal_lm(fitted_tiny_llama_info(profile).path, device=profile.generator.device)


def fitted_tiny_llama_info(profile: Profile) -> ModelInfo:
    """The fitted tiny generator's folder, name and hash, built once if missing but not loaded (its tokenizer is
    the chat template's source, and its hash keys the calls)."""
    settings = profile.generator.fit
    schema = profile_schema(profile)
    pairs = build_pairs(profile, load_split(profile, "train"), schema)
    config = {"version": FIT_VERSION, "seed": profile.seed, **identity(settings)}
    out_dir = cache_dir() / "models" / fitted_dir_name(pairs, config)

    def build(out: Path) -> dict[str, Any]:
        build_tiny_llama(
            out, _corpus(pairs), vocab_size=settings.vocab_size, hidden=settings.hidden,
            layers=settings.layers, seed=profile.seed, added_tokens=fit_tokens(schema),
        )
        tokenizer = AutoTokenizer.from_pretrained(out)
        model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
        report = fit_model(model, tokenizer, pairs, settings, profile.seed)
        model.save_pretrained(out)
        return {"config": config, "pairs": len(pairs), "fit": report}

    return cached_build(FITTED_NAME, out_dir, build, "tiny")
