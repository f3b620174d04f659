"""A smoke run in which every generated arm comes back empty ends in statements, not a crash.

The real validity filter is made to reject every reply (``generation.min_tokens`` of 200 words, where the tiny
generator writes at most ``generator.sampling.max_new_tokens`` = 40 tokens), so no stage downstream of generation
has a generated sample to train on, as when the tiny smoke generator met a user's cased dataset. One K-shot split
keeps the second run short; the statement is the same on one split as on two.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from redpo.config import load_profile
from redpo.run.runner import discover

pytestmark = pytest.mark.slow

OVERRIDES = {"generation.min_tokens": "200", "generation.max_tokens": "400", "fewshot.seeds": "[1]",
             "name": "smoke-empty"}
LINE = re.compile(r"^arm (\S+): no valid sample in split k4_s1 \((\d+) calls; rejects: ([^)]+)\) — (.+)$")


def _printed(notebook: Path) -> list[str]:
    cells = json.loads(notebook.read_text())["cells"]
    text = "".join("".join(o.get("text", "")) for c in cells for o in c.get("outputs", []) if o.get("name") == "stdout")
    return text.splitlines()


@pytest.fixture(scope="module")
def empty_run(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Path:
    results = tmp_path_factory.mktemp("empty_results")
    env = {**os.environ, "REDPO_RESULTS_DIR": str(results), "REDPO_DATA_DIR": str(data_root)}
    env.pop("REDPO_RESULTS_LOCK", None)
    params = [arg for key, value in OVERRIDES.items() for arg in ("-p", f"{key}={value}")]
    proc = subprocess.run([sys.executable, "-m", "redpo", "run", "--profile", "smoke", *params, "--no-progress"],
                          capture_output=True, text=True, env=env, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return results / OVERRIDES["name"]


def test_every_notebook_finishes_and_says_once_per_arm_that_it_came_back_empty(empty_run: Path) -> None:
    manifest = json.loads((empty_run / "manifest.json").read_text())
    assert sorted(manifest["notebooks"]) == sorted(p.name for p in discover())
    assert all(entry["status"] == "succeeded" for entry in manifest["notebooks"].values())
    profile = load_profile("smoke")
    icl = [a for a in profile.generation.arms if a != "baseline"]
    expected = {"01": ["baseline"], "02": icl, "03": [f"{a}_dpo" for a in profile.dpo.arms],
                "04": [*profile.generation.arms, *(f"{a}_dpo" for a in profile.dpo.arms)],
                "05": list(profile.plateau.arms)}
    for number, arms in expected.items():
        notebook = next((empty_run / "notebooks").glob(f"{number}_*.ipynb"))
        said = [m for m in map(LINE.match, _printed(notebook)) if m]
        assert sorted(m[1] for m in said) == sorted(arms), notebook.name
        assert all(int(m[2]) > 0 for m in said)
    lines = _printed(next((empty_run / "notebooks").glob("05_*.ipynb")))
    assert any(line.startswith("figure plateau_f1 not drawn: ") for line in lines)
    assert any(line.startswith("figure claims_forest not drawn: ") for line in lines)


def test_the_claims_report_says_not_run_and_why(empty_run: Path) -> None:
    with (empty_run / "tables" / "claims.csv").open() as f:
        claims = {int(row["claim"]): row for row in csv.DictReader(f)}
    for number in range(1, 8):
        assert claims[number]["verdict"] == "not run", number
        assert claims[number]["effect"].startswith("not run (") and "wrote no valid sample" in claims[number]["effect"]
    assert "arm obo_dpo wrote no valid sample in k4_s1" in claims[3]["effect"]
    assert claims[8]["verdict"] == "holds"  # the DPO halves do not need a generated sample
    assert (empty_run / "claims.md").read_text().count("**Verdict: not run**") == 7
