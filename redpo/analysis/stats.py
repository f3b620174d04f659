"""Paired, hierarchical confidence intervals: the statistics every claim is decided by.

Why these and not a mean ± sd: two arms are trained on the same K-shot splits, with the same classifier seeds, and
scored on the same test sentences, so their difference is *paired*; and the splits, not the seeds, are the unit of
replication (a generation draw is made per split; seeds only measure classifier noise on that draw). So:

- **F1 differences** (:func:`paired_f1_bootstrap`): a seeded hierarchical bootstrap. Each replicate resamples the
  splits with replacement; within each drawn split, its classifier seeds with replacement; and the test sentences
  with replacement (one draw per drawn split, shared by both arms: the pairing). The replicate's effect is the
  mean over drawn cells of F1(a) - F1(b). The 95% CI is the percentile interval; the point estimate uses every
  cell and sentence once. F1 is recomputed from per-sentence predictions with the draw's sentence counts as
  weights, so no resampled prediction list is ever built.
- **Diversity differences** (:func:`paired_mean_bootstrap`): per relation at equal N, paired; the CI resamples
  relations.
- **Verdicts** (:func:`verdict`): *holds* when the CI lies wholly on the claimed side of the margin (0 unless a
  claim states one), *does not hold* when it lies wholly on the other side, *inconclusive* otherwise.
- **Holm** (:func:`holm`): step-down adjusted p-values across the primary comparisons, noted beside them.

Everything is numpy with a seeded ``Generator``; nothing here loads a model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from redpo.core.relations import undirected

HOLDS, FAILS, INCONCLUSIVE = "holds", "does not hold", "inconclusive"
Metric = Literal["micro_f1", "semeval_macro_f1"]


@dataclass(frozen=True)
class Effect:
    """A paired difference (claimed direction positive) with its 95% CI and what it was computed over."""

    estimate: float
    low: float
    high: float
    p_value: float
    n_splits: int
    n_cells: int
    n_units: int
    """Sentences (F1) or relations (diversity) per cell."""
    n_boot: int

    def to_json(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


# ---- weighted F1 -------------------------------------------------------------------------------------------
def weighted_micro_f1(gold: np.ndarray, pred: np.ndarray, negative: int, weights: np.ndarray) -> np.ndarray:
    """Micro-F1 without the negative label, each sentence counted ``weights[..., i]`` times (any leading shape)."""
    hit = ((pred == gold) & (gold != negative)).astype(float)
    predicted = (pred != negative).astype(float)
    actual = (gold != negative).astype(float)
    tp, pp, ap = weights @ hit, weights @ predicted, weights @ actual
    denom = pp + ap
    return np.divide(2 * tp, denom, out=np.zeros_like(denom, dtype=float), where=denom > 0)


def weighted_semeval_macro_f1(gold_labels: Sequence[str], pred_labels: Sequence[str], negative: str,
                              weights: np.ndarray) -> np.ndarray:
    """SemEval's official (9+1)-way directed macro-F1 with sentence weights: per type, P = exact hits / predictions
    of the type (either direction), R = exact hits / gold of the type; F1s averaged over the gold types."""
    gold_t = np.array([undirected(g) for g in gold_labels])
    pred_t = np.array([undirected(p) for p in pred_labels])
    exact = np.array(gold_labels) == np.array(pred_labels)
    f1s = []
    for t in sorted(set(gold_t.tolist()) - {negative}):
        tp = weights @ (exact & (gold_t == t)).astype(float)
        pp = weights @ (pred_t == t).astype(float)
        ap = weights @ (gold_t == t).astype(float)
        p = np.divide(tp, pp, out=np.zeros_like(tp), where=pp > 0)
        r = np.divide(tp, ap, out=np.zeros_like(tp), where=ap > 0)
        f1s.append(np.divide(2 * p * r, p + r, out=np.zeros_like(p), where=(p + r) > 0))
    return np.mean(f1s, axis=0) if f1s else np.zeros(weights.shape[:-1])


# ---- the bootstraps ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PairedCells:
    """Two arms' per-sentence predictions on the same cells and the same sentences (one row per cell)."""

    gold: list[str]
    a: list[list[str]]
    b: list[list[str]]
    splits: list[Any]
    """The split each cell belongs to (the unit of replication)."""

    def __post_init__(self) -> None:
        n = len(self.gold)
        if not self.a or len(self.a) != len(self.b) or len(self.a) != len(self.splits):
            raise ValueError(f"need one row per cell for both arms and a split per cell: {len(self.a)} a rows, "
                             f"{len(self.b)} b rows, {len(self.splits)} splits")
        if any(len(row) != n for row in (*self.a, *self.b)):
            raise ValueError(f"every prediction row must cover the same {n} sentences")


