"""The direct-LLM RE baseline: the generator LLM labels each test sentence itself (paper §2, claim 5).

The paper compares the non-LLM RE model trained on generated data with the same LLM used directly as an RE
model. redpo's version, decided here because the paper's prompt is unpublished:

* **Prompt** (compact, one call per test sentence): the task in one sentence, then for every candidate
  relation its name, its one-line explanation from :mod:`redpo.core.relations` and *one* gold demonstration from
  the K-shot split (that relation's shortest sample, to keep the prompt short; a relation with no sample in
  the split gets its explanation only), then the test sentence, asking for the label name only. Sentences are
  shown as marked text, exactly as the generation prompts show them.
* **Decoding:** greedy (temperature 0), ``llm_re.max_new_tokens``; requests go through the same
  :class:`~redpo.generation.cache.CachedGenerator` as generation, so they are batched, cached and resumable.
* **Answer -> label** (:func:`parse_label`): the first non-empty line, stripped of decorations, matched
  against the candidate labels by (1) exact match, (2) case- and whitespace-insensitive match, (3) a unique
  label that the answer (3+ characters) is a prefix of (a cut-off answer), then (4) a unique label contained
  in the answer (a chatty answer). Anything else, including an answer naming two labels, is *unparseable*: it is scored
  as the negative label and counted, so a model that ignores the format is not silently rewarded or hidden.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tqdm.auto import tqdm

from redpo.config import Profile, SamplingConfig
from redpo.core.io import ResultsDir
from redpo.core.manifest import recorded_peak
from redpo.core.relations import RelationSchema
from redpo.core.sample import RESample
from redpo.data.splits import generation_splits, load_profile_kshot, profile_schema, stratified_subset
from redpo.extraction.llm_prompt import (
    candidate_labels,
    demonstrations,
    llm_re_messages,
)
from redpo.extraction.llm_scoring import ScoredBaseline, run_closed_set
from redpo.extraction.metrics import per_sentence, score
from redpo.generation.arms import open_generator
from redpo.generation.cache import CachedGenerator, Request
from redpo.generation.specs import LLM_GENERATE_ARM

MIN_PREFIX = 3
"""A cut-off answer must keep at least this many characters to count as a label's prefix."""
_DECORATION = re.compile(r"^(?:[-*>#\s\d.)]+|(?:label|relation|answer)\s*[:=]\s*)+", re.IGNORECASE)
_NORMALIZE = re.compile(r"[\s`*\"']+")


@dataclass(frozen=True)
class LLMREResult:
    """One direct-LLM run on a test set: predictions, raw answers, how many were unparseable, and the score."""

    k: int
    split_seed: int
    predictions: list[str]
    per_sentence: dict[str, list[str]]
    answers: list[str]
    unparseable: int
    metrics: dict[str, Any]
    seconds: float
    cached: int

    def summary(self) -> str:
        """One line for the notebook: split, micro-F1, unparseable answers, time and cache hits."""
        return (f"k{self.k}_s{self.split_seed}: micro-F1 {self.metrics['micro_f1']:.3f}, unparseable "
                f"{self.unparseable}/{len(self.predictions)}, {self.seconds:.0f} s "
                f"({self.cached} answers from the cache)")

    def record(self) -> dict[str, Any]:
        """JSON-safe summary for ``metrics/re_results.json``: raw answers and per-sentence predictions."""
        return {
            "arm": LLM_GENERATE_ARM,
            "method": "free generation (greedy label name)",
            "k": self.k,
            "split_seed": self.split_seed,
            "n_test": len(self.predictions),
            "unparseable": self.unparseable,
            "unparseable_share": self.unparseable / len(self.predictions) if self.predictions else 0.0,
            "seconds": round(self.seconds, 2),
            "cached_answers": self.cached,
            "answers": self.answers,
            "predictions": self.per_sentence,
            **self.metrics,
        }


def _normalize(text: str) -> str:
    return _NORMALIZE.sub("", text).lower()


def parse_label(answer: str, labels: Sequence[str]) -> str | None:
    """The label an answer names, or ``None`` if it names none or several (see the module docstring)."""
    line = next((ln.strip() for ln in answer.splitlines() if ln.strip()), "")
    line = _DECORATION.sub("", line).strip().rstrip(".").strip()
    if not line:
        return None
    if line in labels:
        return line
    norm = _normalize(line)
    by_norm = {_normalize(lab): lab for lab in labels}
    if norm in by_norm:
        return by_norm[norm]
    prefixed = [lab for n, lab in by_norm.items() if n.startswith(norm)] if len(norm) >= MIN_PREFIX else []
    if len(prefixed) == 1:
        return prefixed[0]
    contained = [lab for n, lab in by_norm.items() if n in norm]
    return contained[0] if len(contained) == 1 else None


