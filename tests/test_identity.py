"""One identity rule: which profile fields enter cache keys and fingerprints, and the committed keys it must keep.

Every key (generation calls, RE runs, the oracle, the DPO adapters, the fitted smoke model) is computed from
:func:`redpo.config.identity`. A field marked ``run_only`` changes how a run goes, never its result, so changing
it must reuse every cached answer; a field marked ``keyed_when_set`` joins a key only away from its default,
because a committed result was keyed before it existed. The last test recomputes the keys of the committed
``cpu-full`` run's RE grid from its committed generations and real data, and finds each in its replay archive: a
changed key recipe would make that run retrain on replay.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from redpo.config import ARMS, REPO_ROOT, DPOConfig, EncoderConfig, SamplingConfig, derive, identity, load_profile
from redpo.core.io import ResultsDir
from redpo.core.relations import get_schema
from redpo.data.overview import write_kshot_table
from redpo.extraction.run_store import run_fingerprint, samples_digest
from redpo.extraction.training_sets import arm_training_sets, epoch_sizes, evaluation_sets, grid_cells
from redpo.generation.cache import CachedGenerator, ModelKey, Request
from redpo.generation.loops import arm_sampling

CPU_FULL = REPO_ROOT / "results" / "cpu-full"


def test_run_only_fields_are_left_out_and_nested_sections_kept() -> None:
    encoder = identity(EncoderConfig(threads=2, seeds_per_split=5))
    assert "threads" not in encoder and "seeds_per_split" not in encoder
    assert encoder == identity(EncoderConfig())  # how many threads or cells: the same runs
    dpo = identity(DPOConfig(checkpoint_steps=3, arms=["obo"]))
    assert "checkpoint_steps" not in dpo and "arms" not in dpo and dpo["lora"]["r"] == 8
    assert identity(EncoderConfig(epochs=3)) != identity(EncoderConfig())  # a result-changing field counts


def test_a_field_added_after_a_committed_run_joins_the_key_only_when_set() -> None:
    assert "stop" not in identity(SamplingConfig())  # cpu-full's AAO calls were keyed before stop strings
    assert identity(SamplingConfig(stop=["\n"]))["stop"] == ["\n"]
    key = CachedGenerator.__new__(CachedGenerator)
    key.model_key = ModelKey("m", "a" * 64)
    plain = key.key(Request("p", SamplingConfig(), 0, 0))
    assert plain != key.key(Request("p", SamplingConfig(stop=["\n"]), 0, 0))


def test_run_only_changes_reuse_runs_and_derived_profiles_are_validated(data_root: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDPO_DATA_DIR", str(data_root))
    profile = load_profile("smoke")
    cell = grid_cells(profile)[0]
    same = derive(profile, {"encoder.threads": 2, "encoder.seeds_per_split": 4})
    key = run_fingerprint(profile, "manual", cell, [], "d", "t")
    assert run_fingerprint(same, "manual", cell, [], "d", "t") == key
    assert run_fingerprint(derive(profile, {"encoder.epochs": 9}), "manual", cell, [], "d", "t") != key
    with pytest.raises(ValueError, match=r"encoder\.epochs"):
        derive(profile, {"encoder.epochs": 0})


def _archived_fingerprints() -> set[str]:
    with gzip.open(CPU_FULL / "replay" / "re_runs.jsonl.gz", "rt") as f:
        return {json.loads(line)["fingerprint"] for line in f if line.strip()}


def test_the_committed_cpu_full_grid_is_found_under_todays_keys(data_root: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Split 1's whole notebook-04 grid (both classifier seeds, every arm, the step-matched control whose key
    carries ``epoch_size``) rebuilt from the committed generations and the real data: every key is archived."""
    monkeypatch.setenv("REDPO_DATA_DIR", str(data_root))
    profile = load_profile("cpu-full")
    results = ResultsDir(profile, root=tmp_path)
    shutil.copytree(CPU_FULL / "generations", results.root / "generations")
    write_kshot_table(profile, results)
    dev, test = evaluation_sets(profile)
    digests = samples_digest(dev), samples_digest(test)
    sets = arm_training_sets(profile, results, 8, 1)
    sizes = epoch_sizes(sets)
    assert sizes, "the step-matched control is part of the grid"
    archived = _archived_fingerprints()
    cells = [c for c in grid_cells(profile) if (c.k, c.split_seed) == (8, 1)]
    keys = {(arm, c.name): run_fingerprint(profile, arm, c, train, *digests, sizes.get(arm))
            for c in cells for arm, train in sets.items() if train}
    missing = sorted(name for name, key in keys.items() if key not in archived)
    assert len(keys) == len(cells) * len(sets) == 2 * 19  # manual, manual-steps, 7+2 gen, 6+2 mix
    assert not missing, f"{len(missing)} of {len(keys)} committed runs would retrain: {missing[:5]}"


def test_the_committed_cpu_full_calls_are_found_under_todays_keys() -> None:
    """The first baseline call (no stop strings: keyed before they existed) and the first OBO call (stop at a
    newline) of cpu-full's split 1, their prompts rendered once with the packaged Qwen tokenizer into a fixture
    (the tokenizer is a 0.5 GB download CI does not make): today's key recipe gives the archived keys."""
    fixture = json.loads((Path(__file__).parent / "fixtures" / "cpu_full_first_calls.json").read_text())
    profile = load_profile("cpu-full")
    schema = get_schema("semeval")
    models = json.loads((CPU_FULL / "replay" / "models.json").read_text())["generator"]
    generator = CachedGenerator.__new__(CachedGenerator)  # the key recipe alone: no backend, no cache
    generator.model_key = ModelKey(models["name"], models["sha256"])
    with gzip.open(CPU_FULL / "replay" / "llm_calls.jsonl.gz", "rt") as f:
        archived = {e["key"] for line in f if line.strip() for e in json.loads(line)["entries"]}
    for arm, call in fixture.items():
        sampling = arm_sampling(profile.generator.sampling, profile.generation, ARMS[arm], schema)
        key = generator.key(Request(call["prompt"], sampling, profile.generation.seed, 0))
        assert key == call["key"] and key in archived, arm
    baseline = arm_sampling(profile.generator.sampling, profile.generation, ARMS["baseline"], schema)
    assert "stop" not in identity(baseline) and "grammar" not in identity(baseline)
