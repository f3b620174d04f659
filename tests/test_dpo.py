"""DPO pairs (invariants on real SemEval data) and a tiny real DPO run (TRL + PEFT on a tiny Llama)."""

from __future__ import annotations

import hashlib
import itertools
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from datasets import Dataset

from redpo.config import load_profile
from redpo.core.io import ResultsDir
from redpo.core.relations import get_schema
from redpo.core.sample import RESample
from redpo.data.splits import kshot_sample, load_split, profile_schema
from redpo.dpo.halves import HALVES, RelationHalves, leakage_report, load_halves, pair_samples, split_relations
from redpo.dpo.pairs import KINDS, DPOPairs, allocate_kinds, build_pairs, hold_out, load_pairs, save_pairs
from redpo.generation import prompts
from redpo.generation.parse import exact_key, near_copy_score

PAIRS_PER_RELATION = 7


@pytest.fixture(scope="module")
def built(data_root: Path) -> dict[str, Any]:
    """Pairs for the smoke relations, 7 per relation (uneven on purpose: 7 = 3 + 2 + 2), chains of 3."""
    mp = pytest.MonkeyPatch()
    mp.setenv("REDPO_DATA_DIR", str(data_root))
    profile = load_profile("smoke", {"dpo.pairs_per_relation": PAIRS_PER_RELATION, "dpo.chain_length": 3})
    schema = profile_schema(profile)
    train = load_split(profile, "train")
    kshot = kshot_sample(train, 4, 1)
    pairs = build_pairs(profile, schema, train, kshot, lambda m: prompts.render(m, None))
    yield {"profile": profile, "schema": schema, "train": train, "kshot": kshot, "pairs": pairs}
    mp.undo()


def _rows(pairs: DPOPairs) -> list[dict[str, Any]]:
    return [row for ds in pairs.datasets.values() for row in ds]


def _sample(text: str, relation: str) -> RESample:
    return RESample.from_marked(text, relation)


def _mix(wrong: float, near: float, exact: float) -> dict[str, float]:
    return {"wrong_relation": wrong, "near_copy": near, "exact_copy": exact, "mirror_direction": 0}


@pytest.mark.parametrize(
    ("n", "mix", "expected"),
    [
        (3, _mix(1, 1, 1), _mix(1, 1, 1)),
        (7, _mix(1, 1, 1), _mix(3, 2, 2)),
        (6, _mix(2, 1, 0), _mix(4, 2, 0)),
        (5, {"near_copy": 1}, _mix(0, 5, 0)),
        (4, {"wrong_relation": 1, "mirror_direction": 1}, {**_mix(2, 0, 0), "mirror_direction": 2}),
    ],
)
def test_kind_allocation_is_exact_largest_remainder(n: int, mix: dict, expected: dict) -> None:
    assert allocate_kinds(n, mix) == expected


def test_halves_are_seeded_disjoint_and_place_the_negative_label_once() -> None:
    labels = [f"r{i}" for i in range(9)] + ["Other"]
    a, b = split_relations(labels, 3, "Other"), split_relations(labels, 3, "Other")
    assert a == b
    assert set(a.halves["A"]).isdisjoint(a.halves["B"])
    assert sorted(a.halves["A"] + a.halves["B"]) == sorted(labels)
    assert len(a.halves["A"]) == len(a.halves["B"]) == 5
    assert sum("Other" in rels for rels in a.halves.values()) == 1
    assert a.generate_relations("A") == a.train_relations("B")
    assert split_relations(labels, 4, "Other") != a


def test_both_directions_of_a_type_share_a_half_and_fewrel_style_labels_split_evenly(data_root: Path) -> None:
    semeval = get_schema("semeval")
    for seed in range(10):
        halves = split_relations(semeval.labels, seed, "Other", semeval.undirected)
        for label in semeval.labels:
            mirror = label.replace("(e1,e2)", "(e2,e1)") if "(e1,e2)" in label else label.replace("(e2,e1)", "(e1,e2)")
            assert halves.half_of(label) == halves.half_of(mirror), (seed, label)
        assert abs(len(halves.halves["A"]) - len(halves.halves["B"])) <= 1  # 9 types of 2 labels + Other
        assert halves.to_json()["negative_label_half"] in HALVES
    fewrel = get_schema("fewrel", data_root / "fewrel")  # no direction suffixes: one label per type, as before
    halves = split_relations(fewrel.labels, 0, None, fewrel.undirected)
    assert len(halves.halves["A"]) - len(halves.halves["B"]) in (0, 1)
    assert halves.generate_types("A") == set(halves.halves["B"])


