"""The generators side by side (L6): what the samples a rung trains on cost, and how good they are.

A generator is chosen on measured numbers, not on its size. For each generator the ladder ran (the arm's own,
whose first K positives per relation are ``L2:gen``, and ``ladder.generator``, whose first K are ``L6:other``) this
module measures, on exactly the samples those sets train on:

- **calls** and **valid per call**: the calls behind the samples the set trains on (:func:`records_to_k`), so
  the arm's pool, which runs on to the largest N with a larger attempt budget, is not charged for the calls after
  a relation's first K samples, nor for a failing relation's calls after its last sample beyond what a run at K
  would have spent. (An AAO pool asks each call for more samples than a run at K would: its calls are not a run
  at K's, and its costs are only comparable with another pool's.)
- **model seconds per valid sample**: the generation time behind those calls, from the call cache (a batch's
  wall time shared among its calls, so the seconds of a run add up to its wall time on the machine that ran it;
  unknown, not zero, when a call is missing from the cache);
- **oracle agreement**: the share of the samples L3's oracle labels as the relation they were written for;
- **near-copy share**: the share that L4's test calls a near copy of a demonstration or an earlier kept sample.

The F1 that each set buys, and the F1 per machine-hour, join these in :mod:`redpo.analysis.ladder`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from redpo.core.sample import RESample
from redpo.core.tables import share
from redpo.generation.cache import LLMCache
from redpo.generation.store import ArmResult, ResponseRecord
from redpo.ladder.sets import GEN, MANUAL, OTHER, agreed, distinct, split_negatives

Split = tuple[int, int]
Labeller = Callable[[Sequence[RESample]], list[str]]
SetName = Callable[[int], str]
"""The name of a generator's training set at a split's K."""


def records_to_k(records: Sequence[ResponseRecord], k: int, budget: int) -> list[ResponseRecord]:
    """The responses behind the first K samples of each relation, in the order they came: up to and including the
    one that gave the relation's K-th valid sample (however many calls that took); for a relation that never
    reached K, up to the one that gave its last sample, or its first ``budget`` calls (what a run at K would have
    spent failing) when that is more."""
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


def split_measures(result: ArmResult, trained: Sequence[RESample], k: int, budget: int, demos: Sequence[RESample],
                   negative: str | None, seconds_of: Mapping[str, float], label: Labeller | None,
                   near_copy_threshold: float) -> dict[str, Any]:
    """One generator on one split: the positives of the set it trains (``trained``: its first K per relation, with
    the set's negatives, which are not counted) and the calls behind them (:func:`records_to_k`)."""
    samples, _ = split_negatives(trained, negative)
    records = [r for r in records_to_k(result.records, k, budget) if r.relation != negative]
    missing = sum(r.key not in seconds_of for r in records)
    return {
        "samples": len(samples),
        "relations_short": sum(1 for rel, st in result.stats.items()
                               if not st.manual and rel != negative and st.valid < k),
        "calls": len(records),
        "new_tokens": sum(r.n_new_tokens for r in records),
        "model_seconds": None if missing else sum(seconds_of[r.key] for r in records),
        "calls_without_seconds": missing,
        "oracle_agrees": None if label is None else len(agreed(samples, label)),
        "near_copies": len(samples) - len(distinct(samples, demos, near_copy_threshold)),
    }


def compare_generators(generators: Mapping[str, tuple[str, SetName, Mapping[Split, ArmResult]]],
                       sets: Mapping[Split, Mapping[str, Sequence[RESample]]], budget: int, negative: str | None,
                       cache: LLMCache, label: Labeller | None, near_copy_threshold: float) -> list[dict[str, Any]]:
    """One row per generator (``{role: (model, its set's name at a split's K, results per (K, seed) split)}``),
    summed over its splits, each split measured at its own K, with the per-split measures kept beside the totals
    so any share can be recomputed. ``sets`` are the ladder's training sets per split
    (:func:`redpo.ladder.sets.split_sets`): each generator is measured on the very set that its rung trains (none
    where the split left it out as empty), and its near copies against that split's ``L0:manual`` set, the
    demonstrations. ``budget`` is the arm's attempt budget at K (``generation.max_attempts``, or ``aao_max_calls``
    for an AAO arm)."""
    rows = []
    for role, (model, set_of, by_split) in generators.items():
        if not by_split:
            continue
        names = sorted({set_of(sk) for sk, _ in by_split})
        keys = [r.key for res in by_split.values() for r in res.records]
        seconds_of = {key: entry.seconds for key, entry in cache.lookup(keys).items()}
        per_split = {f"k{sk}_s{seed}": split_measures(res, sets[(sk, seed)].get(set_of(sk), []), sk, budget,
                                                      sets[(sk, seed)][MANUAL], negative, seconds_of, label,
                                                      near_copy_threshold)
                     for (sk, seed), res in sorted(by_split.items())}
        total = {key: _total([m[key] for m in per_split.values()])
                 for key in ("samples", "relations_short", "calls", "new_tokens", "model_seconds",
                             "calls_without_seconds", "near_copies", "oracle_agrees")}
        seconds = total["model_seconds"]
        rows.append({
            "role": role, "model": model, "set": "/".join(names), "splits": len(per_split), **total,
            "valid_per_call": share(total["samples"], total["calls"]),
            "seconds_per_sample": None if seconds is None else share(seconds, total["samples"]),
            "model_seconds_per_split": None if seconds is None else seconds / len(per_split),
            "oracle_agreement": None if total["oracle_agrees"] is None else share(total["oracle_agrees"],
                                                                                   total["samples"]),
            "near_copy_share": share(total["near_copies"], total["samples"]),
            "per_split": per_split,
        })
    return rows


def _total(values: Sequence[float | None]) -> float | None:
    """A sum over splits, unknown when any split's is."""
    return None if any(v is None for v in values) else sum(v for v in values if v is not None)


def ladder_generators(model: str, other_model: str | None, arm: Mapping[Split, ArmResult],
                      other: Mapping[Split, ArmResult], base_set: SetName = lambda _k: GEN
                      ) -> dict[str, tuple[str, SetName, Mapping[Split, ArmResult]]]:
    """The generators the ladder ran, each with the name of the set its first K positives per relation make at a
    split's K (``base_set``: ``L2:gen``, or ``L5:N=K``, the same set, where L2 did not run)."""
    out: dict[str, tuple[str, SetName, Mapping[Split, ArmResult]]] = {"base": (model, base_set, arm)}
    if other_model and other:
        out["L6"] = (other_model, lambda _k: OTHER, other)
    return out
