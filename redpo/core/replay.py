"""Replay: re-execute a finished run's notebooks from its committed caches, with no generator loaded.

A decisive reference run takes many hours of generation and DPO training. Its results folder can carry a
``replay/`` archive so that anyone can re-execute the notebooks from a fresh clone in a fraction of that time:

- ``replay/<cache>.gz``: gzip copies of the call cache (``llm_calls.jsonl``), the closed-set score cache
  (``llm_scores.jsonl``) and the RE run store (``re_runs.jsonl``, per-sentence predictions included).
- ``replay/models.json``: the identities those caches are keyed by, so that nothing has to be loaded to
  recompute a key: the generator's name and weight hash, each DPO adapter's weight hash and training log, and
  the closed-set scorer's key.

While ``replay/models.json`` exists the folder *replays*: model identities come from it, DPO does not train
(its logs come from the archive), and a call the cache cannot answer is an error (:class:`ReplayMiss`) rather
than a reason to start a model, because a miss means the code now asks for something the committed run never
computed. What replay recomputes anyway is everything that needs no generator: data, K-shot splits, prompts,
parsing, the oracle classifier, diversity and every table and figure.

Why archives rather than the live files: the live caches are append-only working files (a killed run may leave
a torn line, a resumed one appends out of order); the archive is a snapshot taken when the run finished, and
restoring it is an explicit step that never overwrites a live cache.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from redpo.core.io import ResultsDir, atomic_write, read_json

REPLAY_DIR = "replay"
MODELS_FILE = "models.json"
ARCHIVED_CACHES = ("llm_calls.jsonl", "llm_scores.jsonl", "re_runs.jsonl")
"""The cache files a replay needs, in ``results/<profile>/cache/``."""


class ReplayMiss(RuntimeError):
    """A replaying results folder was asked for something its archive does not hold."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ModelIdentity(_Strict):
    """What a cache key needs of a model: its name and the hash of its weights."""

    name: str = Field(min_length=1)
    sha256: str = Field(min_length=1)
    """A weight hash; ``served:<model>`` for a server someone else runs (its weights are not ours to hash)."""


class AdapterRecord(_Strict):
    """One DPO adapter: its weight hash (part of every cache key it answered) and its training log."""

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    log: dict[str, Any]


class ReplayModels(_Strict):
    """``replay/models.json``."""

    generator: ModelIdentity
    adapters: dict[str, AdapterRecord] = {}
    scorer_key: str | None = None
    """The closed-set scorer's cache-key prefix (``<name>:<sha256>`` of the transformers generator)."""


def replay_dir(results: ResultsDir) -> Path:
    return results.root / REPLAY_DIR


def replay_models(results: ResultsDir) -> ReplayModels | None:
    """The archive's model identities when this results folder replays, else ``None``."""
    path = replay_dir(results) / MODELS_FILE
    if not path.is_file():
        return None
    try:
        return ReplayModels.model_validate(read_json(path))
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise ReplayMiss(
            f"{path}: {where}: {first['msg']}; re-create it with `python -m redpo replay --pack`"
        ) from None


def require_replay_models(results: ResultsDir) -> ReplayModels:
    models = replay_models(results)
    if models is None:
        raise ReplayMiss(f"{replay_dir(results)} holds no {MODELS_FILE}: this results folder does not replay")
    return models


def miss(results: ResultsDir, what: str) -> ReplayMiss:
    """The error for a call the archive cannot answer: say what was asked and the two ways out."""
    return ReplayMiss(
        f"replay: {what} is not in the committed run ({replay_dir(results)}); the code or the profile now asks for "
        f"something that run never computed. Check out the commit named in {results.manifest}, or delete "
        f"{replay_dir(results) / MODELS_FILE} to run the models and compute it"
    )


def prepare_replay(results: ResultsDir) -> ReplayModels | None:
    """If this folder replays: restore the archived caches that are missing and return the model identities."""
    models = replay_models(results)
    if models is not None:
        restore_caches(results)
    return models


def restore_caches(results: ResultsDir) -> list[str]:
    """Decompress each archived cache whose live file is missing; returns the names restored.

    A live cache is never overwritten: it is a superset of the archive on the machine that made it.
    """
    restored = []
    for name in ARCHIVED_CACHES:
        archive, live = replay_dir(results) / f"{name}.gz", results.cache / name
        if archive.is_file() and not live.exists():
            with gzip.open(archive, "rb") as src:
                atomic_write(live, src.read())
            restored.append(name)
    return restored


def pack(results: ResultsDir, models: ReplayModels) -> dict[str, int]:
    """Write the archive: every present cache file gzipped (reproducibly: no name, no time stamp) and the model
    identities. Returns the archive's files and their sizes in bytes."""
    out = replay_dir(results)
    out.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for name in ARCHIVED_CACHES:
        live = results.cache / name
        if not live.is_file():
            continue
        target = out / f"{name}.gz"
        tmp = target.with_name(f".{target.name}.tmp")
        with live.open("rb") as src, tmp.open("wb") as raw, gzip.GzipFile(
            filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9
        ) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        tmp.replace(target)
        sizes[target.name] = target.stat().st_size
    atomic_write(out / MODELS_FILE, models.model_dump_json(indent=1) + "\n")
    sizes[MODELS_FILE] = (out / MODELS_FILE).stat().st_size
    return sizes
