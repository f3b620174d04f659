"""Loaders, K-shot sampler, subsets and data fetching (fixtures in tests/fixtures/data/, written by hand)."""

from __future__ import annotations

import io
import json
import urllib.error
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redpo.config import load_profile
from redpo.core.io import DataError
from redpo.core.relations import get_schema
from redpo.core.sample import RESample
from redpo.data import check, fetch, formats, overview, splits

SEMEVAL = get_schema("semeval")


@pytest.fixture()
def fx(fixtures_dir: Path) -> Path:
    return fixtures_dir / "data"


@pytest.fixture()
def real_env(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("REDPO_DATA_DIR", str(data_root))
    return data_root


# ---- loaders -------------------------------------------------------------------------------------------
def test_load_knowprompt_jsonl(fx: Path) -> None:
    samples = formats.load_knowprompt_jsonl(fx / "knowprompt_tiny.txt", SEMEVAL)
    assert len(samples) == 10  # the blank line is skipped, as KnowPrompt does
    first = samples[0]
    assert (first.head_name, first.tail_name, first.relation) == ("play", "humor", "Component-Whole(e2,e1)")
    assert samples[4].tail == (4, 6) and samples[4].tail_name == "old car"


def test_knowprompt_types_are_kept(fx: Path) -> None:
    samples = formats.load_knowprompt_jsonl(fx / "tacred_tiny.txt", get_schema("tacred"))
    assert [(s.head_type, s.tail_type) for s in samples] == [
        ("ORGANIZATION", "PERSON"),  # top-level subj_type / obj_type
        ("ORGANIZATION", "DATE"),  # h.type / t.type
        (None, None),
    ]


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("bad_json.txt", "bad_json.txt:2: not valid JSON"),
        ("span_out_of_range.txt", 'span_out_of_range.txt:2: "t" span [3, 9] is out of range'),
        (
            "unknown_label.txt",
            "unknown_label.txt:2: unknown relation 'Causes-Effect(e1,e2)' for dataset 'semeval'",
        ),
        ("missing_key.txt", 'missing_key.txt:2: "t" has no "pos" (missing key \'pos\')'),
        ("no_such_file.txt", "no_such_file.txt: JSONL file not found"),
    ],
)
def test_malformed_knowprompt_files_name_file_line_and_fix(fx: Path, name: str, needle: str) -> None:
    with pytest.raises(DataError) as err:
        formats.load_knowprompt_jsonl(fx / name, SEMEVAL)
    message = str(err.value)
    assert needle in message
    assert any(word in message for word in ("fix", "check", "run `make data`"))


def test_unknown_label_passes_without_schema(fx: Path) -> None:
    assert formats.load_knowprompt_jsonl(fx / "unknown_label.txt")[1].relation == "Causes-Effect(e1,e2)"


def test_load_semeval_official_crlf(fx: Path) -> None:
    raw = (fx / "semeval_official_tiny.TXT").read_bytes()
    assert b"\r\n" in raw
    samples = formats.load_semeval_official(fx / "semeval_official_tiny.TXT", schema=SEMEVAL)
    assert [s.meta["id"] for s in samples] == ["1", "2", "3", "4"]
    assert samples[0].head_name == "configuration" and samples[0].tail_name == "elements"
    assert samples[0].relation == "Component-Whole(e2,e1)"
    assert samples[3].tokens[:2] == ("tom", "'s") and samples[3].head_name == "cat"
    assert not any("\r" in tok for s in samples for tok in s.tokens)
    cased = formats.load_semeval_official(fx / "semeval_official_tiny.TXT", lowercase=False)
    assert cased[0].tokens[0] == "The"


def test_semeval_official_bad_markers(fx: Path) -> None:
    with pytest.raises(DataError, match=r"semeval_official_bad_markers\.TXT:1: unusable entity markers"):
        formats.load_semeval_official(fx / "semeval_official_bad_markers.TXT")


def test_load_fewrel(fx: Path) -> None:
    schema = get_schema("fewrel", fx)  # fixtures/data/pid2name.json
    samples = formats.load_fewrel(fx / "fewrel_tiny.json", schema)
    assert [s.relation for s in samples] == ["P177", "P177", "P17", "P17"]
    assert samples[0].head_name == "Cape Girardeau Bridge"
    # "\u00a0" dropped and spans shifted; first tail mention overlaps the head, so the second is used
    assert samples[1].tokens[:2] == ("An", "analysis")
    assert (samples[1].head_name, samples[1].tail, samples[1].tail_name) == (
        "Golden Gate Bridge",
        (9, 11),
        "Golden Gate",
    )
    assert samples[2].tokens == ("Paris", "is", "in", "France", ".") and samples[2].tail_name == "France"
    assert samples[3].head_name == "New and York"  # non-contiguous [0, 2] is widened to min..max+1
    assert all(RESample.from_marked(s.to_marked(), s.relation) == s for s in samples)


