"""Paired, hierarchical confidence intervals: the statistics every claim is decided by.

Why these and not a mean ± sd: two arms are trained on the same K-shot splits, with the same classifier seeds, and
scored on the same test sentences, so their difference is *paired*; and the splits, not the seeds, are the unit of
replication (a generation draw is made per split; seeds only measure classifier noise on that draw). So:

- **F1 differences** (:func:`paired_f1_bootstrap`): a seeded hierarchical bootstrap. Each replicate resamples the
  splits with replacement; within each drawn split, its classifier seeds with replacement; and the test sentences
  with replacement (one draw per drawn split, shared by both arms: the pairing). The replicate's effect is the
  mean over drawn cells of F1(a) - F1(b). The 95% CI is the percentile interval; the point estimate uses every
  cell and sentence once. F1 is recomputed from per-sentence predictions with the draw's sentence counts as
  weights (:func:`weighted_f1`), so no resampled prediction list is ever built, and every replicate of every cell
  is scored by a few matrix products.
- **Negative ratios** (:func:`negative_ratio_bootstrap`): one set's P(negative | gold positive) /
  P(negative | gold negative), pooled over its cells, with the same resampling: a health check of the runs, not a
  claim.
- **Diversity differences** (:func:`paired_mean_bootstrap`): per relation at equal N, paired; the CI resamples
  relations.
- **Verdicts** (:func:`verdict`): *holds* when the CI lies wholly on the claimed side of the margin (0 unless a
  claim states one), *does not hold* when it lies wholly on the other side, *inconclusive* otherwise. A
  comparison with no data at all (an arm that came back empty, so nothing was trained) has no CI and is *not
  run* (:data:`NOT_RUN`): nothing was measured, which must not read as a measurement that straddles the margin.
- **Holm** (:func:`holm`): step-down adjusted p-values across the primary comparisons, noted beside them.

Everything is numpy with a seeded ``Generator``; nothing here loads a model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import numpy as np

from redpo.core.relations import undirected

HOLDS, FAILS, INCONCLUSIVE, NOT_RUN = "holds", "does not hold", "inconclusive", "not run"
Metric = Literal["micro_f1", "semeval_macro_f1"]


@dataclass(frozen=True)
class Effect:
    """A statistic with its 95% CI and what it was computed over: a paired difference or ratio (claimed direction
    positive), or one set's negative ratio (:func:`negative_ratio_bootstrap`)."""

    estimate: float
    low: float
    high: float
    p_value: float
    n_splits: int
    n_cells: int
    n_units: int
    """Sentences (F1) or relations (diversity) per cell."""
    n_boot: int
    per_split: tuple[tuple[str, float], ...] = ()
    """``(split, point estimate within it)`` per split (F1: mean over its cells), sorted by split: with a handful
    of splits a percentile bootstrap has few distinct resamples and understates their spread, so it is shown."""
    undefined: int = 0
    """Replicates (of ``n_boot``) where the statistic was undefined (a ratio's 0/0), left out of the CI and the
    p-value; only a ratio of rates has them, and the JSON names them only then."""

    @property
    def half_width(self) -> float:
        """Half the CI's width: the precision a reference run is sized for (e.g. <= 3 F1 points)."""
        return (self.high - self.low) / 2

    def to_json(self) -> dict[str, Any]:
        def rounded(v: Any) -> Any:
            if isinstance(v, float):
                return round(v, 6)
            return [rounded(x) for x in v] if isinstance(v, tuple) else v

        return {k: rounded(v) for k, v in asdict(self).items() if k != "undefined" or v}


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


