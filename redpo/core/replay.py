"""Replay: re-execute a finished run's notebooks from its committed caches, with no generator loaded.

A decisive reference run takes many hours of generation and DPO training. Its results folder can carry a
``replay/`` archive so that anyone can re-execute the notebooks from a fresh clone in a fraction of that time:

- ``replay/<cache>.gz``: gzip copies of the call cache (``llm_calls.jsonl``), the closed-set score cache
  (``llm_scores.jsonl``) and the RE run store (``re_runs.jsonl``, per-sentence predictions included).
- ``replay/models.json``: what those caches are keyed by, so that nothing has to be loaded to recompute a key:
  the generator's cache identity (and the profile settings it came from), each DPO adapter's weight hash and
  training log, the closed-set scorer's key, and the commit that packed them.
- ``replay/pins.json``: the sha256 of each archive and of each record in it (:mod:`redpo.core.pins`). Every
  restore checks the archives against it first, and a mismatch (a record rewritten inside a valid gzip, say)
  stops with the archive and the key before any live cache is touched.

While ``replay/models.json`` exists the folder *replays*: model identities come from it, DPO does not train
(its logs come from the archive), and a call the cache cannot answer is an error (:class:`ReplayMiss`) rather
than a reason to start a model, because a miss means the code or the profile now asks for something the committed
run never computed. The same holds for a profile whose generator or DPO settings differ from the archived ones:
their answers would be the old run's under a new name. What replay recomputes anyway is everything that needs no
generator: data, K-shot splits, prompts, parsing, DPO pairs, diversity, the correctness shares (from the committed
per-sample oracle labels), every table and figure.

Why archives rather than the live files: the live caches are append-only working files (a killed run may leave a
torn line); the archive is a snapshot of their complete lines. Restoring it merges the archive into the live
caches, record by record: the pinned archive's record of a key is the one the live cache keeps
(:func:`restore_caches`).

An archive *without* ``models.json`` is a run in progress (``python -m redpo snapshot``): a reference run takes
longer than one machine lives, and the live caches are not committed, so the snapshot is what a fresh clone
resumes from. Its caches are restored the same way, but the folder does not replay: every call the snapshot
cannot answer goes to the models, and the run goes on where the snapshot left it.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from redpo.core.conflicts import report_conflict
from redpo.core.hashing import sha256_file
from redpo.core.io import CALLS_CACHE, RUNS_CACHE, SCORES_CACHE, DataError, ResultsDir, atomic_writer, read_json
from redpo.core.manifest import update_manifest
from redpo.core.pins import PINS_FILE, ArchivePin, Merged, Pins, first_mismatch, merge, records_of

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


class OtherGenerator(_Strict):
    """A generator other than the profile's that the run called (the ladder's L6), with the settings it ran under."""

    identity: ModelIdentity
    settings: dict[str, Any]


class ReplayModels(_Strict):
    """``replay/models.json``: everything a replay needs to key its calls without the models."""

    generator: ModelIdentity
    generator_settings: dict[str, Any]
    """The profile's generator settings that decide the identity (see ``generation.engines.identity_settings``):
    a replay under other settings would serve this run's answers as theirs."""
    other_generators: list[OtherGenerator] = []
    """Further generators the run called (the ladder's ``ladder.generator``), each answered only under its own
    settings."""
    adapters: dict[str, AdapterRecord] = {}
    scorer_key: str | None = None
    """The closed-set scorer's cache-key prefix (``<name>:<sha256>`` of the transformers generator)."""
    commit: str = Field(min_length=1)
    """The git commit that packed the archive: the code whose prompts the cache answers."""

    def adapter(self, results: ResultsDir, half: str) -> AdapterRecord:
        if half not in self.adapters:
            raise miss(results, f"DPO adapter {half!r} (the archive holds {sorted(self.adapters) or 'none'})")
        return self.adapters[half]

    def identity_for(self, results: ResultsDir, settings: dict[str, Any]) -> ModelIdentity:
        """The archived identity of the generator with these settings: the profile's, or one of the others."""
        for other in self.other_generators:
            if other.settings == settings:
                return other.identity
        self.check_settings(results, settings)
        return self.generator

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


_Model = TypeVar("_Model", bound=BaseModel)


