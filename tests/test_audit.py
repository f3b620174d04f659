"""The hand check (``redpo.analysis.audit``): a seeded, stratified draw of generated samples only, and judged files
that are validated line by line and summarised beside the oracle."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from redpo.__main__ import main
from redpo.analysis import audit
from redpo.config import ConfigError, Profile, load_profile
from redpo.core.io import DataError, ResultsDir, write_samples
from redpo.core.sample import RESample
from redpo.data.splits import kshot_dir
from redpo.generation.store import arm_paths

RELATIONS = ["Cause-Effect(e1,e2)", "Component-Whole(e2,e1)", "Entity-Destination(e1,e2)", "Message-Topic(e1,e2)"]
SPLITS = [1, 2, 3]
DEMO = "the <e1>storm</e1> caused heavy <e2>flooding</e2> in the valley ."


def _sample(text: str, relation: str, source: str = "generated") -> RESample:
    s = RESample.from_marked(text, relation)
    return RESample(s.tokens, s.head, s.tail, relation, meta={"source": source})


def _profile() -> Profile:
    return load_profile("smoke", {"dataset.relations": ["Other", *RELATIONS], "fewshot.k": [4],
                                  "fewshot.seeds": SPLITS})


@pytest.fixture()
def results(tmp_path: Path) -> ResultsDir:
    """Generations of arm ``obo`` on three splits (10 generated samples per relation and split, plus 4 manual
    ``Other`` copies each) and each split's K-shot demonstrations, written as a run writes them."""
    res = ResultsDir("smoke", root=tmp_path)
    for seed in SPLITS:
        samples = [_sample(f"the <e1>thing{i}</e1> met the <e2>{rel[:5].lower()}{seed}x{i}</e2> today .", rel)
                   for rel in RELATIONS for i in range(10)]
        samples += [_sample(f"a <e1>cat{i}</e1> sat by the <e2>door{seed}</e2> .", "Other", "manual") for i in range(4)]
        write_samples(arm_paths(res, "obo", 4, seed)["samples"], samples)
        demos = [_sample(DEMO, "Cause-Effect(e1,e2)", "gold"),
                 _sample("the <e1>letter</e1> was about the <e2>war</e2> .", "Message-Topic(e1,e2)", "gold")]
        folder = kshot_dir(res.kshot, 4, seed)
        folder.mkdir(parents=True)
        write_samples(folder / "train.txt", demos)
    return res


def _todo(results: ResultsDir, arm: str = "obo") -> list[dict]:
    return [json.loads(line) for line in (results.audit / f"{arm}_todo.jsonl").read_text().splitlines()]


def _judge(results: ResultsDir, rows: list[dict], arm: str = "obo") -> Path:
    path = results.audit / f"{arm}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ---- drawing -----------------------------------------------------------------------------------------------
def test_the_draw_is_seeded(results: ResultsDir) -> None:
    profile = _profile()
    first = audit.draw_arm(profile, results, "obo", 8, seed=42).read_text()
    assert audit.draw_arm(profile, results, "obo", 8, seed=42).read_text() == first
    assert audit.draw_arm(profile, results, "obo", 8, seed=43).read_text() != first


def test_the_draw_spreads_over_relations_and_splits() -> None:
    """One relation holds most samples and another sits in one split only: each still gets its share."""
    pools = {(4, seed): [_sample(f"the <e1>a{i}</e1> x <e2>b{seed}{i}</e2> .", rel)
                         for rel in RELATIONS for i in range(40 if rel == RELATIONS[0] else 4)] for seed in SPLITS}
    pools[(4, 3)] += [_sample(f"the <e1>c{i}</e1> y <e2>d{i}</e2> .", "Member-Collection(e1,e2)") for i in range(9)]
    for seed in range(5):
        picked = audit.stratified_draw(pools, 15, seed)
        relations = Counter(s.relation for _, s in picked)
        splits = Counter(split for split, _ in picked)
        assert sorted(relations.values()) == [3] * 5
        assert max(splits.values()) - min(splits.values()) <= 2, splits
        assert len({(split, s) for split, s in picked}) == 15


