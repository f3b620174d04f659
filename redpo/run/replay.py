"""Packing a finished run for replay (:mod:`redpo.core.replay` says what replay is and what it recomputes).

Packing needs what the run had: the generator's identity (computed by the same functions that keyed the calls,
so it cannot drift, but without starting a server), the DPO adapters (their hashes, the base hash of their
training fingerprints, and their logs; the weights stay out) and the caches. It is the last step of a reference
run, before its results are committed.
"""

from __future__ import annotations

from redpo.config import Profile
from redpo.core.io import CALLS_CACHE, SCORES_CACHE, ResultsDir, read_json
from redpo.core.manifest import git_state
from redpo.core.replay import (
    MODELS_FILE,
    AdapterRecord,
    ModelIdentity,
    OtherGenerator,
    ReplayError,
    ReplayModels,
    pack,
    replay_dir,
    replay_models,
)
from redpo.dpo.adapters import adapter_dir, fingerprint
from redpo.dpo.halves import HALVES
from redpo.dpo.pairs import pairs_path
from redpo.dpo.train import LOG_NAME
from redpo.extraction.llm_scoring import scorer_model_key
from redpo.generation.arms import generator_identity, generator_info
from redpo.generation.engines import identity_settings
from redpo.ladder.pools import LADDER_PREFIX, other_generator_profile
from redpo.models.packaged import hash_model_dir


def pack_results(profile: Profile, results: ResultsDir) -> dict[str, int]:
    """Write ``results/<profile>/replay/``; returns its files and their sizes in bytes."""
    if replay_models(results) is not None:
        raise ReplayError(f"{results.root} already replays ({replay_dir(results) / MODELS_FILE}); a replayed run "
                          "has nothing new to pack. To re-pack after running the models, delete that file first")
    if not (results.cache / CALLS_CACHE).is_file():
        raise ReplayError(f"{results.cache / CALLS_CACHE} does not exist: nothing to pack; run the notebooks of "
                          f"profile {profile.name!r} first")
    identity, base = generator_identity(profile), generator_info(profile)
    adapters = {}
    if (results.dpo / "halves.json").is_file():  # notebook 03 ran: both adapters belong in the archive
        for half in HALVES:
            adapters[half] = _adapter_record(profile, results, half, base.sha256)
    scorer = scorer_model_key(base) if (results.cache / SCORES_CACHE).is_file() else None
    models = ReplayModels(
        generator=ModelIdentity(name=identity.name, sha256=identity.sha256),
        generator_settings=identity_settings(profile.generator),
        other_generators=_other_generators(profile, results),
        adapters=adapters,
        scorer_key=scorer,
        commit=str(git_state().get("commit") or "unknown"),
    )
    return pack(results, models)


def _other_generators(profile: Profile, results: ResultsDir) -> list[OtherGenerator]:
    """The ladder's other generator (L6), when the run generated with it."""
    if not profile.ladder.generator or not any(results.generations.glob(f"{LADDER_PREFIX}other_*.jsonl")):
        return []
    other = other_generator_profile(profile, max(profile.fewshot.k))
    identity = generator_identity(other)
    return [OtherGenerator(identity=ModelIdentity(name=identity.name, sha256=identity.sha256),
                           settings=identity_settings(other.generator))]


def _adapter_record(profile: Profile, results: ResultsDir, half: str, base_sha256: str) -> AdapterRecord:
    folder = adapter_dir(results, half)
    log_file = folder / LOG_NAME
    if not (folder / "adapter_config.json").is_file() or not log_file.is_file():
        raise ReplayError(f"{folder} holds no trained adapter with its {LOG_NAME}; run notebook 03 first")
    log = read_json(log_file)
    if log.get("fingerprint") != fingerprint(profile, pairs_path(results, half), base_sha256):
        raise ReplayError(f"adapter {half} ({folder}) was trained on other pairs or dpo settings than "
                          f"{pairs_path(results, half)}; rerun notebook 03 before packing")
    return AdapterRecord(sha256=hash_model_dir(folder), base_sha256=base_sha256, log=log)
