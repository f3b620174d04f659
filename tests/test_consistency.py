"""The consistency filter (beyond the paper): a judge's verdicts reject, refill and never reach the demonstrations;
the judge is a validated profile field; the arm's record names its judge; the paper's arms and sets are untouched.

Loop tests use the deterministic fake backend of ``test_generation_loops`` and a scripted judge; the slow test at
the end trains the real ``kshot`` judge on the smoke profile's tiny models and runs the arm end to end."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from test_generation_loops import RELATIONS, FakeBackend, profile, prompts_of, run

from redpo.config import ConfigError, load_profile
from redpo.core.io import ResultsDir, read_json, write_samples
from redpo.core.replay import ReplayMiss
from redpo.core.sample import RESample, generated_only
from redpo.data.overview import write_kshot_table
from redpo.data.splits import generation_splits, load_profile_kshot
from redpo.extraction import consistency
from redpo.extraction.grid import run_training_sets
from redpo.extraction.training_sets import arm_training_sets, evaluation_sets, first_per_relation
from redpo.generation.arms import call_cache_path, judge_lines, make_generator, prepare_generator, run_arms
from redpo.generation.judge import INCONSISTENT, Judge
from redpo.generation.specs import CONSISTENT_ARMS, MIXED_ARMS, paper_twin
from redpo.generation.store import arm_paths, save_arm


class ScriptedJudge:
    """Judges a sample as another relation when its head is in ``disputed``, else as the relation it was written
    for; remembers every batch it was asked."""

    def __init__(self, disputed: Sequence[str] = ()) -> None:
        self.disputed = set(disputed)
        self.asked: list[list[str]] = []

    def label(self, samples: Sequence[RESample]) -> list[str]:
        self.asked.append([s.head_name for s in samples])
        return [_other(s.relation) if s.head_name in self.disputed else s.relation for s in samples]

    def judge(self, fingerprint: str = "f" * 64) -> Judge:
        return Judge("scripted", fingerprint, self.label)


def _other(relation: str) -> str:
    return RELATIONS[(RELATIONS.index(relation) + 1) % len(RELATIONS)]


def _marked_heads(prompt: str) -> set[str]:
    return {part.split("</e1>")[0] for part in prompt.split("<e1>")[1:]}


# ---- the loop --------------------------------------------------------------------------------------------
def test_a_disputed_sample_is_rejected_never_shown_again_and_its_relation_refills() -> None:
    disputed = ("alpha4", "alpha5", "alpha9")  # two first-round samples and one of the second round
    scripted, backend = ScriptedJudge(disputed), FakeBackend()
    prof = profile(**{"generation.n_per_relation": 3, "generation.max_attempts": 6})
    result = run("obo_consistent", prof, backend, judge=scripted.judge())
    kept = {s.head_name for samples in result.samples.values() for s in samples}
    assert kept and not kept & set(disputed)
    assert all(len(result.samples[rel]) == 3 and result.stats[rel].stop == "n_reached" for rel in RELATIONS)
    for rel in RELATIONS:  # a rejected sample never becomes a demonstration of a later call
        assert not any(_marked_heads(p) & set(disputed) for p in prompts_of(backend, rel))
    rejected = [r for rec in result.records for r in rec.rejects if r["reason"] == INCONSISTENT]
    assert {r["text"].split("</e1>")[0].split("<e1>")[1] for r in rejected} == set(disputed)
    by_relation = Counter(rec.relation for rec in result.records for r in rec.rejects if r["reason"] == INCONSISTENT)
    assert sum(by_relation.values()) >= len(disputed)
    for rel in RELATIONS:  # each rejection is counted under its reason and cost one more attempt (OBO)
        assert result.stats[rel].rejects[INCONSISTENT] == by_relation[rel]
        assert result.stats[rel].attempts == 3 + sum(result.stats[rel].rejects.values())
    assert all(r["judged"] != rec.relation for rec in result.records for r in rec.rejects
               if r["reason"] == INCONSISTENT)
    judged = [s.head_name for samples in result.samples.values() for s in samples]
    judged += [r["text"].split("</e1>")[0].split("<e1>")[1] for r in rejected]
    assert Counter(h for batch in scripted.asked for h in batch) == Counter(judged)  # every valid sample, once
    assert len(scripted.asked) <= result.info["steps"]  # in one batch per round (none when a round kept nothing)
    assert result.info["judge"]["fingerprint"] == "f" * 64

    plain = run("obo", prof, FakeBackend())  # the same replies in the paper's arm: every valid sample kept
    assert set(disputed) <= {s.head_name for samples in plain.samples.values() for s in samples}


def test_a_relation_its_judge_never_accepts_stops_at_the_attempt_budget() -> None:
    class Never(ScriptedJudge):
        def label(self, samples: Sequence[RESample]) -> list[str]:
            return [_other(s.relation) if s.relation == RELATIONS[1] else s.relation for s in samples]

    result = run("obo_consistent", profile(), FakeBackend(), judge=Never().judge())  # n=2, max_attempts=4
    stuck = result.stats[RELATIONS[1]]
    assert (stuck.attempts, stuck.valid, stuck.stop, stuck.rejects[INCONSISTENT]) == (4, 0, "budget", 4)
    assert result.stats[RELATIONS[0]].stop == "n_reached"


def test_a_consistent_arm_needs_a_judge_and_a_paper_arm_refuses_one() -> None:
    with pytest.raises(ValueError, match="no judge was given"):
        run("obo_consistent", profile(), FakeBackend())
    for arm in ("obo", "aao", "baseline"):
        with pytest.raises(ValueError, match="paper arm"):
            run(arm, profile(), FakeBackend(), judge=ScriptedJudge().judge())
    assert CONSISTENT_ARMS == ("obo_consistent",) and paper_twin("obo_consistent") == "obo"
    assert "obo_consistent" not in MIXED_ARMS


# ---- identity ------------------------------------------------------------------------------------------
def test_the_arm_records_its_judge_and_the_filter_changes_no_call(tmp_path: Path) -> None:
    """A judge that agrees with everything asks exactly obo's calls (the same cache keys, so the consistent arm
    reuses them) and keeps obo's samples; the judge's fingerprint is in the arm's info and the manifest's record
    of the arm, and a paper arm's record names no judge."""
    prof = profile(**{"generation.n_per_relation": 3})
    results = ResultsDir(prof, root=tmp_path)
    plain = run("obo", prof, FakeBackend(), k=4, kshot_seed=1)
    agreed = run("obo_consistent", prof, FakeBackend(), judge=ScriptedJudge().judge("a" * 64), k=4, kshot_seed=1)
    assert [r.key for r in agreed.records] == [r.key for r in plain.records]
    assert {r: [s.to_marked() for s in v] for r, v in agreed.samples.items()} == \
        {r: [s.to_marked() for s in v] for r, v in plain.samples.items()}
    other = run("obo_consistent", prof, FakeBackend(), judge=ScriptedJudge().judge("b" * 64), k=4, kshot_seed=1)
    assert agreed.info["judge"] != other.info["judge"] and "judge" not in plain.info
    save_arm(plain, results)
    save_arm(agreed, results)
    recorded = read_json(results.manifest)["arms"]
    assert recorded["obo_consistent_k4_s1"]["judge"]["fingerprint"] == "a" * 64
    assert "judge" not in recorded["obo_k4_s1"]
    assert recorded["obo_consistent_k4_s1"]["name"] == recorded["obo_k4_s1"]["name"]  # the same generator


