"""The generators side by side (L6): what the samples a rung trains on cost, and how good they are.

A generator is chosen on measured numbers, not on its size. For each generator the ladder ran (the arm's own,
whose first K positives per relation are ``L2:gen``, and ``ladder.generator``, whose first K are ``L6:other``) this
module measures, on exactly the samples those sets train on:

- **calls** and **valid per call**: the calls a run at K would make (:func:`records_to_k`), so the arm's pool,
  which runs on to the largest N with a larger attempt budget, is charged neither for the calls after its first
  K samples nor for a relation's extra failures past the K-sized budget;
- **model seconds per valid sample**: the generation time behind those calls, from the call cache (a batch's
  wall time shared among its calls, so the seconds of a run add up to its wall time on the machine that ran it);
- **oracle agreement**: the share of the samples L3's oracle labels as the relation they were written for;
- **near-copy share**: the share that L4's test calls a near copy of a demonstration or an earlier kept sample.

The F1 that each set buys, and the F1 per machine-hour, join these in :mod:`redpo.analysis.ladder`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from redpo.core.sample import RESample, generated_only
from redpo.extraction.training_sets import first_per_relation
from redpo.generation.cache import LLMCache
from redpo.generation.store import ArmResult, ResponseRecord
from redpo.ladder.sets import GEN, OTHER, agreed, distinct, split_negatives

Split = tuple[int, int]
Labeller = Callable[[Sequence[RESample]], list[str]]


def records_to_k(records: Sequence[ResponseRecord], k: int, budget: int) -> list[ResponseRecord]:
    """The responses that made the first K samples of each relation, in the order they came: up to and including
    the one that gave the relation's K-th valid sample; for a relation that never reached K, up to the one that gave
    its last sample, and at least the ``budget`` attempts a run at K would have spent failing."""
    total: dict[str, int] = {}
    for r in records:
        total[r.relation] = total.get(r.relation, 0) + len(r.valid)
    valid: dict[str, int] = {}
    calls: dict[str, int] = {}
    kept = []
    for r in records:
        rel = r.relation
        wanted = min(k, total[rel])
        short = total[rel] < k
        if valid.get(rel, 0) < wanted or (short and calls.get(rel, 0) < budget):
            kept.append(r)
            valid[rel] = valid.get(rel, 0) + len(r.valid)
            calls[rel] = calls.get(rel, 0) + 1
    return kept


def split_measures(result: ArmResult, k: int, budget: int, demos: Sequence[RESample], negative: str | None,
                   seconds_of: Mapping[str, float], label: Labeller | None,
                   near_copy_threshold: float) -> dict[str, Any]:
    """One generator on one split: the first K positives per relation (what its set trains on) and the calls
    behind them (:func:`records_to_k`)."""
    positives, _ = split_negatives(generated_only(result.all_samples()), negative)
    samples = first_per_relation(positives, k)
    records = [r for r in records_to_k(result.records, k, budget) if r.relation != negative]
    missing = [r.key for r in records if r.key not in seconds_of]
    return {
        "samples": len(samples),
        "relations_short": sum(1 for rel, st in result.stats.items()
                               if not st.manual and rel != negative and st.valid < k),
        "calls": len(records),
        "new_tokens": sum(r.n_new_tokens for r in records),
        "model_seconds": sum(seconds_of.get(r.key, 0.0) for r in records),
        "calls_without_seconds": len(missing),
        "oracle_agrees": None if label is None else len(agreed(samples, label)),
        "near_copies": len(samples) - len(distinct(samples, demos, near_copy_threshold)),
    }


def _share(part: float | None, whole: float) -> float | None:
    return None if part is None or not whole else part / whole


def compare_generators(generators: Mapping[str, tuple[str, str, Mapping[Split, ArmResult]]], k: int, budget: int,
                       demos: Mapping[Split, Sequence[RESample]], negative: str | None, cache: LLMCache,
                       label: Labeller | None, near_copy_threshold: float) -> list[dict[str, Any]]:
    """One row per generator (``{role: (model, set name, results per split)}``), summed over its splits, with the
    per-split measures kept beside the totals so any share can be recomputed. ``budget`` is the arm's attempt
    budget at K (``generation.max_attempts``, or ``aao_max_calls`` for an AAO arm)."""
    rows = []
    for role, (model, set_name, by_split) in generators.items():
        if not by_split:
            continue
        keys = [r.key for res in by_split.values() for r in res.records]
        seconds_of = {key: entry.seconds for key, entry in cache.lookup(keys).items()}
        per_split = {f"k{sk}_s{seed}": split_measures(res, k, budget, demos[(sk, seed)], negative, seconds_of,
                                                      label, near_copy_threshold)
                     for (sk, seed), res in sorted(by_split.items())}
        total = {key: sum(m[key] for m in per_split.values())
                 for key in ("samples", "relations_short", "calls", "new_tokens", "model_seconds",
                             "calls_without_seconds", "near_copies")}
        agrees = [m["oracle_agrees"] for m in per_split.values()]
        total["oracle_agrees"] = None if None in agrees else sum(agrees)
        rows.append({
            "role": role, "model": model, "set": set_name, "splits": len(per_split), **total,
            "valid_per_call": _share(total["samples"], total["calls"]),
            "seconds_per_sample": _share(total["model_seconds"], total["samples"]),
            "model_seconds_per_split": total["model_seconds"] / len(per_split),
            "oracle_agreement": _share(total["oracle_agrees"], total["samples"]),
            "near_copy_share": _share(total["near_copies"], total["samples"]),
            "per_split": per_split,
        })
    return rows


def ladder_generators(model: str, other_model: str | None, arm: Mapping[Split, ArmResult],
                      other: Mapping[Split, ArmResult]) -> dict[str, tuple[str, str, Mapping[Split, ArmResult]]]:
    """The generators the ladder ran, each with the set its first K positives per relation make."""
    out: dict[str, tuple[str, str, Mapping[Split, ArmResult]]] = {"base": (model, GEN, arm)}
    if other_model and other:
        out["L6"] = (other_model, OTHER, other)
    return out