# ---- weighted F1 -------------------------------------------------------------------------------------------
Features = Callable[[Sequence[str]], np.ndarray]
FromSums = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def metric_features(gold_labels: Sequence[str], metric: Metric, negative: str) -> tuple[Features, np.ndarray,
                                                                                         FromSums]:
    """Per-sentence indicator columns whose weighted sums give ``metric``: ``(features, actual, f1)``.

    ``features(pred)`` is ``(n, 2m)``: true positives then predictions (micro: one column each; SemEval's official
    macro-F1: one per relation type, a hit being exact, direction included, and a prediction counting for its type
    whichever the direction); ``actual`` is ``(n, m)``, the gold positives; ``f1(tp, pp, ap)`` turns weighted sums
    into the metric. A weighted sum is a matrix product, so a bootstrap scores every replicate and cell at once.
    """
    gold = np.array(gold_labels)
    if metric == "semeval_macro_f1":
        gold_t = np.array([undirected(g) for g in gold_labels])
        types = sorted(set(gold_t.tolist()) - {negative})

        def features(pred_labels: Sequence[str]) -> np.ndarray:
            pred_t = np.array([undirected(p) for p in pred_labels])
            exact = gold == np.array(pred_labels)
            return np.concatenate([np.stack([exact & (gold_t == t) for t in types], 1),
                                   np.stack([pred_t == t for t in types], 1)], 1).astype(float)

        def f1(tp: np.ndarray, pp: np.ndarray, ap: np.ndarray) -> np.ndarray:
            p = np.divide(tp, pp, out=np.zeros_like(tp), where=pp > 0)
            r = np.divide(tp, ap, out=np.zeros_like(tp), where=ap > 0)
            per_type = np.divide(2 * p * r, p + r, out=np.zeros_like(p), where=(p + r) > 0)
            return per_type.mean(axis=-1) if types else np.zeros(tp.shape[:-1])

        return features, np.stack([gold_t == t for t in types], 1).astype(float), f1

    def micro_features(pred_labels: Sequence[str]) -> np.ndarray:
        pred = np.array(pred_labels)
        return np.stack([(pred == gold) & (gold != negative), pred != negative], 1).astype(float)

    def micro_f1(tp: np.ndarray, pp: np.ndarray, ap: np.ndarray) -> np.ndarray:
        denom = pp + ap
        return np.divide(2 * tp, denom, out=np.zeros_like(denom), where=denom > 0)[..., 0]

    return micro_features, (gold != negative).astype(float)[:, None], micro_f1


def weighted_f1(gold_labels: Sequence[str], pred_labels: Sequence[str], negative: str, weights: np.ndarray,
                metric: Metric = "micro_f1") -> np.ndarray:
    """``metric`` with each sentence counted ``weights[..., i]`` times (any leading shape of weights)."""
    features, actual, f1 = metric_features(gold_labels, metric, negative)
    half = actual.shape[1]
    sums, ap = weights @ features(pred_labels), weights @ actual
    return f1(sums[..., :half], sums[..., half:], ap)


def _cell_f1(weights: np.ndarray, rows_a: np.ndarray, rows_b: np.ndarray, actual: np.ndarray,
             f1: FromSums) -> tuple[np.ndarray, np.ndarray]:
    """``(F1(a_c), F1(b_c))`` for every weight vector (``(..., n)``) and cell: each of shape ``(..., cells)``."""
    half = actual.shape[1]
    ap = (weights @ actual)[..., None, :]
    sums_a = np.einsum("...n,cnm->...cm", weights, rows_a)
    sums_b = np.einsum("...n,cnm->...cm", weights, rows_b)
    return f1(sums_a[..., :half], sums_a[..., half:], ap), f1(sums_b[..., :half], sums_b[..., half:], ap)


Statistic = Literal["difference", "ratio"]


def _combine(f1_a: np.ndarray, f1_b: np.ndarray, counts: np.ndarray, axes: tuple[int, ...],
             statistic: Statistic) -> np.ndarray:
    """The paired statistic over cells drawn ``counts`` times: mean F1(a) - mean F1(b), or their ratio (the
    ratio of the means, which stays defined when one cell's F1(b) is near 0)."""
    mean_a = (counts * f1_a).sum(axis=axes) / counts.sum(axis=axes)
    mean_b = (counts * f1_b).sum(axis=axes) / counts.sum(axis=axes)
    if statistic == "difference":
        return mean_a - mean_b
    return np.divide(mean_a, mean_b, out=np.full_like(mean_a, np.nan), where=mean_b > 0)


