"""RE experiments: arm training sets, the grid, resume, and aggregation checked by hand."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from redpo.analysis import paper_numbers
from redpo.analysis.re_tables import (
    arm_order,
    best_arm,
    per_relation_frame,
    results_table,
    summarize,
    summed_confusion,
    training_quotas,
)
from redpo.config import Profile, load_profile
from redpo.core.io import ResultsDir, write_samples
from redpo.core.sample import RESample
from redpo.core.tables import format_mean_sd, markdown_table
from redpo.data.splits import write_kshot
from redpo.extraction.grid import run_grid
from redpo.extraction.run_store import RunRecord, RunStore
from redpo.extraction.training_sets import (
    CLASSIFIER_SEED_STRIDE,
    GridCell,
    arm_training_sets_with_quotas,
    comparable_sets,
    epoch_sizes,
    evaluation_sets,
    first_per_relation,
    grid_cells,
    union,
)
from redpo.generation.store import arm_paths

RELATIONS = ["Other", "Cause-Effect(e1,e2)", "Component-Whole(e2,e1)"]


def _s(i: int, relation: str, word: str = "x") -> RESample:
    return RESample.from_marked(f"the <e1>{word}{i}</e1> and the <e2>y{i}</e2> here .", relation)


def _profile(**overrides: Any) -> Profile:
    return load_profile("smoke", {"dataset.relations": RELATIONS, "fewshot.seeds": [1], **overrides})


def _results(tmp_path: Path, prof: Profile, k: int = 2) -> ResultsDir:
    """A results folder with a K-shot split (K per relation) and generation files of unequal yield."""
    results = ResultsDir(prof, root=tmp_path)
    manual = [_s(i, rel, "m") for rel in RELATIONS for i in range(k)]
    write_kshot(manual, results.kshot, k, 1)
    generated = [_s(i, rel, "g") for rel in RELATIONS for i in range(k + 2)]
    for arm in ("baseline", "obo_dpo"):
        write_samples(arm_paths(results, arm, k, 1)["samples"], generated)
    short = [s for s in generated if not (s.relation == RELATIONS[2] and s.text != _s(0, RELATIONS[2], "g").text)]
    write_samples(arm_paths(results, "obo", k, 1)["samples"], short)  # one sample of Component-Whole only
    write_samples(arm_paths(results, "aao", k, 1)["samples"], [])
    return results


def test_generated_arms_get_equal_per_relation_counts_and_the_manual_negatives(tmp_path: Path) -> None:
    prof = _profile(**{"fewshot.k": [2]})
    results = _results(tmp_path, prof)
    sets, scopes = arm_training_sets_with_quotas(prof, results, 2, 1)
    quotas = scopes["all"]
    assert list(sets) == ["manual", "manual-steps", "gen:baseline", "gen:obo", "mix:obo", "gen:obo_dpo",
                          "mix:obo_dpo", "gen:obo@pair", "mix:obo@pair", "gen:obo_dpo@pair", "mix:obo_dpo@pair"]
    manual = sets["manual"]
    assert sets["manual-steps"] == manual  # the same samples, trained on the largest mixed set's step schedule
    assert epoch_sizes(sets) == {"manual-steps": max(len(sets["mix:obo"]), len(sets["mix:obo_dpo"]))}
    assert epoch_sizes(sets, prof.encoder) == epoch_sizes(sets)  # a schedule in epochs sizes by the mixed sets
    stepped = load_profile("cpu-full-v2").encoder  # steps, cap and warm-up all in steps: no set's size matters
    assert epoch_sizes(sets, stepped) == {}
    capless = load_profile("cpu-full-v2", {"encoder.max_steps": None}).encoder  # the cap follows the epochs
    assert epoch_sizes(sets, capless) == epoch_sizes(sets)
    negatives = [s for s in manual if s.relation == "Other"]
    # obo left Component-Whole short (1 of 2): every arm takes 1 of it, 2 of Cause-Effect, the 2 manual Others
    for arm in ("baseline", "obo", "obo_dpo"):
        counts = Counter(s.relation for s in sets[f"gen:{arm}"])
        assert counts == {"Cause-Effect(e1,e2)": 2, "Component-Whole(e2,e1)": 1, "Other": 2}, arm
        assert [s for s in sets[f"gen:{arm}"] if s.relation == "Other"] == negatives
    assert sets["gen:obo"][:2] == [_s(0, RELATIONS[1], "g"), _s(1, RELATIONS[1], "g")]  # generation order
    assert sets["mix:obo"] == [*manual, *(s for s in sets["gen:obo"] if s not in manual)]
    assert "mix:baseline" not in sets  # the Xu et al. baseline is generated-only
    assert quotas.to_json() == {
        "target": 2, "negative_label": "manual",
        "per_relation": {"Cause-Effect(e1,e2)": 2, "Component-Whole(e2,e1)": 1},
        "relations_left_out": [], "short": {"obo": {"Component-Whole(e2,e1)": 1}}, "empty_arms": ["aao"],
    }


def test_the_primary_pair_keeps_the_relations_only_another_arm_left_short(tmp_path: Path) -> None:
    """Claims 3-6 compare OBO and OBO+DPO: a relation the baseline left empty must not be taken from them."""
    prof = _profile(**{"fewshot.k": [2]})
    results = _results(tmp_path, prof)
    full = [_s(i, rel, "g") for rel in RELATIONS for i in range(4)]
    write_samples(arm_paths(results, "obo", 2, 1)["samples"], full)
    write_samples(arm_paths(results, "baseline", 2, 1)["samples"], [s for s in full if s.relation != RELATIONS[1]])
    sets, scopes = arm_training_sets_with_quotas(prof, results, 2, 1)
    assert scopes["all"].left_out == [RELATIONS[1]]  # the baseline has no Cause-Effect: every arm loses it
    assert scopes["pair"].per_relation == {RELATIONS[1]: 2, RELATIONS[2]: 2} and not scopes["pair"].short
    for arm in ("obo", "obo_dpo"):
        assert Counter(s.relation for s in sets[f"gen:{arm}@pair"]) == {RELATIONS[1]: 2, RELATIONS[2]: 2,
                                                                         "Other": 2}
        assert RELATIONS[1] not in {s.relation for s in sets[f"gen:{arm}"]}
    assert epoch_sizes(sets) == {"manual-steps": len(sets["mix:obo_dpo@pair"])}  # the largest mixed set
    assert training_quotas(prof, results)["k2_s1@pair"] == scopes["pair"].to_json()


def test_a_generated_negative_label_is_one_more_quota() -> None:
    manual = [_s(i, rel, "m") for rel in RELATIONS for i in range(2)]
    generated = {"obo": [_s(0, "Other", "g"), _s(0, RELATIONS[1], "g")],
                 "aao": [_s(i, rel, "h") for rel in RELATIONS for i in range(2)]}
    sets, quotas = comparable_sets(generated, manual, 2, "Other", "generate")
    assert quotas.per_relation == {"Other": 1, RELATIONS[1]: 1, RELATIONS[2]: 0}
    assert quotas.left_out == [RELATIONS[2]] and quotas.negative == "generated"
    assert [Counter(s.relation for s in sets[a]) for a in ("obo", "aao")] == [{"Other": 1, RELATIONS[1]: 1}] * 2


def test_first_per_relation_and_union() -> None:
    a, b = _s(0, "Other"), _s(1, "Other")
    c = _s(0, "Cause-Effect(e1,e2)")
    assert first_per_relation([a, c, b], 1) == [a, c]
    assert first_per_relation([a, c, b], 5) == [a, c, b]
    assert first_per_relation([a, c, b], {"Other": 2}) == [a, b]
    assert union([a, c], [b, a]) == [a, c, b]  # a generated copy of a manual sample is kept once


def test_grid_cells_and_classifier_seeds() -> None:
    prof = load_profile("smoke", {"fewshot.k": [4, 8], "fewshot.seeds": [1, 2], "encoder.seeds_per_split": 2})
    cells = grid_cells(prof)
    assert [(c.k, c.split_seed, c.classifier_seed) for c in cells] == [
        (4, 1, 1000), (4, 1, 1001), (4, 2, 2000), (4, 2, 2001),
        (8, 1, 1000), (8, 1, 1001), (8, 2, 2000), (8, 2, 2001),
    ]  # fmt: skip
    full = grid_cells(load_profile("cpu-full"))  # classifier seeds nested inside each generation split
    assert [c.name for c in full] == ["k8_s1_c1000", "k8_s1_c1001", "k8_s2_c2000", "k8_s2_c2001", "k8_s3_c3000",
                                      "k8_s3_c3001", "k8_s4_c4000", "k8_s4_c4001", "k8_s5_c5000",
                                      "k8_s5_c5001"]
    assert GridCell(8, 3, 4).classifier_seed == 3 * CLASSIFIER_SEED_STRIDE + 4


def _run(arm: str, k: int, value: float, macro: float | None = None, **extra: Any) -> dict[str, Any]:
    row = {"arm": arm, "k": k, "micro_f1": value, **extra}
    if macro is not None:
        row["semeval_macro_f1"] = macro
    return row


RUNS = [
    _run("manual", 8, 0.5, 0.4), _run("manual", 8, 0.6, 0.5), _run("manual", 8, 0.7, 0.6),
    _run("mix:obo", 8, 0.8), _run("mix:obo", 8, 0.6), _run("mix:obo", 8, 0.7),
    _run("gen:obo", 8, 0.3), _run("gen:obo", 8, 0.2), _run("gen:obo", 8, 0.1),
    _run("llm", 8, 0.25),
]  # fmt: skip


def test_summarize_mean_and_sample_sd_by_hand() -> None:
    summary = summarize(RUNS).set_index("arm")
    assert list(summary.index) == ["manual", "gen:obo", "mix:obo", "llm"]  # display order
    assert summary.loc["manual", "mean"] == pytest.approx(0.6)
    assert summary.loc["manual", "sd"] == pytest.approx(0.1)  # sqrt(((-.1)^2 + 0 + .1^2) / 2)
    assert summary.loc["gen:obo", "n"] == 3 and summary.loc["gen:obo", "mean"] == pytest.approx(0.2)
    assert math.isnan(summary.loc["llm", "sd"])  # one run: no spread
    macro = summarize(RUNS, "semeval_macro_f1")
    assert list(macro["arm"]) == ["manual"] and macro["mean"].iloc[0] == pytest.approx(0.5)
    assert format_mean_sd(0.6, 0.1) == "60.0 ± 10.0" and format_mean_sd(0.25, float("nan")) == "25.0"


def test_results_table_puts_the_paper_numbers_beside_redpo() -> None:
    table = results_table(RUNS, "semeval")
    assert table.loc["manual", "K=8"] == "60.0 ± 10.0"
    assert table.loc["manual", "paper K=8"] == "61.39"
    assert table.loc["mix:obo", "paper K=8"] == "67.92"
    assert table.loc["llm", "paper K=8"] == "25.55" and table.loc["llm", "K=8"] == "25.0"
    assert table.loc["gen:obo", "paper K=8"] == ""  # the paper's K=8 generated row is OBO + DPO
    assert results_table(RUNS, "tacrev").loc["manual", "paper K=8"] == ""
    scored = [{**r, "predictions": {"ids": ["t"] * (300 if r["arm"] == "llm" else 600)}} for r in RUNS]
    sentences = results_table(scored, "semeval")["sentences K=8"]
    assert sentences["llm"] == 300 and sentences["manual"] == 600  # the LLM's subset shows in its row


def test_paper_numbers_are_the_published_tables() -> None:
    assert paper_numbers.paper_value("semeval", 8, "gen:obo_dpo") == 42.02
    assert paper_numbers.paper_value("semeval", 32, "gen:obo") == 30.03
    assert paper_numbers.paper_value("tacred", 16, "llm") is None
    assert paper_numbers.paper_value("tacred", 8, "gen:obo_dpo") == 22.48
    cells = [(p.dataset, p.k, arm) for p in paper_numbers.PUBLISHED for arm in p.arms]
    assert all(paper_numbers.paper_value(*cell) is not None for cell in cells)  # every arm mapping is reachable


def test_per_relation_confusion_and_best_arm() -> None:
    labels = ["Other", "A", "B"]
    runs = [
        {"arm": "manual", "k": 8, "micro_f1": 0.5, "labels": labels, "confusion": [[1, 0, 0], [1, 1, 0], [0, 0, 0]],
         "per_relation": [{"label": "Other", "f1": 0.6, "support": 1}, {"label": "A", "f1": 0.4, "support": 2},
                          {"label": "B", "f1": 0.0, "support": 0}]},
        {"arm": "manual", "k": 8, "micro_f1": 0.7, "labels": labels, "confusion": [[0, 1, 0], [0, 2, 0], [0, 0, 0]],
         "per_relation": [{"label": "Other", "f1": 0.0, "support": 1}, {"label": "A", "f1": 0.8, "support": 2},
                          {"label": "B", "f1": 0.0, "support": 0}]},
        {"arm": "gen:obo", "k": 8, "micro_f1": 0.4, "labels": labels, "confusion": [[1, 0, 0], [0, 0, 2], [0, 0, 0]],
         "per_relation": []},
        {"arm": "llm", "k": 8, "micro_f1": 0.9},
    ]
    frame = per_relation_frame(runs)
    assert list(frame.columns) == ["A", "Other"]  # B has no gold support
    assert frame.loc["manual", "A"] == pytest.approx(0.6)
    assert best_arm(runs) == "manual"  # the LLM is not a trained arm
    confusion = summed_confusion(runs, "manual")
    assert confusion.loc["A", "A"] == 3 and confusion.loc["Other", "A"] == 1
    assert "B" not in confusion.index
    assert "B" in summed_confusion(runs, "gen:obo").columns  # predicted, so kept


def test_markdown_table_and_arm_order() -> None:
    frame = pd.DataFrame({"a": [1.23456, float("nan")], "b": ["x|y", "z"]})
    assert markdown_table(frame, index=False) == "| a | b |\n|---|---|\n| 1.235 | x\\|y |\n|  | z |\n"
    assert arm_order(["llm", "mix:aao", "gen:obo_dpo", "manual", "gen:baseline", "zzz"]) == [
        "manual", "gen:baseline", "gen:obo_dpo", "mix:aao", "llm", "zzz"
    ]


def test_run_store_skips_a_torn_line_then_cuts_it_away_once(tmp_path: Path) -> None:
    path = tmp_path / "runs.jsonl"
    RunStore(path).add({"fingerprint": "a", "micro_f1": 0.5})
    with path.open("a") as f:
        f.write('{"fingerprint": "b", "micro')
    store = RunStore(path)
    assert store.get("a") == {"fingerprint": "a", "micro_f1": 0.5} and store.get("b") is None
    with pytest.warns(UserWarning, match=r"runs.jsonl:2: removed a torn run record"):
        store.add({"fingerprint": "c", "micro_f1": 0.25})
    assert [json.loads(line)["fingerprint"] for line in path.read_text().splitlines()] == ["a", "c"]


@pytest.mark.parametrize(("row", "field"), [
    ({"fingerprint": "x", "arm": "manual", "micro_f1": "0.5"}, "micro_f1"),
    ({"fingerprint": "x", "arm": "manual", "micro_f1": 0.5,
      "predictions": {"ids": ["t:0"], "gold": ["Other"], "pred": []}}, "differ in length"),
    ({"arm": "manual", "micro_f1": 0.5}, "fingerprint"),
])
def test_a_run_record_of_the_wrong_shape_is_skipped_with_its_line(tmp_path: Path, row: dict, field: str) -> None:
    path = tmp_path / "runs.jsonl"
    RunStore(path, RunRecord).add({"fingerprint": "a", "arm": "manual", "micro_f1": 0.5})
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")
    with pytest.warns(UserWarning, match=rf"runs.jsonl:2: skipped an unreadable run record .*{field}"):
        store = RunStore(path, RunRecord)
    assert store.get("x") is None and store.get("a") is not None


def test_run_store_sees_runs_another_process_finished_later(tmp_path: Path) -> None:
    """Notebooks 04 and 05 may share the store at once: a miss re-reads what was appended since."""
    path = tmp_path / "runs.jsonl"
    mine, other = RunStore(path), RunStore(path)
    assert mine.get("a") is None
    other.add({"fingerprint": "a", "micro_f1": 0.5})
    with path.open("a") as f:
        f.write('{"fingerprint": "b", "micro_f1"')  # still being written
    assert mine.get("a") == {"fingerprint": "a", "micro_f1": 0.5} and mine.get("b") is None
    with path.open("a") as f:
        f.write(": 0.25}\n")
    assert mine.get("b") == {"fingerprint": "b", "micro_f1": 0.25}


def test_run_store_keeps_the_first_record_of_a_fingerprint_and_refuses_a_different_second(tmp_path: Path) -> None:
    """A second line for a fingerprint (an edited file, a forged archive merged by older code) used to win
    silently, being read last; now the first is kept, and the refusal is logged for the runner to print."""
    path = tmp_path / "runs.jsonl"
    RunStore(path).add({"fingerprint": "a", "micro_f1": 0.5})
    with path.open("a") as f:
        f.write(json.dumps({"fingerprint": "a", "micro_f1": 0.99}) + "\n")
    with pytest.warns(UserWarning, match=r"runs.jsonl:2: refused a second, different record for fingerprint a"):
        store = RunStore(path)
    assert store.get("a") == {"fingerprint": "a", "micro_f1": 0.5}
    written = path.read_bytes()
    with pytest.warns(UserWarning, match=r"refused a second, different record for fingerprint a"):
        assert store.add({"fingerprint": "a", "micro_f1": 0.25}) == {"fingerprint": "a", "micro_f1": 0.5}
    assert store.add({"fingerprint": "a", "micro_f1": 0.5}) == {"fingerprint": "a", "micro_f1": 0.5}  # a repeat
    assert path.read_bytes() == written  # neither is written
    assert (tmp_path / "conflicts.log").read_text().count("refused a second") == 2


def test_evaluation_sets_are_stratified_seeded_subsets(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDPO_DATA_DIR", str(data_root))
    prof = load_profile("smoke")
    dev, test = evaluation_sets(prof)
    assert len(dev) == prof.dataset.dev_subsample and len(test) == prof.dataset.test_subsample
    assert {s.relation for s in test} == set(prof.dataset.relations)
    assert evaluation_sets(prof) == (dev, test)
    full_dev, _ = evaluation_sets(load_profile("smoke", {"dataset.dev_subsample": None}))
    assert len(full_dev) > len(dev)


@pytest.mark.slow
def test_run_grid_trains_every_arm_and_resumes(tmp_path: Path) -> None:
    prof = _profile(**{"fewshot.k": [2], "encoder.epochs": 1, "encoder.threads": 1})
    results = _results(tmp_path, prof)
    dev = test = [_s(i, rel, "t") for rel in RELATIONS for i in range(2)]
    first = run_grid(prof, results, dev, test, progress=False)
    trained = {r["arm"] for r in first["runs"]}
    # aao generated nothing: it is left out of the comparison rather than emptying the other arms
    pair = {"gen:obo@pair", "mix:obo@pair", "gen:obo_dpo@pair", "mix:obo_dpo@pair"}
    assert trained == {"manual", "manual-steps", "gen:baseline", "gen:obo", "mix:obo", "gen:obo_dpo", "mix:obo_dpo",
                       *pair}
    assert first["skipped"] == []
    steps = {r["arm"]: r["steps"] for r in first["runs"]}
    assert steps["manual-steps"] == steps["mix:obo_dpo"] > steps["manual"]  # step-matched: the mixed arms' budget
    # obo is the pair's weak arm here too, so its quota is the all-arm one: the same sets, reused, not retrained
    by_arm = {r["arm"]: r for r in first["runs"]}
    for arm in pair:
        base = arm.removesuffix("@pair")
        assert by_arm[arm]["same_run_as"] in by_arm and by_arm[arm]["cached"]  # the first arm with this set
        assert by_arm[arm]["predictions"] == by_arm[base]["predictions"] and by_arm[arm]["fingerprint"] != by_arm[
            base]["fingerprint"]
    assert all(r["cached"] == ("same_run_as" in r) for r in first["runs"])  # trained once per distinct set
    for r in first["runs"]:
        assert 0.0 <= r["micro_f1"] <= 1.0 and r["n_train"] > 0 and r["classifier_seed"] == 1000
    again = run_grid(prof, results, dev, test, progress=False)
    assert all(r["cached"] for r in again["runs"])
    assert [r["micro_f1"] for r in again["runs"]] == [r["micro_f1"] for r in first["runs"]]
    lines = (results.cache / "re_runs.jsonl").read_text().splitlines()
    assert len(lines) == len(first["runs"]) and all(json.loads(line)["fingerprint"] for line in lines)
    # A later call (the plateau's prefixes) whose set equals a stored run's takes it under its own name.
    from redpo.extraction.grid import run_training_sets
    from redpo.extraction.training_sets import arm_training_sets

    later = run_training_sets(prof, results, {(2, 1): {"gen:obo_dpo": arm_training_sets(prof, results, 2, 1)[
        "gen:obo_dpo"]}}, dev, test, progress=False)["runs"]
    assert later[0]["cached"] and later[0]["predictions"] == by_arm["gen:obo_dpo"]["predictions"]
    renamed = run_training_sets(prof, results, {(2, 1): {"plateau:x": arm_training_sets(prof, results, 2, 1)[
        "gen:obo_dpo"]}}, dev, test, progress=False)["runs"][0]
    original = by_arm["gen:obo_dpo"].get("same_run_as", "gen:obo_dpo")
    assert renamed["cached"] and renamed["same_run_as"] == original and renamed["arm"] == "plateau:x"


@pytest.mark.slow
def test_under_a_size_free_step_schedule_manual_steps_is_the_manual_run_reused(tmp_path: Path) -> None:
    prof = _profile(**{"fewshot.k": [2], "encoder.threads": 1, "encoder.eval_steps": 2, "encoder.max_steps": 4,
                       "encoder.warmup_steps": 1})
    results = _results(tmp_path, prof)
    dev = test = [_s(i, rel, "t") for rel in RELATIONS for i in range(2)]
    by_arm = {r["arm"]: r for r in run_grid(prof, results, dev, test, progress=False)["runs"]}
    steps = by_arm["manual-steps"]
    assert steps["cached"] and steps["same_run_as"] == "manual" and steps["predictions"] == by_arm["manual"][
        "predictions"]
    assert by_arm["manual"]["steps"] == by_arm["mix:obo_dpo"]["steps"] == 4  # every set: the same 4 steps


def test_own_quotas_let_each_arm_train_on_what_it_wrote_and_match_the_pair(tmp_path: Path) -> None:
    """``training_sets.quota: own``: an arm that stalled on a relation no longer removes it from the others; the
    primary pair still trains on counts matched relation by relation."""
    prof = _profile(**{"fewshot.k": [2], "training_sets.quota": "own"})
    results = _results(tmp_path, prof)  # obo has one Component-Whole sample, baseline and obo_dpo two
    sets, scopes = arm_training_sets_with_quotas(prof, results, 2, 1)
    counts = {arm: Counter(s.relation for s in sets[f"gen:{arm}"]) for arm in ("baseline", "obo", "obo_dpo")}
    assert counts["baseline"] == counts["obo_dpo"] == {RELATIONS[1]: 2, RELATIONS[2]: 2, "Other": 2}
    assert counts["obo"] == {RELATIONS[1]: 2, RELATIONS[2]: 1, "Other": 2}
    assert Counter(s.relation for s in sets["gen:obo_dpo@pair"]) == counts["obo"]  # matched to obo's counts
    assert set(scopes) == {"own:baseline", "own:obo", "own:obo_dpo", "own:aao", "pair"}
    assert scopes["own:aao"].empty_arms == ["aao"]
    assert set(training_quotas(prof, results)) == {"k2_s1@own:baseline", "k2_s1@own:obo", "k2_s1@own:obo_dpo",
                                                   "k2_s1@own:aao", "k2_s1@pair"}


class _ReversedExecutor:
    """Hands records back in the reverse order of submission, as a cluster may; remembers what was submitted."""

    def __init__(self) -> None:
        self.submitted: list[str] = []

    def run(self, inputs: Any, jobs: Any) -> Any:
        self.submitted += [job.fingerprint for job in jobs]
        for job in reversed(jobs):
            yield job, {"arm": job.arm, "cell": job.cell.name, "micro_f1": len(job.train) / 100, "n_train": len(
                job.train), "predictions": {"ids": ["0"], "gold": ["Other"], "pred": ["Other"]}}


def test_records_arriving_in_any_order_keep_the_grid_order_and_stored_runs_are_not_submitted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from redpo.extraction import grid

    prof = _profile(**{"fewshot.k": [2]})
    results = _results(tmp_path, prof)
    dev = test = [_s(0, RELATIONS[0], "t")]
    executor = _ReversedExecutor()
    monkeypatch.setattr(grid, "executor_for", lambda profile: executor)
    first = run_grid(prof, results, dev, test, progress=False)
    arms = [r["arm"] for r in first["runs"]]
    assert arms.index("manual") < arms.index("gen:baseline") < arms.index("mix:obo_dpo@pair")  # the grid's order
    shared = [r for r in first["runs"] if "same_run_as" in r]
    assert shared and all(r["cached"] for r in shared)  # arms sharing a set waited for its one run
    assert len(executor.submitted) == len(set(executor.submitted)) == len(first["runs"]) - len(shared)
    store = results.cache / "re_runs.jsonl"
    lines = store.read_text().splitlines()
    assert len({json.loads(line)["fingerprint"] for line in lines}) == len(lines) == len(first["runs"])
    kept = [line for line in lines if "same_run_as" in line or json.loads(line)["arm"] != "manual"]
    store.write_text("".join(line + "\n" for line in kept))  # the manual run was never stored
    executor.submitted.clear()
    again = run_grid(prof, results, dev, test, progress=False)
    assert [r["arm"] for r in again["runs"]] == arms
    assert executor.submitted == [next(r["fingerprint"] for r in first["runs"] if r["arm"] == "manual")]


def test_the_plateau_and_the_ladder_train_with_the_profiles_executor() -> None:
    """Notebooks 05 and 06 train through ``run_training_sets`` under profiles of their own (their seeds per split,
    L7's other encoder); each keeps the profile's executor, so ``executor: ray`` reaches their runs too."""
    from redpo.config import derive
    from redpo.ladder.runs import ladder_grid_profile
    from redpo.plateau.runs import plateau_grid_profile

    prof = _profile(**{"executor.num_cpus": 2, "executor.local_cpus": 2, "executor.max_retries": 5,
                       "plateau.seeds_per_split": 1, "ladder.seeds_per_split": 1})
    ladder = ladder_grid_profile(prof)
    stages = [plateau_grid_profile(prof), ladder, derive(ladder, {"encoder.model": prof.ladder.encoder})]
    assert all(stage is not prof and stage.executor == prof.executor for stage in stages)
