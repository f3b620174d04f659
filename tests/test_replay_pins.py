"""Pinned replay archives: a record changed inside a valid gzip is refused before it reaches a live cache, the live
caches hold one entry per key whatever is restored, and the committed ``cpu-full`` archive matches its pins."""

from __future__ import annotations

import gzip
import json
import warnings
from pathlib import Path

import pytest

from redpo.__main__ import main
from redpo.config import REPO_ROOT
from redpo.core.conflicts import CONFLICTS_LOG
from redpo.core.io import ResultsDir
from redpo.core.pins import PINS_FILE
from redpo.core.replay import (
    MODELS_FILE,
    ModelIdentity,
    ReplayError,
    ReplayModels,
    pack,
    pin_archives,
    replay_dir,
    restore_caches,
    snapshot,
    verified_archives,
)
from redpo.extraction.run_store import RunStore
from redpo.generation.cache import CacheEntry, LLMCache

CALLS, RUNS = "llm_calls.jsonl", "re_runs.jsonl"
KEYS = [f"{i:064x}" for i in range(1, 6)]
FORGED_KEY = KEYS[3]


def _packed(root: Path, profile: str = "demo") -> ResultsDir:
    """A results folder packed from small live caches of the real shapes: two call batches and two RE runs."""
    results = ResultsDir(profile, root=root)
    cache = LLMCache(results.cache / CALLS)
    cache.append_batch([CacheEntry(k, f"answer {k[-1]}", 3, 0.5) for k in KEYS[:2]], model="m")
    cache.append_batch([CacheEntry(k, f"answer {k[-1]}", 4, 0.25) for k in KEYS[2:]], model="m")
    store = RunStore(results.cache / RUNS)
    for k in KEYS[:2]:
        store.add({"fingerprint": k, "micro_f1": 0.5})
    pack(results, ReplayModels(generator=ModelIdentity(name="m", sha256="a" * 64), generator_settings={},
                               commit="0123456789abcdef"))
    return results


def _forge(results: ResultsDir, *, repin: bool = False) -> None:
    """Rewrite one entry's ``text`` under its key inside a valid gzip (``repin``: and re-pin it, as a forger with
    write access to the whole folder would)."""
    archive = replay_dir(results) / f"{CALLS}.gz"
    rows = [json.loads(line) for line in gzip.decompress(archive.read_bytes()).splitlines()]
    entry = next(e for row in rows for e in row["entries"] if e["key"] == FORGED_KEY)
    entry["text"] = "forged answer"
    archive.write_bytes(gzip.compress(b"".join(json.dumps(row).encode() + b"\n" for row in rows), mtime=0))
    if repin:
        (replay_dir(results) / PINS_FILE).unlink()
        pin_archives(results)


def _entries_per_key(live: Path) -> dict[str, list[str]]:
    texts: dict[str, list[str]] = {}
    for line in live.read_text().splitlines():
        for entry in json.loads(line)["entries"]:
            texts.setdefault(entry["key"], []).append(entry["text"])
    return texts


