"""Notebook 03 on the smoke profile: pairs, both adapters with their logs, the DPO arms and their metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from redpo.core.io import read_samples
from redpo.dpo.halves import HALVES
from redpo.dpo.pairs import PAIR_COLUMNS
from redpo.dpo.train import LOG_NAME
from redpo.generation.store import arm_paths

pytestmark = pytest.mark.slow


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_pairs_are_written_per_half_without_leakage(smoke_pipeline: Path) -> None:
    halves = _json(smoke_pipeline / "dpo" / "halves.json")
    for half in HALVES:
        rows = [json.loads(line) for line in (smoke_pipeline / "dpo" / f"pairs_{half}.jsonl").read_text().splitlines()]
        assert rows, f"no pairs for adapter {half}"
        assert all(set(PAIR_COLUMNS) <= set(r) for r in rows)
        assert {r["half"] for r in rows} == {half}
        assert {r["relation"] for r in rows} <= set(halves["halves"][half])
        assert all(r["chosen"] != r["rejected"] for r in rows)
    leakage = _json(smoke_pipeline / "dpo" / "leakage.json")
    assert leakage["ok"] is True
    assert all(not a["leaks"] and not a["foreign_relation_rows"] for a in leakage["adapters"].values())
    assert _json(smoke_pipeline / "metrics" / "dpo.json")["leakage_ok"] is True


def test_both_adapters_are_saved_with_a_training_log(smoke_pipeline: Path) -> None:
    for half in HALVES:
        folder = smoke_pipeline / "adapters" / half
        assert (folder / "adapter_config.json").is_file()
        assert (folder / "adapter_model.safetensors").is_file()
        log = _json(folder / LOG_NAME)
        assert log["steps"] > 0 and len(log["history"]) == log["steps"]
        for row in log["history"]:
            assert {"loss", "rewards/margins", "rewards/accuracies"} <= set(row)
        held = log["held_out"]  # whole chains never trained on, measured once training ends
        assert held["pairs"] > 0 and 0.0 <= held["reward_accuracy"] <= 1.0 and held["reward_margin"] is not None
        assert not (folder / "checkpoints").exists()
    training = _json(smoke_pipeline / "metrics" / "dpo.json")["training"]
    assert all(row["held_out_reward_accuracy"] is not None for row in training)
    models = _json(smoke_pipeline / "manifest.json")["models"]
    assert {f"dpo-{h}" for h in HALVES} <= {name.rsplit("+", 1)[-1] for name in models}


def test_dpo_arms_generate_for_every_relation_with_the_other_half_adapter(smoke_pipeline: Path) -> None:
    halves = _json(smoke_pipeline / "dpo" / "halves.json")["halves"]
    metrics = _json(smoke_pipeline / "metrics" / "generation_dpo.json")
    names = {row["arm"] for row in metrics["yield"]}
    assert {"obo", "aao", "obo_dpo", "aao_dpo"} <= names
    for row in metrics["yield"]:
        if not row["arm"].endswith("_dpo"):
            continue
        paths = arm_paths(smoke_pipeline, row["arm"], row["k"], row["seed"])
        assert read_samples(paths["samples"]), f"{row['arm']} k{row['k']} s{row['seed']} is empty"
        for part in _json(paths["stats"])["info"]["parts"]:
            trained_on = set(halves[part["adapter_half"]])
            assert not trained_on & set(part["relations"]), "an adapter generated for a relation it trained on"
    assert metrics["diversity"]["splits"]
