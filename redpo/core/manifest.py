"""``results/<profile>/manifest.json``: what ran, on what code, data, models and packages, and what it wrote.

Every update is load -> change -> atomic write, so the runner and a notebook's kernel (``record_model``) can
both add to it without holding a stale copy, and a crash leaves the last good manifest in place.
"""

from __future__ import annotations

import contextlib
import platform
import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

from redpo.config import REPO_ROOT, Profile, profile_to_dict
from redpo.core.hashing import sha256_file
from redpo.core.io import ResultsDir, read_json, write_json
from redpo.core.memory import PeakRSS, peak_window

MANIFEST_NAME = "manifest.json"
RUNLOG_NAME = "RUNLOG.md"
"""The run's diary (how it went, where, how long), written by people beside the results and no output of the run:
left out of the file list, so editing it never makes the manifest stale."""
SKIPPED_DIRS = ("cache", "logs", "replay")
"""Sub-folders of ``results/<profile>/`` left out of the file list: re-creatable and possibly large, or (``replay/``)
rewritten by ``snapshot`` and ``pack-replay`` outside any notebook, so a listed hash would go stale."""
CHECKPOINTS_DIR = "checkpoints"
"""A training's resumable state (``adapters/<half>/checkpoints/``), left out of the file list at any depth: it is
removed once the adapter is saved, so a manifest written mid-training would list files the finished run lacks."""
RECORDED_DETAILS = ("device", "server_sha256")
"""What :func:`record_model` copies from a model's details: where transformers ran it, and the sha256 of the
``llama-server`` binary that served it (checked against its build record before every start)."""
EXTRA_PACKAGES = ("redpo", "ipykernel", "nbclient", "huggingface_hub")
"""Recorded besides redpo's own declared dependencies (which are read from its installed metadata)."""


class ModelLike(Protocol):
    """What :func:`record_model` needs from ``redpo.models``' model info."""

    name: str
    path: Any
    sha256: str | None
    source: str


def now() -> str:
    """UTC timestamp, ISO 8601, second precision."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def manifest_path(results: ResultsDir | Path) -> Path:
    """Accept a ``ResultsDir`` or the ``results/<profile>/`` folder itself."""
    root = results.root if isinstance(results, ResultsDir) else Path(results)
    return root / MANIFEST_NAME


def load_manifest(results: ResultsDir | Path) -> dict[str, Any]:
    path = manifest_path(results)
    return read_json(path) if path.is_file() else {}


def update_manifest(results: ResultsDir | Path, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Apply ``change`` to the current manifest and write it back atomically."""
    manifest = load_manifest(results)
    change(manifest)
    write_json(manifest_path(results), manifest)
    return manifest


# ---- provenance --------------------------------------------------------------------------------------
def git_state(repo: Path = REPO_ROOT) -> dict[str, Any]:
    """Commit and dirty flag (tracked files outside ``results/``, which a run or rebuild is itself writing);
    ``None`` outside a git checkout."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"),
                "dirty": bool(git("status", "--porcelain", "-uno", "--", ".", ":(exclude)results"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def package_versions() -> dict[str, str | None]:
    """Versions of redpo's declared runtime dependencies plus the notebook machinery."""
    names = set(EXTRA_PACKAGES)
    for req in metadata.requires("redpo") or []:
        if "extra ==" not in req:
            names.add(re.split(r"[\s<>=!~;\[(]", req, maxsplit=1)[0])
    versions: dict[str, str | None] = {}
    for name in sorted(names, key=str.lower):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def environment() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "packages": package_versions(),
    }


def output_files(root: Path) -> dict[str, dict[str, Any]]:
    """Every file under ``root`` but the manifest, the run log, temp and lock files, ``SKIPPED_DIRS`` and training
    checkpoints, with sha256 and size."""
    files = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        skipped_folder = rel.parts[0] in SKIPPED_DIRS or CHECKPOINTS_DIR in rel.parts[:-1]
        not_an_output = rel.name == MANIFEST_NAME or rel.as_posix() == RUNLOG_NAME or rel.suffix == ".tmp" or (
            rel.name.startswith(".redpo-lock")  # the run's lock and its owner record
        )
        if skipped_folder or not_an_output:
            continue
        files[rel.as_posix()] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    return files


# ---- what the runner and notebooks record -------------------------------------------------------------
def start_run(
    results: ResultsDir | Path,
    profile: Profile,
    overrides: dict[str, Any],
    data_hashes: dict[str, str],
) -> dict[str, Any]:
    """Record the run-level facts; earlier notebook and model entries stay (a ``--only`` re-run updates)."""

    def change(m: dict[str, Any]) -> None:
        m.update(
            profile=profile.name,
            profile_config=profile_to_dict(profile),
            overrides=overrides,
            git=git_state(),
            environment=environment(),
            data_files=data_hashes,
            started=now(),
        )
        m.setdefault("notebooks", {})
        m.setdefault("models", {})

    return update_manifest(results, change)