def test_the_kshot_judge_fingerprint_follows_its_data_seed_and_encoder_not_its_threads() -> None:
    prof = load_profile("smoke")
    kshot = [RESample.from_marked("the <e1>storm</e1> caused <e2>damage</e2> .", RELATIONS[1])]
    dev = [RESample.from_marked("a <e1>spark</e1> started the <e2>fire</e2> .", RELATIONS[1])]
    key = consistency.kshot_fingerprint(prof, kshot, dev, 1000)
    assert consistency.kshot_fingerprint(load_profile("smoke", {"encoder.threads": 2}), kshot, dev, 1000) == key
    assert consistency.kshot_fingerprint(prof, kshot, dev, 2000) != key
    assert consistency.kshot_fingerprint(prof, dev, dev, 1000) != key
    assert consistency.kshot_fingerprint(load_profile("smoke", {"encoder.epochs": 5}), kshot, dev, 1000) != key
    assert consistency.generator_fingerprint(prof, kshot, "m:1") != consistency.generator_fingerprint(prof, kshot,
                                                                                                       "m:2")
    assert consistency.judge_seed(prof, 2) == 2000  # the split's first grid cell, as its manual run
    assert consistency.judge_seed(load_profile("smoke", {"consistency.seed": 7}), 2) == 7


