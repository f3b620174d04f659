"""The gap ladder: each rung's training set holds what its row says, the comparisons pair neighbours, and the
analysis reads per-sentence predictions into paired effects and run-health checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from redpo.analysis import ladder as ladder_analysis
from redpo.config import ClaimsConfig
from redpo.core.sample import RESample
from redpo.generation.parse import exact_key
from redpo.ladder import sets as L

NEG, A, B = "Other", "Cause-Effect(e1,e2)", "Component-Whole(e1,e2)"


def _make(i: int, relation: str, word: str, source: str = "generated") -> RESample:
    sample = RESample.from_marked(f"a {word}{i} sentence about <e1>x{word}{i}</e1> and <e2>y{word}{i}</e2> here .",
                                  relation)
    return RESample(sample.tokens, sample.head, sample.tail, relation, meta={"source": source})


def _inputs(k: int = 2) -> L.SplitInputs:
    manual = [_make(i, rel, "m", "manual") for rel in (NEG, A, B) for i in range(k)]
    real = [_make(i, rel, "r") for rel in (NEG, A, B) for i in range(k)]
    pool = [_make(i, rel, "g") for rel in (A, B) for i in range(4)] + [_make(0, NEG, "m", "manual")]
    negatives = [_make(i, NEG, "n") for i in range(k)]
    return L.SplitInputs(k, manual, real, pool, negatives, [], manual)


def _counts(samples: list[RESample]) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in samples:
        out[s.relation] = out.get(s.relation, 0) + 1
    return out


def test_each_rung_changes_one_thing() -> None:
    inputs = _inputs()
    sets, notes = L.split_sets(inputs, ["L0", "L1", "L2", "L5"], [2, 4], NEG, 0.8, label=None)
    manual_neg = [s for s in inputs.manual if s.relation == NEG]
    assert sets[L.MANUAL] == inputs.manual
    assert _counts(sets[L.REAL]) == {A: 2, B: 2, NEG: 2} and sets[L.REAL][-2:] == manual_neg  # real pos, manual neg
    assert _counts(sets[L.GEN]) == {A: 2, B: 2, NEG: 2} and sets[L.GEN][-2:] == manual_neg
    assert sets[L.GEN_GENNEG][:4] == sets[L.GEN][:4] and sets[L.GEN_GENNEG][-2:] == inputs.negatives
    assert sets[L.REAL_GENNEG][:4] == sets[L.REAL][:4]
    assert sets[L.count_set(2)] == sets[L.GEN]  # L2's generated set is L5 at N = K: one run serves both
    assert _counts(sets[L.count_set(4)]) == {A: 4, B: 4, NEG: 2}
    assert not notes  # every set holds positives


def test_filtered_rungs_compare_at_the_same_counts() -> None:
    pool = [_make(i, A, "g") for i in range(4)] + [_make(i, B, "g") for i in range(4)]
    kept = [pool[1], pool[4], pool[5], pool[6]]  # the filter kept 1 of A and 3 of B
    filtered, unfiltered = L.matched(kept, pool, k=2)
    assert _counts(filtered) == _counts(unfiltered) == {A: 1, B: 2}
    assert filtered == [pool[1], pool[4], pool[5]] and unfiltered == [pool[0], pool[4], pool[5]]


def test_near_copies_of_a_demonstration_or_an_earlier_sample_are_left_out() -> None:
    demo = RESample.from_marked("the <e1>storm</e1> caused severe <e2>flooding</e2> in the valley .", A)
    copy = RESample.from_marked("the <e1>virus</e1> caused severe <e2>illness</e2> in the valley .", A)
    fresh = RESample.from_marked("a dropped <e1>match</e1> started the <e2>fire</e2> that closed the mill .", A)
    again = RESample.from_marked("a dropped <e1>cigarette</e1> started the <e2>blaze</e2> that closed the mill .", A)
    other = RESample.from_marked("the <e1>storm</e1> caused severe <e2>flooding</e2> in the valley .", B)
    assert L.distinct([copy, fresh, again, other], [demo], 0.8) == [fresh, other]  # per relation


def test_real_samples_avoid_the_kshot_split_and_are_seeded() -> None:
    train = [_make(i, rel, "t") for rel in (A, B) for i in range(6)]
    kshot = train[:2]
    drawn = L.real_samples(train, kshot, 2, seed=3, relations={A, B})
    assert _counts(drawn) == {A: 2, B: 2} and not {exact_key(s) for s in drawn} & {exact_key(s) for s in kshot}
    assert drawn == L.real_samples(train, kshot, 2, seed=3, relations={A, B})
    assert drawn != L.real_samples(train, kshot, 2, seed=4, relations={A, B})


def test_an_empty_filter_is_a_note_not_a_set() -> None:
    inputs = _inputs()
    sets, notes = L.split_sets(inputs, ["L0", "L3"], [2], NEG, 0.8, label=lambda samples: [NEG] * len(samples))
    assert L.ORACLE not in sets and any(n.startswith(L.ORACLE) for n in notes)
    no_neg = L.SplitInputs(2, inputs.manual, inputs.real, inputs.pool, [], [], inputs.manual)
    sets, notes = L.split_sets(no_neg, ["L0", "L2"], [2], NEG, 0.8, label=None)
    assert L.GEN_GENNEG not in sets and any("wrote no Other sample" in n for n in notes)


def test_comparisons_pair_neighbours_and_counts_in_order() -> None:
    pairs = {(c.a, c.b) for c in L.comparisons(["L1", "L5"], [8, 16, 32], k=8)}
    assert pairs == {(L.REAL, L.MANUAL), (L.count_set(16), L.count_set(8)), (L.count_set(32), L.count_set(16))}


def _run(arm: str, split: int, gold: list[str], pred: list[str]) -> dict:
    return {"arm": arm, "k": 8, "split_seed": split, "classifier_seed": split * 1000, "micro_f1": 0.0,
            "n_train": 10, "predictions": {"ids": [str(i) for i in range(len(gold))], "gold": gold, "pred": pred}}


def test_run_health_flags_a_collapsed_run_and_the_negative_ratio() -> None:
    gold = [A, A, A, A, NEG, NEG]
    assert ladder_analysis.run_health(_run("x", 1, gold, [NEG] * 6), NEG)["collapsed"]
    health = ladder_analysis.run_health(_run("x", 1, gold, [A, NEG, A, A, NEG, A]), NEG)
    assert not health["collapsed"] and health["negative_ratio"] == pytest.approx((1 / 4) / (1 / 2))


def test_ladder_detail_pairs_every_set_with_manual(tmp_path: Path) -> None:
    gold = [A] * 30 + [NEG] * 10
    right, worse = list(gold), [NEG] * 10 + [A] * 20 + [NEG] * 10
    runs = [_run(arm, s, gold, pred) for s in (1, 2) for arm, pred in ((L.MANUAL, right), (L.GEN, worse))]
    payload = {"runs": runs, "negative_label": NEG, "comparisons": [vars(L.Comparison("L2", L.GEN, L.MANUAL, "x"))]}
    detail = ladder_analysis.ladder_detail(payload, ClaimsConfig(bootstrap_replicates=200))
    gen = next(s for s in detail["sets"] if s["set"] == L.GEN)
    assert gen["vs_manual"]["high"] < 0 and gen["ratio"]["estimate"] == pytest.approx((2 * 20 / 50) / 1.0)
    assert detail["gap"][0]["estimate"] == pytest.approx(-gen["vs_manual"]["estimate"])
    assert detail["rungs"][0]["estimate"] == pytest.approx(gen["vs_manual"]["estimate"])
