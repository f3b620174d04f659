"""The ladder's training sets, one name per set, and the comparisons that pair them.

Every set of a split is built from the same K-shot split's manual samples (``manual``), K other real training
sentences per relation (``real``) and the generations of :mod:`redpo.ladder.pools`. Positives and negatives are
handled apart, because the negative label is where the style shortcut lives: with real negatives beside generated
positives, "looks real" predicts the negative class. Unless a rung says otherwise, a set's negatives are the
manual ones (what notebook 04's generated arms train on), so each rung changes one thing:

=================  =====================================================================================
``L0:manual``      the K-shot split
``L1:real``        K other real positives per relation + the manual negatives: a perfect generator
``L2:gen``         the arm's first K positives per relation + the manual negatives: the pipeline as is
``L2:real+genneg`` real positives + K generated negatives
``L2:gen+genneg``  generated positives + generated negatives
``L2:gen+negshare`` ``L2:gen`` with its manual negatives topped up by other real ones to the training split's
                   share of the negative label (``ladder.share_negatives``): what a realistic count of real
                   negatives does beside generated positives
``L3:oracle``      the positives the oracle labels as intended, first n per relation; ``L3:all`` the first n
                   of all, n = min(K, what the filter kept): the same counts, so only label noise differs
``L4:distinct``    the positives that are no near copy of a demonstration or an earlier kept sample, first n;
                   ``L4:all`` the first n of all
``L5:N=<n>``       the arm's first n positives per relation, for each n of ``ladder.n_values``
``L6:other``       ``ladder.generator``'s first K positives per relation
``L7:manual``,     L0's set and the best generated set, trained with ``ladder.encoder``
``L7:best``
=================  =====================================================================================
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from redpo.core.sample import RESample, generated_only
from redpo.extraction.training_sets import first_per_relation
from redpo.generation.parse import exact_key, near_copy_score

MANUAL, REAL, GEN = "L0:manual", "L1:real", "L2:gen"
REAL_GENNEG, GEN_GENNEG = "L2:real+genneg", "L2:gen+genneg"
GEN_NEGSHARE = "L2:gen+negshare"
ORACLE, ORACLE_ALL = "L3:oracle", "L3:all"
DISTINCT, DISTINCT_ALL = "L4:distinct", "L4:all"
OTHER = "L6:other"
L7_MANUAL, L7_BEST = "L7:manual", "L7:best"
FILTERED = (ORACLE, ORACLE_ALL, DISTINCT, DISTINCT_ALL)


def count_set(n: int) -> str:
    return f"L5:N={n}"


@dataclass(frozen=True)
class Comparison:
    """One paired comparison the ladder reports: set ``a`` against set ``b``, and what their difference means."""

    rung: str
    a: str
    b: str
    meaning: str


def comparisons(rungs: Sequence[str], n_values: Sequence[int], k: int, *, share_negatives: bool = False
                ) -> list[Comparison]:
    """Each rung against its neighbour (what changing that one thing is worth); every set is also compared with
    manual data by :mod:`redpo.analysis.ladder`."""
    at_share = [Comparison("L2", GEN_NEGSHARE, GEN, "the manual negatives topped up with other real ones to the "
                                                    "training split's share, beside generated positives")]
    out = [Comparison("L1", REAL, MANUAL, "a perfect generator through the pipeline, against manual"),
           Comparison("L2", GEN, REAL, "generated positives instead of real ones"),
           Comparison("L2", REAL_GENNEG, REAL, "generated negatives instead of real ones, beside real positives"),
           Comparison("L2", GEN_GENNEG, GEN, "generated negatives instead of real ones, beside generated positives"),
           *(at_share if share_negatives else []),
           Comparison("L3", ORACLE, ORACLE_ALL, "label noise removed (oracle-filtered), same counts"),
           Comparison("L4", DISTINCT, DISTINCT_ALL, "near copies removed, same counts")]
    ns = sorted({*n_values, k})
    out += [Comparison("L5", count_set(hi), count_set(lo), f"{hi} generated positives per relation instead of {lo}")
            for lo, hi in itertools.pairwise(ns)]
    out += [Comparison("L6", OTHER, GEN, "the other generator, K per relation"),
            Comparison("L7", L7_BEST, L7_MANUAL, "the best generated set against manual, with the other encoder")]
    return [c for c in out if c.rung in rungs]


# ---- the pieces ------------------------------------------------------------------------------------------
def split_negatives(samples: Iterable[RESample], negative: str | None) -> tuple[list[RESample], list[RESample]]:
    """``(positives, negatives)``, order kept."""
    items = list(samples)
    return [s for s in items if s.relation != negative], [s for s in items if s.relation == negative]


def real_samples(train: Sequence[RESample], exclude: Iterable[RESample], k: int, seed: int,
                 relations: Iterable[str]) -> list[RESample]:
    """K real training sentences per relation, seeded, none equal (by ``exact_key``) to an excluded one (the
    K-shot split, dev, test): what a perfect generator would write."""
    wanted = set(relations)
    candidates = unseen_shuffled(train, exclude, seed, wanted)
    return [s for rel in sorted(wanted) for s in first_per_relation([c for c in candidates if c.relation == rel], k)]


def unseen_shuffled(train: Sequence[RESample], exclude: Iterable[RESample], seed: int, relations: set[str]
                    ) -> list[RESample]:
    """The training sentences of ``relations`` that are none (by ``exact_key``) of ``exclude``, in a seeded order:
    the draw behind L1's real sentences and ``L2:gen+negshare``'s extra negatives."""
    banned = {exact_key(s) for s in exclude}
    out = [s for s in train if s.relation in relations and exact_key(s) not in banned]
    random.Random(seed).shuffle(out)
    return out


def negative_share(train: Sequence[RESample], negative: str | None) -> float | None:
    """The negative label's share of the training split, or ``None`` where the dataset has no negative label or
    the split holds none of it (or nothing else)."""
    n = sum(s.relation == negative for s in train) if negative is not None else 0
    return n / len(train) if 0 < n < len(train) else None


def extra_negatives(train: Sequence[RESample], exclude: Iterable[RESample], seed: int, negative: str
                    ) -> list[RESample]:
    """Every real negative of the training split that is none of ``exclude`` (the K-shot split, dev, test, L1's
    sentences), in a seeded order: what ``L2:gen+negshare`` tops its manual negatives up from."""
    return unseen_shuffled(train, exclude, seed, {negative})


def negatives_at_share(n_positives: int, share: float) -> int:
    """How many negatives make ``share`` of a set beside ``n_positives`` positives (at least one)."""
    if not 0 < share < 1:
        raise ValueError(f"a negative share must lie strictly between 0 and 1, not {share}")
    return max(1, round(share / (1 - share) * n_positives))


def matched(kept: Sequence[RESample], pool: Sequence[RESample], k: int) -> tuple[list[RESample], list[RESample]]:
    """``(filtered, unfiltered)`` at the same counts: per relation n = min(K, what the filter kept), the first n of
    the kept samples and the first n of the whole pool, so the two differ in which samples, not how many."""
    counts: dict[str, int] = {}
    for s in first_per_relation(kept, k):
        counts[s.relation] = counts.get(s.relation, 0) + 1
    return first_per_relation(kept, counts), first_per_relation(pool, counts)


def distinct(pool: Sequence[RESample], demos: Sequence[RESample], threshold: float) -> list[RESample]:
    """The pool's samples that are no near copy (entity-masked similarity >= ``threshold``) of a demonstration or
    of an earlier kept sample of their relation: what the strict filter would have kept."""
    kept: list[RESample] = []
    for s in pool:
        earlier = [d for d in (*demos, *kept) if d.relation == s.relation]
        if near_copy_score(s, earlier) < threshold:
            kept.append(s)
    return kept


def agreed(pool: Sequence[RESample], label: Callable[[Sequence[RESample]], list[str]]) -> list[RESample]:
    """The pool's samples the oracle labels as the relation they were written for."""
    return [s for s, y in zip(pool, label(pool), strict=True) if y == s.relation]


