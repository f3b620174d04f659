"""Notebooks 01 and 02 on the smoke profile: every arm yields real, valid samples and honest metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from redpo.config import load_profile
from redpo.core.io import read_samples
from redpo.core.sample import RESample
from redpo.generation.store import arm_paths

pytestmark = pytest.mark.slow
ARMS = tuple(load_profile("smoke").generation.arms)
"""The arms smoke lists: every paper arm (the beyond-paper consistent arm has its own test, test_consistency.py)."""


def _metrics(run_dir: Path, stem: str) -> dict:
    return json.loads((run_dir / "metrics" / f"{stem}.json").read_text())


def test_every_arm_generates_valid_samples(smoke_pipeline: Path) -> None:
    """A tiny model on the real code path must still produce data for every arm, or nothing downstream is tested."""
    for arm in ARMS:
        files = sorted((smoke_pipeline / "generations").glob(f"{arm}_k4_s*.jsonl"))
        assert files, f"arm {arm} wrote no generations"
        samples = [s for f in files for s in read_samples(f)]
        assert samples, f"arm {arm} produced no valid sample"
        for s in samples:
            assert RESample.from_marked(s.to_marked(), s.relation) == s
            assert s.head_name.lower() != s.tail_name.lower()
            assert s.meta["arm"] == arm


def test_yield_and_reject_reasons_are_consistent(smoke_pipeline: Path) -> None:
    icl = _metrics(smoke_pipeline, "generation_icl")
    arms = {row["arm"] for row in icl["yield"]}
    assert arms == set(ARMS)
    for row in icl["yield"]:
        assert 0.0 <= row["valid_rate"] <= 1.0
        stats = json.loads(arm_paths(smoke_pipeline, row["arm"], row["k"], row["seed"])["stats"].read_text())
        assert row["valid"] == sum(st["valid"] for st in stats["stats"].values() if not st["manual"])
        assert row["calls"] == sum(st["attempts"] for st in stats["stats"].values())


def test_diversity_compares_arms_on_the_same_relations(smoke_pipeline: Path) -> None:
    div = _metrics(smoke_pipeline, "generation_icl")["diversity"]
    assert div["splits"], "no split was scored"
    for block in div["splits"].values():
        assert {"gold", *ARMS} <= set(block["arms"])
        for report in block["arms"].values():
            assert report["relations"] == block["relations"]
    scored = [b for b in div["splits"].values() if b["relations"]]
    assert scored, "no split had a relation that every arm covered with two samples"
    for block in scored:
        for name, report in block["arms"].items():
            macro = report["macro"]
            assert 0.0 <= macro["tfidf_cos"] <= 1.0 + 1e-9, name
            assert 0.0 <= macro["distinct_2"] <= 1.0, name


def test_the_oracle_judges_every_arm_and_states_its_own_test_score(smoke_pipeline: Path) -> None:
    import json

    for stem, arms in (("correctness_icl", {"baseline", "aao", "obo", "gold"}), ("correctness_dpo", {"obo_dpo"})):
        payload = json.loads((smoke_pipeline / "metrics" / f"{stem}.json").read_text())
        assert 0.0 <= payload["oracle"]["test_micro_f1"] <= 1.0 and payload["oracle"]["n_train"] == 200
        assert arms <= set(payload["arms"]), payload["arms"].keys()
        for shares in payload["arms"].values():
            assert shares["n"] > 0
            for key in ("oracle_agreement", "direction_flip_rate", "negative_share"):
                assert 0.0 <= shares[key] <= 1.0
        labels = (smoke_pipeline / "metrics" / f"{stem}_labels.jsonl").read_text().splitlines()
        assert len(labels) == sum(s["n"] for s in payload["arms"].values())
    assert (smoke_pipeline / "figures" / "diversity_vs_correctness.png").is_file()
