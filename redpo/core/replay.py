"""Replay: re-execute a finished run's notebooks from its committed caches, with no generator loaded.

A decisive reference run takes many hours of generation and DPO training. Its results folder can carry a
``replay/`` archive so that anyone can re-execute the notebooks from a fresh clone in a fraction of that time:

- ``replay/<cache>.gz``: gzip copies of the call cache (``llm_calls.jsonl``), the closed-set score cache
  (``llm_scores.jsonl``) and the RE run store (``re_runs.jsonl``, per-sentence predictions included).
- ``replay/models.json``: what those caches are keyed by, so that nothing has to be loaded to recompute a key:
  the generator's cache identity (and the profile settings it came from), each DPO adapter's weight hash and
  training log, the closed-set scorer's key, and the commit that packed them.

While ``replay/models.json`` exists the folder *replays*: model identities come from it, DPO does not train
(its logs come from the archive), and a call the cache cannot answer is an error (:class:`ReplayMiss`) rather
than a reason to start a model, because a miss means the code or the profile now asks for something the committed
run never computed. The same holds for a profile whose generator or DPO settings differ from the archived ones:
their answers would be the old run's under a new name. What replay recomputes anyway is everything that needs no
generator: data, K-shot splits, prompts, parsing, DPO pairs, the oracle classifier, diversity, every table and
figure.

Why archives rather than the live files: the live caches are append-only working files (a killed run may leave a
torn line); the archive is a snapshot of their complete lines. Restoring it never overwrites a live cache.

An archive *without* ``models.json`` is a run in progress (``python -m redpo snapshot``): a reference run takes
longer than one machine lives, and the live caches are not committed, so the snapshot is what a fresh clone
resumes from. Its caches are restored the same way, but the folder does not replay: every call the snapshot
cannot answer goes to the models, and the run goes on where the snapshot left it.
"""

from __future__ import annotations

import gzip
import shutil
import zlib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from redpo.core.io import CALLS_CACHE, RUNS_CACHE, SCORES_CACHE, DataError, ResultsDir, atomic_writer, read_json
from redpo.core.manifest import update_manifest

REPLAY_DIR = "replay"
MODELS_FILE = "models.json"
ARCHIVED_CACHES = (CALLS_CACHE, SCORES_CACHE, RUNS_CACHE)
"""The cache files a replay needs, in ``results/<profile>/cache/``."""


class ReplayError(DataError):
    """A replay archive that cannot be used as it is; the message names the file and the fix."""


class ReplayMiss(RuntimeError):
    """A replaying results folder was asked for something its archive does not hold."""


class _Strict(BaseModel):
    """Archive records validate as strictly as profiles: a hand-edited ``models.json`` fails on load, not later."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ModelIdentity(_Strict):
    """What a cache key needs of a model: its name (engine included) and the hash of its weights."""

    name: str = Field(min_length=1)
    sha256: str = Field(min_length=1)
    """A weight hash; ``served:<model>`` for a server someone else runs (its weights are not ours to hash)."""


class AdapterRecord(_Strict):
    """One DPO adapter: its weight hash (part of every cache key it answered), the base weights' hash its
    training fingerprint was taken over, and its training log (loss curve, held-out reward accuracy)."""

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    base_sha256: str = Field(min_length=1)
    log: dict[str, Any]


class ReplayModels(_Strict):
    """``replay/models.json``: everything a replay needs to key its calls without the models."""

    generator: ModelIdentity
    generator_settings: dict[str, Any]
    """The profile's generator settings that decide the identity (see ``generation.arms.identity_settings``):
    a replay under other settings would serve this run's answers as theirs."""
    adapters: dict[str, AdapterRecord] = {}
    scorer_key: str | None = None
    """The closed-set scorer's cache-key prefix (``<name>:<sha256>`` of the transformers generator)."""
    commit: str = Field(min_length=1)
    """The git commit that packed the archive: the code whose prompts the cache answers."""

    def adapter(self, results: ResultsDir, half: str) -> AdapterRecord:
        if half not in self.adapters:
            raise miss(results, f"DPO adapter {half!r} (the archive holds {sorted(self.adapters) or 'none'})")
        return self.adapters[half]

    def check_settings(self, results: ResultsDir, settings: dict[str, Any]) -> None:
        """Stop when the profile's generator is not the archived one (another model, weights type or engine)."""
        changed = sorted(k for k in {*settings, *self.generator_settings}
                         if settings.get(k) != self.generator_settings.get(k))
        if changed:
            now = {k: settings.get(k) for k in changed}
            then = {k: self.generator_settings.get(k) for k in changed}
            raise miss(results, f"a generator with settings {now} (the committed run used {then})")


