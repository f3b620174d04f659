"""The oracle that labels generated samples: its shares on hand cases, and a real (tiny) oracle cached on disk."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from redpo.config import load_profile
from redpo.core.io import ResultsDir, read_json
from redpo.core.relations import get_schema
from redpo.core.sample import RESample, generated_only, is_manual_copy
from redpo.extraction import oracle
from redpo.generation.store import ArmResult

SEMEVAL = get_schema("semeval")


def test_agreement_flips_and_negative_share_on_hand_cases() -> None:
    intended = ["Cause-Effect(e1,e2)"] * 4 + ["Component-Whole(e2,e1)"]
    labelled = ["Cause-Effect(e1,e2)", "Cause-Effect(e2,e1)", "Other", "Message-Topic(e1,e2)",
                "Component-Whole(e2,e1)"]
    assert oracle.correctness(intended, labelled, SEMEVAL) == {
        "n": 5, "oracle_agreement": 0.4, "direction_flip_rate": 0.2, "negative_share": 0.2}
    assert oracle.correctness([], [], SEMEVAL)["oracle_agreement"] is None
    with pytest.raises(ValueError, match="2 intended relations but 1"):
        oracle.correctness(["Other", "Other"], ["Other"], SEMEVAL)


def test_copied_manual_negatives_are_not_judged_as_generated() -> None:
    made = RESample.from_marked("the <e1>a</e1> hit the <e2>b</e2> .", "Other")
    copied = replace(RESample.from_marked("the <e1>c</e1> met the <e2>d</e2> .", "Other"), meta={"source": "manual"})
    assert generated_only([made, copied]) == [made]
    assert is_manual_copy(copied) and not is_manual_copy(made)


def test_a_tiny_oracle_is_trained_once_scored_and_reloaded_with_the_same_labels(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDPO_DATA_DIR", str(data_root))
    prof = load_profile("smoke", {"oracle.train_subsample": 60})
    results = ResultsDir(prof, root=tmp_path)
    first = oracle.ensure_oracle(prof, results)
    assert first.summary["n_train"] == 60 and 0 <= first.summary["test_micro_f1"] <= 1
    samples = [RESample.from_marked(f"the <e1>x{i}</e1> caused the <e2>y{i}</e2> .", "Cause-Effect(e1,e2)")
               for i in range(6)]
    negative = RESample.from_marked("the <e1>cup</e1> is near the <e2>door</e2> .", "Other")
    copied = replace(negative, meta={"source": "manual"})
    arm = ArmResult("obo", "obo", {"Cause-Effect(e1,e2)": samples, "Other": [copied]}, {})
    labels = oracle.label_arms(first, {("obo", 4, 1): arm}, SEMEVAL, gold={(4, 1): [*samples[:2], negative]})
    # the arm's copy of the manual negative is not judged, so the gold reference leaves that label out too
    assert list(labels["arm"]) == ["obo"] * 6 + ["gold"] * 2
    assert set(labels["relation"]) == {"Cause-Effect(e1,e2)"}
    again = oracle.ensure_oracle(prof, results)  # from cache/oracle/: nothing retrained
    assert again.summary == first.summary and again.label(samples) == first.label(samples)
    path = oracle.save_correctness(results, "correctness_icl", again, labels, SEMEVAL)
    saved = read_json(path)
    assert saved["oracle"]["test_micro_f1"] == first.summary["test_micro_f1"]
    assert saved["arms"]["obo"]["n"] == 6 and saved["arms"]["gold"]["n"] == 2
    assert len((results.metrics / "correctness_icl_labels.jsonl").read_text().splitlines()) == 8


def test_a_replaying_folder_labels_from_the_committed_run(tmp_path: Path) -> None:
    """No classifier is trained in a replay: the packed run's labels answer, and an unknown sample is a miss."""
    from redpo.core.io import write_json
    from redpo.core.replay import ReplayMiss

    results = ResultsDir("p", tmp_path)
    known = RESample.from_marked("the <e1>a</e1> caused the <e2>b</e2> .", "Cause-Effect(e1,e2)")
    other = RESample.from_marked("the <e1>c</e1> holds the <e2>d</e2> .", "Content-Container(e2,e1)")
    (results.metrics / "correctness_icl_labels.jsonl").write_text(
        json.dumps({"arm": "obo", "marked": known.to_marked(), "oracle": "Other", "relation": known.relation}) + "\n")
    write_json(results.metrics / "correctness_icl.json", {"oracle": {"test_micro_f1": 0.8}, "arms": {}})
    judge = oracle.committed_oracle(results)
    assert judge.label([known]) == ["Other"] and judge.summary == {"test_micro_f1": 0.8}
    with pytest.raises(ReplayMiss, match="the oracle's label of"):
        judge.label([known, other])


def test_the_oracle_never_takes_the_few_shot_step_schedule_or_bf16() -> None:
    """The step schedule is sized for few-shot sets; on the whole training split it would stop the oracle early, and
    agreement shares would then differ between runs by their oracles, not their samples."""
    stepped = load_profile("cpu-full-v2")
    cfg = oracle.oracle_encoder(stepped)
    assert (cfg.eval_steps, cfg.min_steps, cfg.max_steps, cfg.warmup_steps) == (None, 0, None, None)
    assert (cfg.epochs, cfg.learning_rate, cfg.precision) == (stepped.oracle.epochs, stepped.oracle.learning_rate,
                                                              "fp32")
    assert cfg.batch_size == stepped.encoder.batch_size
    train = [RESample(tokens=("a", "b"), head=(0, 1), tail=(1, 2), relation="Other")]
    # the second edition's oracle is the first edition's: they differ only in the RE schedule and precision
    first = load_profile("cpu-full")
    assert oracle.oracle_fingerprint(stepped, train, train) == oracle.oracle_fingerprint(first, train, train)
    other_lr = load_profile("cpu-full-v2", {"oracle.learning_rate": 1e-4})
    assert oracle.oracle_fingerprint(other_lr, train, train) != oracle.oracle_fingerprint(stepped, train, train)


def test_the_committed_first_editions_oracle_keeps_its_fingerprint(data_root: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from redpo.extraction.training_sets import evaluation_sets

    monkeypatch.setenv("REDPO_DATA_DIR", str(data_root))
    profile = load_profile("cpu-full")
    dev, _ = evaluation_sets(profile)
    saved = Path(__file__).resolve().parent.parent / "results" / "cpu-full" / "metrics" / "correctness_icl.json"
    committed = read_json(saved)["oracle"]
    assert oracle.oracle_fingerprint(profile, oracle._train_set(profile), dev) == committed["fingerprint"]