def test_a_draw_larger_than_the_arm_takes_every_sample_once() -> None:
    pools = {(4, 1): [_sample("the <e1>a</e1> x <e2>b</e2> .", RELATIONS[0])],
             (4, 2): [_sample("the <e1>c</e1> y <e2>d</e2> .", RELATIONS[1])]}
    assert len(audit.stratified_draw(pools, 40, 0)) == 2


def test_only_generated_samples_are_drawn(results: ResultsDir) -> None:
    audit.draw_arm(_profile(), results, "obo", 1000, seed=0)
    rows = _todo(results)
    assert len(rows) == 3 * 4 * 10  # every generated sample, none of the 12 manual copies
    assert "Other" not in {r["relation"] for r in rows}


def test_each_drawn_sample_names_its_closest_demonstration(results: ResultsDir, tmp_path: Path) -> None:
    """The closest of the sample's own relation's demonstrations: a prompt never showed the others."""
    copy = _sample("the <e1>flooding</e1> caused heavy <e2>storm</e2> in the valley .", "Cause-Effect(e1,e2)")
    other = _sample("the <e1>rain</e1> was about the <e2>war</e2> .", "Cause-Effect(e1,e2)")
    write_samples(arm_paths(results, "swap", 4, 2)["samples"], [copy, other])
    audit.draw_arm(_profile(), results, "swap", 40, seed=0)
    rows = {r["marked"]: r for r in _todo(results, "swap")}
    row = rows[copy.to_marked()]
    assert (row["split"], row["closest_demo"], row["near_copy_score"]) == (2, DEMO, 1.0)
    assert row["judgement"] == row["reason"] == ""
    assert "causes" in row["explanation"]
    assert rows[other.to_marked()]["closest_demo"] == DEMO  # not the Message-Topic demo it copies


def test_an_arm_without_generations_is_an_error_naming_it(results: ResultsDir) -> None:
    with pytest.raises(DataError, match=r"no best_k<K>_s<seed>\.jsonl"):
        audit.draw_arm(_profile(), results, "best", 40, seed=0)


def test_a_new_draw_never_orphans_judgements(results: ResultsDir) -> None:
    profile = _profile()
    audit.draw_arm(profile, results, "obo", 4, seed=1)
    _judge(results, [{**r, "judgement": "correct", "reason": "fine"} for r in _todo(results)])
    audit.draw_arm(profile, results, "obo", 4, seed=1)  # the same draw again is harmless
    with pytest.raises(DataError, match="judges a different draw"):
        audit.draw_arm(profile, results, "obo", 4, seed=2)


def test_audit_arms_must_be_file_stems() -> None:
    with pytest.raises(ConfigError, match=r"audit\.arms"):
        load_profile("smoke", {"audit.arms": ["../obo"]})