def test_fewrel_errors(fx: Path, tmp_path: Path) -> None:
    bad = tmp_path / "overlap.json"
    bad.write_text(
        json.dumps({"P17": [{"tokens": ["a", "b"], "h": ["a", "Q1", [[0]]], "t": ["a", "Q2", [[0]]]}]})
    )
    with pytest.raises(DataError, match=r"overlap\.json: P17\[0\]: every head mention overlaps"):
        formats.load_fewrel(bad)
    (tmp_path / "pid2name.json").write_text(json.dumps({"P17": ["country", "sovereign state"]}))
    with pytest.raises(DataError, match=r"fewrel_tiny\.json: relation P177: unknown relation 'P177'"):
        formats.load_fewrel(fx / "fewrel_tiny.json", get_schema("fewrel", tmp_path))
    bad.write_text('{"P17": [')
    with pytest.raises(DataError, match=r"overlap\.json:1: not valid JSON"):
        formats.load_fewrel(bad)


# ---- marked text round trip ----------------------------------------------------------------------------
_TOKEN = st.text(
    alphabet=st.characters(blacklist_categories=("Z", "C"), blacklist_characters="<>"), min_size=1, max_size=6
)


@st.composite
def _samples(draw: st.DrawFn) -> RESample:
    tokens = draw(st.lists(_TOKEN, min_size=2, max_size=12))
    cuts = sorted(draw(st.lists(st.integers(0, len(tokens)), min_size=4, max_size=4)))
    a, b, c, d = cuts
    if a == b or c == d:  # need two non-empty, non-overlapping spans
        a, b, c, d = 0, 1, len(tokens) - 1, len(tokens)
    first, second = (a, b), (c, d)
    head, tail = (first, second) if draw(st.booleans()) else (second, first)
    return RESample(tuple(tokens), head, tail, draw(st.sampled_from(SEMEVAL.labels)))


@settings(max_examples=200, deadline=None)
@given(_samples())
def test_marked_text_round_trip(sample: RESample) -> None:
    back = RESample.from_marked(sample.to_marked(), sample.relation)
    assert back == sample
    assert RESample.from_json(json.loads(json.dumps(sample.to_json()))) == sample


# ---- K-shot ----------------------------------------------------------------------------------------------
def _knowprompt_reference(lines: list[str], k: int, seeds: list[int]) -> dict[int, str]:
    """KnowPrompt's generate_k_shot.py as its README describes it, re-derived: load the non-blank lines
    once; for each seed in turn, reseed NumPy and shuffle that same list in place, group rows by relation
    in order of appearance, and write the first k rows of each group with json.dumps."""
    rows = [json.loads(line) for line in lines if line.strip()]
    out = {}
    for seed in seeds:
        np.random.seed(seed)
        np.random.shuffle(rows)
        groups: dict[str, list[dict]] = {}
        for row in rows:
            groups.setdefault(row["relation"], []).append(row)
        out[seed] = "".join(json.dumps(r) + "\n" for g in groups.values() for r in g[:k])
    return out


def test_kshot_matches_knowprompt_procedure(fx: Path, tmp_path: Path) -> None:
    train = fx / "knowprompt_tiny.txt"
    expected = _knowprompt_reference(train.read_text().splitlines(), k=2, seeds=[1, 2, 3, 4, 5])
    for seed in (1, 2, 3, 4, 5):
        target = splits.write_kshot(train, tmp_path, k=2, seed=seed)
        assert target == tmp_path / "k-shot" / f"2-{seed}"
        assert (target / "train.txt").read_text() == expected[seed]
    unchained = _knowprompt_reference(train.read_text().splitlines(), k=2, seeds=[3])[3]
    kept = splits.kshot_sample(
        [json.loads(x) for x in train.read_text().splitlines() if x], 2, 3, chained=False
    )
    assert "".join(json.dumps(r) + "\n" for r in kept) == unchained