def test_leakage_check_refuses_gold_of_the_other_direction_of_a_generated_type() -> None:
    """A label-level split puts Cause-Effect(e1,e2) in A and (e2,e1) in B; a pair for A showing gold (e2,e1)
    text leaks the very type A generates for, even though the label differs."""
    semeval = get_schema("semeval")
    forward, backward = "Cause-Effect(e1,e2)", "Cause-Effect(e2,e1)"
    halves = RelationHalves({"A": (forward, "Other"), "B": (backward, "Message-Topic(e1,e2)")}, 0, "Other",
                            {lab: semeval.undirected(lab) for lab in semeval.labels})
    gold = RESample(("the", "storm", "caused", "the", "flood"), (4, 5), (1, 2), backward)
    chosen = RESample(("the", "fire", "made", "smoke"), (1, 2), (3, 4), forward)
    row = {"relation": forward, "rejected_source_relation": forward, "demos": [gold.to_marked()],
           "chosen_marked": chosen.to_marked(), "rejected_marked": chosen.to_marked()}
    pairs = DPOPairs(halves, {"A": Dataset.from_list([row]), "B": Dataset.from_list([])})
    report = leakage_report(pairs.halves, pairs.datasets, [gold, chosen], [])
    assert not report["ok"] and report["adapters"]["A"]["leaks"][0]["row"] == 0
    assert report["adapters"]["A"]["foreign_relation_rows"] == [0]  # A's own label is of a type A generates


def test_chosen_is_an_unseen_gold_train_sample_of_the_target_relation(built: dict) -> None:
    gold = {(s.relation, exact_key(s)) for s in built["train"]}
    kshot = {exact_key(s) for s in built["kshot"]}
    rows = _rows(built["pairs"])
    assert rows
    for row in rows:
        chosen = _sample(row["chosen_marked"], row["relation"])
        assert row["chosen"] == prompts.demo_text(chosen, built["schema"])
        assert (row["relation"], exact_key(chosen)) in gold
        assert exact_key(chosen) not in kshot, "K-shot samples must never be chosen"
        assert exact_key(chosen) not in {exact_key(_sample(d, row["relation"])) for d in row["demos"]}
        assert row["chosen"] != row["rejected"]
        assert prompts.DISSIMILARITY_INSTRUCTION_OBO in row["prompt"]
        assert prompts.OBO_INSTRUCTION.format(relation=row["relation"]) in row["prompt"]


def test_kind_proportions_per_relation_are_as_configured(built: dict) -> None:
    expected = allocate_kinds(PAIRS_PER_RELATION, built["profile"].dpo.kind_mix)
    per_relation: dict[str, Counter] = {}
    for row in _rows(built["pairs"]):
        per_relation.setdefault(row["relation"], Counter())[row["kind"]] += 1
    assert set(per_relation) == set(built["profile"].dataset.relations)
    for counts in per_relation.values():
        assert {k: counts.get(k, 0) for k in KINDS} == expected


def test_obo_chaining_appends_each_chosen_to_the_next_prompt(built: dict) -> None:
    chains: dict[tuple[str, int], list[dict]] = {}
    for row in _rows(built["pairs"]):
        chains.setdefault((row["relation"], row["chain"]), []).append(row)
    assert any(len(c) == 3 for c in chains.values()), "chain_length 3 should give 3-step chains"
    for chain in chains.values():
        chain.sort(key=lambda r: r["step"])
        assert [r["step"] for r in chain] == list(range(len(chain)))
        for prev, nxt in itertools.pairwise(chain):
            assert nxt["n_demos"] == prev["n_demos"] + 1 == len(nxt["demos"])
            assert nxt["demos"] == [*prev["demos"], prev["chosen_marked"]]
            assert f"{len(nxt['demos'])}. {prev['chosen']}" in nxt["prompt"]


def test_rejected_kinds_are_what_they_claim(built: dict) -> None:
    by_key = {exact_key(s): s.relation for s in built["train"]}
    seen = Counter()
    for row in _rows(built["pairs"]):
        rel, kind = row["relation"], row["kind"]
        rejected = _sample(row["rejected_marked"], rel)
        demos = [_sample(d, rel) for d in row["demos"]]
        demo_keys = {exact_key(d) for d in demos}
        seen[kind] += 1
        if kind == "exact_copy":
            assert row["rejected_marked"] in row["demos"]
        elif kind == "near_copy":
            assert exact_key(rejected) not in demo_keys, "a near copy must not be an exact copy"
            assert near_copy_score(rejected, demos) >= built["profile"].generation.near_copy_threshold
            assert all(
                (rejected.head_name, rejected.tail_name) != (d.head_name, d.tail_name) for d in demos
            ), "the entities must be replaced"
        else:
            assert row["rejected_source_relation"] != rel
            assert by_key[exact_key(rejected)] == row["rejected_source_relation"], "a gold sample of another relation"
            assert row["rejected"] == prompts.demo_text(rejected, built["schema"]), "shown in the target's format"
    assert set(seen) == {k for k in KINDS if built["profile"].dpo.kind_mix.get(k)}  # the paper's three


