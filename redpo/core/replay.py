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
generator: data, K-shot splits, prompts, parsing, DPO pairs, diversity, the correctness shares (from the committed
per-sample oracle labels), every table and figure.

Why archives rather than the live files: the live caches are append-only working files (a killed run may leave a
torn line); the archive is a snapshot of their complete lines. Restoring it merges the archive into the live
caches and never removes a live line (:func:`restore_caches`).

An archive *without* ``models.json`` is a run in progress (``python -m redpo snapshot``): a reference run takes
longer than one machine lives, and the live caches are not committed, so the snapshot is what a fresh clone
resumes from. Its caches are restored the same way, but the folder does not replay: every call the snapshot
cannot answer goes to the models, and the run goes on where the snapshot left it.
"""

from __future__ import annotations

import gzip
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
    """The profile's generator settings that decide the identity (see ``generation.engines.identity_settings``):
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
        "models (without committed adapters, a fresh clone then retrains them: hours on a CPU)"
    )


def prepare_replay(results: ResultsDir) -> ReplayModels | None:
    """Restore missing archived caches (of a finished run or a snapshot), record in the manifest whether the folder
    replays, and return the model identities (``None``: it does not replay)."""
    models = replay_models(results)
    restore_caches(results)
    if results.manifest.is_file() or models is not None:
        update_manifest(results, lambda manifest: manifest.update(replay=models is not None))
    return models


def complete_lines(data: bytes) -> list[bytes]:
    """The whole lines of a cache file's bytes, newlines kept; a torn last line (a killed run's write, with no
    newline yet) is left out, as the caches themselves cut it."""
    return data[: data.rfind(b"\n") + 1].splitlines(keepends=True)


def _archived_lines(archive: Path) -> list[bytes]:
    try:
        with gzip.open(archive, "rb") as src:
            return complete_lines(src.read())
    except (OSError, EOFError, zlib.error) as err:
        raise ReplayError(f"{archive}: not a readable gzip archive ({err}); restore it from git "
                          f"(`git checkout -- {archive}`; with Git LFS, `git lfs pull`)") from None


def _union(first: list[bytes], then: list[bytes]) -> list[bytes]:
    """``first``, then the lines of ``then`` it lacks, in their order."""
    have = set(first)
    return first + [line for line in then if line not in have]


def restore_caches(results: ResultsDir) -> list[str]:
    """Bring every live cache up to its archive: the archive's lines that the live file lacks are added (all of
    them when it is missing). Returns the names of the caches that changed.

    A merge, not a copy: the caches are append-only and content-addressed (the first entry of a key wins, a
    repeated line is harmless), so the union of two is a valid cache holding every answer of both. A clone that
    restored an older archive and then pulled a newer one, or a local run that went on beside a newer snapshot,
    loses nothing; no live line is ever removed, except a torn last line, which the cache would cut anyway. Runs
    call this under the results lock, before any cache is opened.
    """
    changed = []
    for name in ARCHIVED_CACHES:
        archive, live = replay_dir(results) / f"{name}.gz", results.cache / name
        if not archive.is_file():
            continue
        archived = _archived_lines(archive)
        current = complete_lines(live.read_bytes()) if live.is_file() else []
        merged = _union(current, archived)
        if live.is_file() and len(merged) == len(current):
            continue
        with atomic_writer(live) as dst:
            dst.writelines(merged)
        changed.append(name)
    return changed


def archive_caches(results: ResultsDir) -> dict[str, int]:
    """gzip every cache into ``replay/`` (reproducibly: no name, no time stamp) as the union of its live lines and
    the archive's, so an archive never loses a line. Returns the archives and their sizes in bytes.

    Live lines are read as complete lines only, so a run still appending to its caches can be archived: every
    write is one whole line (see :mod:`redpo.generation.cache`), and a line being written is left for the next
    archive. A cache with no live file (a clone that has not run yet) keeps its archive as it is.
    """
    sizes = {}
    for name in ARCHIVED_CACHES:
        live, target = results.cache / name, replay_dir(results) / f"{name}.gz"
        archived = _archived_lines(target) if target.is_file() else []
        if live.is_file():
            merged = _union(complete_lines(live.read_bytes()), archived)
            if merged != archived or not target.is_file():
                with atomic_writer(target) as raw, gzip.GzipFile(
                    filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9
                ) as dst:
                    dst.writelines(merged)
        if target.is_file():
            sizes[target.name] = target.stat().st_size
    return sizes


def pack(results: ResultsDir, models: ReplayModels) -> dict[str, int]:
    """Write the archive of a finished run: its caches, and the model identities last (their presence turns
    replay on). Returns the archive's files and their sizes in bytes."""
    models_file = replay_dir(results) / MODELS_FILE
    models_file.unlink(missing_ok=True)  # half-packed is "not replaying", never "replaying half"
    sizes = archive_caches(results)
    with atomic_writer(models_file) as f:
        f.write((models.model_dump_json(indent=1) + "\n").encode())
    sizes[MODELS_FILE] = models_file.stat().st_size
    return sizes


def snapshot(results: ResultsDir) -> dict[str, int]:
    """Archive the caches of a run in progress, so that a fresh clone resumes it (no ``models.json``: the folder
    does not replay). Safe while the run goes on: it reads complete lines and writes only ``replay/``, which a
    run never writes, and the archive only grows (:func:`archive_caches`)."""
    if replay_models(results) is not None:
        raise ReplayError(f"{results.root} replays a finished run ({replay_dir(results) / MODELS_FILE}); there is "
                          "nothing in progress to snapshot")
    if not any((results.cache / name).is_file() for name in ARCHIVED_CACHES):
        raise ReplayError(f"{results.cache} holds no cache to snapshot ({', '.join(ARCHIVED_CACHES)}); run the "
                          "notebooks first")
    return archive_caches(results)