def test_kshot_on_samples_and_counts(fx: Path, tmp_path: Path) -> None:
    samples = formats.load_knowprompt_jsonl(fx / "knowprompt_tiny.txt")
    picked = splits.kshot_sample(samples, k=2, seed=1)
    assert Counter(s.relation for s in picked) == {
        "Component-Whole(e2,e1)": 1, "Cause-Effect(e2,e1)": 2, "Other": 2,
        "Cause-Effect(e1,e2)": 2, "Component-Whole(e1,e2)": 2,
    }  # fmt: skip
    rows = [json.loads(x) for x in (fx / "knowprompt_tiny.txt").read_text().splitlines() if x]
    assert [s.to_json() for s in picked] == splits.kshot_sample(rows, 2, 1)  # same rows, same order
    splits.write_kshot(samples, tmp_path, 2, 1)
    assert splits.load_kshot(tmp_path, 2, 1, SEMEVAL) == picked
    with pytest.raises(DataError, match="write it first"):
        splits.load_kshot(tmp_path, 8, 1)


def test_kshot_is_byte_identical_and_copies_siblings(real_env: Path, tmp_path: Path) -> None:
    train = real_env / "semeval2010_task8/knowprompt_split/train.txt"
    first = (splits.write_kshot(train, tmp_path / "a", 8, 1) / "train.txt").read_bytes()
    second = splits.write_kshot(train, tmp_path / "b", 8, 1)
    assert (second / "train.txt").read_bytes() == first
    assert {p.name for p in second.iterdir()} == {
        "train.txt",
        "val.txt",
        "test.txt",
        "rel2id.json",
        "temp.txt",
    }
    counts = Counter(json.loads(x)["relation"] for x in first.decode().splitlines())
    assert len(counts) == 18 and set(counts.values()) == {8}  # Entity-Destination(e2,e1) has no train row


# ---- real data, splits, subsets ---------------------------------------------------------------------------
def test_real_semeval_counts(real_env: Path) -> None:
    profile = load_profile("cpu-full")
    info = overview.describe_data(profile)
    assert {s: info["splits"][s]["count"] for s in splits.SPLITS} == {"train": 6507, "val": 1493, "test": 2717}
    assert info["num_labels"] == 19 and info["negative_label"] == "Other"
    assert info["splits"]["train"]["labels"]["Entity-Destination(e2,e1)"] == 0
    assert info["splits"]["test"]["labels"]["Entity-Destination(e2,e1)"] == 1
    assert (
        info["files"]["semeval2010_task8/knowprompt_split/train.txt"]
        == fetch.SEMEVAL_KNOWPROMPT_SHA256["train.txt"]
    )
    assert fetch.data_file_hashes(profile) == info["files"]


def test_load_split_relations_filter(real_env: Path) -> None:
    wanted = ["Other", "Cause-Effect(e1,e2)"]
    profile = load_profile("cpu-full", {"dataset.relations": wanted})
    assert {s.relation for s in splits.load_split(profile, "val")} == set(wanted)
    bad = load_profile("cpu-full", {"dataset.relations": ["Cause-Effect(e1", "e2)"]})
    with pytest.raises(DataError, match=r"dataset\.relations .*'Cause-Effect\(e1'.*quote labels"):
        splits.load_split(bad, "train")


@pytest.mark.parametrize("name", ["tacred", "tacrev", "retacred"])
def test_missing_tacred_dir_explains_ldc(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDPO_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError) as err:
        splits.load_split(load_profile("paper", {"dataset.name": name}), "train")
    message = str(err.value)
    assert str(tmp_path / name) in message and "LDC" in message
    assert (
        f"$REDPO_DATA_DIR/{name}/" in message and "train.json, dev.json and test.json" in message
        and "rel2id.json" in message and "KnowPrompt JSONL" in message
    )


def test_load_split_tacred_from_folder(fx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDPO_DATA_DIR", str(tmp_path))
    (tmp_path / "tacrev").mkdir()
    (tmp_path / "tacrev" / "dev.txt").write_bytes((fx / "tacred_tiny.txt").read_bytes())
    profile = load_profile("paper", {"dataset.name": "tacrev"})
    assert len(splits.load_split(profile, "val")) == 3  # KnowPrompt's dev.txt name is accepted for val
    with pytest.raises(DataError, match="LDC"):
        splits.load_split(profile, "test")
    with pytest.raises(DataError, match="unknown split"):
        splits.load_split(profile, "dev")  # type: ignore[arg-type]


def test_missing_semeval_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDPO_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError, match="run `make data`"):
        splits.load_split(load_profile("cpu-full"), "train")


