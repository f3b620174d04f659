"""Golden smoke metrics: what a clean smoke run produces, pinned so that a wrong number that stays in range fails.

The smoke profile is deterministic (fixed seeds, one thread, tiny locally built models), so these values repeat
exactly on this machine type (generation runs through llama-server on one thread: two clean runs gave identical
files). If a change is *meant* to move them, re-pin them from the new run and say why in the commit message; the
range checks in the other pipeline tests cannot tell a plausible wrong number from a right one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

VALID = {  # (arm, K-shot seed): valid samples over the three generated smoke relations, and the calls it took
    ("baseline", 1): (2, 6), ("baseline", 2): (1, 6),
    ("aao", 1): (5, 6), ("aao", 2): (4, 6), ("aao_nodiv", 1): (6, 6), ("aao_nodiv", 2): (6, 6),
    ("obo", 1): (6, 7), ("obo", 2): (4, 14), ("obo_nodiv", 1): (6, 6), ("obo_nodiv", 2): (6, 8),
    ("obo_dpo", 1): (6, 8), ("obo_dpo", 2): (6, 10), ("aao_dpo", 1): (6, 6), ("aao_dpo", 2): (4, 6),
}
MICRO_F1 = {  # mean over the two grid cells, test subset of 80 sentences
    "manual": 0.18311820967592163,
    "gen:obo": 0.056980433632998415,
    "mix:obo": 0.2079115981056737,
    "gen:obo_dpo": 0.048783712321523,
    "llm": 0.176,  # closed-set scoring
    "llm_generate": 0.0,  # free generation: the tiny model names no label
}
TFIDF_COS = {("k4_s1", "obo"): 0.246122, ("k4_s2", "aao"): 0.107304, ("k4_s1", "gold"): 0.069252}


def _metrics(run_dir: Path, stem: str) -> dict:
    return json.loads((run_dir / "metrics" / f"{stem}.json").read_text())


def test_valid_samples_and_calls_per_arm(smoke_pipeline: Path) -> None:
    rows = _metrics(smoke_pipeline, "generation_icl")["yield"] + _metrics(smoke_pipeline, "generation_dpo")["yield"]
    got = {(r["arm"], r["seed"]): (r["valid"], r["calls"]) for r in rows}
    assert {key: got.get(key) for key in VALID} == VALID


def test_micro_f1_per_arm(smoke_pipeline: Path) -> None:
    summary = {r["arm"]: r["mean"] for r in _metrics(smoke_pipeline, "re_results")["summary"]["micro_f1"]}
    assert {arm: summary.get(arm) for arm in MICRO_F1} == pytest.approx(MICRO_F1, rel=1e-9)


def test_one_diversity_figure_per_split(smoke_pipeline: Path) -> None:
    splits = _metrics(smoke_pipeline, "generation_icl")["diversity"]["splits"]
    got = {(split, arm): splits[split]["arms"][arm]["macro"]["tfidf_cos"] for split, arm in TFIDF_COS}
    assert got == pytest.approx(TFIDF_COS, abs=1e-6)