# ---- judging and the summary ---------------------------------------------------------------------------------
def _write_oracle(results: ResultsDir, rows: list[dict], labels: list[str]) -> None:
    lines = [{"arm": r["arm"], "k": r["k"], "seed": r["split"], "relation": r["relation"], "marked": r["marked"],
              "oracle": label} for r, label in zip(rows, labels, strict=True)]
    (results.metrics / "correctness_icl_labels.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_summary_counts_judgements_beside_the_oracle(results: ResultsDir) -> None:
    profile = _profile()
    audit.draw_arm(profile, results, "obo", 8, seed=0)
    rows = _todo(results)
    verdicts = ["correct"] * 4 + ["near copy", "near copy", "wrong direction", "malformed"]
    _judge(results, [{"relation": r["relation"], "marked": r["marked"], "judgement": j, "reason": "because"}
                     for r, j in zip(rows, verdicts, strict=True)])
    # the oracle agrees on 3 of the 4 correct ones and on both near copies
    oracle = [r["relation"] for r in rows[:3]] + ["Other"] + [r["relation"] for r in rows[4:6]] + ["Other"] * 2
    _write_oracle(results, rows, oracle)
    summary = audit.summarise(profile, results)
    s = summary["arms"]["obo"]
    assert s["counts"] == {"correct": 4, "wrong relation": 0, "wrong direction": 1, "malformed": 1, "near copy": 2}
    assert s["correct_share"] == 0.5
    low, high = s["correct_ci"]
    assert 0.2 < low < 0.5 < high < 0.8  # Wilson at 4/8: [0.215, 0.785]
    assert (s["oracle"]["agrees"], s["oracle"]["labelled"]) == (5, 8)
    assert s["oracle"]["by_judgement"] == {"correct": 3, "wrong relation": 0, "wrong direction": 0, "malformed": 0,
                                           "near copy": 2}
    assert (s["oracle_vs_correct"]["both_correct"], s["oracle_vs_correct"]["oracle_only"]) == (3, 2)
    assert s["oracle_vs_correct"]["agreement"] == 5 / 8
    assert json.loads((results.audit / "summary.json").read_text())["arms"]["obo"]["n"] == 8
    md = (results.audit / "summary.md").read_text()
    assert "| obo | 8 | 4 | 0 | 1 | 1 | 2 | 0.50 [0.22, 0.78] | 5/8 (0.62) |" in md


@pytest.mark.parametrize(("change", "message"), [
    ({"judgement": "right"}, ":2: judgement 'right' is not one of correct, wrong relation"),
    ({"reason": ""}, ":2: reason must be one non-empty line"),
    ({"marked": "the <e1>x</e1> y <e2>z</e2> ."}, ":2: relation"),
])
def test_a_bad_judged_line_is_one_error_line_naming_file_and_line(results: ResultsDir, change: dict, message: str,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    profile = _profile()
    audit.draw_arm(profile, results, "obo", 3, seed=0)
    rows = [{**r, "judgement": "correct", "reason": "reads well"} for r in _todo(results)]
    rows[1] = {**rows[1], **change}
    path = _judge(results, rows)
    code = main(["audit", "--profile", "smoke", "--results-dir", str(results.root.parent), "--summarise"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert lines[0] == f"error: {path}{message}" or lines[0].startswith(f"error: {path}{message}")
    if "marked" in change:  # the sample it replaced is then unjudged: a second line names the todo file's line
        assert lines[1].startswith(f"error: {results.audit / 'obo_todo.jsonl'}:2: drawn sample")
    else:
        assert len(lines) == 1


def test_every_drawn_sample_must_be_judged(results: ResultsDir) -> None:
    profile = _profile()
    audit.draw_arm(profile, results, "obo", 3, seed=0)
    _judge(results, [{**r, "judgement": "correct", "reason": "ok"} for r in _todo(results)[:2]])
    with pytest.raises(audit.AuditError, match=r"obo_todo.jsonl:3: drawn sample .* is not judged"):
        audit.summarise(profile, results)


def test_the_cli_draws_the_profiles_arms_or_one_named_arm(results: ResultsDir,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    write_samples(arm_paths(results, "best", 4, 1)["samples"],
                  [_sample("the <e1>rain</e1> caused <e2>mud</e2> .", "Cause-Effect(e1,e2)")])
    root = str(results.root.parent)
    assert main(["audit", "--profile", "smoke", "--results-dir", root, "--draw", "-p", "audit.arms=[obo]"]) == 0
    assert main(["audit", "--profile", "smoke", "--results-dir", root, "--draw", "--arm", "best"]) == 0
    assert sorted(p.name for p in results.audit.iterdir()) == ["best_todo.jsonl", "obo_todo.jsonl"]
    assert len(_todo(results, "best")) == 1
