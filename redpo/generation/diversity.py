"""Similarity / diversity of generated samples: per relation, then macro-averaged over relations.

Diversity is a property of a relation's sample *set* (paper §1: one relation's samples keep the same
phrasing), so every metric is computed within one relation and then averaged with equal weight per
relation. Comparing arms is only fair over the same relations: use :func:`common_relations`.

Every metric is computed twice: on the plain sentence and on the entity-masked sentence
(:meth:`RESample.masked_text`, keys ending in ``_masked``). The masked variant measures *structure*: two
samples that differ only in their entities are identical there — the failure mode the paper targets.

Keys (lower is more diverse for similarities, higher for distinct-n):
``tfidf_cos``, ``embed_cos`` (only with ``embed``), ``self_bleu``, ``distinct_1``, ``distinct_2``, each also
with ``_masked``; ``near_copy_share`` (only with demonstrations). Undefined values are ``None``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics.pairwise import cosine_similarity

from redpo.core.sample import RESample, generated_only
from redpo.generation.parse import is_near_copy

Embedder = Callable[[list[str]], np.ndarray]
MASKS = ("ENTHEAD", "ENTTAIL")
"""Placeholders for masked views: not English words, so they never merge with a real "head"/"tail"."""


# ---- single metrics on one relation's texts ------------------------------------------------------------
def mean_upper_triangle(sim: np.ndarray) -> float:
    """Mean of the off-diagonal upper triangle of a square similarity matrix (each unordered pair once)."""
    i, j = np.triu_indices(sim.shape[0], k=1)
    return float(np.mean(sim[i, j]))


def tfidf_cosine(texts: Sequence[str]) -> float | None:
    """Mean pairwise cosine of TF-IDF vectors fitted on these texts only (``None``: < 2 texts or no words).

    Single-character words count (``token_pattern`` ``\\b\\w+\\b``): SemEval sentences are short.
    """
    if len(texts) < 2:
        return None
    try:
        matrix = TfidfVectorizer(token_pattern=r"(?u)\b\w+\b").fit_transform(list(texts))
    except ValueError:  # empty vocabulary: only punctuation
        return None
    return mean_upper_triangle(cosine_similarity(matrix))


def embedding_cosine(texts: Sequence[str], embed: Embedder) -> float | None:
    """Mean pairwise cosine of sentence embeddings from ``embed`` (rows need not be normalised)."""
    if len(texts) < 2:
        return None
    vectors = np.asarray(embed(list(texts)), dtype=np.float64)
    return mean_upper_triangle(cosine_similarity(vectors))


def self_bleu(token_lists: Sequence[Sequence[str]], max_n: int = 4) -> float | None:
    """Mean BLEU of each sample against all the others as references (nltk, smoothing method1)."""
    if len(token_lists) < 2:
        return None
    weights = tuple([1.0 / max_n] * max_n)
    smooth = SmoothingFunction().method1
    scores = [
        sentence_bleu(
            [list(r) for j, r in enumerate(token_lists) if j != i],
            list(hyp),
            weights=weights,
            smoothing_function=smooth,
        )
        for i, hyp in enumerate(token_lists)
    ]
    return float(np.mean(scores))


def distinct_n(token_lists: Iterable[Sequence[str]], n: int) -> float | None:
    """Unique n-grams / all n-grams, pooled over the samples (n-grams never cross samples)."""
    grams = [tuple(toks[i : i + n]) for toks in token_lists for i in range(len(toks) - n + 1)]
    return len(set(grams)) / len(grams) if grams else None


def near_copy_share(
    samples: Sequence[RESample], demos: Sequence[RESample], threshold: float
) -> float | None:
    """Share of samples that are near copies of a demonstration (:func:`redpo.generation.parse.is_near_copy`, at
    ``generation.near_copy_threshold``)."""
    if not samples:
        return None
    return sum(is_near_copy(s, demos, threshold) for s in samples) / len(samples)


# ---- per relation and macro ---------------------------------------------------------------------------
def metric_texts(samples: Sequence[RESample]) -> dict[str, list[str]]:
    """The two texts each metric runs on: plain (``""`` suffix) and entity-masked (``"_masked"``)."""
    return {
        "": [" ".join(s.tokens).casefold() for s in samples],
        "_masked": [s.masked_text(*MASKS).casefold() for s in samples],
    }


def relation_metrics(
    samples: Sequence[RESample],
    *,
    demos: Sequence[RESample] | None = None,
    near_copy_threshold: float | None = None,
    embed: Embedder | None = None,
) -> dict[str, Any]:
    """All metrics for one relation's samples; pairwise ones are ``None`` below two samples. With ``demos``, the
    near-copy share at ``near_copy_threshold`` (``generation.near_copy_threshold``) too."""
    out: dict[str, Any] = {"n": len(samples), "pairwise": len(samples) >= 2}
    for suffix, texts in metric_texts(samples).items():
        tokens = [t.split() for t in texts]
        out[f"tfidf_cos{suffix}"] = tfidf_cosine(texts)
        if embed is not None:
            out[f"embed_cos{suffix}"] = embedding_cosine(texts, embed)
        out[f"self_bleu{suffix}"] = self_bleu(tokens)
        out[f"distinct_1{suffix}"] = distinct_n(tokens, 1)
        out[f"distinct_2{suffix}"] = distinct_n(tokens, 2)
    if demos is not None:  # a relation without demonstrations has no near-copy share, not a share of 0
        if near_copy_threshold is None:
            raise ValueError("a near-copy share needs near_copy_threshold (generation.near_copy_threshold)")
        out["near_copy_share"] = near_copy_share(samples, demos, near_copy_threshold) if demos else None
    return out


def common_relations(arms: Mapping[str, Mapping[str, Sequence[RESample]]], min_samples: int = 2) -> list[str]:
    """Relations with at least ``min_samples`` samples in *every* arm, sorted: the fair comparison set."""
    sets = [{r for r, s in by_rel.items() if len(s) >= min_samples} for by_rel in arms.values()]
    return sorted(set.intersection(*sets)) if sets else []


def diversity_report(
    samples_by_relation: Mapping[str, Sequence[RESample]],
    *,
    demos_by_relation: Mapping[str, Sequence[RESample]] | None = None,
    near_copy_threshold: float | None = None,
    embed: Embedder | None = None,
    relations: Sequence[str] | None = None,
) -> dict[str, Any]:
    """``{"relations", "skipped", "per_relation", "macro", "macro_n"}``, JSON-serialisable.

    ``relations`` fixes the relation set (a relation without samples counts as 0 samples); ``skipped``
    lists relations with < 2 samples, whose pairwise metrics are ``None`` and so not in the macro mean.
    ``macro_n`` says over how many relations each macro value was averaged.
    """
    rels = list(relations) if relations is not None else sorted(samples_by_relation)
    per_relation = {
        r: relation_metrics(
            list(samples_by_relation.get(r, ())),
            demos=None if demos_by_relation is None else list(demos_by_relation.get(r, ())),
            near_copy_threshold=near_copy_threshold,
            embed=embed,
        )
        for r in rels
    }
    metric_keys = list(
        dict.fromkeys(k for m in per_relation.values() for k in m if k not in {"n", "pairwise"})
    )
    macro: dict[str, float | None] = {}
    macro_n: dict[str, int] = {}
    for key in metric_keys:
        values = [m[key] for m in per_relation.values() if m.get(key) is not None]
        macro[key] = float(np.mean(values)) if values else None
        macro_n[key] = len(values)
    return {
        "relations": rels,
        "skipped": [r for r, m in per_relation.items() if not m["pairwise"]],
        "per_relation": per_relation,
        "macro": macro,
        "macro_n": macro_n,
    }


def compare_arms(
    arms: Mapping[str, Mapping[str, Sequence[RESample]]],
    demos_by_relation: Mapping[str, Sequence[RESample]],
    *,
    near_copy_threshold: float,
    embed: Embedder | None = None,
    reference: str | None = None,
) -> dict[str, Any]:
    """``{"relations", "arms": {name: diversity_report}}`` for several arms of one split, on their common relations.

    Only what the model wrote is measured (:func:`~redpo.core.sample.generated_only`): a label the arms copy from
    the manual samples has no generated samples, so it drops out of the common relations, and with it out of the
    ``reference`` arm (the gold K-shot samples), which is then compared on the generated labels only. The reference
    *is* the demonstrations, so it gets no near-copy share (against itself it would be a meaningless 1.0).
    """
    written = {name: {r: generated_only(s) for r, s in by_rel.items()} for name, by_rel in arms.items()}
    rels = common_relations(written)
    return {
        "relations": rels,
        "arms": {
            name: diversity_report(
                by_rel, demos_by_relation=None if name == reference else demos_by_relation,
                near_copy_threshold=near_copy_threshold, embed=embed, relations=rels,
            )
            for name, by_rel in written.items()
        },
    }