def _row_scorer(cells: PairedCells, metric: Metric, negative: str) -> Callable[[Sequence[str], np.ndarray], float]:
    """``score(prediction row, sentence weights)`` for ``metric``; labels are encoded once, not per replicate."""
    if metric == "semeval_macro_f1":
        return lambda row, w: weighted_semeval_macro_f1(cells.gold, row, negative, w)
    labels = sorted({*cells.gold, *(x for row in (*cells.a, *cells.b) for x in row), negative})
    index = {lab: i for i, lab in enumerate(labels)}
    gold, neg = np.array([index[g] for g in cells.gold]), index[negative]
    encoded = {id(row): np.array([index[x] for x in row]) for row in (*cells.a, *cells.b)}
    return lambda row, w: weighted_micro_f1(gold, encoded[id(row)], neg, w)


def _mean_difference(score: Callable[[Sequence[str], np.ndarray], float], a: Sequence[Sequence[str]],
                     b: Sequence[Sequence[str]], weights: Sequence[np.ndarray]) -> float:
    """Mean over cells of score(a) - score(b), each cell under its own sentence weights."""
    return float(np.mean([score(ra, w) - score(rb, w) for ra, rb, w in zip(a, b, weights, strict=True)]))


def paired_f1_bootstrap(cells: PairedCells, negative: str, *, metric: Metric = "micro_f1", n_boot: int = 2000,
                        seed: int = 0, level: float = 0.95) -> Effect:
    """Hierarchical bootstrap of the mean paired difference F1(a) - F1(b) (see the module docstring)."""
    rng = np.random.default_rng(seed)
    n = len(cells.gold)
    by_split: dict[Any, list[int]] = {}
    for i, split in enumerate(cells.splits):
        by_split.setdefault(split, []).append(i)
    groups = list(by_split.values())
    score = _row_scorer(cells, metric, negative)
    estimate = _mean_difference(score, cells.a, cells.b, [np.ones(n)] * len(cells.a))
    diffs = np.empty(n_boot)
    for r in range(n_boot):
        drawn: list[int] = []
        weights: list[np.ndarray] = []
        for g in rng.integers(0, len(groups), size=len(groups)):
            members = groups[g]
            w = rng.multinomial(n, np.full(n, 1 / n)).astype(float)  # one sentence draw per drawn split
            picked = rng.choice(members, size=len(members), replace=True)
            drawn += picked.tolist()
            weights += [w] * len(picked)
        diffs[r] = _mean_difference(score, [cells.a[i] for i in drawn], [cells.b[i] for i in drawn], weights)
    return _effect(estimate, diffs, level, len(groups), len(cells.a), n)


def paired_mean_bootstrap(differences: Sequence[float], *, n_boot: int = 2000, seed: int = 0,
                          level: float = 0.95) -> Effect:
    """Bootstrap CI of the mean of paired per-unit differences (e.g. per relation, diversity at equal N)."""
    d = np.asarray(differences, dtype=float)
    if d.size == 0:
        raise ValueError("no paired differences to bootstrap")
    rng = np.random.default_rng(seed)
    draws = d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(axis=1)
    return _effect(float(d.mean()), draws, level, 1, 1, int(d.size))


def _effect(estimate: float, draws: np.ndarray, level: float, n_splits: int, n_cells: int, n_units: int) -> Effect:
    alpha = (1 - level) / 2
    low, high = np.quantile(draws, [alpha, 1 - alpha])
    below, above = np.mean(draws <= 0), np.mean(draws >= 0)
    p = min(1.0, 2 * min(below, above) + 1 / (len(draws) + 1))  # two-sided, never exactly 0
    return Effect(estimate, float(low), float(high), float(p), n_splits, n_cells, n_units, len(draws))


# ---- verdicts ----------------------------------------------------------------------------------------------
def verdict(effect: Effect, margin: float = 0.0) -> str:
    """Holds if the whole CI is above ``margin``, does not hold if the whole CI is below it, else inconclusive.

    Effects are signed so that positive is the claimed direction; a claim like "close to but below manual" is
    expressed through its margin (e.g. the difference must stay above -5 F1 points)."""
    if effect.low > margin:
        return HOLDS
    if effect.high < margin:
        return FAILS
    return INCONCLUSIVE


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order (monotone, capped at 1)."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p)
    m = len(p)
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()