def test_no_gold_sample_crosses_halves(built: dict) -> None:
    pairs, train, kshot = built["pairs"], built["train"], built["kshot"]
    report = leakage_report(pairs.halves, pairs.datasets, train, kshot)
    assert report["ok"], report
    for adapter in HALVES:
        own = set(pairs.halves.train_relations(adapter))
        forbidden = {exact_key(s) for s in train if s.relation not in own}
        for row in pairs.datasets[adapter]:
            assert row["relation"] in own and row["rejected_source_relation"] in own
            assert not {exact_key(s) for s in pair_samples(row)} & forbidden


def test_leakage_check_catches_a_planted_leak(built: dict) -> None:
    pairs, train = built["pairs"], built["train"]
    generates = set(pairs.halves.generate_relations("A"))
    foreign = next(s for s in train if s.relation in generates)
    rows = list(pairs.datasets["A"])
    rows[0] = {**rows[0], "demos": [*rows[0]["demos"], foreign.to_marked()]}
    planted = DPOPairs(pairs.halves, {**pairs.datasets, "A": Dataset.from_list(rows)})
    report = leakage_report(planted.halves, planted.datasets, train, built["kshot"])
    assert not report["ok"]
    assert report["adapters"]["A"]["leaks"][0]["row"] == 0


def test_pairs_round_trip_through_the_results_folder(built: dict, results_tmp: Path) -> None:
    results = ResultsDir(built["profile"])
    paths = save_pairs(built["pairs"], results)
    assert paths["A"].name == "pairs_A.jsonl"
    for half in HALVES:
        back = load_pairs(results, half)
        assert back.to_list() == built["pairs"].datasets[half].to_list()
        assert {"prompt", "chosen", "rejected", "kind", "relation", "half"} <= set(back.column_names)
    assert load_halves(results).halves == built["pairs"].halves.halves


def test_tiny_dpo_run_moves_the_lora_weights_and_lowers_the_loss(tmp_path: Path) -> None:
    """A trivially separable preference (always 'yes yes', never 'no no'): DPO must learn it in a few steps."""
    from safetensors.torch import load_file

    from redpo.dpo.evaluate import evaluate_held_out
    from redpo.dpo.train import LOG_NAME, train_adapter

    profile = load_profile("smoke", {
        "generator.fit.steps": 0,
        "generator.model": "tiny-random-llama",
        "dpo.max_steps": 10,
        "dpo.batch_size": 4,
        "dpo.learning_rate": 5.0e-3,
        "dpo.max_length": 64,
    })
    pairs = Dataset.from_list([
        {"prompt": f"<|im_start|>user\nquestion {i}<|im_end|>\n<|im_start|>assistant\n",
         "chosen": "yes yes yes", "rejected": "no no no"}
        for i in range(16)
    ])
    out = tmp_path / "adapter"
    log = train_adapter(profile, pairs, out, progress=False)
    losses = [row["loss"] for row in log["history"]]
    assert log["steps"] == 10 and len(losses) == 10
    assert losses[-1] < losses[0] - 0.05, losses
    assert log["history"][-1]["rewards/accuracies"] == 1.0
    assert "held_out" not in log  # measured on the saved adapter, below
    held = evaluate_held_out(profile, hold_out(pairs, profile.dpo.held_out, profile.seed)[1], out)
    assert held["pairs"] == 2 and held["reward_accuracy"] == 1.0 and held["reward_margin"] > 0  # 10% of 16
    assert held["adapter_sha256"] == log["adapter_sha256"]
    # A mean over pairs, not over batches of dpo.batch_size (4): one reversed pair of 5 is 0.8 (TRL's mean of
    # batch means would give (0.75 + 1) / 2 = 0.875).
    reversed_first = Dataset.from_list([{**pairs[0], "chosen": "no no no", "rejected": "yes yes yes"}]
                                       + [pairs[i] for i in range(1, 5)])
    assert evaluate_held_out(profile, reversed_first, out)["reward_accuracy"] == pytest.approx(0.8)
    weights = load_file(out / "adapter_model.safetensors")
    lora_b = [t for name, t in weights.items() if "lora_B" in name]
    assert lora_b and any(t.abs().sum() > 0 for t in lora_b), "LoRA B starts at zero; training must move it"
    assert json.loads((out / LOG_NAME).read_text())["adapter_sha256"] == log["adapter_sha256"]