def record_notebook(
    results: ResultsDir | Path, name: str, entry: dict[str, Any], list_files: bool = True
) -> dict[str, Any]:
    """Store one notebook's status/times/error and (once it has finished) refresh the output file list."""
    root = manifest_path(results).parent

    def change(m: dict[str, Any]) -> None:
        m.setdefault("notebooks", {})[name] = entry
        if list_files:
            m["files"] = output_files(root)
        m["updated"] = now()

    return update_manifest(results, change)


def record_precision(results: ResultsDir | Path, precisions: Mapping[str, Any]) -> dict[str, Any]:
    """The arithmetic each training stage runs in (``re``, ``oracle``, ``dpo``: ``fp32`` or ``bf16``), and whether
    this machine multiplies bf16 natively: the same profile rounds differently on another precision."""

    def change(m: dict[str, Any]) -> None:
        m["precision"] = dict(precisions)

    return update_manifest(results, change)


def record_model(results: ResultsDir | Path, info: ModelLike) -> dict[str, Any]:
    """Called by notebooks after loading a model, so the manifest names exactly what was used."""

    def change(m: dict[str, Any]) -> None:
        m.setdefault("models", {})[info.name] = {
            "path": str(info.path),
            "sha256": info.sha256,
            "source": info.source,
            **{k: v for k, v in (getattr(info, "details", None) or {}).items() if k in RECORDED_DETAILS and v},
        }

    return update_manifest(results, change)


def record_arm(results: ResultsDir | Path, stem: str, model: Mapping[str, Any]) -> dict[str, Any]:
    """Which weights and engine produced the generation file ``stem`` (``obo_k8_s1``): the model key's name
    carries the engine (``…@llama.cpp:<sdist>`` or the transformers model name), its hash, and the adapter's."""

    def change(m: dict[str, Any]) -> None:
        m.setdefault("arms", {})[stem] = dict(model)

    return update_manifest(results, change)


REBUILT = ("figures/", "tables/", "claims.md")
"""What ``python -m redpo figures`` rewrites from the metrics: the manifest's entries for these are refreshed."""


def record_rebuilt_files(results: ResultsDir | Path, rebuilt_paths: tuple[str, ...] = REBUILT) -> dict[str, Any]:
    """Refresh the manifest's sha256/size of rewritten files (paths starting with ``rebuilt_paths``; default: what
    ``figures`` rewrites) and drop entries whose file is gone.

    Only these entries change, and nothing time-dependent is written, so rebuilding unchanged figures leaves the
    manifest byte-identical; files outside them (``kshot/``, adapters) keep the entries of the run that made them.
    When a rebuilt file did change, ``rebuilt_git`` names the commit whose code rewrote it (the run's ``git`` names
    the commit that ran the notebooks).
    """
    root = manifest_path(results).parent
    if not manifest_path(results).is_file():
        return {}
    rebuilt = {rel: entry for rel, entry in output_files(root).items() if rel.startswith(rebuilt_paths)}

    def change(m: dict[str, Any]) -> None:
        old = {rel: entry for rel, entry in m.get("files", {}).items() if rel.startswith(rebuilt_paths)}
        kept = {rel: entry for rel, entry in m.get("files", {}).items() if not rel.startswith(rebuilt_paths)}
        m["files"] = dict(sorted({**kept, **rebuilt}.items()))
        if rebuilt != old:  # the code that rewrote them may be newer than the run's commit: name it
            m["rebuilt_git"] = git_state()

    return update_manifest(results, change)


def record_peak_rss(results: ResultsDir | Path, stage: str, peak: PeakRSS) -> dict[str, Any]:
    """Store one stage's peak RSS under ``peak_rss[stage]`` (a re-run of the stage replaces it), with when it was
    measured: what a machine needs to run each stage, next to the notebook times."""

    def change(m: dict[str, Any]) -> None:
        m.setdefault("peak_rss", {})[stage] = {**peak.to_json(), "measured": now()}

    return update_manifest(results, change)


@contextlib.contextmanager
def recorded_peak(results: ResultsDir | Path, stage: str) -> Iterator[PeakRSS]:
    """Measure the block's peak RSS (:func:`redpo.core.memory.peak_window`: this process and its live children,
    llama-server included) and record it in the manifest as ``stage``, also when the block raises."""
    peak = PeakRSS()
    with contextlib.ExitStack() as stack:
        stack.callback(record_peak_rss, results, stage, peak)  # runs last, after the window has filled ``peak``
        stack.enter_context(peak_window(peak))
        yield peak
