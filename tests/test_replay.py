"""Replay: a finished run's notebooks re-executed from its committed caches, with no generator loaded.

The slow tests pack the shared smoke run, strip it to what a commit holds (no live caches, no adapters, no logs),
replay every notebook and check that the generations and verdicts come back byte for byte, that no server
started and no adapter trained, and that a call the archive cannot answer stops the run with a ``replay:`` error.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from redpo.config import SamplingConfig
from redpo.core.io import ResultsDir
from redpo.core.pins import PINS_FILE
from redpo.core.replay import (
    MODELS_FILE,
    ModelIdentity,
    OtherGenerator,
    ReplayError,
    ReplayMiss,
    ReplayModels,
    pack,
    prepare_replay,
    replay_dir,
    replay_models,
    restore_caches,
    snapshot,
)
from redpo.generation.backends.replay import ReplayBackend

UNCOMMITTED = ("cache", "adapters", "logs", "kshot")
"""What a commit of a finished reference run may lack: ``.gitignore`` keeps ``cache/`` and ``kshot/`` out (and
``results/cpu``'s ``adapters/`` and ``logs/``); ``cpu-full`` commits its adapters and run segments, but replay must
not need them, so the stripped run lacks them too."""


SETTINGS = {"model": "m", "weights": "packaged"}


def _models() -> ReplayModels:
    return ReplayModels(generator=ModelIdentity(name="m@llama.cpp:x", sha256="a" * 64), generator_settings=SETTINGS,
                        commit="0123456789abcdef")


def test_pack_is_reproducible_and_restore_merges_without_removing_a_live_line(tmp_path: Path) -> None:
    results = ResultsDir("demo", root=tmp_path)
    live = results.cache / "llm_calls.jsonl"
    live.write_text('{"line": 1}\n{"line": 2}\n')
    first = pack(results, _models())
    archive = (replay_dir(results) / "llm_calls.jsonl.gz").read_bytes()
    assert pack(results, _models()) == first and (replay_dir(results) / "llm_calls.jsonl.gz").read_bytes() == archive
    assert set(first) == {"llm_calls.jsonl.gz", PINS_FILE, MODELS_FILE}  # caches that do not exist are not invented

    live.write_text('{"line": 1}\n{"line": 2}\n{"line": 3}\n')  # the run went on
    assert restore_caches(results) == []
    assert live.read_text().count("\n") == 3
    live.unlink()
    assert restore_caches(results) == ["llm_calls.jsonl"]
    assert live.read_bytes() == gzip.decompress(archive)

    live.write_text('{"line": 0}\n{"line": 1}\n{"torn')  # older or diverged, with a killed write at the end
    assert restore_caches(results) == ["llm_calls.jsonl"]
    assert live.read_text() == '{"line": 0}\n{"line": 1}\n{"line": 2}\n'  # the union; the torn line is cut
    live.unlink()
    (replay_dir(results) / "llm_calls.jsonl.gz").write_bytes(archive[: len(archive) // 2])  # a torn checkout
    with pytest.raises(ReplayError, match=r"llm_calls\.jsonl\.gz: not a readable gzip archive.*git checkout"):
        restore_caches(results)
    assert not live.exists()  # nothing half-restored


def test_an_archive_never_loses_a_line(tmp_path: Path) -> None:
    results = ResultsDir("demo", root=tmp_path)
    (results.cache / "llm_calls.jsonl").write_text('{"a": 1}\n')
    (results.cache / "llm_scores.jsonl").write_text("{}\n")
    pack(results, _models())
    (results.cache / "llm_scores.jsonl").unlink()  # a clone that has not restored it: its archive stays
    (results.cache / "llm_calls.jsonl").write_text('{"b": 2}\n')  # a live cache that lacks archived lines
    assert set(pack(results, _models())) == {"llm_calls.jsonl.gz", "llm_scores.jsonl.gz", PINS_FILE, MODELS_FILE}
    assert gzip.decompress((replay_dir(results) / "llm_calls.jsonl.gz").read_bytes()) == b'{"b": 2}\n{"a": 1}\n'
    assert gzip.decompress((replay_dir(results) / "llm_scores.jsonl.gz").read_bytes()) == b"{}\n"


def test_a_snapshot_resumes_a_run_in_progress_on_a_fresh_clone_without_replaying(tmp_path: Path) -> None:
    results = ResultsDir("demo", root=tmp_path)
    live = results.cache / "llm_calls.jsonl"
    live.write_text('{"line": 1}\n{"line": 2}\n{"line": 3, "torn')  # the run is writing its third line
    assert set(snapshot(results)) == {"llm_calls.jsonl.gz", PINS_FILE}  # no models.json: the folder does not replay
    assert replay_models(results) is None
    archive = replay_dir(results) / "llm_calls.jsonl.gz"
    assert gzip.decompress(archive.read_bytes()) == b'{"line": 1}\n{"line": 2}\n'  # complete lines only

    shutil.rmtree(results.cache)  # a fresh clone: the committed archive, no live cache
    assert prepare_replay(results) is None  # restored, and the run goes on with the models
    assert live.read_text() == '{"line": 1}\n{"line": 2}\n'

    live.unlink()  # a snapshot before the caches were restored: it writes no cache, and the archive keeps its lines
    (results.cache / "re_runs.jsonl").write_text('{"run": 1}\n')
    assert set(snapshot(results)) == {"llm_calls.jsonl.gz", "re_runs.jsonl.gz", PINS_FILE}
    assert not live.exists()
    assert gzip.decompress(archive.read_bytes()) == b'{"line": 1}\n{"line": 2}\n'
    (results.cache / "re_runs.jsonl").unlink()
    with pytest.raises(ReplayError, match=r"holds no cache to snapshot"):
        snapshot(results)

    pack(results, _models())
    with pytest.raises(ReplayError, match=r"replays a finished run.*nothing in progress"):
        snapshot(results)


def test_a_folder_replays_only_with_a_valid_models_file(tmp_path: Path) -> None:
    results = ResultsDir("demo", root=tmp_path)
    assert replay_models(results) is None
    pack(results, _models())
    assert replay_models(results) == _models()
    path = replay_dir(results) / MODELS_FILE
    path.write_text(json.dumps({"generator": {"name": "m"}}))
    with pytest.raises(ReplayError, match=r"models\.json: generator\.sha256: Field required.*pack-replay"):
        replay_models(results)


def test_another_generator_or_adapter_is_a_miss_that_names_the_packing_commit(tmp_path: Path) -> None:
    results = ResultsDir("demo", root=tmp_path)
    models = _models()
    pack(results, models)
    models.check_settings(results, dict(SETTINGS))
    with pytest.raises(ReplayMiss, match=r"settings \{'weights': 'q8_0'\} \(the committed run used \{'weights': "
                                         r"'packaged'\}\).*Replay at commit 0123456789ab"):
        models.check_settings(results, {**SETTINGS, "weights": "q8_0"})
    with pytest.raises(ReplayMiss, match=r"DPO adapter 'A' \(the archive holds none\)"):
        models.adapter(results, "A")


def test_the_ladder_s_other_generator_replays_under_its_own_identity_only(tmp_path: Path) -> None:
    results = ResultsDir("demo", root=tmp_path)
    other = {"model": "other", "weights": "packaged"}
    models = _models().model_copy(update={"other_generators": [
        OtherGenerator(identity=ModelIdentity(name="other@llama.cpp:x", sha256="b" * 64), settings=other)]})
    pack(results, models)
    assert replay_models(results) == models  # survives the round trip through models.json
    assert models.identity_for(results, dict(SETTINGS)).sha256 == "a" * 64
    assert models.identity_for(results, dict(other)).sha256 == "b" * 64
    with pytest.raises(ReplayMiss, match=r"settings \{'model': 'third'\}"):
        models.identity_for(results, {**other, "model": "third"})


def test_the_replay_backend_renders_but_never_generates(tmp_path: Path) -> None:
    results = ResultsDir("demo", root=tmp_path)
    backend = ReplayBackend(object(), results)  # no chat template: the plain role transcript
    assert backend.render([{"role": "user", "content": "hi"}]) == "User: hi\nAssistant:"
    with pytest.raises(ReplayMiss, match=r"replay: a generator call \(1 prompts; the first ends 'tail'\).*demo/replay"):
        backend.generate(["tail"], SamplingConfig(), seed=0)


# ---- the smoke run, replayed -------------------------------------------------------------------------------
def _redpo(*args: str, results: Path, data_root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REDPO_RESULTS_DIR": str(results), "REDPO_DATA_DIR": str(data_root)}
    return subprocess.run([sys.executable, "-m", "redpo", *args], capture_output=True, text=True, env=env,
                          timeout=1200)


@pytest.fixture(scope="module")
def replayed(smoke_pipeline: Path, data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(packed run, its replay)``: the smoke run packed, stripped to its committed files, and replayed."""
    packed_root = tmp_path_factory.mktemp("packed")
    packed = packed_root / "smoke"
    shutil.copytree(smoke_pipeline, packed, ignore=shutil.ignore_patterns(".redpo-lock*"))
    proc = _redpo("pack-replay", "--profile", "smoke", results=packed_root, data_root=data_root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    fresh_root = tmp_path_factory.mktemp("fresh_clone")
    fresh = fresh_root / "smoke"
    shutil.copytree(packed, fresh, ignore=shutil.ignore_patterns(".redpo-lock*", *UNCOMMITTED))
    proc = _redpo("run", "--profile", "smoke", "--no-progress", results=fresh_root, data_root=data_root)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "replay:" in proc.stderr
    return packed, fresh


@pytest.mark.slow
def test_replay_reproduces_every_generation_and_verdict(replayed: tuple[Path, Path]) -> None:
    packed, fresh = replayed
    originals = sorted(p.name for p in (packed / "generations").glob("*.jsonl"))
    assert len(originals) > 10  # every arm of both splits, the DPO arms and the plateau's longer runs
    for name in originals:
        assert (fresh / "generations" / name).read_bytes() == (packed / "generations" / name).read_bytes(), name
    assert (fresh / "claims.md").read_text() == (packed / "claims.md").read_text()
    before = json.loads((packed / "metrics" / "re_results.json").read_text())
    after = json.loads((fresh / "metrics" / "re_results.json").read_text())
    assert all(run.pop("cached") for run in after["runs"])  # every RE run from the committed run store ...
    assert after["runs"] == [{k: v for k, v in run.items() if k != "cached"} for run in before["runs"]]
    for old, new in zip(before["llm_baseline"], after["llm_baseline"], strict=True):  # ... and the LLM's scores
        assert new["predictions"] == old["predictions"] and new["micro_f1"] == old["micro_f1"]
        assert new.get("cached_sentences", new.get("cached_answers")) >= new["n_test"]
    plateau = [json.loads((run / "metrics" / "plateau.json").read_text()) for run in (packed, fresh)]
    assert plateau[1]["summary"] == plateau[0]["summary"] and not plateau[1]["skipped_arms"]


@pytest.mark.slow
def test_replay_loads_no_generator_and_trains_no_adapter(replayed: tuple[Path, Path]) -> None:
    packed, fresh = replayed
    assert (packed / "logs" / "llama-server.log").is_file()  # the original run did serve the generator
    assert not (fresh / "logs" / "llama-server.log").exists()
    assert not list((fresh / "adapters").glob("*/adapter_config.json"))
    manifest = json.loads((fresh / "manifest.json").read_text())
    assert manifest["replay"] is True
    before, after = (json.loads((run / "metrics" / "dpo.json").read_text()) for run in (packed, fresh))
    assert [(row.pop("reused"), row.pop("replayed")) for row in after["training"]] == [(True, True)] * 2
    assert [(row.pop("reused"), row.pop("replayed")) for row in before["training"]] == [(False, False)] * 2
    assert after == before  # pairs, leakage and the adapters' training logs, held-out accuracy included
    assert (packed / "cache" / "oracle").is_dir() and not (fresh / "cache" / "oracle").exists()  # no oracle trained
    for stem in ("correctness_icl", "correctness_dpo"):  # ... its committed labels stand in for it, exactly
        for name in (f"{stem}.json", f"{stem}_labels.jsonl"):
            assert (fresh / "metrics" / name).read_bytes() == (packed / "metrics" / name).read_bytes(), name


@pytest.mark.slow
def test_a_replaying_folder_is_not_packed_again(replayed: tuple[Path, Path], data_root: Path) -> None:
    _, fresh = replayed
    proc = _redpo("pack-replay", "--profile", "smoke", results=fresh.parent, data_root=data_root)
    assert proc.returncode == 2 and "already replays" in proc.stderr and proc.stderr.count("\n") == 1


@pytest.mark.slow
def test_a_call_the_archive_cannot_answer_stops_the_run(
    replayed: tuple[Path, Path], data_root: Path, tmp_path: Path
) -> None:
    _, fresh = replayed
    shutil.copytree(fresh, tmp_path / "smoke", ignore=shutil.ignore_patterns(".redpo-lock*"))
    path = tmp_path / "smoke" / "replay" / MODELS_FILE
    models = json.loads(path.read_text())
    models["generator"]["sha256"] = "0" * 64  # other weights: no cached call matches
    path.write_text(json.dumps(models))
    proc = _redpo("run", "--profile", "smoke", "--only", "01", "--no-progress", results=tmp_path, data_root=data_root)
    assert proc.returncode == 1
    assert "replay: a generator call" in proc.stderr and "is not in the committed run" in proc.stderr