def test_a_forged_record_stops_the_run_with_the_archive_and_key_and_leaves_the_live_cache(
    tmp_path: Path, data_root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDPO_DATA_DIR", str(data_root))
    results = _packed(tmp_path, "smoke")
    live = results.cache / CALLS
    before = live.read_bytes()
    _forge(results)
    capsys.readouterr()
    code = main(["run", "--profile", "smoke", "--results-dir", str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("error: ") and f"{CALLS}.gz: record {FORGED_KEY} was changed" in err[-1]
    assert live.read_bytes() == before  # nothing merged, nothing rewritten
    live.unlink()  # a fresh clone of the forged commit: nothing is restored either
    with pytest.raises(ReplayError, match=FORGED_KEY):
        restore_caches(results)
    assert not live.exists()
    (replay_dir(results) / MODELS_FILE).unlink()  # a snapshot of a run in progress over the forged archive:
    LLMCache(live).append_batch([CacheEntry("f" * 64, "new", 1, 0.1)])
    with pytest.raises(ReplayError, match=FORGED_KEY):  # the forged record is not carried over and pinned
        snapshot(results)


@pytest.mark.parametrize("forgery", ["stale pins", "re-pinned", "merged by older code"])
def test_the_live_cache_holds_one_genuine_entry_per_key_after_genuine_forged_genuine(
    tmp_path: Path, forgery: str
) -> None:
    results = _packed(tmp_path)
    live = results.cache / CALLS
    genuine = {name: (replay_dir(results) / name).read_bytes() for name in (f"{CALLS}.gz", PINS_FILE)}
    live.unlink()
    assert restore_caches(results) == [CALLS]
    if forgery == "merged by older code":  # what main's line-level union left: the forged line after the genuine
        line = json.dumps({"format": 1, "entries": [{"key": FORGED_KEY, "text": "forged answer", "n_new_tokens": 4,
                                                     "seconds": 0.25}]})
        live.write_text(live.read_text() + line + "\n")
    else:
        _forge(results, repin=forgery == "re-pinned")
        if forgery == "stale pins":
            with pytest.raises(ReplayError, match=FORGED_KEY):
                restore_caches(results)
        else:  # a consistently re-pinned archive is the committed truth while it is there
            with pytest.warns(UserWarning, match=rf"1 of its entries contradict .*first key {FORGED_KEY}"):
                restore_caches(results)
            assert _entries_per_key(live)[FORGED_KEY] == ["forged answer"]
    for name, data in genuine.items():
        (replay_dir(results) / name).write_bytes(data)
    with warnings.catch_warnings(record=True) as reported:
        warnings.simplefilter("always")
        restore_caches(results)
    assert len(reported) == (forgery != "stale pins")  # a replaced live entry is reported, for the runner to print
    texts = _entries_per_key(live)
    assert sorted(texts) == sorted(KEYS)
    assert all(len(t) == 1 for t in texts.values()) and texts[FORGED_KEY] == [f"answer {FORGED_KEY[-1]}"]
    cache = LLMCache(live)
    assert len(cache) == len(KEYS) and cache.refused_entries == 0
    log = results.cache / CONFLICTS_LOG
    logged = log.read_text().count("contradict the pinned archive") if log.is_file() else 0
    assert logged == {"stale pins": 0, "re-pinned": 2, "merged by older code": 1}[forgery]  # every replacement


def test_an_unpinned_archive_is_refused_until_pinned_and_pinning_checks_what_is_there(tmp_path: Path) -> None:
    results = _packed(tmp_path)
    (replay_dir(results) / PINS_FILE).unlink()  # an archive packed before pins existed
    with pytest.raises(ReplayError, match=r"not pinned .*pack-replay --pin-only"):
        restore_caches(results)
    sizes, written = pin_archives(results)
    assert written and set(sizes) == {f"{CALLS}.gz", f"{RUNS}.gz", PINS_FILE}
    pins = (replay_dir(results) / PINS_FILE).read_bytes()
    assert pin_archives(results) == (sizes, False) and (replay_dir(results) / PINS_FILE).read_bytes() == pins
    _forge(results)
    with pytest.raises(ReplayError, match=FORGED_KEY):  # pinning again is a full check, never a re-pin
        pin_archives(results)


def test_an_archive_holding_two_records_for_one_key_is_not_pinned(tmp_path: Path) -> None:
    results = _packed(tmp_path)
    archive = replay_dir(results) / f"{RUNS}.gz"
    lines = gzip.decompress(archive.read_bytes())
    archive.write_bytes(gzip.compress(lines + json.dumps({"fingerprint": KEYS[0], "micro_f1": 1.0}).encode() + b"\n"))
    (replay_dir(results) / PINS_FILE).unlink()
    with pytest.raises(ReplayError, match=rf"{RUNS}\.gz: key {KEYS[0]} is held by two records"):
        pin_archives(results)


def test_cpu_full_committed_archive_matches_every_pinned_record() -> None:
    """The committed reference run replays from archives whose every record hash is the pinned one (the full
    replay, which needs the generator's tokenizer, is `python -m redpo run --profile cpu-full`)."""
    results = ResultsDir("cpu-full", root=REPO_ROOT / "results")
    assert (replay_dir(results) / MODELS_FILE).is_file()
    verified = verified_archives(results, every_record=True)
    assert sorted(verified) == sorted([CALLS, "llm_scores.jsonl", RUNS])
    assert all(pin.records for _, pin in verified.values())


def test_restoring_over_a_live_cache_that_went_on_keeps_its_new_entries(tmp_path: Path) -> None:
    results = _packed(tmp_path)
    live = results.cache / CALLS
    LLMCache(live).append_batch([CacheEntry("f" * 64, "new", 1, 0.1)])  # the run went on past the archive
    grown = live.read_bytes()
    assert restore_caches(results) == []  # every archived line is there already: nothing to write
    assert live.read_bytes() == grown
    live.write_bytes(b"".join(grown.splitlines(keepends=True)[1:]))  # an older clone that lacks the first batch
    assert restore_caches(results) == [CALLS]
    assert sorted(_entries_per_key(live)) == sorted([*KEYS, "f" * 64])