def _validated(model: type[_Model], path: Path, otherwise: str = "") -> _Model | None:
    """``path`` read as ``model``, ``None`` when it does not exist; a bad file is one error naming the field."""
    if not path.is_file():
        return None
    try:
        return model.model_validate(read_json(path))
    except ValueError as err:  # pydantic's ValidationError, or a file that is not JSON at all
        first = err.errors()[0] if isinstance(err, ValidationError) else {"loc": (), "msg": f"not JSON ({err})"}
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise ReplayError(f"{path}: {where}: {first['msg']}; restore it from git (`git checkout -- {path}`)"
                          f"{otherwise}") from None


def replay_models(results: ResultsDir) -> ReplayModels | None:
    """The archive's model identities when this results folder replays, else ``None``."""
    return _validated(ReplayModels, replay_dir(results) / MODELS_FILE,
                      ", or delete it to run the models and re-pack with `python -m redpo pack-replay`")


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


def _read_archive(archive: Path) -> tuple[str, list[bytes]]:
    """The sha256 of an archive file and its complete lines."""
    raw = archive.read_bytes()
    try:
        return hashlib.sha256(raw).hexdigest(), complete_lines(gzip.decompress(raw))
    except (OSError, EOFError, zlib.error) as err:
        raise ReplayError(f"{archive}: not a readable gzip archive ({err}); restore it from git "
                          f"(`git checkout -- {archive}`; with Git LFS, `git lfs pull`)") from None


def verified_archives(results: ResultsDir, *, every_record: bool = False) -> dict[str, tuple[list[bytes], ArchivePin]]:
    """cache name -> (archived lines, pin) for every archive in ``replay/``, each checked against ``pins.json``;
    the first mismatch stops with the archive and the key. Nothing is written, so a refused archive leaves the live
    caches as they were. A file whose sha256 is the pinned one is not re-hashed record by record unless
    ``every_record`` (its records are the ones pinned from it)."""
    folder = replay_dir(results)
    pins_file = folder / PINS_FILE
    present = [name for name in ARCHIVED_CACHES if (folder / f"{name}.gz").is_file()]
    pins = _validated(Pins, pins_file)
    if pins is None:
        if present:
            raise ReplayError(f"{folder}: its archives are not pinned ({pins_file} is missing), so a changed record "
                              "could not be told from a committed one. Restore it from git, or, for archives known "
                              "to be the committed ones, pin them with `python -m redpo pack-replay --pin-only`")
        return {}
    known = {f"{name}.gz" for name in present}
    odd = [(a, "is pinned but missing") for a in pins.archives if a not in known]
    odd += [(a, "is not pinned") for a in sorted(known - set(pins.archives))]
    if odd:
        raise ReplayError(f"{folder / odd[0][0]} {odd[0][1]} ({pins_file}); restore {folder} from git "
                          f"(`git checkout -- {folder}`)")
    verified = {}
    for name in present:
        archive, pin = folder / f"{name}.gz", pins.archives[f"{name}.gz"]
        sha256, lines = _read_archive(archive)
        if sha256 != pin.sha256 or every_record:
            problem = first_mismatch(name, lines, sha256, pin)
            if problem:
                raise ReplayError(f"{archive}: {problem}, against {pins_file}; this is not the archive that was "
                                  f"packed: restore it from git (`git checkout -- {folder}`)")
        verified[name] = (lines, pin)
    return verified


def _report(merged: Merged, live: Path, archive: Path, action: str) -> None:
    """One line per cache for the records a merge left out (:mod:`redpo.core.conflicts`)."""
    if merged.contradicted:
        report_conflict(live, f"{live}: {len(merged.contradicted)} of its entries contradict the pinned archive "
                        f"{archive} (first key {merged.contradicted[0]}); {action}")
    if merged.conflicting:
        report_conflict(live, f"{live}: {len(merged.conflicting)} of its keys held a second, different entry (first "
                        f"key {merged.conflicting[0]}); the first entry of each is kept")


