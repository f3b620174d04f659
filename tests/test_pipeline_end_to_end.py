"""The whole smoke pipeline (notebooks 00-05), then ``python -m redpo figures`` on its results.

Checks what a reader of the repository relies on: every notebook succeeded, every figure exists as PNG and PDF,
``claims.md`` has eight verdicts, and the figures command rebuilds the same bytes without any model library.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from redpo.analysis.plots import FIGURES, FORMATS
from redpo.analysis.report import TABLES
from redpo.config import load_profile
from redpo.run.runner import discover

pytestmark = pytest.mark.slow

MODEL_LIBRARIES = ("torch", "transformers", "peft", "trl")
VERDICT_LINE = re.compile(r"^\*\*Verdict: (holds|does not hold|inconclusive|not run)\*\*$", re.M)


def test_manifest_lists_every_notebook_as_succeeded(smoke_pipeline: Path) -> None:
    manifest = json.loads((smoke_pipeline / "manifest.json").read_text())
    names = [p.name for p in discover()]
    assert "05_plateau_analysis.ipynb" in names
    assert sorted(manifest["notebooks"]) == sorted(names)
    assert all(entry["status"] == "succeeded" for entry in manifest["notebooks"].values())
    assert "metrics/plateau.json" in manifest["files"] and "claims.md" in manifest["files"]


def test_every_figure_exists_as_png_and_pdf(smoke_pipeline: Path) -> None:
    for name in FIGURES:
        for fmt in FORMATS:
            path = smoke_pipeline / "figures" / f"{name}.{fmt}"
            assert path.is_file() and path.stat().st_size > 0, path


def test_plateau_metrics_cover_every_arm_n_and_data_kind(smoke_pipeline: Path) -> None:
    plateau = json.loads((smoke_pipeline / "metrics" / "plateau.json").read_text())
    assert plateau["n_values"] == load_profile("smoke").plateau.n_values and not plateau["skipped_arms"]
    curves = {(row["arm"], row["data"], row["n"]) for row in plateau["summary"]}
    assert curves == {(a, d, n) for a in ("obo", "obo_dpo", "aao") for d in ("gen", "mix") for n in (1, 2)}
    assert all(row["runs"] == 2 for row in plateau["summary"])  # smoke: 2 grid cells
    assert len(plateau["plateau"]) == 6 and all(0 < y["reached_share"] <= 1 for y in plateau["yield"])
    assert (smoke_pipeline / "generations" / "plateau_obo_dpo_k4_s1.jsonl").is_file()


def test_claims_md_has_eight_verdicts(smoke_pipeline: Path) -> None:
    text = (smoke_pipeline / "claims.md").read_text()
    assert len(VERDICT_LINE.findall(text)) == 8
    assert [f"## Claim {i}" in text for i in range(1, 9)] == [True] * 8


def _snapshot(run_dir: Path) -> dict[str, bytes]:
    files = [run_dir / "claims.md", *(run_dir / "figures").iterdir(), *(run_dir / "tables").iterdir()]
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in files if p.is_file()}


def test_figures_command_rebuilds_the_same_bytes_without_model_libraries(smoke_pipeline: Path) -> None:
    before = _snapshot(smoke_pipeline)
    env = {**os.environ, "REDPO_RESULTS_DIR": str(smoke_pipeline.parent)}
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "redpo", "figures", "--profile", "smoke"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0]
                for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert not imported & set(MODEL_LIBRARIES), sorted(imported & set(MODEL_LIBRARIES))
    assert "model libraries imported: none" in proc.stdout
    for name in FIGURES:
        assert f"figure {name}: {name}.png, {name}.pdf" in proc.stdout
    assert all(f"tables {group}: skipped" not in proc.stdout for group in TABLES)
    after = _snapshot(smoke_pipeline)
    assert after.keys() == before.keys()
    changed = sorted(name for name in before if before[name] != after[name])
    assert not changed, f"not rebuilt byte-identically: {changed}"