def test_hold_out_takes_whole_chains_seeded_and_always_leaves_one_to_train() -> None:
    rows = [{"relation": rel, "chain": c, "step": s, "prompt": f"{rel}{c}{s}", "chosen": "x", "rejected": "y"}
            for rel in ("r1", "r2") for c in range(3) for s in range(4)]
    pairs = Dataset.from_list(rows)
    train, held = hold_out(pairs, 0.1, seed=0)
    assert len(train) + len(held) == 24 and len(held) == 4  # one whole chain: 4 pairs >= 10% of 24
    chains = lambda ds: {(r["relation"], r["chain"]) for r in ds}  # noqa: E731
    assert chains(train).isdisjoint(chains(held))
    assert hold_out(pairs, 0.1, seed=0)[1].to_list() == held.to_list()  # seeded
    assert len(hold_out(pairs, 0.0, seed=0)[1]) == 0
    one_chain = Dataset.from_list(rows[:4])
    assert len(hold_out(one_chain, 0.4, seed=0)[0]) == 4  # the only chain trains


def test_a_killed_dpo_training_resumes_from_its_last_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from trl import DPOTrainer

    from redpo.dpo import train as dpo_train

    profile = load_profile("smoke", {"generator.fit.steps": 0, "generator.model": "tiny-random-llama",
                                     "dpo.max_steps": 4, "dpo.checkpoint_steps": 2, "dpo.batch_size": 2,
                                     "dpo.held_out": 0.0, "dpo.max_length": 64})
    pairs = Dataset.from_list([{"prompt": f"question {i}\n", "chosen": "yes yes", "rejected": "no no"}
                               for i in range(8)])
    out, stamp = tmp_path / "A", "run-1"
    original, calls = DPOTrainer.training_step, {"n": 0}

    def killed_in_step_3(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # after the step-2 checkpoint
        return original(self, *args, **kwargs)

    monkeypatch.setattr(DPOTrainer, "training_step", killed_in_step_3)
    with pytest.raises(KeyboardInterrupt):
        dpo_train.train_adapter(profile, pairs, out, progress=False, resume_from=dpo_train.last_checkpoint(out, stamp))
    monkeypatch.setattr(DPOTrainer, "training_step", original)
    other = tmp_path / "other"
    shutil.copytree(out, other)
    assert dpo_train.last_checkpoint(other, "another-run") is None  # another run's checkpoints are deleted
    resume = dpo_train.last_checkpoint(out, stamp)
    assert resume is not None and Path(resume).name == "checkpoint-2"
    reference = {"batches": 0}
    counted = DPOTrainer.compute_ref_log_probs

    def count(self: Any, *args: Any, **kwargs: Any) -> Any:
        reference["batches"] += 1
        return counted(self, *args, **kwargs)

    monkeypatch.setattr(DPOTrainer, "compute_ref_log_probs", count)
    log = dpo_train.train_adapter(profile, pairs, out, progress=False, resume_from=resume)
    assert log["steps"] == 4 and log["resumed_from"] == "checkpoint-2"
    assert reference["batches"] == 0  # the killed run's precomputed reference log-probs were kept, not recomputed
    assert not dpo_train.checkpoint_dir(out).exists() and (out / "adapter_model.safetensors").is_file()


def test_a_finished_adapter_is_reused_without_leftover_checkpoints_in_its_hash(tmp_path: Path) -> None:
    from redpo.dpo import adapters as dpo_adapters
    from redpo.dpo import train as dpo_train
    from redpo.models.packaged import hash_model_dir

    out = tmp_path / "A"
    stale = dpo_train.checkpoint_dir(out) / "checkpoint-5"
    stale.mkdir(parents=True)
    (stale / "adapter_model.safetensors").write_bytes(b"half-trained")
    (out / "adapter_model.safetensors").write_bytes(b"trained")
    (out / "adapter_config.json").write_text("{}")
    (out / dpo_train.LOG_NAME).write_text(json.dumps({"fingerprint": "run-1", "steps": 9}))
    assert dpo_adapters.finished_adapter_log(out, "run-2") is None  # another run's: retrained, checkpoints kept
    assert stale.is_dir()
    assert dpo_adapters.finished_adapter_log(out, "run-1") == {"fingerprint": "run-1", "steps": 9}
    assert not dpo_train.checkpoint_dir(out).exists()
    assert hash_model_dir(out) == hashlib.sha256(b"trained").hexdigest()


def test_an_adapter_manifest_entry_names_its_base_and_the_device_it_ran_on(tmp_path: Path) -> None:
    from redpo.dpo.generate import adapter_model_info
    from redpo.models.registry import LoadedModel, ModelInfo

    (tmp_path / "adapter_model.safetensors").write_bytes(b"weights")
    base = ModelInfo("qwen", "/models/qwen", "ab" * 32, "packaged",
                     {"device": "cuda", "adapter": {"path": str(tmp_path), "sha256": "cd" * 32}})
    info = adapter_model_info(LoadedModel(None, None, base), "A", tmp_path)
    assert (info.name, info.sha256, info.source) == ("qwen+dpo-A", "cd" * 32, "local")
    assert info.details == {"base": "qwen", "base_sha256": "ab" * 32, "device": "cuda"}


def test_seconds_per_step_counts_only_the_steps_the_logging_process_ran() -> None:
    from redpo.dpo.summary import seconds_per_step, steps_run

    resumed = {"steps": 102, "resumed_from": "checkpoint-80", "train_seconds": 1868.783}
    assert steps_run(resumed) == 22 and seconds_per_step(resumed) == pytest.approx(84.945, abs=1e-3)
    assert seconds_per_step({"steps": 10, "resumed_from": None, "train_seconds": 50.0}) == 5.0
    assert seconds_per_step({"steps": 10, "resumed_from": "checkpoint-10", "train_seconds": 0.1}) is None


FIELDS = ("relation", "half", "chain", "step", "kind", "chosen_marked", "rejected_marked", "rejected_source_relation")


def test_the_committed_cpu_full_pairs_are_rebuilt_unchanged(data_root: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The pair builder's default path (random chosen, the paper's three kinds) still builds cpu-full's committed
    pairs, so its adapters' fingerprints and every call they answered stay valid. The prompt is left out (it needs
    the packaged generator's chat template); everything it is rendered from is compared."""
    from redpo.config import REPO_ROOT
    from redpo.core.io import iter_jsonl
    from redpo.data.overview import write_kshot_table
    from redpo.dpo.pairs import all_kshot_samples

    monkeypatch.setenv("REDPO_DATA_DIR", str(data_root))
    profile = load_profile("cpu-full")
    results = ResultsDir(profile, root=tmp_path)
    write_kshot_table(profile, results)
    pairs = build_pairs(profile, profile_schema(profile), load_split(profile, "train"),
                        all_kshot_samples(profile, results), lambda m: "")
    for half in HALVES:
        committed = [row for _, row in iter_jsonl(REPO_ROOT / "results" / "cpu-full" / "dpo" / f"pairs_{half}.jsonl")]
        assert [{f: r[f] for f in FIELDS} for r in pairs.datasets[half]] == [{f: r[f] for f in FIELDS}
                                                                              for r in committed]


def test_mirror_direction_pairs_swap_the_roles_and_distinct_chosen_differ(built: dict) -> None:
    profile = load_profile("smoke", {"dpo.pairs_per_relation": 4, "dpo.chain_length": 2,
                                     "dpo.kind_mix": {"mirror_direction": 1.0}, "dpo.chosen": "distinct"})
    schema = built["schema"]
    pairs = build_pairs(profile, schema, built["train"], built["kshot"], lambda m: prompts.render(m, None))
    rows = _rows(pairs)
    assert rows and {r["kind"] for r in rows} <= {"mirror_direction", "wrong_relation", "exact_copy"}
    mirrored = [r for r in rows if r["kind"] == "mirror_direction"]
    assert mirrored, "smoke's directed relations have a reverse label in the schema"
    for r in mirrored:
        chosen, rejected = _sample(r["chosen_marked"], r["relation"]), _sample(r["rejected_marked"], r["relation"])
        assert (rejected.head, rejected.tail) == (chosen.tail, chosen.head) and rejected.tokens == chosen.tokens
        assert schema.undirected(r["rejected_source_relation"]) == schema.undirected(r["relation"])
        assert r["rejected_source_relation"] != r["relation"]
    for chain in {(r["relation"], r["chain"]) for r in rows}:
        steps = [r for r in rows if (r["relation"], r["chain"]) == chain]
        chosen = [r["chosen_marked"] for r in steps]
        assert len(set(chosen)) == len(chosen) and not set(chosen) & set(steps[0]["demos"])