def paired_f1_bootstrap(cells: PairedCells, negative: str, *, metric: Metric = "micro_f1", n_boot: int = 2000,
                        seed: int = 0, level: float = 0.95, chunk: int = 200, statistic: Statistic = "difference",
                        null: float = 0.0) -> Effect:
    """Hierarchical bootstrap of the mean paired difference F1(a) - F1(b) (see the module docstring), or, with
    ``statistic="ratio"``, of mean F1(a) / mean F1(b) (claim 4: how close generated data comes to manual data).
    ``null`` is the value the p-value tests against (0 for a difference; a ratio's stated margin)."""
    n = len(cells.gold)
    by_split = _by_split(cells.splits)
    features, actual, f1 = metric_features(cells.gold, metric, negative)
    rows_a, rows_b = np.stack([features(r) for r in cells.a]), np.stack([features(r) for r in cells.b])
    full_a, full_b = _cell_f1(np.ones(n), rows_a, rows_b, actual, f1)
    estimate = float(_combine(full_a, full_b, np.ones_like(full_a), (0,), statistic))
    diffs = np.empty(n_boot)
    for lo, weights, picks in _hierarchical_draws(np.random.default_rng(seed), list(by_split.values()), n,
                                                  len(cells.a), n_boot, chunk):
        f1_a, f1_b = _cell_f1(weights, rows_a, rows_b, actual, f1)  # each (size, n_groups, cells)
        diffs[lo:lo + len(weights)] = _combine(f1_a, f1_b, picks, (1, 2), statistic)
    per_split = tuple(sorted((str(split), float(_combine(full_a[m], full_b[m], np.ones(len(m)), (0,), statistic)))
                             for split, m in by_split.items()))
    return replace(_effect(estimate, diffs, level, len(by_split), len(cells.a), n, null), per_split=per_split)


def _by_split(splits: Sequence[Any]) -> dict[Any, list[int]]:
    """The cells of each split, in first-seen order of the splits."""
    by_split: dict[Any, list[int]] = {}
    for i, split in enumerate(splits):
        by_split.setdefault(split, []).append(i)
    return by_split


