"""Closed-set scoring: the direct-LLM baseline's primary row, which cannot fail on answer format.

Asked to *write* a label, a small generator tends to name a type without its direction (``Cause-Effect`` for
``Cause-Effect(e1,e2)``), and free generation then scores it near 0: a format failure, not a measurement of the
LLM as an RE model. Here the LLM never writes. For each test sentence every candidate label is *verbalised* as a
short statement with the two entity names filled in (``'influx' causes 'drain'`` for ``Cause-Effect(e1,e2)``; the
schema's :meth:`~redpo.core.relations.RelationSchema.verbalize`), and the LLM scores each statement as the continuation
of the same prompt the free-generation baseline uses (task text, every label with its explanation and one K-shot
demonstration, the marked sentence):

1. **score** = the statement's length-normalised log-likelihood (mean log-probability per token);
2. **contextual calibration** (Zhao et al., 2021): the label distribution ``softmax(scores)`` is divided by the
   prior the model gives the labels on *content-free* inputs (``llm_re.calibration_inputs``, e.g. ``N/A`` in place
   of the sentence and both entities), which removes a preference for statements that are likely whatever the
   sentence says;
3. **prediction** = the best calibrated label. There is nothing to parse, and direction is stated in words.

Cost: every prompt repeats the same head (task text, labels, demonstrations) and differs only in the sentence, so
the head is prefilled once; each sentence then costs its own few tokens plus one batched pass over the label
statements. Scores are cached per sentence (``cache/llm_scores.jsonl``, append-only, keyed by the weights, prompt
and statements), so a killed run resumes.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from redpo.config import Profile
from redpo.core.io import SCORES_CACHE, ResultsDir
from redpo.core.relations import RelationSchema
from redpo.core.replay import miss, replay_models
from redpo.core.sample import RESample
from redpo.extraction.llm_prompt import (
    SCORING_QUESTION,
    SCORING_SYSTEM_PROMPT,
    candidate_labels,
    demonstrations,
    llm_re_messages,
)
from redpo.extraction.metrics import per_sentence, score
from redpo.extraction.run_store import RunStore
from redpo.generation.arms import prepare_generator
from redpo.generation.engines import identity_settings, profile_tokenizer
from redpo.generation.prompts import render
from redpo.generation.specs import LLM_ARM
from redpo.models.registry import ModelInfo


def scorer_model_key(info: ModelInfo) -> str:
    """The score cache's model prefix: the transformers generator's name and weight hash."""
    return f"{info.name}:{info.sha256}"


class ContinuationScorer:
    """Mean log-probability of short continuations after prompts that share a long head, on a transformers LM.

    The head (the tokens every prompt given to :meth:`prefill_head` shares) is run once; each prompt then runs its
    own tail on a copy of that cache, and all of its continuations in one right-padded batch on top.
    """

    def __init__(self, loaded: Any) -> None:
        self.model = loaded.model.eval()
        self.tokenizer = loaded.tokenizer
        self.model_key = scorer_model_key(loaded.info)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self._head: tuple[list[int], Any] | None = None

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def prefill_head(self, prompts: Sequence[str]) -> int:
        """Prefill the leading tokens all ``prompts`` share (each keeps at least one token of its own)."""
        import torch

        encoded = [self.encode(p) for p in prompts]
        shared = min(len(ids) for ids in encoded) - 1
        for ids in encoded[1:]:
            shared = next((i for i in range(shared) if ids[i] != encoded[0][i]), shared)
        head = encoded[0][:shared]
        if shared > 0:
            with torch.inference_mode():
                out = self.model(torch.tensor([head], device=self.model.device), use_cache=True)
            self._head = (head, out.past_key_values)
        else:
            self._head = None
        return shared

    def score(self, prompt: str, continuations: Sequence[str]) -> list[float]:
        """Mean log-probability per token of each continuation after ``prompt``."""
        import torch

        ids = self.encode(prompt)
        conts = [self.encode(c) for c in continuations]
        if any(not c for c in conts):
            raise ValueError("every continuation needs at least one token")
        head_ids, head_cache = self._head if self._head and ids[: len(self._head[0])] == self._head[0] else ([], None)
        rest = ids[len(head_ids):]
        device = self.model.device
        with torch.inference_mode():
            cache = copy.deepcopy(head_cache) if head_cache is not None else None
            out = self.model(torch.tensor([rest], device=device), past_key_values=cache, use_cache=True)
            first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
            cache = out.past_key_values
            cache.batch_repeat_interleave(len(conts))
            width = max(len(c) for c in conts)
            batch = torch.tensor([c + [self.pad_id] * (width - len(c)) for c in conts], device=device)
            mask = torch.tensor([[1] * len(ids) + [1] * len(c) + [0] * (width - len(c)) for c in conts],
                                device=device)
            logits = self.model(batch, attention_mask=mask, past_key_values=cache, use_cache=False).logits
            logp = torch.log_softmax(logits.float(), dim=-1)
        scores = []
        for i, c in enumerate(conts):
            total = float(first[c[0]])
            total += sum(float(logp[i, j - 1, c[j]]) for j in range(1, len(c)))
            scores.append(total / len(c))
        return scores


@dataclass(frozen=True)
class ScoredBaseline:
    """The closed-set direct-LLM run on one split: calibrated predictions, the raw scores, the prior, the score."""

    k: int
    split_seed: int
    labels: list[str]
    predictions: list[str]
    uncalibrated: list[str]
    prior: list[float]
    per_sentence: dict[str, list[str]]
    metrics: dict[str, Any]
    uncalibrated_micro_f1: float
    seconds: float
    cached: int

    def summary(self) -> str:
        n = len(self.predictions)
        return (f"k{self.k}_s{self.split_seed} closed-set scoring: micro-F1 {self.metrics['micro_f1']:.3f} "
                f"(uncalibrated {self.uncalibrated_micro_f1:.3f}), 0/{n} unparseable, "
                f"{self.seconds / max(n, 1):.2f} s per sentence ({self.cached} sentences from the cache)")

    def record(self) -> dict[str, Any]:
        return {
            "arm": LLM_ARM, "method": "closed-set scoring, calibrated", "k": self.k, "split_seed": self.split_seed,
            "n_test": len(self.predictions), "unparseable": 0, "unparseable_share": 0.0,
            "seconds": round(self.seconds, 2), "seconds_per_sentence": round(self.seconds / max(len(self.predictions),
                                                                                                 1), 3),
            "cached_sentences": self.cached, "labels": self.labels, "prior": self.prior,
            "uncalibrated_micro_f1": self.uncalibrated_micro_f1, "predictions": self.per_sentence, **self.metrics,
        }


def content_free_samples(profile: Profile) -> list[RESample]:
    """One stand-in sentence per ``llm_re.calibration_inputs`` entry: the text as both entities, nothing else."""
    return [RESample((text, text), (0, 1), (1, 2), "") for text in profile.llm_re.calibration_inputs]


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def calibrated_choice(scores: np.ndarray, content_free: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(calibrated argmax, uncalibrated argmax, prior)`` for a ``(sentences, labels)`` score matrix, given the
    scores of the content-free inputs ``(inputs, labels)``: p(label | x) / p_cf(label), renormalised."""
    prior = _softmax(content_free).mean(axis=0)
    calibrated = np.log(_softmax(scores)) - np.log(prior)
    return calibrated.argmax(axis=1), scores.argmax(axis=1), prior


