"""The claims report: the verdict rule on hand-made numbers, and claims.md from a hand-made metrics folder."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from redpo.analysis import report
from redpo.core.io import ResultsDir, write_json

NAN = math.nan


@pytest.mark.parametrize(
    ("diff", "sd_a", "sd_b", "expected"),
    [
        (0.05, 0.02, 0.03, report.HOLDS),  # larger than the larger sd, claimed direction
        (-0.05, 0.02, 0.03, report.FAILS),  # larger than the larger sd, opposite direction
        (0.02, 0.01, 0.03, report.INCONCLUSIVE),  # inside the larger sd
        (-0.02, 0.03, 0.01, report.INCONCLUSIVE),
        (0.05, NAN, 0.01, report.HOLDS),  # one run on one side: the other side's sd is the noise
        (0.05, None, NAN, report.INCONCLUSIVE),  # no spread measured at all
        (None, 0.01, 0.01, report.INCONCLUSIVE),
        (0.03, 0.03, 0.0, report.INCONCLUSIVE),  # equal to the sd is not larger
    ],
)
def test_verdict_rule(diff: float | None, sd_a: float | None, sd_b: float | None, expected: str) -> None:
    assert report.verdict(diff, sd_a, sd_b) == expected


def test_combine_needs_agreement() -> None:
    assert report.combine([report.HOLDS, report.HOLDS]) == report.HOLDS
    assert report.combine([report.FAILS]) == report.FAILS
    assert report.combine([report.HOLDS, report.INCONCLUSIVE]) == report.INCONCLUSIVE
    assert report.combine([report.HOLDS, report.FAILS]) == report.INCONCLUSIVE


def test_compare_signs_the_difference_by_the_claimed_direction() -> None:
    lower = report.compare("x", "obo", "aao", (0.30, 0.01), (0.40, 0.02), higher_is_claimed=False)
    assert lower.diff == pytest.approx(0.10) and lower.verdict == report.HOLDS
    assert report.compare("x", "a", "b", None, (0.4, 0.1)).note == "not run"


def test_plateau_verdict() -> None:
    assert report.plateau_verdict(16, 32) == report.HOLDS
    assert report.plateau_verdict(None, 32) == report.FAILS  # still rising at N=32
    assert report.plateau_verdict(64, 64) == report.FAILS  # plateaus only after 32
    assert report.plateau_verdict(1, 2) == report.INCONCLUSIVE  # N range never reaches the claim's 16-32


def _re_row(arm: str, mean: float, sd: float | None) -> dict:
    return {"arm": arm, "k": 8, "n": 3, "mean": mean, "sd": sd}


def _diversity(per_arm: dict[str, list[float]]) -> dict:
    rels = [f"r{i}" for i in range(len(next(iter(per_arm.values()))))]
    arms = {a: {"per_relation": {r: {"tfidf_cos": v} for r, v in zip(rels, vals, strict=True)}}
            for a, vals in per_arm.items()}
    return {"diversity": {"splits": {"k8_s1": {"relations": rels, "arms": arms}}}}


@pytest.fixture()
def hand_made(tmp_path: Path) -> ResultsDir:
    results = ResultsDir("hand", root=tmp_path)
    write_json(results.metrics / "generation_icl.json", _diversity({
        "obo": [0.20, 0.22, 0.21], "obo_nodiv": [0.40, 0.42, 0.41],  # clearly lower with the instruction
        "aao": [0.30, 0.31, 0.32], "aao_nodiv": [0.50, 0.52, 0.51],
    }))
    write_json(results.metrics / "re_results.json", {"dataset": "semeval", "summary": {"micro_f1": [
        _re_row("manual", 0.60, 0.01), _re_row("gen:obo", 0.30, 0.02), _re_row("gen:obo_dpo", 0.40, 0.02),
        _re_row("llm", 0.45, None), _re_row("mix:obo", 0.61, 0.03), _re_row("mix:aao", 0.70, 0.01),
    ]}})
    return results


def test_claims_from_hand_made_metrics(hand_made: ResultsDir) -> None:
    claims = {c.number: c for c in report.write_claims(hand_made)}
    assert [claims[i].verdict for i in range(1, 9)] == [
        report.HOLDS,  # 1: both instruction comparisons lower the cosine by ~0.2 >> sd 0.01
        report.HOLDS,  # 2: obo 0.21 vs aao 0.31
        report.HOLDS,  # 3: gen:obo_dpo 40 vs gen:obo 30
        report.HOLDS,  # 4: manual 60 > gen:obo_dpo 40
        report.FAILS,  # 5: gen:obo_dpo 40 < llm 45 by more than the sd 2
        report.INCONCLUSIVE,  # 6: mix:obo +1 (inside sd 3), mix:aao +10; mix:obo_dpo not run -> mixed
        report.INCONCLUSIVE,  # 7: not run
        report.INCONCLUSIVE,  # 8: not run
    ]
    assert "not run" in claims[7].measured and "not run" in claims[8].measured
    assert "K=8: mix:obo_dpo vs manual: not run" in claims[6].measured
    assert "42.02" in claims[3].paper and "25.55" in claims[5].paper
    text = (hand_made.root / "claims.md").read_text()
    assert len(re.findall(r"^\*\*Verdict: (holds|does not hold|inconclusive)\*\*$", text, flags=re.M)) == 8
    assert (hand_made.tables / "claims.csv").is_file() and (hand_made.tables / "claims.md").is_file()


def test_claim_7_and_8_from_plateau_and_leakage(hand_made: ResultsDir) -> None:
    summary = [{"arm": "obo", "data": d, "n": n, "runs": 3, "mean": m, "sd": 0.01}
               for d in ("gen", "mix") for n, m in ((4, 0.2), (16, 0.3), (32, 0.3))]
    write_json(hand_made.metrics / "plateau.json", {
        "n_values": [4, 16, 32], "rule": "r", "skipped_arms": [], "summary": summary,
        "plateau": [{"arm": "obo", "data": d, "plateau_n": 16, "first_n": 4, "last_n": 32} for d in ("gen", "mix")],
    })
    write_json(hand_made.dpo / "leakage.json", {"ok": True, "adapters": {"A": {"pairs": 3, "leaks": []}}})
    write_json(hand_made.dpo / "halves.json", {"halves": {"A": ["r1"], "B": ["r2"]}})
    stats = hand_made.generations / "obo_dpo_k8_s1.stats.json"
    stats.write_text(json.dumps({"info": {"parts": [{"adapter_half": "A", "relations": ["r2"]},
                                                    {"adapter_half": "B", "relations": ["r1"]}]}}))
    assert report.claim_plateau(hand_made).verdict == report.HOLDS
    assert report.claim_leakage(hand_made).verdict == report.HOLDS
    stats.write_text(json.dumps({"info": {"parts": [{"adapter_half": "A", "relations": ["r1"]}]}}))
    leak = report.claim_leakage(hand_made)
    assert leak.verdict == report.FAILS and "r1" in leak.measured