def _hierarchical_draws(rng: np.random.Generator, groups: Sequence[Sequence[int]], n: int, n_cells: int,
                        n_boot: int, chunk: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """The module docstring's resampling, ``chunk`` replicates at a time: ``(first replicate, weights, picks)``,
    ``weights`` ``(size, n_groups, n)`` the test sentences' counts, one draw per drawn split, and ``picks``
    ``(size, n_groups, n_cells)`` how often each cell of the drawn split is drawn (its seeds, with replacement)."""
    n_groups = len(groups)
    for lo in range(0, n_boot, chunk):
        size = min(chunk, n_boot - lo)
        drawn = rng.integers(0, n_groups, size=(size, n_groups))  # splits, with replacement
        weights = rng.multinomial(n, np.full(n, 1 / n), size=(size, n_groups)).astype(float)  # one per drawn split
        picks = np.zeros((size, n_groups, n_cells))
        for g, members in enumerate(groups):
            hit = drawn == g
            counts = rng.multinomial(len(members), np.full(len(members), 1 / len(members)), size=int(hit.sum()))
            block = np.zeros((int(hit.sum()), n_cells))
            block[:, members] = counts
            picks[hit] = block
        yield lo, weights, picks


def negative_ratio_bootstrap(gold: Sequence[str], preds: Sequence[Sequence[str]], splits: Sequence[Any],
                             negative: str, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95,
                             chunk: int = 200) -> Effect:
    """How much more often one set's classifiers call a gold negative sentence negative than a gold positive one:
    P(pred negative | gold positive) / P(pred negative | gold negative), each rate the mean over the set's cells
    (one row of ``preds`` per cell; all cells score the same sentences, so this is the pooled rate), with the
    hierarchical bootstrap's 95% CI over splits, seeds and sentences (the module docstring).

    Why pooled and with a CI: a run that calls few gold negatives negative has a per-run ratio that swings with a
    few hits, and none at all where it calls none. A ratio near 1 says the negative predictions ignore whether a
    sentence is negative; the p-value tests against 1. A replicate that calls no drawn gold negative negative has
    an infinite ratio, and one that calls nothing negative at all an undefined one (counted in ``undefined``)."""
    if not preds or len(preds) != len(splits) or any(len(row) != len(gold) for row in preds):
        raise ValueError(f"need one prediction row of {len(gold)} sentences per cell, with a split per cell")
    actual = np.array(gold) == negative
    if actual.all() or not actual.any():
        raise ValueError(f"the ratio needs gold sentences of both kinds: {int(actual.sum())} of {len(gold)} "
                         f"are {negative!r}")
    called = np.stack([np.array(row) == negative for row in preds])  # (cells, n)
    rows_pos, rows_neg = (called & ~actual).astype(float).T, (called & actual).astype(float).T  # (n, cells)

    def rate(weights: np.ndarray, hits: np.ndarray, kind: np.ndarray) -> np.ndarray:
        """Per cell, the weighted share of ``kind`` sentences called negative (NaN where a draw has none)."""
        total = (weights @ kind.astype(float))[..., None]
        return np.divide(weights @ hits, total, out=np.full((*total.shape[:-1], hits.shape[1]), np.nan),
                         where=total > 0)

    def ratio(on_pos: np.ndarray, on_neg: np.ndarray, counts: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
        mean_pos = (counts * on_pos).sum(axis=axes) / counts.sum(axis=axes)
        mean_neg = (counts * on_neg).sum(axis=axes) / counts.sum(axis=axes)
        out = np.divide(mean_pos, mean_neg, out=np.full_like(mean_pos, np.nan), where=mean_neg > 0)
        return np.where((mean_neg == 0) & (mean_pos > 0), np.inf, out)

    by_split = _by_split(splits)
    ones = np.ones(len(gold))
    full_pos, full_neg = rate(ones, rows_pos, ~actual), rate(ones, rows_neg, actual)
    estimate = float(ratio(full_pos, full_neg, np.ones_like(full_pos), (0,)))
    draws = np.empty(n_boot)
    for lo, weights, picks in _hierarchical_draws(np.random.default_rng(seed), list(by_split.values()), len(gold),
                                                  len(preds), n_boot, chunk):
        draws[lo:lo + len(weights)] = ratio(rate(weights, rows_pos, ~actual), rate(weights, rows_neg, actual),
                                            picks, (1, 2))
    undefined = np.isnan(draws)
    per_split = tuple(sorted((str(split), float(ratio(full_pos[m], full_neg[m], np.ones(len(m)), (0,))))
                             for split, m in by_split.items()))
    effect = _effect(estimate, draws[~undefined], level, len(by_split), len(preds), len(gold), 1.0,
                     method="inverted_cdf")  # no interpolation: an infinite draw must not make the bound NaN
    return replace(effect, n_boot=n_boot, undefined=int(undefined.sum()), per_split=per_split)


def paired_mean_bootstrap(differences: Sequence[float], *, n_boot: int = 2000, seed: int = 0,
                          level: float = 0.95) -> Effect:
    """Bootstrap CI of the mean of paired per-unit differences (e.g. per relation, diversity at equal N)."""
    d = np.asarray(differences, dtype=float)
    if d.size == 0:
        raise ValueError("no paired differences to bootstrap")
    rng = np.random.default_rng(seed)
    draws = d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(axis=1)
    return _effect(float(d.mean()), draws, level, 1, 1, int(d.size))


def _effect(estimate: float, draws: np.ndarray, level: float, n_splits: int, n_cells: int, n_units: int,
            null: float = 0.0, method: str = "linear") -> Effect:
    alpha = (1 - level) / 2
    if draws.size == 0:  # every replicate undefined: no interval
        return Effect(estimate, float("nan"), float("nan"), 1.0, n_splits, n_cells, n_units, 0)
    low, high = np.nanquantile(draws, [alpha, 1 - alpha], method=method)
    below, above = np.mean(draws <= null), np.mean(draws >= null)
    p = min(1.0, 2 * min(below, above) + 1 / (len(draws) + 1))  # two-sided, never exactly 0
    return Effect(estimate, float(low), float(high), float(p), n_splits, n_cells, n_units, len(draws))


# ---- verdicts ----------------------------------------------------------------------------------------------
def verdict(effect: Effect, margin: float = 0.0, upper: float | None = None) -> str:
    """Holds if the whole CI is above ``margin`` (and, with ``upper``, below it), does not hold if the whole CI
    lies outside that region, else inconclusive.

    Effects are signed so that positive is the claimed direction. A claim like "close to but below manual" is a
    band: the difference manual - generated must lie in (0, ``upper``) points; a plateau ("no noticeable gain") is
    a one-sided margin below 0 (the gain must stay under the smallest gain that counts).
    """
    if effect.low > margin and (upper is None or effect.high < upper):
        return HOLDS
    if effect.high < margin or (upper is not None and effect.low > upper):
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
