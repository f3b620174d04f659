"""Bring your own dataset: a folder described by relations.yaml is checked, drafted and loaded like a built-in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from custom_dataset import write_custom_dataset

from redpo.config import load_profile
from redpo.core.io import DataError
from redpo.core.relations import get_schema
from redpo.data import splits
from redpo.data.check import check_dataset, draft_relations


def _redpo(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "redpo", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ}, cwd=cwd)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _write_rows(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_a_custom_dataset_loads_through_the_profile_and_passes_the_check(tmp_path: Path) -> None:
    folder = write_custom_dataset(tmp_path / "mine")
    profile = load_profile("smoke", {"dataset.name": "custom", "dataset.path": str(folder),
                                     "dataset.relations": None})
    schema = splits.profile_schema(profile)
    assert schema.labels == ("works_for", "born_in", "located_in", "founded_by", "no_relation")
    assert schema.negative_label == "no_relation" and schema.entity_types == ("PER", "ORG", "LOC")
    train = splits.load_split(profile, "train")
    assert len(train) == 200 and {s.head_type for s in train} == {"PER", "ORG"}
    proc = _redpo("data", "--check", str(folder))
    assert proc.returncode == 0 and "ok (train 200, val 50, test 80)" in proc.stdout, proc.stderr


def test_every_bad_input_is_named_by_file_and_line_or_label(tmp_path: Path) -> None:
    folder = write_custom_dataset(tmp_path / "bad")
    train = _rows(folder / "train.txt")
    train[0]["relation"] = "OrgBased_In"  # not in rel2id.json
    train[1]["h"]["pos"] = [0, 99]  # out of range
    train[2]["t"]["pos"] = [3, 3]  # empty entity
    train[3]["h"]["type"] = "GPE"  # not in entity_types
    train[5]["id"] = train[4]["id"]  # duplicate id
    _write_rows(folder / "train.txt", train)
    _write_rows(folder / "val.txt", [r for r in _rows(folder / "val.txt") if r["relation"] != "born_in"])
    report = check_dataset(folder)
    text = "\n".join(report.errors)
    assert f"{folder / 'train.txt'}:1: label 'OrgBased_In' is not in rel2id.json" in text
    assert f"{folder / 'train.txt'}:2: \"h\" span [0, 99] is out of range" in text
    assert f"{folder / 'train.txt'}:3: \"t\" span [3, 3] is out of range or empty" in text
    assert f"{folder / 'train.txt'}:4: \"h\" has entity type 'GPE'" in text
    assert f"{folder / 'train.txt'}:6: duplicate id {train[4]['id']!r} (first at {folder / 'train.txt'}:5)" in text
    assert report.warnings == [f"{folder / 'val.txt'}: no val sample of ['born_in'] (samples per label here: "
                               "min 10, max 10)"]
    proc = _redpo("data", "--check", str(folder))
    assert proc.returncode == 2 and proc.stderr.count("error: ") == len(report.errors) == 5


def test_schema_mismatches_and_an_absent_negative_label(tmp_path: Path) -> None:
    folder = write_custom_dataset(tmp_path / "labels")
    ids = json.loads((folder / "rel2id.json").read_text())
    (folder / "rel2id.json").write_text(json.dumps({**ids, "spouse_of": 9}))
    assert any("labels differ from rel2id.json (only in rel2id.json: ['spouse_of']" in e
               for e in check_dataset(folder).errors)  # a label without an explanation
    (folder / "rel2id.json").write_text(json.dumps(ids))
    for split in ("train", "val", "test"):
        _write_rows(folder / f"{split}.txt", [r for r in _rows(folder / f"{split}.txt")
                                              if r["relation"] != "no_relation"])
    errors = check_dataset(folder).errors
    assert any("label(s) ['no_relation'] occur in no split" in e for e in errors)
    assert any("negative label 'no_relation' has no sample in any split" in e for e in errors)


def test_the_draft_lists_labels_counts_types_and_blocks_a_run_until_written(tmp_path: Path) -> None:
    folder = write_custom_dataset(tmp_path / "draft")
    (folder / "relations.yaml").unlink()
    assert _redpo("data", "--draft-relations", str(folder)).returncode == 0
    text = (folder / "relations.yaml").read_text()
    assert "negative_label: no_relation" in text and "- LOC" in text and "# 40 train, 10 val, 16 test; e.g." in text
    with pytest.raises(ValueError, match=r"the explanation of 'works_for' is still the draft placeholder 'TODO' "
                                         r"\(5 label"):
        get_schema("custom", folder)
    (folder / "relations.yaml").write_text(text.replace("explanation: TODO", "explanation: a relation"))
    assert get_schema("custom", folder).labels[0] == "works_for"
    with pytest.raises(DataError, match="already exists"):
        draft_relations(folder)