def run_closed_set(
    profile: Profile,
    results: ResultsDir,
    schema: RelationSchema,
    test: Sequence[RESample],
    kshot: Sequence[RESample],
    *,
    k: int,
    split_seed: int,
    scorer: ContinuationScorer | None = None,
    progress: bool = True,
) -> ScoredBaseline:
    """Score every candidate label's statement for every test sentence and take the calibrated best.

    ``progress`` shows a bar over the sentences (the content-free inputs first), with the time left: on a CPU
    a sentence costs about a second per candidate label, so a full test set runs for a long while."""
    labels = candidate_labels(profile, schema)
    demos = demonstrations(kshot, labels)
    replaying = replay_models(results) if scorer is None else None
    if replaying is not None:  # scores come from the committed cache alone: the weights are never loaded
        replaying.check_settings(results, identity_settings(profile.generator))
        if replaying.scorer_key is None:
            raise miss(results, "the closed-set scorer (the archive names no scorer_key)")
        model_key, tokenizer = replaying.scorer_key, profile_tokenizer(profile)
    else:
        scorer = scorer or ContinuationScorer(prepare_generator(profile))
        model_key, tokenizer = scorer.model_key, scorer.tokenizer

    def prompt(sample: RESample) -> str:
        messages = llm_re_messages(sample, schema, labels, demos, question=SCORING_QUESTION,
                                   system=SCORING_SYSTEM_PROMPT)
        return render(messages, tokenizer)

    def statements(sample: RESample) -> list[str]:
        return [schema.verbalize(label, sample.head_name, sample.tail_name) for label in labels]

    store = RunStore(results.cache / SCORES_CACHE)
    free = content_free_samples(profile)
    everything = [*free, *test]
    prompts = [prompt(s) for s in everything]
    keys = [hashlib.sha256(json.dumps([model_key, p, statements(s)]).encode()).hexdigest()
            for p, s in zip(prompts, everything, strict=True)]
    start, cached, rows = time.perf_counter(), 0, []
    head_ready = False
    work = zip(keys, prompts, everything, strict=True)
    for key, text, sample in tqdm(work, total=len(keys), desc=f"closed-set scoring k{k}_s{split_seed}",
                                  unit="sentence", disable=not progress):
        hit = store.get(key)
        if hit is None:
            if scorer is None:
                raise miss(results, f"closed-set scores of test sentence {sample.head_name!r} / {sample.tail_name!r}")
            if not head_ready:
                scorer.prefill_head([prompts[0], prompts[-1]])
                head_ready = True
            hit = {"fingerprint": key, "scores": scorer.score(text, statements(sample))}
            store.add(hit)
        else:
            cached += 1
        rows.append(hit["scores"])
    seconds = time.perf_counter() - start
    matrix = np.array(rows[len(free):], dtype=float).reshape(len(test), len(labels))
    best, raw, prior = calibrated_choice(matrix, np.array(rows[: len(free)], dtype=float))
    predictions = [labels[i] for i in best]
    uncalibrated = [labels[i] for i in raw]
    gold = [s.relation for s in test]
    return ScoredBaseline(
        k=k, split_seed=split_seed, labels=labels, predictions=predictions, uncalibrated=uncalibrated,
        prior=[round(float(p), 6) for p in prior], per_sentence=per_sentence(test, predictions),
        metrics=score(gold, predictions, schema), uncalibrated_micro_f1=score(gold, uncalibrated, schema)["micro_f1"],
        seconds=seconds, cached=cached,
    )
