"""Golden smoke metrics: what a clean smoke run produces, pinned so that a wrong number that stays in range fails.

The smoke profile is deterministic (fixed seeds, one thread, tiny locally built models), so these values repeat
exactly on this machine type. If a change is *meant* to move them, re-pin them from the new run and say why in the
commit message; the range checks in the other pipeline tests cannot tell a plausible wrong number from a right one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

VALID = {  # (arm, K-shot seed): valid samples over the four smoke relations, and the calls it took
    ("baseline", 1): (4, 8), ("baseline", 2): (2, 8),
    ("aao", 1): (8, 8), ("aao", 2): (8, 8), ("aao_nodiv", 1): (7, 8), ("aao_nodiv", 2): (8, 8),
    ("obo", 1): (8, 9), ("obo", 2): (8, 9), ("obo_nodiv", 1): (8, 8), ("obo_nodiv", 2): (8, 10),
    ("obo_dpo", 1): (8, 8), ("obo_dpo", 2): (8, 8), ("aao_dpo", 1): (8, 8), ("aao_dpo", 2): (8, 8),
}
MICRO_F1 = {  # mean over the two grid cells, test subset of 80 sentences
    "manual": 0.18311820967592163,
    "gen:obo": 0.08064516129032258,
    "mix:obo": 0.20237045743951415,
    "gen:obo_dpo": 0.10170685875352334,
    "llm": 0.0425531914893617,
}
TFIDF_COS = {("k4_s1", "obo"): 0.402982, ("k4_s2", "aao"): 0.162794, ("k4_s1", "gold"): 0.075191}


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
