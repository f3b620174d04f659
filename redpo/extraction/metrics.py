"""RE scores: KnowPrompt's micro-F1 without the negative label, and SemEval-2010 Task 8's official macro-F1.

Every function takes plain label strings (gold and predicted, aligned), so the same code scores the trained
classifier, the direct-LLM baseline and hand-written test cases. Scores are fractions in ``[0, 1]`` (the
SemEval Perl scorer prints percentages) and every returned value is JSON-serialisable.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from redpo.core.relations import RelationSchema, undirected
from redpo.core.sample import RESample

SEMEVAL_NEGATIVE = "Other"


def _check_aligned(gold: Sequence[str], pred: Sequence[str]) -> None:
    if len(gold) != len(pred):
        raise ValueError(f"gold has {len(gold)} labels but pred has {len(pred)}; they must be aligned")


def _prf(correct: float, predicted: float, actual: float) -> dict[str, float]:
    """P/R/F1 from counts, 0 where a denominator is 0 (the convention of both scorers)."""
    p = correct / predicted if predicted else 0.0
    r = correct / actual if actual else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": float(p), "recall": float(r), "f1": float(f)}


def micro_f1_without_negative(gold: Sequence[str], pred: Sequence[str], negative_label: str | None) -> dict[str, float]:
    """KnowPrompt / TACRED micro-F1: the negative label is neither a prediction nor a gold fact.

    Precision is over predictions that are not ``negative_label``, recall over gold labels that are not,
    and a hit is ``pred == gold != negative_label``. Predicting only the negative label scores 0.
    """
    _check_aligned(gold, pred)
    positives = sorted((set(gold) | set(pred)) - {negative_label})
    if not positives:
        return _prf(0, 0, 0)
    p, r, f, _ = precision_recall_fscore_support(
        list(gold), list(pred), labels=positives, average="micro", zero_division=0
    )
    return {"precision": float(p), "recall": float(r), "f1": float(f)}


def per_relation_prf(gold: Sequence[str], pred: Sequence[str], labels: Sequence[str]) -> list[dict[str, Any]]:
    """One row per label (in ``labels`` order): precision, recall, F1 and gold support."""
    _check_aligned(gold, pred)
    p, r, f, s = precision_recall_fscore_support(
        list(gold), list(pred), labels=list(labels), average=None, zero_division=0
    )
    return [
        {"label": lab, "precision": float(pi), "recall": float(ri), "f1": float(fi), "support": int(si)}
        for lab, pi, ri, fi, si in zip(labels, p, r, f, s, strict=True)
    ]


def confusion(gold: Sequence[str], pred: Sequence[str], labels: Sequence[str]) -> list[list[int]]:
    """Confusion counts, rows = gold, columns = predicted, both in ``labels`` order."""
    _check_aligned(gold, pred)
    return confusion_matrix(list(gold), list(pred), labels=list(labels)).tolist()


def semeval_per_type(
    gold: Sequence[str], pred: Sequence[str], negative_label: str = SEMEVAL_NEGATIVE
) -> list[dict[str, Any]]:
    """Per relation type P/R/F1 as in the official scorer's "(9+1)-way, directionality taken into account".

    Labels are grouped by type (direction stripped). A prediction with the right type but the wrong
    direction is wrong: it counts as a prediction of that type (P's denominator) and as a missed gold
    (R's denominator) but not as correct. So for type T: P = correct / predictions of T (either direction),
    R = correct / gold of T (either direction), F1 from P and R. Rows cover the types present in the gold
    labels, negative excluded, sorted by name; ``wrong_direction`` counts the direction errors.
    """
    _check_aligned(gold, pred)
    gold_t = [undirected(g) for g in gold]
    pred_t = [undirected(p) for p in pred]
    predicted, actual = Counter(pred_t), Counter(gold_t)
    correct = Counter(gt for g, p, gt in zip(gold, pred, gold_t, strict=True) if g == p)
    pairs = zip(gold, pred, gold_t, pred_t, strict=True)
    wrong_dir = Counter(gt for g, p, gt, pt in pairs if gt == pt and g != p)
    rows = []
    for t in sorted(set(gold_t) - {negative_label}):
        counts = {"correct": correct[t], "predicted": predicted[t], "support": actual[t]}
        rows.append({"type": t, **_prf(*counts.values()), **counts, "wrong_direction": wrong_dir[t]})
    return rows


def semeval_official_macro_f1(
    gold: Sequence[str], pred: Sequence[str], negative_label: str = SEMEVAL_NEGATIVE
) -> float:
    """SemEval-2010 Task 8's official score: the mean of the per-type F1s of :func:`semeval_per_type`.

    As in the Perl scorer, the mean is over the types present in the gold labels (all 9 on the full test
    set) and is the mean of F1s, not the F1 of mean P and mean R. Returns 0 when gold has no positive type.
    """
    rows = semeval_per_type(gold, pred, negative_label)
    return float(np.mean([r["f1"] for r in rows])) if rows else 0.0


def per_sentence(samples: Sequence[RESample], pred: Sequence[str]) -> dict[str, list[str]]:
    """What a run predicted for each sentence: ``{"ids", "gold", "pred"}``, aligned lists. Kept with every run so
    that any statistic (a paired bootstrap over sentences, a per-relation score) can be recomputed from saved files;
    ids come from :func:`redpo.extraction.training_sets.evaluation_sets` (``test:<line>``)."""
    _check_aligned([s.relation for s in samples], pred)
    return {"ids": [str(s.meta.get("id", i)) for i, s in enumerate(samples)],
            "gold": [s.relation for s in samples], "pred": list(pred)}


def score(gold: Sequence[str], pred: Sequence[str], schema: RelationSchema) -> dict[str, Any]:
    """Everything a results JSON needs for one prediction run; ``micro_f1`` is the paper's main number."""
    _check_aligned(gold, pred)
    labels = list(schema.labels)
    unknown = sorted((set(gold) | set(pred)) - set(labels))
    if unknown:
        raise ValueError(f"labels {unknown} are not in the {schema.dataset!r} schema; check the label spelling")
    micro = micro_f1_without_negative(gold, pred, schema.negative_label)
    out: dict[str, Any] = {
        "n": len(gold),
        "micro_f1": micro["f1"],
        "micro_precision": micro["precision"],
        "micro_recall": micro["recall"],
        "accuracy": float(np.mean([g == p for g, p in zip(gold, pred, strict=True)])) if gold else 0.0,
        "per_relation": per_relation_prf(gold, pred, labels),
        "labels": labels,
        "confusion": confusion(gold, pred, labels),
    }
    if schema.semeval_macro_f1:
        negative = schema.negative_label or SEMEVAL_NEGATIVE
        out["semeval_macro_f1"] = semeval_official_macro_f1(gold, pred, negative)
        out["semeval_per_type"] = semeval_per_type(gold, pred, negative)
    return out
