"""One validation path: `run` refuses exactly what `data --check` refuses, with the same exit code and first line.

Each variant breaks one thing in a dataset that is valid as written (SemEval read through REDPO_DATA_DIR, a custom
typed dataset, TACRED's official JSON), then runs both commands in-process. ``run`` must refuse before any kernel
starts: papermill is replaced by a recorder that a refused run never reaches.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import papermill
import pytest
from custom_dataset import as_tacred, official_tacred, write_custom_dataset

from redpo.__main__ import main

Edit = Callable[[Path], None]


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write_rows(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _row(split: str, index: int, change: Callable[[dict], object]) -> Edit:
    """Change row ``index`` (line ``index + 1``) of ``<split>.txt``."""
    def edit(folder: Path) -> None:
        rows = _rows(folder / f"{split}.txt")
        change(rows[index])
        _write_rows(folder / f"{split}.txt", rows)
    return edit


def _same_id(first: tuple[str, int], second: tuple[str, int]) -> Edit:
    def edit(folder: Path) -> None:
        for split, index in (first, second):
            _row(split, index, lambda r: r.__setitem__("id", "dup-1"))(folder)
    return edit


def _drop_label(label: str, splits: tuple[str, ...] = ("train", "val", "test")) -> Edit:
    def edit(folder: Path) -> None:
        for split in splits:
            _write_rows(folder / f"{split}.txt", [r for r in _rows(folder / f"{split}.txt") if r["relation"] != label])
    return edit


def _text(name: str, change: Callable[[str], str]) -> Edit:
    def edit(folder: Path) -> None:
        path = folder / name
        path.write_text(change(path.read_text() if path.exists() else ""))
    return edit


def _bytes(name: str, change: Callable[[bytes], bytes]) -> Edit:
    def edit(folder: Path) -> None:
        (folder / name).write_bytes(change((folder / name).read_bytes()))
    return edit


def _rel2id_all_zero(text: str) -> str:
    return json.dumps(dict.fromkeys(json.loads(text), 0))


def _bad_byte_on_line_3(blob: bytes) -> bytes:
    lines = blob.splitlines(keepends=True)
    lines[2] = lines[2][:10] + b"\xff" + lines[2][10:]
    return b"".join(lines)


def _cut_line_2(blob: bytes) -> bytes:
    lines = blob.splitlines(keepends=True)
    lines[1] = lines[1].rstrip()[:-1] + b"\n"  # the closing brace is gone
    return b"".join(lines)


def _token_string(row: dict) -> None:
    row["token"] = " ".join(row["token"])


def _float_span(row: dict) -> None:
    start, end = row["h"]["pos"]
    row["h"]["pos"] = [float(start), end + 0.5]


def _overlap(row: dict) -> None:
    row["t"]["pos"] = list(row["h"]["pos"])


COMMON: list[tuple[str, Edit, str]] = [
    ("token_is_a_string", _row("train", 2, _token_string), 'train.txt:3: "token" is a str'),
    ("float_span", _row("train", 0, _float_span), 'train.txt:1: "h" span ['),
    ("token_not_a_string", _row("train", 0, lambda r: r["token"].__setitem__(0, 7)), 'train.txt:1: "token" item 0'),
    ("overlapping_spans", _row("train", 0, _overlap), "train.txt:1: \"h\" span"),
    ("duplicate_id_within_a_split", _same_id(("train", 0), ("train", 1)), "train.txt:2: duplicate id 'dup-1'"),
    ("duplicate_id_across_splits", _same_id(("train", 0), ("test", 0)), "test.txt:1: duplicate id 'dup-1'"),
    ("val_and_dev_both", lambda f: shutil.copy(f / "val.txt", f / "dev.txt"), "both val.txt and dev.txt"),
    ("span_out_of_range", _row("train", 1, lambda r: r["t"].__setitem__("pos", [r["t"]["pos"][0], 99])),
     'train.txt:2: "t" span'),
    ("missing_pos", _row("train", 1, lambda r: r["t"].pop("pos")), 'train.txt:2: "t" has no "pos"'),
    ("bad_json_line", _bytes("train.txt", _cut_line_2), "train.txt:2: not valid JSON"),
    ("bad_byte", _bytes("train.txt", _bad_byte_on_line_3), "train.txt:3: not UTF-8"),
    ("missing_split", lambda f: (f / "val.txt").unlink(), "val.txt: val split not found"),
    ("empty_split", _text("val.txt", lambda _: ""), "val.txt: the val split holds no sample"),
    ("rel2id_all_id_0", _text("rel2id.json", _rel2id_all_zero), "rel2id.json: labels"),
    ("rel2id_label_twice", _text("rel2id.json", lambda t: t.rstrip()[:-1] + ', "no_relation": 99, "Other": 98}'),
     "is listed twice"),
    ("rel2id_is_a_list", _text("rel2id.json", lambda t: json.dumps(list(json.loads(t)))),
     "rel2id.json: expected a non-empty JSON object, got list"),
    ("rel2id_bad_json", _text("rel2id.json", lambda t: t[:-2]), "rel2id.json:1: not valid JSON"),
    ("folder_missing", shutil.rmtree, "data folder not found"),
]
"""Breakages every dataset can have (the needle is part of the first line: the file, the line, the problem)."""

SEMEVAL: list[tuple[str, Edit, str]] = [
    ("unknown_label", _row("train", 1, lambda r: r.__setitem__("relation", "Causes-Effect(e1,e2)")),
     "train.txt:2: unknown relation 'Causes-Effect(e1,e2)' for dataset 'semeval'"),
    ("negative_label_without_sample", _drop_label("Other"), "negative label 'Other' has no sample"),
    ("relation_of_the_profile_not_in_train", _drop_label("Component-Whole(e2,e1)", ("train",)),
     "train.txt: no training sample of ['Component-Whole(e2,e1)']"),
]

CUSTOM: list[tuple[str, Edit, str]] = [
    ("unknown_label", _row("train", 0, lambda r: r.__setitem__("relation", "OrgBased_In")),
     "train.txt:1: unknown relation 'OrgBased_In' for dataset 'custom'"),
    ("empty_entity", _row("train", 2, lambda r: r["t"].__setitem__("pos", [3, 3])), 'train.txt:3: "t" span [3, 3]'),
    ("undeclared_entity_type", _row("train", 3, lambda r: r["h"].__setitem__("type", "GPE")),
     "train.txt:4: \"h\" has entity type 'GPE'"),
    ("negative_label_without_sample", _drop_label("no_relation"), "'no_relation'"),
    ("rel2id_has_a_label_relations_yaml_lacks", _text("rel2id.json", lambda t: t.rstrip()[:-1] + ', "spouse_of": 9}'),
     "labels differ from rel2id.json (only in rel2id.json: ['spouse_of']"),
    ("relations_yaml_todo", _text("relations.yaml", lambda t: t.replace("the head person works for", "TODO")),
     "still the draft placeholder 'TODO'"),
    ("relations_yaml_malformed", _text("relations.yaml", lambda t: t + "labels: [\n"),
     "relations.yaml: not valid YAML"),
    ("relations_yaml_is_a_list", _text("relations.yaml", lambda _: "- works_for\n- born_in\n"),
     "relations.yaml: <root>: Input should be"),
    ("relations_yaml_python_tag", _text("relations.yaml", lambda t: "!!python/object/apply:os.getcwd []\n"),
     "relations.yaml: not valid YAML (line 1, column 1: could not determine a constructor for the tag"),
    ("relations_yaml_missing", lambda f: (f / "relations.yaml").unlink(), "relations.yaml: relation schema not found"),
]


def _tacred_item(split: str, index: int, key: str, value: object) -> Edit:
    def edit(folder: Path) -> None:
        items = json.loads((folder / f"{split}.json").read_text())
        if value is None:
            del items[index][key]
        else:
            items[index][key] = value
        (folder / f"{split}.json").write_text(json.dumps(items))
    return edit


TACRED: list[tuple[str, Edit, str]] = [
    ("missing_key", _tacred_item("test", 3, "obj_end", None), "test.json: item 3 (id 'test-3'): missing ['obj_end']"),
    ("float_span", _tacred_item("train", 0, "subj_end", 1.5), "train.json: item 0 (id 'train-0'): \"h\" span"),
    ("token_is_a_string", _tacred_item("dev", 1, "token", "a b c"),
     "dev.json: item 1 (id 'dev-1'): \"token\" is a str"),
]


def _semeval(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, list[str]]:
    return request.getfixturevalue("small_semeval"), ["--profile", "smoke"]


def _custom(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, list[str]]:
    folder = write_custom_dataset(tmp_path / "mine")
    return folder, ["--profile", "smoke", "-p", "dataset.name=custom", "-p", f"dataset.path={folder}",
                    "-p", "dataset.relations=null"]


def _tacred(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, list[str]]:
    """TACRED's official layout, written from made-up sentences (never LDC data), distinct ids in every split."""
    source = write_custom_dataset(tmp_path / "src")
    folder = tmp_path / "data" / "tacred"
    folder.mkdir(parents=True)
    for split, official in (("train", "train"), ("val", "dev"), ("test", "test")):
        rows = [as_tacred(r, "tacred") for r in _rows(source / f"{split}.txt")]
        items = [official_tacred(r, f"{official}-{i}") for i, r in enumerate(rows)]
        (folder / f"{official}.json").write_text(json.dumps(items))
    request.getfixturevalue("monkeypatch").setenv("REDPO_DATA_DIR", str(tmp_path / "data"))
    return folder, ["--profile", "smoke", "-p", "dataset.name=tacred", "-p", "dataset.relations=null"]


