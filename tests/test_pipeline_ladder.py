"""Notebook 06 on the smoke run: every rung's sets trained in every ladder cell, the tables and figure written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from redpo.config import load_profile
from redpo.ladder import sets as L

pytestmark = pytest.mark.slow


def _ladder(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics" / "ladder.json").read_text())


def test_every_set_is_trained_in_every_cell(smoke_pipeline: Path) -> None:
    payload = _ladder(smoke_pipeline)
    cells = {(r["split_seed"], r["classifier_seed"]) for r in payload["runs"] if r["arm"] == L.MANUAL}
    assert len(cells) == 2
    trained = {r["arm"]: set() for r in payload["runs"]}
    for r in payload["runs"]:
        trained[r["arm"]].add((r["split_seed"], r["classifier_seed"]))
    built = {name for sets in payload["sets"].values() for name in sets}
    assert built | {L.L7_MANUAL, L.L7_BEST} >= set(trained)
    for name, where in trained.items():  # a set a split lacks (a filter that kept nothing) is noted, not trained
        lacking = {k for k, sets in payload["sets"].items() if name not in sets and not name.startswith("L7")}
        assert len(where) == len(cells) - len(lacking), name
    for split_notes in payload["notes"]:
        assert ":" in split_notes
    profile = load_profile("smoke")
    k = profile.fewshot.k[0]
    by_key = {(r["arm"], r["split_seed"]): r for r in payload["runs"]}
    for seed in (1, 2):  # L2's generated set is L5 at N = K: one run, read back under the second name
        assert by_key[(L.GEN, seed)]["micro_f1"] == by_key[(L.count_set(k), seed)]["micro_f1"]


def test_tables_and_figure_are_written(smoke_pipeline: Path) -> None:
    tables = smoke_pipeline / "tables"
    for name in ("ladder_sets", "ladder_rungs", "ladder_gap"):
        assert (tables / f"{name}.csv").is_file() and (tables / f"{name}.md").is_file()
    detail = json.loads((tables / "ladder_detail.json").read_text())
    assert {s["set"] for s in detail["sets"]} >= {L.MANUAL, L.REAL, L.GEN, L.GEN_NEGSHARE}
    assert any(r["a"] == L.GEN_NEGSHARE and r["estimate"] is not None for r in detail["rungs"])
    assert detail["gap"][0]["piece"].startswith("gap: manual")
    assert (smoke_pipeline / "figures" / "ladder_f1.png").is_file()