# ---- one split's sets ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SplitInputs:
    """What one split's sets are made from (generated samples in generation order, manual copies left out)."""

    k: int
    manual: list[RESample]
    real: list[RESample]
    pool: list[RESample]
    negatives: list[RESample]
    other: list[RESample]
    demos: list[RESample]
    extra_negatives: list[RESample] = field(default_factory=list)
    """Real negatives, none in the split, dev, test or ``real`` (:func:`extra_negatives`): ``L2:gen+negshare``
    tops the split's manual negatives up with the first of them to :func:`negatives_at_share`."""
    negative_share: float | None = None
    """The negative label's share of the training split; ``None``: no ``L2:gen+negshare``."""


def split_sets(inputs: SplitInputs, rungs: Sequence[str], n_values: Sequence[int], negative: str | None,
               near_copy_threshold: float, label: Callable[[Sequence[RESample]], list[str]] | None
               ) -> tuple[dict[str, list[RESample]], list[str]]:
    """Every set of the rungs asked for (the module docstring's table) and one note per set left out: it holds no
    positive (an arm that came back empty, a filter that kept nothing), the arm wrote no negative, or
    ``L2:gen+negshare`` needs no or too many extra negatives. ``label`` is the oracle."""
    k = inputs.k
    _, manual_neg = split_negatives(inputs.manual, negative)
    real_pos, _ = split_negatives(inputs.real, negative)
    pool, _ = split_negatives(generated_only(inputs.pool), negative)
    gen_neg = [s for s in generated_only(inputs.negatives) if s.relation == negative][:len(manual_neg) or k]
    first_k = first_per_relation(pool, k)
    sets: dict[str, list[RESample]] = {MANUAL: list(inputs.manual)}
    notes: list[str] = []
    if "L1" in rungs or "L2" in rungs:
        sets[REAL] = [*real_pos, *manual_neg]
    if "L2" in rungs:
        sets[GEN] = [*first_k, *manual_neg]
        if gen_neg:
            sets[REAL_GENNEG] = [*real_pos, *gen_neg]
            sets[GEN_GENNEG] = [*first_k, *gen_neg]
        if inputs.negative_share is not None and first_k:
            more = negatives_at_share(len(first_k), inputs.negative_share) - len(manual_neg)
            if more <= 0:
                notes.append(f"{GEN_NEGSHARE}: the split's {negative} samples already reach the training share")
            elif more > len(inputs.extra_negatives):
                notes.append(f"{GEN_NEGSHARE}: {more} more real {negative} sentences wanted, "
                             f"{len(inputs.extra_negatives)} left in the training split")
            else:
                sets[GEN_NEGSHARE] = [*first_k, *manual_neg, *inputs.extra_negatives[:more]]
    if "L3" in rungs and label is not None:
        sets[ORACLE], sets[ORACLE_ALL] = (s + manual_neg for s in matched(agreed(pool, label), pool, k))
    if "L4" in rungs:
        kept = distinct(pool, inputs.demos, near_copy_threshold)
        sets[DISTINCT], sets[DISTINCT_ALL] = (s + manual_neg for s in matched(kept, pool, k))
    if "L5" in rungs:
        sets.update({count_set(n): [*first_per_relation(pool, n), *manual_neg] for n in sorted({*n_values, k})})
    if "L6" in rungs and inputs.other:
        other, _ = split_negatives(generated_only(inputs.other), negative)
        sets[OTHER] = [*first_per_relation(other, k), *manual_neg]
    empty = [name for name, samples in sets.items() if not any(s.relation != negative for s in samples)]
    kept_none = ", or the filter kept none"
    notes += [f"{name}: no positive sample (the arm wrote none{kept_none if name in FILTERED else ''})"
              for name in empty]
    if "L2" in rungs and negative is not None and not gen_neg:
        notes.append(f"{REAL_GENNEG}, {GEN_GENNEG}: the arm wrote no {negative} sample")
    return {name: samples for name, samples in sets.items() if name not in empty}, notes


def generated_sets(names: Iterable[str]) -> list[str]:
    """The sets whose positives are generated: the candidates for L7's "best generated set". Not
    ``L2:gen+negshare``, which adds real sentences from outside the split: no generator's configuration."""
    real = {MANUAL, REAL, REAL_GENNEG, GEN_NEGSHARE, L7_MANUAL, L7_BEST}
    return [n for n in names if n not in real]


def by_split(sets: Mapping[tuple[int, int], Mapping[str, list[RESample]]], names: Iterable[str]
             ) -> dict[tuple[int, int], dict[str, list[RESample]]]:
    """The named sets of every split (a split lacking one simply lacks it)."""
    wanted = list(names)
    return {split: {n: s[n] for n in wanted if n in s} for split, s in sets.items()}