def restore_caches(results: ResultsDir) -> list[str]:
    """Bring every live cache up to its pinned archive, one record per key. Returns the names of the caches that
    changed.

    Every archive is checked against its pins before any live cache is touched (:func:`verified_archives`). Then
    each is merged in (:func:`redpo.core.pins.merge`): the archive's records that the live file lacks are added
    (all of them when it is missing); a live record of a key the archive pins differently is replaced by the
    pinned one and reported on the terminal, since the archive is the committed run; a live record the archive does
    not hold is kept, so a clone that restored an older archive, or a local run that went on beside a newer
    snapshot, loses nothing. A torn last line is cut, as the cache would cut it. Runs call this under the results
    lock, before any cache is opened.
    """
    changed = []
    for name, (archived, pin) in verified_archives(results).items():
        live = results.cache / name
        current = complete_lines(live.read_bytes()) if live.is_file() else []
        merged = merge(name, current, archived, pin.records)
        _report(merged, live, replay_dir(results) / f"{name}.gz", "the archive's entries replace them")
        if live.is_file() and merged.lines == current:
            continue
        with atomic_writer(live) as dst:
            dst.writelines(merged.lines)
        changed.append(name)
    return changed


def _write_pins(results: ResultsDir, pins: dict[str, ArchivePin]) -> None:
    with atomic_writer(replay_dir(results) / PINS_FILE) as f:
        f.write((Pins(archives=pins).model_dump_json(indent=1) + "\n").encode())


def archive_caches(results: ResultsDir) -> dict[str, int]:
    """gzip every cache into ``replay/`` (reproducibly: no name, no time stamp) as the merge of its live lines and
    the archive's, one record per key, so an archive never loses a record; then pin them all. Returns the archive's
    files and their sizes in bytes.

    The archive already there is checked against its pins first, so a changed record is never carried into a new
    archive and pinned as if the run had made it; a live record that contradicts a pinned one stays out of the
    archive, with a warning. Live lines are read as complete lines only, so a run still appending to its caches can
    be archived: every write is one whole line (see :mod:`redpo.generation.cache`), and a line being written is left
    for the next archive. A cache with no live file (a clone that has not run yet) keeps its archive as it is.
    """
    verified = verified_archives(results)
    pins: dict[str, ArchivePin] = {}
    for name in ARCHIVED_CACHES:
        live, target = results.cache / name, replay_dir(results) / f"{name}.gz"
        archived, pin = verified.get(name, ([], None))
        if live.is_file():
            merged = merge(name, complete_lines(live.read_bytes()), archived, pin.records if pin else {})
            _report(merged, live, target, "the archive keeps its own")
            if merged.lines != archived or pin is None:
                with atomic_writer(target) as raw, gzip.GzipFile(
                    filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9
                ) as dst:
                    dst.writelines(merged.lines)
                pin = ArchivePin(sha256=sha256_file(target), records=merged.records)
        if pin is not None:
            pins[target.name] = pin
    if pins:
        _write_pins(results, pins)
    return _sizes(results)


def _sizes(results: ResultsDir, names: tuple[str, ...] = (*(f"{n}.gz" for n in ARCHIVED_CACHES), PINS_FILE),
           ) -> dict[str, int]:
    """The archive's files that exist, and their sizes in bytes."""
    files = [replay_dir(results) / name for name in names]
    return {f.name: f.stat().st_size for f in files if f.is_file()}


def pin_archives(results: ResultsDir) -> tuple[dict[str, int], bool]:
    """Pin the archives already in ``replay/`` as they are (the migration of an archive packed before pins
    existed; no model and no live cache is needed). Returns the archive's files with their sizes, and whether
    pins were written: an archive that has them is checked, record by record, and left as it is."""
    folder = replay_dir(results)
    if (folder / PINS_FILE).is_file():
        verified_archives(results, every_record=True)
        return _sizes(results), False
    pins = {}
    for name in ARCHIVED_CACHES:
        archive = folder / f"{name}.gz"
        if archive.is_file():
            sha256, lines = _read_archive(archive)
            records, problem = records_of(name, lines)
            if problem:
                raise ReplayError(f"{archive}: {problem}; an archive with two answers for one key cannot be pinned. "
                                  "Delete it and archive its live cache again (`python -m redpo snapshot`), which "
                                  "keeps the first answer of each key")
            pins[archive.name] = ArchivePin(sha256=sha256, records=records)
    if not pins:
        raise ReplayError(f"{folder} holds no archive to pin ({', '.join(ARCHIVED_CACHES)}, gzipped)")
    _write_pins(results, pins)
    return _sizes(results), True


def pack(results: ResultsDir, models: ReplayModels) -> dict[str, int]:
    """Write the archive of a finished run: its caches and their pins, and the model identities last (their
    presence turns replay on). Returns the archive's files and their sizes in bytes."""
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
