"""Training precision per stage (``encoder.precision``, ``dpo.precision``): fp32, or bf16 autocast where the
hardware multiplies bf16 natively.

Why a check of its own: on a CPU without bf16 instructions, torch still runs bf16 autocast, by converting every
operand and multiplying in fp32: slower than fp32 and rounded like bf16, the worst of both. So bf16 is allowed only
where it pays: a CUDA GPU that supports it, or a CPU that has ``avx512_bf16`` or ``amx_bf16`` *and* whose torch
kernels run at AVX-512 (``ATEN_CPU_CAPABILITY=avx2`` simulates an AVX2-only machine and turns bf16 off too).
Anything else is refused before a stage starts, with one line naming the key (:func:`check_precision`).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from typing import Any, Literal

from redpo.config import ConfigError, Profile
from redpo.models.llama_cpp import cpu_flags

Precision = Literal["fp32", "bf16"]
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
"""``/proc/cpuinfo`` flags of the CPU instructions that multiply bf16 natively (AVX512-BF16 dot products, AMX)."""
PRECISION_KEYS = {"re": "encoder.precision", "oracle": "encoder.precision", "dpo": "dpo.precision"}
"""Stage -> the profile key that sets its precision (the oracle is an RE classifier: it follows ``encoder``)."""


def torch_capability() -> str:
    """torch's CPU kernel level (``AVX512``, ``AVX2``, ``DEFAULT``), as ``ATEN_CPU_CAPABILITY`` may have lowered it."""
    import torch

    return str(torch.backends.cpu.get_cpu_capability())


def cuda_bf16() -> bool:
    """True where torch sees a CUDA GPU that supports bf16 (Ampere and later): bf16 autocast is native there."""
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def native_bf16(flags: list[str] | None = None, capability: str | None = None, cuda: bool | None = None) -> bool:
    """True where bf16 autocast runs on bf16 hardware: a CUDA GPU with bf16, or a CPU with a native bf16 flag whose
    torch kernels run at AVX-512 (arguments override what is detected, for tests and reports)."""
    if cuda_bf16() if cuda is None else cuda:
        return True
    flags = cpu_flags() if flags is None else flags
    capability = torch_capability() if capability is None else capability
    return bool(NATIVE_BF16_FLAGS & set(flags)) and capability.upper().startswith("AVX512")


def stage_precisions(profile: Profile) -> dict[str, Precision]:
    """Each training stage's precision as the profile sets it (what the manifest records)."""
    return {stage: _value(profile, key) for stage, key in PRECISION_KEYS.items()}


def _value(profile: Profile, dotted: str) -> Precision:
    node: Any = profile
    for part in dotted.split("."):
        node = getattr(node, part)
    return node  # type: ignore[no-any-return]


def check_precision(profile: Profile, *keys: str) -> None:
    """Refuse bf16 where this machine has no native bf16 (see the module docstring): one line naming the key.
    ``keys`` limits the check to those precision keys (default: every stage's)."""
    for key in sorted(set(keys or PRECISION_KEYS.values())):
        check_precision_value(_value(profile, key), key)


def check_precision_value(precision: Precision, key: str) -> None:
    """:func:`check_precision` for one value, where a stage holds its section rather than the profile."""
    if precision == "bf16" and not native_bf16():
        raise ConfigError(
            f"{key}: bf16 needs native bf16 (a CUDA GPU, or a CPU with avx512_bf16 or amx_bf16 and torch at "
            f"AVX-512; here torch runs at {torch_capability()} and the CPU lacks those flags or may not use them): "
            f"set it to fp32 in the profile, or -p {key}=fp32"
        )


@contextlib.contextmanager
def autocast(precision: Precision, device: str = "cpu") -> Iterator[None]:
    """bf16 autocast on ``device`` for ``precision="bf16"``, nothing for fp32 (inference outside the Trainer)."""
    if precision != "bf16":
        yield
        return
    import torch

    with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16):
        yield


def trainer_precision(precision: Precision) -> dict[str, bool]:
    """HF ``TrainingArguments`` fields for ``precision``: bf16 mixed precision (autocast, fp32 master weights); on a
    machine without CUDA the Trainer must also be told ``use_cpu``, or it refuses bf16."""
    if precision != "bf16":
        return {"bf16": False}
    import torch

    return {"bf16": True, **({} if torch.cuda.is_available() else {"use_cpu": True})}


def machine_type() -> dict[str, Any]:
    """What decides training speed here: the CPU model, torch's kernel level, the bf16 flags, and a hash of the SIMD
    flags (the same as the golden tests' machine type), so benchmark rows from different machines stay apart."""
    import os
    from pathlib import Path

    import torch

    model = ""
    with contextlib.suppress(OSError):
        model = next((line.partition(":")[2].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), "")
    flags = cpu_flags()
    simd = hashlib.sha256(" ".join(flags).encode()).hexdigest()[:10]
    return {"type": f"{torch_capability()}-{simd}", "cpu": model, "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "capability": torch_capability(),
            "bf16_flags": sorted(NATIVE_BF16_FLAGS & set(flags)), "native_bf16": native_bf16(flags),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