def test_a_replaying_folder_judges_from_the_committed_arm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prof = profile(**{"generation.n_per_relation": 3, "generation.max_attempts": 6})
    results = ResultsDir(prof, root=tmp_path)
    first = run("obo_consistent", prof, FakeBackend(), judge=ScriptedJudge(("alpha4", "alpha9")).judge(),
                k=4, kshot_seed=1)
    save_arm(first, results)
    rejected = first.reject_counts()[INCONSISTENT]
    assert judge_lines({("obo_consistent", 4, 1): first}) == [  # notebook 02's line per consistent arm and split
        f"obo_consistent k4_s1: judge scripted (ffffffffffff); {rejected} samples rejected as inconsistent, "
        f"{len(generated_only(first.all_samples()))} kept, 0 of 4 relations short"]
    assert judge_lines({("obo", 4, 1): run("obo", prof, FakeBackend(), k=4, kshot_seed=1)}) == []
    committed = consistency.committed_judge(results, "obo_consistent", 4, 1)
    assert committed.identity() == first.info["judge"]
    again = run("obo_consistent", prof, FakeBackend(), judge=committed, k=4, kshot_seed=1)
    assert again.records == first.records and again.samples == first.samples
    with pytest.raises(ReplayMiss, match="never computed"):
        committed.label([RESample.from_marked("the <e1>x</e1> met the <e2>y</e2> .", RELATIONS[1])])
    monkeypatch.setattr(consistency, "replay_models", lambda _results: object())  # the folder now replays
    assert consistency.split_judges(prof, results)("obo_consistent", 4, 1).identity() == first.info["judge"]


# ---- the profile ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("value", "needle"), [("oracle", "a K-shot user does not have"),
                                               ("bogus", "'kshot' or 'generator'")])