def greedy_sampling(profile: Profile) -> SamplingConfig:
    """Greedy decoding with ``llm_re.max_new_tokens``: a label needs no sampling and must be reproducible."""
    return SamplingConfig(temperature=0.0, repetition_penalty=1.0, max_new_tokens=profile.llm_re.max_new_tokens)


def run_llm_re(
    profile: Profile,
    schema: RelationSchema,
    generator: CachedGenerator,
    test: Sequence[RESample],
    kshot: Sequence[RESample],
    *,
    k: int,
    split_seed: int,
    progress: bool = True,
) -> LLMREResult:
    """Label every test sentence with the LLM and score it with :func:`redpo.extraction.metrics.score`.

    ``generator`` is the notebook's cached generator; its cache and weights are reused, with the batch size
    set to ``llm_re.batch_size`` (prompts per cached chunk: the LLM-RE prompts are much longer than
    generation prompts, so they may need smaller batches). ``progress`` shows a bar of answered sentences.
    """
    if schema.negative_label is None:
        raise ValueError(
            f"dataset {schema.dataset!r} has no negative label, so unparseable answers have nowhere to go; "
            "the direct-LLM baseline needs a schema with a negative label"
        )
    labels = candidate_labels(profile, schema)
    demos = demonstrations(kshot, labels)
    sampling = greedy_sampling(profile)
    cached_gen = CachedGenerator(
        generator.backend, generator.cache, generator.model_key, batch_size=profile.llm_re.batch_size
    )
    render = cached_gen.render
    requests = [Request(render(llm_re_messages(s, schema, labels, demos)), sampling, 0, 0) for s in test]
    start = time.perf_counter()
    with tqdm(total=len(requests), desc=f"LLM labels k{k}_s{split_seed}", unit="sentence",
              disable=not progress) as bar:
        responses = cached_gen.generate(requests, on_answered=bar.update)
    seconds = time.perf_counter() - start
    parsed = [parse_label(r.text, labels) for r in responses]
    predictions = [p or schema.negative_label for p in parsed]
    metrics = score([s.relation for s in test], predictions, schema)
    return LLMREResult(
        k=k,
        split_seed=split_seed,
        predictions=predictions,
        per_sentence=per_sentence(test, predictions),
        answers=[r.text for r in responses],
        unparseable=sum(p is None for p in parsed),
        metrics=metrics,
        seconds=seconds,
        cached=sum(r.cached for r in responses),
    )


def llm_test_sentences(profile: Profile, test: Sequence[RESample]) -> list[RESample]:
    """The RE test sentences the LLM is scored on: all, or ``llm_re.test_subsample`` of them, stratified by label
    and seeded by the profile seed, in the test set's order (a subset of the RE arms' sentences, so every paired
    comparison with the LLM uses sentences both were scored on)."""
    n = profile.llm_re.test_subsample
    return list(test) if n is None else stratified_subset(test, n, profile.seed)


def run_llm_baselines(
    profile: Profile, results: ResultsDir, test: Sequence[RESample], *, progress: bool = True
) -> list[ScoredBaseline | LLMREResult]:
    """The direct-LLM baseline on the first ``llm_re.splits`` generation splits, each shown that split's K-shot
    demonstrations: closed-set scoring (the primary row, :mod:`redpo.extraction.llm_scoring`), then free generation
    when ``llm_re.free_generation`` (the secondary row). An empty list when ``llm_re.enabled`` is false.
    ``progress`` shows a bar per row and split (sentences done, with the time left)."""
    if not profile.llm_re.enabled:
        return []
    test = llm_test_sentences(profile, test)
    schema = profile_schema(profile)
    out: list[ScoredBaseline | LLMREResult] = []
    splits = generation_splits(profile)[: profile.llm_re.splits]
    with recorded_peak(results, "llm_re"):
        for k, seed in splits:
            out.append(run_closed_set(profile, results, schema, test,
                                      load_profile_kshot(profile, results.kshot, k, seed), k=k, split_seed=seed,
                                      progress=progress))
        if profile.llm_re.free_generation:
            generator = open_generator(profile, results)
            out += [run_llm_re(profile, schema, generator, test, load_profile_kshot(profile, results.kshot, k, seed),
                               k=k, split_seed=seed, progress=progress) for k, seed in splits]
    return out