def test_stratified_subset(fx: Path) -> None:
    samples = formats.load_knowprompt_jsonl(fx / "knowprompt_tiny.txt")  # one label has a single example
    subset = splits.stratified_subset(samples, 5, seed=0)
    assert len(subset) == 5 and subset == splits.stratified_subset(samples, 5, seed=0)
    assert [samples.index(s) for s in subset] == sorted(samples.index(s) for s in subset)
    counts = Counter(s.relation for s in subset)
    assert counts["Cause-Effect(e1,e2)"] >= 1 and counts["Other"] >= 1
    assert splits.stratified_subset(samples, 50, seed=0) == samples
    assert len(splits.stratified_subset(samples, 1, seed=3)) == 1


def test_stratified_subset_keeps_proportions(real_env: Path) -> None:
    test = splits.load_split(load_profile("cpu-full"), "test")
    subset = splits.stratified_subset(test, 500, seed=1)
    full, part = Counter(s.relation for s in test), Counter(s.relation for s in subset)
    assert len(subset) == 500
    assert all(abs(part[lab] - 500 * n / len(test)) < 1 for lab, n in full.items())
    assert subset != splits.stratified_subset(test, 500, seed=2)


# ---- fetching ---------------------------------------------------------------------------------------------
def test_fetch_from_mirror_is_idempotent(fx: Path, tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    (mirror / "semeval2010_task8" / "knowprompt_split").mkdir(parents=True)
    (mirror / "fewrel").mkdir()
    (mirror / "semeval2010_task8/knowprompt_split/train.txt").write_bytes(
        (fx / "knowprompt_tiny.txt").read_bytes()
    )
    (mirror / "fewrel/val_wiki.json").write_bytes((fx / "fewrel_tiny.json").read_bytes())
    dest = tmp_path / "data"
    assert all(line.startswith("copied") for line in fetch.fetch_data(dest, mirror))
    assert all(line.startswith("unchanged") for line in fetch.fetch_data(dest, mirror))
    (dest / "fewrel/val_wiki.json").write_text("{}")
    assert sum(line.startswith("copied") for line in fetch.fetch_data(dest, mirror)) == 1
    with pytest.raises(DataError, match=r"mirror lacks semeval2010_task8, fewrel/"):
        fetch.fetch_data(dest, mirror / "semeval2010_task8")


def test_fetch_download_checks_hash_and_reports_offline(real_env: Path, tmp_path: Path) -> None:
    source = real_env / "semeval2010_task8/knowprompt_split"
    urls: list[str] = []

    def fake_open(url: str, timeout: float) -> io.BytesIO:
        urls.append(url)
        return io.BytesIO((source / url.rsplit("/", 1)[1]).read_bytes())

    log = fetch.fetch_data(tmp_path, opener=fake_open)
    assert len(log) == 4 and all(line.startswith("downloaded") for line in log)
    assert all(fetch.KNOWPROMPT_COMMIT in u and "zjunlp/KnowPrompt" in u for u in urls)
    assert all(line.startswith("unchanged") for line in fetch.fetch_data(tmp_path, opener=fake_open))

    def offline(url: str, timeout: float) -> io.BytesIO:
        raise urllib.error.URLError("Name or service not known")

    with pytest.raises(DataError, match=r"cannot download .*offline"):
        fetch.fetch_data(tmp_path / "fresh", opener=offline)
    with pytest.raises(DataError, match="sha256"):
        fetch.fetch_data(tmp_path / "bad", opener=lambda url, timeout: io.BytesIO(b"nope"))


def test_notebook_00_overview_writes_the_kshot_files_and_data_json(data_root: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from redpo.core.io import ResultsDir, read_json

    monkeypatch.setenv("REDPO_DATA_DIR", str(data_root))
    prof = load_profile("smoke")  # K=4, seeds 1 and 2, four relations
    results = ResultsDir(prof, root=tmp_path)
    info = overview.describe_data(prof)
    kshot = overview.write_kshot_table(prof, results)
    assert kshot[["k", "seed", "samples", "relations"]].values.tolist() == [[4, 1, 16, 4], [4, 2, 16, 4]]
    assert kshot["path"].tolist() == ["kshot/k-shot/4-1", "kshot/k-shot/4-2"]
    assert overview.split_sizes(info)["samples"].to_dict() == {"train": 2495, "val": 574, "test": 1029}
    table = overview.label_table(info)
    assert table.index[0] == "Other" and list(table.columns) == ["test", "train", "val"]
    saved = read_json(overview.save_data_metrics(results, info, kshot))
    assert saved["counts"] == {"train": 2495, "val": 574, "test": 1029}
    assert saved["kshot"][0] == {"k": 4, "seed": 1, "samples": 16, "relations": 4, "path": "kshot/k-shot/4-1"}
    assert saved["label_distribution"]["train"] == table["train"].to_dict()


# ---- bad input: one error line naming the file, the line and the fix ----------------------------------------
def test_a_bad_byte_is_named_by_file_line_and_offset(small_semeval: Path) -> None:
    train = small_semeval / "train.txt"
    lines = train.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2][:10] + b"\xff" + lines[2][10:]
    train.write_bytes(b"".join(lines))
    offset = len(lines[0]) + len(lines[1]) + 10
    with pytest.raises(DataError, match=rf"train.txt:3: not UTF-8 \(byte 0xff at byte offset {offset} "):
        splits.load_split(load_profile("smoke"), "train")


def test_a_byte_order_mark_is_accepted(small_semeval: Path) -> None:
    train = small_semeval / "train.txt"
    before = splits.load_split(load_profile("smoke"), "train")
    train.write_bytes(b"\xef\xbb\xbf" + train.read_bytes())
    assert splits.load_split(load_profile("smoke"), "train") == before


def test_an_empty_split_or_a_label_without_training_samples_is_refused(small_semeval: Path) -> None:
    profile = load_profile("smoke")
    assert check.check_profile(profile).errors == []
    (small_semeval / "val.txt").write_text("")
    with pytest.raises(DataError, match=r"val.txt: the val split holds no sample"):
        check.require_valid(profile)
    (small_semeval / "val.txt").write_bytes((small_semeval / "test.txt").read_bytes())
    train = small_semeval / "train.txt"
    keep = [line for line in train.read_text().splitlines(keepends=True) if '"Component-Whole(e2,e1)"' not in line]
    train.write_text("".join(keep))
    with pytest.raises(DataError, match=r"train.txt: no training sample of \['Component-Whole\(e2,e1\)'\]"):
        check.require_valid(profile)
    everything = load_profile("smoke", {"dataset.relations": None})  # no label asked for: a warning only
    warnings = check.require_valid(everything)  # real SemEval's train file holds no Entity-Destination(e2,e1)
    assert "no train sample of ['Component-Whole(e2,e1)', 'Entity-Destination(e2,e1)']" in warnings[0]


def test_run_exits_2_with_one_line_when_the_data_is_missing(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "REDPO_DATA_DIR": str(tmp_path / "nowhere"), "REDPO_RESULTS_DIR": str(tmp_path / "r")}
    proc = subprocess.run([sys.executable, "-m", "redpo", "run", "--profile", "smoke", "--only", "00"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "make data" in lines[0]


def test_every_loader_names_a_bad_byte(tmp_path: Path) -> None:
    bad = tmp_path / "train_wiki.json"
    bad.write_bytes(b'{"P17": [\n\xff]}')
    with pytest.raises(DataError, match=r"train_wiki.json:2: not UTF-8 \(byte 0xff at byte offset 10 "):
        formats.load_fewrel(bad)
    official = tmp_path / "test.json"
    official.write_bytes(b"\xef\xbb\xbf[\n\xfe]")
    with pytest.raises(DataError, match=r"test.json:2: not UTF-8 \(byte 0xfe at byte offset 5 "):
        formats.load_tacred_json(official)


def test_make_data_prints_the_full_dataset_then_the_profiles_subset(real_env: Path) -> None:
    """``make data`` (``python -m redpo data``) shows the numbers the README and docs quote, the full dataset, before
    the default profile's five labels, and says which block is which."""
    text = "\n".join(overview.overview_lines(load_profile("cpu")))
    full, subset = text.split("profile cpu's subset")
    assert "full dataset (every label):" in full
    assert [full.count(n) for n in ("6,507", "1,493", "2,717", "19 labels (negative: Other)")] == [1, 1, 1, 1]
    assert "(dataset.relations: 5 of 19 labels)" in subset
    assert [subset.count(n) for n in ("2,727", "627", "1,094", "5 labels")] == [1, 1, 1, 1]
    assert "test 400 of test (dataset.test_subsample)" in subset
    every_label = "\n".join(overview.overview_lines(load_profile("cpu-full")))
    assert "profile cpu-full: every label" in every_label and "2,727" not in every_label
