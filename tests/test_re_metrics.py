"""Hand-computed cases for both RE scores; the SemEval cases follow the official Perl scorer's arithmetic."""

from __future__ import annotations

import json

import pytest

from redpo.core.relations import get_schema
from redpo.extraction.metrics import (
    confusion,
    micro_f1_without_negative,
    per_relation_prf,
    score,
    semeval_official_macro_f1,
    semeval_per_type,
)

CE12, CE21 = "Cause-Effect(e1,e2)", "Cause-Effect(e2,e1)"
CW12, CW21 = "Component-Whole(e1,e2)", "Component-Whole(e2,e1)"
MT12 = "Message-Topic(e1,e2)"
O = "Other"  # noqa: E741

# 1 right; 2 right type, wrong direction; 3 right; 4 wrong type; 5 right; 6 Other predicted as CW;
# 7 Other right; 8 CW missed (predicted Other).
SEM_GOLD = [CE12, CE12, CE21, CW12, CW21, O, O, CW12]
SEM_PRED = [CE12, CE21, CE21, CE12, CW21, CW12, O, O]


def test_micro_f1_hand_computed() -> None:
    # non-negative predictions 4, non-negative gold 3, correct 2 -> P 1/2, R 2/3, F1 4/7
    m = micro_f1_without_negative(["A", "A", "B", "NA", "NA"], ["A", "B", "B", "A", "NA"], "NA")
    assert m["precision"] == pytest.approx(0.5)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(4 / 7)


def test_micro_f1_negative_only_predictions_score_zero() -> None:
    m = micro_f1_without_negative(["A", "B", "NA"], ["NA", "NA", "NA"], "NA")
    assert m == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    # a correctly predicted negative is not a hit either
    assert micro_f1_without_negative(["NA", "NA"], ["NA", "NA"], "NA")["f1"] == 0.0


def test_micro_f1_perfect_is_one() -> None:
    gold = ["A", "B", "NA", "C", "A"]
    assert micro_f1_without_negative(gold, list(gold), "NA") == {"precision": 1.0, "recall": 1.0, "f1": 1.0}


def test_micro_f1_counts_direction_as_part_of_the_label() -> None:
    # correct 3 (#1, #3, #5) of 6 non-Other predictions and 6 non-Other gold
    assert micro_f1_without_negative(SEM_GOLD, SEM_PRED, O)["f1"] == pytest.approx(0.5)


def test_semeval_per_type_with_direction_errors() -> None:
    rows = {r["type"]: r for r in semeval_per_type(SEM_GOLD, SEM_PRED)}
    assert set(rows) == {"Cause-Effect", "Component-Whole"}  # Other is excluded
    ce, cw = rows["Cause-Effect"], rows["Component-Whole"]
    # CE: predicted #1 #2 #3 #4 (the wrong-direction #2 counts), gold #1 #2 #3, correct #1 #3
    assert (ce["correct"], ce["predicted"], ce["support"], ce["wrong_direction"]) == (2, 4, 3, 1)
    assert (ce["precision"], ce["recall"], ce["f1"]) == pytest.approx((0.5, 2 / 3, 4 / 7))
    # CW: predicted #5 #6, gold #4 #5 #8, correct #5
    assert (cw["correct"], cw["predicted"], cw["support"], cw["wrong_direction"]) == (1, 2, 3, 0)
    assert (cw["precision"], cw["recall"], cw["f1"]) == pytest.approx((0.5, 1 / 3, 0.4))
    assert semeval_official_macro_f1(SEM_GOLD, SEM_PRED) == pytest.approx((4 / 7 + 0.4) / 2)


def test_semeval_direction_error_is_wrong_for_the_type() -> None:
    gold = [CE12, CE21]
    assert semeval_official_macro_f1(gold, [CE12, CE21]) == pytest.approx(1.0)
    # both predictions flipped: right type, wrong direction -> nothing correct
    assert semeval_official_macro_f1(gold, [CE21, CE12]) == 0.0
    # one flipped: P = 1/2, R = 1/2
    assert semeval_official_macro_f1(gold, [CE12, CE12]) == pytest.approx(0.5)


def test_semeval_negative_only_and_perfect() -> None:
    assert semeval_official_macro_f1(SEM_GOLD, [O] * len(SEM_GOLD)) == 0.0
    assert semeval_official_macro_f1(SEM_GOLD, list(SEM_GOLD)) == pytest.approx(1.0)
    assert semeval_official_macro_f1([O, O], [O, CE12]) == 0.0


def test_semeval_macro_is_over_gold_types_only() -> None:
    # MT is predicted but absent from gold: like the Perl scorer, it costs nothing in the macro average
    assert semeval_official_macro_f1([CE12, O], [CE12, MT12]) == pytest.approx(1.0)
    # ... whereas a false CE prediction lowers CE's precision
    assert semeval_official_macro_f1([CE12, O], [CE12, CE12]) == pytest.approx(2 * 0.5 / 1.5)


def test_per_relation_and_confusion() -> None:
    gold, pred = ["A", "A", "B", "NA"], ["A", "B", "B", "B"]
    rows = per_relation_prf(gold, pred, ["NA", "A", "B"])
    assert [r["label"] for r in rows] == ["NA", "A", "B"]
    assert rows[1] == {
        "label": "A",
        "precision": 1.0,
        "recall": 0.5,
        "f1": pytest.approx(2 / 3),
        "support": 2,
    }
    assert rows[2]["precision"] == pytest.approx(1 / 3) and rows[2]["recall"] == 1.0
    assert confusion(gold, pred, ["NA", "A", "B"]) == [[0, 0, 1], [0, 1, 1], [0, 0, 1]]


def test_score_bundle_semeval_is_json_serialisable() -> None:
    schema = get_schema("semeval")
    out = score(SEM_GOLD, SEM_PRED, schema)
    json.dumps(out)
    assert out["micro_f1"] == pytest.approx(0.5)
    assert out["semeval_macro_f1"] == pytest.approx((4 / 7 + 0.4) / 2)
    assert len(out["per_relation"]) == len(schema.labels) == 19
    assert len(out["confusion"]) == 19


def test_score_rejects_unknown_and_misaligned_labels() -> None:
    schema = get_schema("semeval")
    with pytest.raises(ValueError, match="not in the 'semeval' schema"):
        score([CE12], ["Cause-Effect"], schema)
    with pytest.raises(ValueError, match="aligned"):
        score([CE12, O], [CE12], schema)
