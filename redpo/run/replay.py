"""Packing a finished run for replay (:mod:`redpo.core.replay` says what replay is and what it recomputes).

Packing needs what the run had: the generator (its cache identity is taken from the same code path that keyed
the calls, so it cannot drift), the DPO adapters (their hashes and training logs; the weights stay out) and the
caches. It is the last step of a reference run, before its results are committed.
"""

from __future__ import annotations

from redpo.config import Profile
from redpo.core.io import ResultsDir, read_json
from redpo.core.replay import AdapterRecord, ModelIdentity, ReplayModels, pack
from redpo.dpo.pairs import HALVES
from redpo.dpo.train import LOG_NAME, adapter_dir
from redpo.extraction.llm_scoring import SCORES_CACHE, scorer_model_key
from redpo.generation.arms import generator_info, open_generator
from redpo.generation.engines import stop_servers
from redpo.models.packaged import hash_model_dir


def pack_results(profile: Profile, results: ResultsDir) -> dict[str, int]:
    """Write ``results/<profile>/replay/``; returns its files and their sizes in bytes."""
    try:
        key = open_generator(profile, results).model_key
    finally:
        stop_servers()
    adapters = {}
    for half in HALVES:
        folder = adapter_dir(results, half)
        if (folder / "adapter_config.json").is_file():
            adapters[half] = AdapterRecord(sha256=hash_model_dir(folder), log=read_json(folder / LOG_NAME))
    scorer = scorer_model_key(generator_info(profile)) if (results.cache / SCORES_CACHE).is_file() else None
    models = ReplayModels(generator=ModelIdentity(name=key.name, sha256=key.sha256), adapters=adapters,
                          scorer_key=scorer)
    return pack(results, models)