def replay_dir(results: ResultsDir) -> Path:
    """``results/<profile>/replay/`` (not created: its absence means the folder does not replay)."""
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
        raise ReplayError(
            f"{path}: {where}: {first['msg']}; restore it from git (`git checkout -- {path}`), or delete it to run "
            "the models and re-pack with `python -m redpo pack-replay`"
        ) from None


def miss(results: ResultsDir, what: str) -> ReplayMiss:
    """The error for a request the archive cannot answer: what was asked, and the two ways out."""
    models = replay_dir(results) / MODELS_FILE
    try:
        commit = f"commit {read_json(models)['commit'][:12]}"
    except (OSError, ValueError, KeyError, TypeError):
        commit = "the commit that packed it"
    return ReplayMiss(
        f"replay: {what} is not in the committed run ({replay_dir(results)}); the code or the profile now asks for "
        f"something that run never computed. Replay at {commit} with its profile, or delete {models} to run the "
        "models (a fresh clone then retrains the DPO adapters: hours on a CPU)"
    )


def prepare_replay(results: ResultsDir) -> ReplayModels | None:
    """Restore missing archived caches (of a finished run or a snapshot), record in the manifest whether the folder
    replays, and return the model identities (``None``: it does not replay)."""
    models = replay_models(results)
    restore_caches(results)
    if results.manifest.is_file() or models is not None:
        update_manifest(results, lambda manifest: manifest.update(replay=models is not None))
    return models


def restore_caches(results: ResultsDir) -> list[str]:
    """Decompress each archived cache whose live file is missing; returns the names restored.

    A live cache is never overwritten. One that lacks lines of the archive (a clone that restored an older
    archive, then pulled a newer one) is an error, not a silent partial replay.
    """
    restored = []
    for name in ARCHIVED_CACHES:
        archive, live = replay_dir(results) / f"{name}.gz", results.cache / name
        if not archive.is_file():
            continue
        try:
            if not live.exists():
                with gzip.open(archive, "rb") as src, atomic_writer(live) as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                restored.append(name)
                continue
            have = set(live.read_bytes().splitlines())
            with gzip.open(archive, "rb") as src:
                lacking = sum(1 for line in src if line.rstrip(b"\n") not in have)
        except (OSError, EOFError, zlib.error) as err:
            raise ReplayError(f"{archive}: not a readable gzip archive ({err}); restore it from git "
                              f"(`git checkout -- {archive}`; with Git LFS, `git lfs pull`)") from None
        if lacking:
            raise ReplayError(f"{live} lacks {lacking} line(s) of {archive}: it was restored from an older archive. "
                              f"Move {live} aside and run again to restore the current one")
    return restored


def archive_caches(results: ResultsDir) -> dict[str, int]:
    """gzip every present cache into ``replay/`` (reproducibly: no name, no time stamp), complete lines only, and
    remove the archives of caches that no longer exist. Returns the archives written and their sizes in bytes.

    Complete lines only, so that a run still appending to its caches can be archived: every write is one whole
    line (see :mod:`redpo.generation.cache`), and a line being written is simply left for the next archive.
    """
    out = replay_dir(results)
    sizes = {}
    for name in ARCHIVED_CACHES:
        live, target = results.cache / name, out / f"{name}.gz"
        if not live.is_file():
            target.unlink(missing_ok=True)
            continue
        data = live.read_bytes()
        with atomic_writer(target) as raw, gzip.GzipFile(
            filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9
        ) as dst:
            dst.write(data[: data.rfind(b"\n") + 1])
        sizes[target.name] = target.stat().st_size
    return sizes


def pack(results: ResultsDir, models: ReplayModels) -> dict[str, int]:
    """Write the archive of a finished run: its caches, and the model identities last (their presence turns
    replay on). Returns the archive's files and their sizes in bytes."""
    (replay_dir(results) / MODELS_FILE).unlink(missing_ok=True)  # half-packed is "not replaying", never "half"
    sizes = archive_caches(results)
    with atomic_writer(replay_dir(results) / MODELS_FILE) as f:
        f.write((models.model_dump_json(indent=1) + "\n").encode())
    sizes[MODELS_FILE] = (replay_dir(results) / MODELS_FILE).stat().st_size
    return sizes


def snapshot(results: ResultsDir) -> dict[str, int]:
    """Archive the caches of a run in progress, so that a fresh clone resumes it (no ``models.json``: the folder
    does not replay). Safe while the run goes on: it reads complete lines and writes only ``replay/``, which a
    run never writes. An archive only grows: caches missing here are restored from it first, and a live cache
    that lacks archived lines stops it (:func:`restore_caches`)."""
    if replay_models(results) is not None:
        raise ReplayError(f"{results.root} replays a finished run ({replay_dir(results) / MODELS_FILE}); there is "
                          "nothing in progress to snapshot")
    restore_caches(results)
    return archive_caches(results)