FAMILIES = {"semeval": _semeval, "custom": _custom, "tacred": _tacred}
VARIANTS = [
    *(pytest.param(family, edit, needle, id=f"{family}-{name}")
      for family in ("semeval", "custom") for name, edit, needle in COMMON),
    *(pytest.param("semeval", edit, needle, id=f"semeval-{name}") for name, edit, needle in SEMEVAL),
    *(pytest.param("custom", edit, needle, id=f"custom-{name}") for name, edit, needle in CUSTOM),
    *(pytest.param("tacred", edit, needle, id=f"tacred-{name}") for name, edit, needle in TACRED),
]


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Exit code and the first stderr line of ``python -m redpo ARGV``, run in this process."""
    code = main(list(argv))
    err = capsys.readouterr().err
    return code, (err.splitlines() or [""])[0]


@pytest.fixture()
def notebooks_started(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every notebook papermill is asked to run (nothing runs: a refused run must not get this far)."""
    started: list[str] = []
    monkeypatch.setattr(papermill, "execute_notebook", lambda nb, *a, **k: started.append(Path(nb).name))
    return started


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_valid_dataset_of_every_family_passes_both(family: str, request: pytest.FixtureRequest, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str],
                                                       notebooks_started: list[str]) -> None:
    _folder, args = FAMILIES[family](request, tmp_path)
    assert _cli(capsys, "data", "--check", *args)[0] == 0
    assert _cli(capsys, "run", *args, "--only", "00", "--results-dir", str(tmp_path / "r"), "--no-progress")[0] == 0
    assert notebooks_started == ["00_data.ipynb"]


@pytest.mark.parametrize(("family", "edit", "needle"), VARIANTS)
def test_run_and_data_check_refuse_the_same_data_with_the_same_first_line(
        family: str, edit: Edit, needle: str, request: pytest.FixtureRequest, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], notebooks_started: list[str]) -> None:
    folder, args = FAMILIES[family](request, tmp_path)
    edit(folder)
    check = _cli(capsys, "data", "--check", *args)
    ran = _cli(capsys, "run", *args, "--only", "00", "--results-dir", str(tmp_path / "r"), "--no-progress")
    assert check == ran, f"data --check gave {check}, run gave {ran}"
    code, first = ran
    assert code == 2 and first.startswith("error: ") and needle in first, first
    assert notebooks_started == []  # refused before any kernel
    if family == "custom":  # the folder checked on its own gives the same verdict
        assert _cli(capsys, "data", "--check", str(folder)) == ran
