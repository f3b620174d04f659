"""The gap ladder: each rung's training set holds what its row says, the comparisons pair neighbours, and the
analysis reads per-sentence predictions into paired effects and run-health checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from redpo.analysis import ladder as ladder_analysis
from redpo.analysis import re_tables
from redpo.config import ClaimsConfig, ConfigError, load_profile
from redpo.core.sample import RESample
from redpo.generation.cache import CacheEntry, LLMCache
from redpo.generation.parse import exact_key
from redpo.generation.store import ArmResult, RelationStats, ResponseRecord
from redpo.ladder import generators as G
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


def test_the_training_share_tops_up_the_manual_negatives_beside_the_same_generated_positives() -> None:
    inputs = _inputs()
    share_negs = [_make(i, NEG, "s") for i in range(5)]
    manual_neg = [s for s in inputs.manual if s.relation == NEG]
    shared = L.SplitInputs(**{**vars(inputs), "extra_negatives": share_negs, "negative_share": 0.5})
    sets, notes = L.split_sets(shared, ["L0", "L2"], [2], NEG, 0.8, label=None)
    plain, _ = L.split_sets(inputs, ["L0", "L2"], [2], NEG, 0.8, label=None)
    assert L.GEN_NEGSHARE not in plain and sets.keys() - plain.keys() == {L.GEN_NEGSHARE}
    # 4 positives at 50%: 4 negatives, the 2 manual ones and 2 more
    assert sets[L.GEN_NEGSHARE] == [*sets[L.GEN][:4], *manual_neg, *share_negs[:2]]
    assert all(sets[name] == plain[name] for name in plain) and not notes
    short = L.SplitInputs(**{**vars(inputs), "extra_negatives": share_negs[:1], "negative_share": 0.5})
    sets, notes = L.split_sets(short, ["L0", "L2"], [2], NEG, 0.8, label=None)
    assert L.GEN_NEGSHARE not in sets and notes == [f"{L.GEN_NEGSHARE}: 2 more real Other sentences wanted, 1 left "
                                                    "in the training split"]
    low = L.SplitInputs(**{**vars(inputs), "extra_negatives": share_negs, "negative_share": 0.2})
    assert L.split_sets(low, ["L0", "L2"], [2], NEG, 0.8, label=None)[1] == [
        f"{L.GEN_NEGSHARE}: the split's Other samples already reach the training share"]


def test_the_negative_count_follows_the_share() -> None:
    assert L.negatives_at_share(112, 0.176) == 24  # SemEval's train share beside a K = 8 generated set
    assert L.negatives_at_share(1, 0.01) == 1
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        L.negatives_at_share(10, 1.0)


def test_the_share_set_is_compared_with_l2_gen_and_is_no_candidate_for_l7() -> None:
    rungs = ["L1", "L2", "L3", "L4", "L5", "L6", "L7"]
    plain = [(c.a, c.b) for c in L.comparisons(rungs, [8, 16], k=8)]
    assert plain == [(L.REAL, L.MANUAL), (L.GEN, L.REAL), (L.REAL_GENNEG, L.REAL), (L.GEN_GENNEG, L.GEN),
                     (L.ORACLE, L.ORACLE_ALL), (L.DISTINCT, L.DISTINCT_ALL), (L.count_set(16), L.count_set(8)),
                     (L.OTHER, L.GEN), (L.L7_BEST, L.L7_MANUAL)]  # the key off: what the committed ladders hold
    shared = [(c.a, c.b) for c in L.comparisons(rungs, [8, 16], k=8, share_negatives=True)]
    assert shared == [*plain[:4], (L.GEN_NEGSHARE, L.GEN), *plain[4:]]
    assert L.generated_sets([L.GEN, L.GEN_NEGSHARE, L.ORACLE]) == [L.GEN, L.ORACLE]


def test_the_training_share_of_the_negative_label() -> None:
    train = [_make(i, rel, "t") for rel, n in ((NEG, 1), (A, 3)) for i in range(n)]
    assert L.negative_share(train, NEG) == 0.25
    assert L.negative_share(train, None) is None and L.negative_share(train[1:], NEG) is None


def test_extra_negatives_are_real_negatives_outside_the_split_dev_test_and_l1() -> None:
    train = [_make(i, rel, "t") for rel in (NEG, A) for i in range(8)]
    split, dev, real = [train[0]], [train[1]], [train[2]]
    test = [RESample.from_marked(train[3].to_marked(), NEG)]  # the same sentence, another object
    extra = L.extra_negatives(train, [*split, *dev, *test, *real], seed=5, negative=NEG)
    assert sorted(map(exact_key, extra)) == sorted(map(exact_key, train[4:8]))  # every other negative, no positive
    assert extra == L.extra_negatives(train, [*split, *dev, *test, *real], seed=5, negative=NEG)
    assert extra != L.extra_negatives(train, [*split, *dev, *test, *real], seed=6, negative=NEG)


def test_the_share_set_needs_rung_l2() -> None:
    without_l2 = {"ladder.share_negatives": False, "ladder.rungs": ["L0", "L1"]}
    assert not load_profile("smoke", without_l2).ladder.share_negatives
    with pytest.raises(ConfigError, match=r"add L2 to ladder\.rungs"):
        load_profile("smoke", {"ladder.share_negatives": True, "ladder.rungs": ["L0", "L1"]})


def _run(arm: str, split: int, gold: list[str], pred: list[str]) -> dict:
    return {"arm": arm, "k": 8, "split_seed": split, "classifier_seed": split * 1000, "micro_f1": 0.0,
            "n_train": 10, "predictions": {"ids": [str(i) for i in range(len(gold))], "gold": gold, "pred": pred}}


def test_run_health_flags_a_collapsed_run() -> None:
    gold = [A, A, A, A, NEG, NEG]
    assert ladder_analysis.run_health(_run("x", 1, gold, [NEG] * 6))["collapsed"]
    assert not ladder_analysis.run_health(_run("x", 1, gold, [A, NEG, A, A, NEG, A]))["collapsed"]


def test_ladder_detail_pairs_every_set_with_manual(tmp_path: Path) -> None:
    gold = [A] * 30 + [NEG] * 10
    right, worse = list(gold), [NEG] * 10 + [A] * 20 + [NEG] * 10
    runs = [_run(arm, s, gold, pred) for s in (1, 2) for arm, pred in ((L.MANUAL, right), (L.GEN, worse))]
    # a set whose two runs differ: split 1 calls 10/30 positives and 10/10 negatives negative, split 2 3/30 and 5/10
    runs += [_run("L9:uneven", 1, gold, worse), _run("L9:uneven", 2, gold, [NEG] * 3 + [A] * 27 + [NEG] * 5 + [A] * 5)]
    payload = {"runs": runs, "negative_label": NEG, "comparisons": [vars(L.Comparison("L2", L.GEN, L.MANUAL, "x"))]}
    detail = ladder_analysis.ladder_detail(payload, ClaimsConfig(bootstrap_replicates=200))
    gen = next(s for s in detail["sets"] if s["set"] == L.GEN)
    assert gen["vs_manual"]["high"] < 0 and gen["ratio"]["estimate"] == pytest.approx((2 * 20 / 50) / 1.0)
    assert detail["gap"][0]["estimate"] == pytest.approx(-gen["vs_manual"]["estimate"])
    manual = next(s for s in detail["sets"] if s["set"] == L.MANUAL)
    uneven = next(s for s in detail["sets"] if s["set"] == "L9:uneven")["negative_ratio"]
    assert gen["negative_ratio"]["estimate"] == pytest.approx(10 / 30) and manual["negative_ratio"]["estimate"] == 0
    # pooled: the mean rates' ratio (0.2889), not the mean of the runs' ratios (0.2667)
    assert uneven["estimate"] == pytest.approx(((10 / 30 + 3 / 30) / 2) / ((1 + 0.5) / 2))
    assert uneven["low"] <= uneven["estimate"] <= uneven["high"] and uneven["undefined"] == 0
    assert uneven["per_split"] == {"k8_s1": pytest.approx(1 / 3), "k8_s2": pytest.approx(0.2)}
    shown = ladder_analysis.set_table(detail)["negative ratio [95% CI]"].tolist()
    assert shown[0] == "0.00 [0.00, 0.00]" and shown[1].startswith("0.33 [")
    assert detail["rungs"][0]["estimate"] == pytest.approx(gen["vs_manual"]["estimate"])


def _arm(name: str, outcomes: dict[str, list[int]], word: str) -> ArmResult:
    """An OBO result whose relation ``rel`` got ``outcomes[rel][i]`` valid samples from its i-th call (key
    ``<name>-<rel>-<i>``), in step order, each sample its own sentence."""
    samples: dict[str, list[RESample]] = {}
    stats, records = {}, []
    for step in range(max(len(v) for v in outcomes.values())):
        for rel, got in outcomes.items():
            if step >= len(got):
                continue
            made = [_make(len(samples.get(rel, [])) + j, rel, f"{word}{rel[:2]}") for j in range(got[step])]
            samples.setdefault(rel, []).extend(made)
            records.append(ResponseRecord(rel, step, step, 1, f"{name}-{rel}-{step}", False, 10, "",
                                          [m.to_marked() for m in made], []))
    for rel, got in outcomes.items():
        stats[rel] = RelationStats(rel, attempts=len(got), valid=sum(got))
    return ArmResult("obo", name, samples, stats, records, {})


def test_the_generators_are_charged_only_for_the_calls_up_to_each_relations_kth_sample() -> None:
    k = 2
    # the base arm's pool runs on to 4 per relation; B never reaches K
    base = _arm("base", {A: [1, 0, 1, 1, 1], B: [0, 1, 0]}, "g")
    other = _arm("other", {A: [1, 1], B: [1, 1]}, "o")
    charged = {r.key for r in G.records_to_k(base.records, k, budget=2)}
    # A up to its K-th sample (3 calls, past the budget); B, short of K: up to its last sample
    assert charged == {f"base-{A}-{i}" for i in range(3)} | {f"base-{B}-{i}" for i in range(2)}
    # ... and at least the budget a run at K spends failing
    assert {r.key for r in G.records_to_k(base.records, k, budget=3)} == charged | {f"base-{B}-2"}
    cache = LLMCache(None)
    cache.append_batch([CacheEntry(r.key, "", 10, 2.0) for res in (base, other) for r in res.records])
    demos = [_make(0, A, "gA")]  # "a gA0 sentence ..." masks to the first generated A sample
    # the sets the ladder trains: L2:gen (the base arm's first K) and L6:other, with the demos as L0:manual
    inputs = L.SplitInputs(k, demos, [], base.all_samples(), [], other.all_samples(), demos)
    sets = {(k, 1): L.split_sets(inputs, ["L2", "L6"], [], NEG, 0.8, None)[0]}
    # the oracle gives every L6 sample and every B sample its own label, the base arm's A samples another one
    label = lambda samples: [s.relation if s.tokens[1].startswith("o") or s.relation == B else NEG  # noqa: E731
                             for s in samples]
    rows = G.compare_generators(G.ladder_generators("small", "large", {(k, 1): base}, {(k, 1): other}), sets, 3,
                                NEG, cache, label, 0.8)
    small, large = rows
    assert (small["role"], small["set"], large["role"], large["set"]) == ("base", L.GEN, "L6", L.OTHER)
    assert small["samples"] == 3 and small["calls"] == 6 and small["relations_short"] == 1
    assert small["model_seconds"] == pytest.approx(12.0) and small["seconds_per_sample"] == pytest.approx(4.0)
    assert small["oracle_agreement"] == pytest.approx(1 / 3, abs=1e-4)  # only B's sample gets its own label back
    # both A samples read as the demo with other words
    assert small["near_copies"] == 2 and small["near_copy_share"] == pytest.approx(2 / 3, abs=1e-4)
    assert large["samples"] == 4 and large["calls"] == 4 and large["valid_per_call"] == pytest.approx(1.0)
    assert large["oracle_agreement"] == pytest.approx(1.0) and large["per_split"]["k2_s1"]["samples"] == 4
    # without L6 (or its samples) there is one row; without the oracle, no agreement
    alone = G.compare_generators(G.ladder_generators("small", None, {(k, 1): base}, {(k, 1): other}), sets, 3,
                                 NEG, cache, None, 0.8)
    assert len(alone) == 1 and alone[0]["oracle_agreement"] is None
    # without L2 the base set is L5's at each split's own K, the same first K
    counted = {(k, 1): L.split_sets(inputs, ["L5"], [4], NEG, 0.8, None)[0]}
    (by_count,) = G.compare_generators(G.ladder_generators("small", None, {(k, 1): base}, {}, L.count_set), counted,
                                       3, NEG, cache, label, 0.8)
    assert by_count["set"] == L.count_set(k) and by_count["samples"] == small["samples"] == 3
    # a call the cache does not hold leaves the seconds unknown, not zero
    partial = LLMCache(None)
    partial.append_batch([CacheEntry(r.key, "", 10, 2.0) for r in base.records[1:]])
    unknown = G.compare_generators(G.ladder_generators("small", None, {(k, 1): base}, {}), sets, 3, NEG,
                                   partial, None, 0.8)[0]
    assert unknown["calls_without_seconds"] == 1 and unknown["seconds_per_sample"] is None
    assert unknown["model_seconds_per_split"] is None


def test_the_generator_table_joins_each_generators_set_f1(tmp_path: Path) -> None:
    gold = [A] * 30 + [NEG] * 10
    runs = [_run(arm, s, gold, pred) for s in (1, 2)
            for arm, pred in ((L.MANUAL, gold), (L.GEN, [NEG] * 10 + [A] * 20 + [NEG] * 10))]
    for r in runs:
        r["micro_f1"] = 0.9 if r["arm"] == L.MANUAL else 0.3
    row = {"role": "base", "model": "small", "set": L.GEN, "splits": 2, "samples": 10, "relations_short": 0,
           "calls": 20, "new_tokens": 200, "model_seconds": 7200.0, "calls_without_seconds": 0, "near_copies": 1,
           "oracle_agrees": 5, "valid_per_call": 0.5, "seconds_per_sample": 720.0, "model_seconds_per_split": 3600.0,
           "oracle_agreement": 0.5, "near_copy_share": 0.1, "per_split": {}}
    payload = {"runs": runs, "negative_label": NEG, "comparisons": [], "generators": [row]}
    detail = ladder_analysis.ladder_detail(payload, ClaimsConfig(bootstrap_replicates=200))
    table = ladder_analysis.generator_table(detail)
    gen = next(s for s in detail["sets"] if s["set"] == L.GEN)
    assert gen["mean_f1"] == pytest.approx(0.3) and table["micro-F1 %"][0] == pytest.approx(30.0)
    assert table["micro-F1 per generation hour"][0] == pytest.approx(30.0)  # one hour of generation per split
    assert table["% of manual [95% CI]"][0].startswith("80.0")  # the per-sentence ratio, as in the sets table
    assert table["generation min per split"][0] == 60.0 and "per_split" not in detail["generators"][0]
    assert ladder_analysis.generator_table({"generators": []}).empty


@pytest.mark.parametrize("progress", [True, False])
def test_l3s_oracle_gets_the_notebooks_progress_switch(
    progress: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """L3 may train the oracle (a profile whose 02 and 03 never ran): ``run --no-progress`` must reach it too."""
    from types import SimpleNamespace

    from redpo.config import load_profile
    from redpo.core.io import ResultsDir
    from redpo.ladder import runs
    from redpo.ladder.pools import Pools

    seen: list[bool] = []

    def judge(*_: object, progress: bool = True) -> SimpleNamespace:
        seen.append(progress)
        return SimpleNamespace(labels={"marked": [], "oracle": []})

    monkeypatch.setattr(runs, "judge_arms", judge)
    prof = load_profile("smoke")
    assert "L3" in prof.ladder.rungs
    made = Pools(arm={(8, 1): ArmResult("obo", "obo", {}, {})})
    assert runs.ladder_labeller(prof, ResultsDir(prof, root=tmp_path), made, progress=progress)
    assert seen == [progress]
    without = load_profile("smoke", {"ladder.rungs": ["L0", "L1", "L2", "L6"]})  # L6 made no sample: no oracle
    assert runs.ladder_labeller(without, ResultsDir(without, root=tmp_path), made) is None
    assert runs.ladder_labeller(prof, ResultsDir(prof, root=tmp_path), Pools(arm={})) is None  # nothing to label
    assert seen == [progress]


def test_a_ratio_reads_as_its_ci_and_says_when_it_is_undefined_or_unbounded() -> None:
    assert re_tables.ratio_text({"estimate": 0.4123, "low": 0.29, "high": 0.581}) == "0.41 [0.29, 0.58]"
    assert re_tables.ratio_text({"estimate": 1.2, "low": 0.7, "high": None}) == "1.20 [0.70, ∞]"
    assert re_tables.ratio_text({"estimate": 1.2, "low": 0.7, "high": float("inf")}) == "1.20 [0.70, ∞]"
    assert re_tables.ratio_text(None) == "undefined"


def test_the_convergence_table_gives_each_arm_its_pooled_negative_ratio() -> None:
    gold = [A] * 30 + [NEG] * 10
    runs = [{**_run(arm, s, gold, pred), "stopped_early": True, "epochs_run": 3, "steps": 40}
            for s in (1, 2) for arm, pred in (("manual", [NEG] * 3 + [A] * 27 + [NEG] * 10),
                                              ("gen:never", [A] * 40))]
    table = re_tables.convergence_table(runs, NEG, ClaimsConfig(bootstrap_replicates=100))
    assert table.loc["manual", "negative ratio [95% CI]"].startswith("0.10 [")
    assert table.loc["gen:never", "negative ratio [95% CI]"] == "undefined"
    assert "negative ratio [95% CI]" not in re_tables.convergence_table(runs, None, ClaimsConfig()).columns
