"""Which adapter each half gets: reused when a saved one was trained on these pairs and settings, else trained.

An adapter's identity (:func:`fingerprint`) is its pairs file, the ``dpo`` section's identity fields
(:func:`redpo.config.identity`), the profile seed and the base weights' hash. A saved adapter whose
``training_log.json`` carries the same fingerprint is reused, so adapters trained elsewhere (``accelerate launch -m
redpo dpo --profile P --half A``) are picked up by the notebook, and a re-run costs nothing. A replaying results
folder trains nothing: it reads the committed run's training log and adapter hash from the archive.
"""

from __future__ import annotations

import gc
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from redpo.config import Profile, identity
from redpo.core.io import ResultsDir, read_json, write_json
from redpo.core.replay import miss, replay_models
from redpo.dpo.base import fresh_generator
from redpo.dpo.evaluate import evaluate_held_out
from redpo.dpo.pairs import hold_out, load_pairs, pairs_path
from redpo.dpo.train import LOG_NAME, checkpoint_dir, last_checkpoint, train_adapter
from redpo.generation.engines import identity_settings

ADAPTER_LABEL = "dpo"
"""Arms generated with an adapter are named ``<arm>_dpo``."""


def adapter_dir(results: ResultsDir, half: str) -> Path:
    return results.adapters / half


def fingerprint(profile: Profile, pairs_file: Path, base_sha256: str) -> str:
    """Identity of a training run: the pairs file, the dpo section's identity fields, the seed and the base
    weights."""
    blob = json.dumps(
        {
            "pairs": hashlib.sha256(pairs_file.read_bytes()).hexdigest(),
            "dpo": identity(profile.dpo),
            "seed": profile.seed,
            "base": base_sha256,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def finished_adapter_log(out_dir: Path, stamp: str) -> dict[str, Any] | None:
    """The training log of the adapter saved in ``out_dir`` if it was trained under fingerprint ``stamp``, else None.

    A finished adapter's folder may still hold checkpoints of its training (committed by a session that stopped
    mid-training, and still in a tree where a later session finished it); their weight files would enter the
    adapter's hash and miss every cached call it answered, so they are removed here.
    """
    log_file = out_dir / LOG_NAME
    log = read_json(log_file) if log_file.is_file() else {}
    if log.get("fingerprint") != stamp or not (out_dir / "adapter_config.json").is_file():
        return None
    shutil.rmtree(checkpoint_dir(out_dir), ignore_errors=True)
    return log


def ensure_adapter(profile: Profile, results: ResultsDir, half: str, *, progress: bool = True) -> dict[str, Any]:
    """Adapter ``half`` trained on ``dpo/pairs_<half>.jsonl``: reused when its fingerprint matches, else trained."""
    out_dir = adapter_dir(results, half)
    models = replay_models(results)
    if models is not None:  # a replaying folder: the committed run's training log, no weights, no training
        models.check_settings(results, identity_settings(profile.generator))
        record = models.adapter(results, half)
        if fingerprint(profile, pairs_path(results, half), record.base_sha256) != record.log.get("fingerprint"):
            raise miss(results, f"DPO adapter {half!r} trained on these pairs and dpo settings")
        return {**record.log, "reused": True, "replayed": True}
    loaded = fresh_generator(profile)
    stamp = fingerprint(profile, pairs_path(results, half), loaded.info.sha256)
    log_file = out_dir / LOG_NAME
    pairs = load_pairs(results, half)
    log = finished_adapter_log(out_dir, stamp)
    reused = log is not None
    if log is None:
        resume = last_checkpoint(out_dir, stamp) if profile.dpo.checkpoint_steps else None
        log = train_adapter(profile, pairs, out_dir, loaded=loaded, progress=progress,
                            extra_log={"fingerprint": stamp}, resume_from=resume)
    if log.get("held_out", {}).get("adapter_sha256") != log["adapter_sha256"]:  # measured on these weights only
        held_pairs = hold_out(pairs, profile.dpo.held_out, profile.seed)[1]
        untouched = loaded if reused else None  # training changed it in place: the evaluation loads a fresh copy
        del loaded  # ... after the trained copy is gone: two copies at once would break the memory plan's budget
        gc.collect()
        log["held_out"] = evaluate_held_out(profile, held_pairs, out_dir, progress=progress, loaded=untouched)
        from accelerate import PartialState

        if PartialState().is_main_process:
            write_json(log_file, log)
    return {**log, "reused": reused}