def test_a_bad_judge_is_one_error_line_naming_the_key(value: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_profile("smoke", {"consistency.judge": value})
    assert "consistency.judge" in str(err.value) and needle in str(err.value) and "\n" not in str(err.value)
    assert load_profile("smoke", {"consistency.judge": "generator"}).consistency.judge == "generator"


@pytest.mark.parametrize("override", [{"dpo.arms": ["obo_consistent"]}, {"plateau.arms": ["obo_consistent"]},
                                      {"ladder.arm": "obo_consistent"}])
def test_stages_that_build_no_judge_refuse_the_consistent_arm(override: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match=next(iter(override)).replace(".", r"\.")):
        load_profile("smoke", {"generation.arms": ["obo", "obo_consistent"], **override})


# ---- notebook 04's training sets -----------------------------------------------------------------------
def _write_arm(results: ResultsDir, arm: str, counts: dict[str, int], k: int, seed: int) -> None:
    samples = [replace(RESample.from_marked(f"the <e1>{arm}{rel[:4]}{i}</e1> met the <e2>b{i}</e2> .", rel),
                       meta={"arm": arm, "source": "generated"})
               for rel, n in counts.items() for i in range(n)]
    write_samples(arm_paths(results, arm, k, seed)["samples"], samples)


def test_a_consistent_arm_trains_matched_with_its_twin_and_leaves_the_paper_sets_alone(
        data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDPO_DATA_DIR", str(data_root))
    prof = load_profile("smoke")
    results = ResultsDir(prof, root=tmp_path)
    write_kshot_table(prof, results)
    positives = RELATIONS[1:]
    _write_arm(results, "obo", dict.fromkeys(positives, 4), 4, 1)
    _write_arm(results, "aao", {**dict.fromkeys(positives, 4), positives[0]: 3}, 4, 1)
    before = arm_training_sets(prof, results, 4, 1)
    _write_arm(results, "obo_consistent", {**dict.fromkeys(positives, 4), positives[1]: 2}, 4, 1)
    after = arm_training_sets(prof, results, 4, 1)
    assert {name: s for name, s in after.items() if "obo_consistent" not in name} == before
    assert {"gen:obo_consistent", "gen:obo@obo_consistent"} <= set(after)
    assert not any(name.startswith("mix:obo_consistent") for name in after)

    def counts(samples: list[RESample]) -> Counter[str]:
        return Counter(s.relation for s in samples)

    assert counts(after["gen:obo_consistent"]) == counts(after["gen:obo@obo_consistent"])
    assert counts(after["gen:obo_consistent"])[positives[1]] == 2 and counts(after["gen:obo@obo_consistent"])[
        positives[0]] == 4  # matched with obo alone: aao's shortfall is not the consistent arm's
    manual = load_profile_kshot(prof, results.kshot, 4, 1)
    assert first_per_relation([s for s in manual if s.relation == "Other"], 4) == [
        s for s in after["gen:obo_consistent"] if s.relation == "Other"]  # the manual negatives, as every arm


# ---- end to end on the smoke profile's tiny models -------------------------------------------------------
@pytest.mark.slow  # trains the K-shot judge (tiny BERT), generates with the fitted tiny Llama, trains two RE runs
def test_on_smoke_the_kshot_judge_trains_once_filters_a_real_run_and_its_sets_train(
        data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDPO_DATA_DIR", str(data_root))
    prof = load_profile("smoke", {"generator.backend": "transformers"})  # in process: the same fitted model
    results = ResultsDir(prof, root=tmp_path)
    write_kshot_table(prof, results)
    k, seed = generation_splits(prof)[0]
    generator = make_generator(prof, prepare_generator(prof), cache=call_cache_path(results))
    judges = consistency.split_judges(prof, results, progress=False)
    out = run_arms(prof, results, ["obo", "obo_consistent"], generator=generator, judges=judges, progress=False)
    arm, judge = out[("obo_consistent", k, seed)], judges("obo_consistent", k, seed)
    assert judge.kind == "kshot" and (results.cache / "judge" / judge.fingerprint[:16] / "judge.json").is_file()
    assert arm.info["judge"] == judge.identity()
    assert judge.summary["n_train"] == len(load_profile_kshot(prof, results.kshot, k, seed))
    kept = generated_only(arm.all_samples())
    rejected = [RESample.from_marked(r["text"], rec.relation) for rec in arm.records for r in rec.rejects
                if r["reason"] == INCONSISTENT]
    assert judge.label(kept) == [s.relation for s in kept]  # every kept sample is one the judge agrees with
    assert all(y != s.relation for s, y in zip(rejected, judge.label(rejected), strict=True))
    assert arm.reject_counts()[INCONSISTENT] == len(rejected)

    def no_training(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the judge was trained again although the cache holds it")

    monkeypatch.setattr(consistency, "train_re_model", no_training)
    again = consistency.split_judges(prof, results, progress=False)("obo_consistent", k, seed)
    assert again.identity() == judge.identity() and again.label(kept + rejected) == judge.label(kept + rejected)

    sets = arm_training_sets(prof, results, k, seed)
    assert ("gen:obo_consistent" in sets) == bool(kept)
    judged_sets = {name: s for name, s in sets.items() if name.endswith("obo_consistent")}
    dev, test = evaluation_sets(prof)
    runs = run_training_sets(prof, results, {(k, seed): judged_sets}, dev, test, progress=False)["runs"]
    assert {r["arm"] for r in runs} == set(judged_sets) and all(0 <= r["micro_f1"] <= 1 for r in runs)
