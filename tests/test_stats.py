"""The statistics that decide claims, on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from redpo.analysis import stats
from redpo.core.relations import get_schema
from redpo.extraction.metrics import micro_f1_without_negative, semeval_official_macro_f1

LABELS = list(get_schema("semeval").labels)


def _random_labels(rng: np.random.Generator, n: int) -> list[str]:
    return [LABELS[i] for i in rng.integers(0, len(LABELS), size=n)]


def test_weighted_f1s_equal_the_scorers_on_unit_weights_and_on_duplicated_sentences() -> None:
    rng = np.random.default_rng(3)
    gold, pred = _random_labels(rng, 300), _random_labels(rng, 300)
    pred[:150] = gold[:150]
    ones = np.ones(300)
    assert stats.weighted_f1(gold, pred, "Other", ones) == pytest.approx(
        micro_f1_without_negative(gold, pred, "Other")["f1"])
    assert stats.weighted_f1(gold, pred, "Other", ones, "semeval_macro_f1") == pytest.approx(
        semeval_official_macro_f1(gold, pred))
    twice = np.ones(300)
    twice[:40] = 2  # the first 40 sentences counted twice = those sentences appended again
    dup_gold, dup_pred = gold + gold[:40], pred + pred[:40]
    assert stats.weighted_f1(gold, pred, "Other", twice) == pytest.approx(
        micro_f1_without_negative(dup_gold, dup_pred, "Other")["f1"])
    assert stats.weighted_f1(gold, pred, "Other", twice, "semeval_macro_f1") == pytest.approx(
        semeval_official_macro_f1(dup_gold, dup_pred))
    both = stats.weighted_f1(gold, pred, "Other", np.stack([ones, twice]))  # a batch of weight vectors at once
    assert both == pytest.approx([micro_f1_without_negative(gold, pred, "Other")["f1"],
                                  micro_f1_without_negative(dup_gold, dup_pred, "Other")["f1"]])


def _cells(gold: list[str], right_a: int, right_b: int, cells: int = 3) -> stats.PairedCells:
    """Arm a gets the first ``right_a`` sentences right (else predicts Other), arm b the first ``right_b``."""
    a = [g if i < right_a else "Other" for i, g in enumerate(gold)]
    b = [g if i < right_b else "Other" for i, g in enumerate(gold)]
    return stats.PairedCells(gold, [a] * cells, [b] * cells, list(range(cells)))


def test_a_known_paired_difference_gets_a_ci_that_excludes_zero() -> None:
    gold = ["Cause-Effect(e1,e2)"] * 100  # every sentence positive: micro-F1 = 2r / (r + 1) with recall r
    cells = _cells(gold, 80, 60)
    effect = stats.paired_f1_bootstrap(cells, "Other", n_boot=400, seed=1)
    expected = 2 * 0.8 / 1.8 - 2 * 0.6 / 1.6
    assert effect.estimate == pytest.approx(expected)
    assert 0 < effect.low <= effect.estimate <= effect.high
    assert stats.verdict(effect) == stats.HOLDS and effect.p_value < 0.01
    assert (effect.n_splits, effect.n_cells, effect.n_units) == (3, 3, 100)
    reverse = stats.paired_f1_bootstrap(_cells(gold, 60, 80), "Other", n_boot=400, seed=1)
    assert reverse.estimate == pytest.approx(-expected) and stats.verdict(reverse) == stats.FAILS
    again = stats.paired_f1_bootstrap(cells, "Other", n_boot=400, seed=1)
    assert again == effect  # seeded
    assert [s for s, _ in effect.per_split] == ["0", "1", "2"]
    assert [v for _, v in effect.per_split] == pytest.approx([expected] * 3)  # one cell per split here
    gold2 = ["Cause-Effect(e1,e2)"] * 10  # two splits of two cells each, different effects per split
    a = [[*gold2[:9], "Other"], [*gold2[:7], "Other", "Other", "Other"], gold2, gold2]
    b = [gold2[:5] + ["Other"] * 5] * 2 + [gold2] * 2
    mixed = stats.paired_f1_bootstrap(stats.PairedCells(gold2, a, b, ["s1", "s1", "s2", "s2"]), "Other", n_boot=50)
    f1 = [2 * r / (r + 1) for r in (0.9, 0.7, 0.5)]
    assert [s for s, _ in mixed.per_split] == ["s1", "s2"]
    assert [v for _, v in mixed.per_split] == pytest.approx([(f1[0] - f1[2] + f1[1] - f1[2]) / 2, 0.0])
    assert mixed.to_json()["per_split"] == [[s, round(v, 6)] for s, v in mixed.per_split]


def test_a_difference_of_a_few_sentences_gets_a_ci_that_includes_zero() -> None:
    gold = ["Cause-Effect(e1,e2)"] * 100
    # One sentence separates the arms: a draw without it shows no difference, so the CI reaches 0.
    effect = stats.paired_f1_bootstrap(_cells(gold, 71, 70), "Other", n_boot=400, seed=2)
    assert effect.low == 0 < effect.high and stats.verdict(effect) == stats.INCONCLUSIVE
    macro = stats.paired_f1_bootstrap(_cells(gold, 80, 60), "Other", metric="semeval_macro_f1", n_boot=200)
    assert macro.estimate == pytest.approx(2 * 0.8 / 1.8 - 2 * 0.6 / 1.6)  # one type: macro = its F1


def test_relation_level_bootstrap_and_margins() -> None:
    constant = stats.paired_mean_bootstrap([0.1] * 11, n_boot=300)
    assert (constant.estimate, constant.low, constant.high) == pytest.approx((0.1, 0.1, 0.1))
    mixed = stats.paired_mean_bootstrap([-0.2, 0.2, -0.1, 0.1, 0.0], n_boot=500, seed=4)
    assert mixed.low < 0 < mixed.high and stats.verdict(mixed) == stats.INCONCLUSIVE
    assert stats.verdict(constant, margin=0.05) == stats.HOLDS
    assert stats.verdict(constant, margin=0.2) == stats.FAILS  # claimed to exceed 0.2: the CI is all below
    with pytest.raises(ValueError, match="no paired differences"):
        stats.paired_mean_bootstrap([])


def test_holm_adjusts_step_down_in_input_order() -> None:
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_cells_must_be_aligned() -> None:
    with pytest.raises(ValueError, match="same 2 sentences"):
        stats.PairedCells(["Other", "Other"], [["Other"]], [["Other", "Other"]], [1])


def test_the_negative_ratio_pools_cells_and_keeps_a_run_that_never_calls_a_negative_negative() -> None:
    """Pooled: mean rate on gold positives over mean rate on gold negatives. A cell that calls no gold negative
    negative has no ratio of its own, yet its rates still count; a mean of per-run ratios would drop it."""
    gold = ["A"] * 4 + ["N"] * 2
    preds = [["N", "A", "A", "A", "N", "A"],  # 1/4 of positives, 1/2 of negatives called N
             ["N", "N", "A", "A", "A", "A"]]  # 2/4 of positives, none of the negatives
    effect = stats.negative_ratio_bootstrap(gold, preds, ["s1", "s2"], "N", n_boot=300)
    assert effect.estimate == pytest.approx(((1 / 4 + 2 / 4) / 2) / ((1 / 2 + 0) / 2))
    assert effect.n_splits == 2 and effect.n_cells == 2 and effect.n_units == 6 and effect.n_boot == 300
    assert dict(effect.per_split) == {"s1": pytest.approx(0.5), "s2": np.inf}


def test_a_draw_without_a_negative_hit_is_infinite_and_one_without_any_is_undefined() -> None:
    """Dropping the replicates that drew no gold negative called negative would cut the CI's upper tail; they
    are infinite, and the bound with them. A classifier that never says negative has no ratio at all."""
    gold = ["A"] * 8 + ["N"] * 4
    rare = ["N"] + ["A"] * 7 + ["N"] + ["A"] * 3  # 1 of 8 positives, 1 of 4 negatives
    effect = stats.negative_ratio_bootstrap(gold, [rare], ["s1"], "N", n_boot=400)
    assert effect.estimate == pytest.approx(0.5) and effect.high == np.inf and effect.undefined > 0
    assert effect.low <= effect.estimate and effect.to_json()["undefined"] == effect.undefined
    never = stats.negative_ratio_bootstrap(gold, [["A"] * 12], ["s1"], "N", n_boot=50)
    assert np.isnan(never.estimate) and never.undefined == 50 and never.n_boot == 50
    plenty = ["A"] * 40 + ["N"] * 40
    called = ["N"] * 10 + ["A"] * 30 + ["N"] * 30 + ["A"] * 10
    assert "undefined" not in stats.negative_ratio_bootstrap(plenty, [called], ["s1"], "N", n_boot=50).to_json()


def test_the_split_is_the_unit_of_the_negative_ratio() -> None:
    """Splits that disagree widen the CI; the same cells, all agreeing, do not."""
    rng = np.random.default_rng(0)
    gold = ["A"] * 600 + ["N"] * 200

    def cell(on_pos: float) -> list[str]:
        return (["N" if x else "A" for x in rng.random(600) < on_pos]
                + ["N" if x else "A" for x in rng.random(200) < 0.5])

    splits = [s for s in range(4) for _ in range(2)]
    apart = stats.negative_ratio_bootstrap(gold, [cell(r) for r in (0.05, 0.05, 0.15, 0.15, 0.3, 0.3, 0.4, 0.4)],
                                           splits, "N", n_boot=400)
    alike = stats.negative_ratio_bootstrap(gold, [cell(0.225) for _ in range(8)], splits, "N", n_boot=400)
    assert apart.estimate == pytest.approx(alike.estimate, abs=0.06)
    assert apart.half_width > 2 * alike.half_width


def test_a_negative_ratio_far_below_one_has_a_ci_below_one() -> None:
    """A classifier that calls most gold negatives negative and few positives: its CI sits well below 1, and the
    p-value against 1 (no discrimination) is small."""
    rng = np.random.default_rng(3)
    gold = ["A"] * 400 + ["N"] * 100
    preds, splits = [], []
    for split in range(3):
        for _seed in range(2):
            on_pos, on_neg = rng.random(400) < 0.05, rng.random(100) < 0.5
            preds.append(["N" if x else "A" for x in on_pos] + ["N" if x else "A" for x in on_neg])
            splits.append(split)
    effect = stats.negative_ratio_bootstrap(gold, preds, splits, "N", n_boot=500)
    assert 0.05 < effect.estimate < 0.2 and effect.high < 0.3 and effect.p_value < 0.01


def test_the_negative_ratio_needs_both_kinds_of_gold_sentence() -> None:
    with pytest.raises(ValueError, match="gold sentences of both kinds"):
        stats.negative_ratio_bootstrap(["A", "A"], [["N", "A"]], ["s1"], "N")
    with pytest.raises(ValueError, match="one prediction row of 2 sentences per cell"):
        stats.negative_ratio_bootstrap(["A", "N"], [["N"]], ["s1"], "N")
