"""llama.cpp from a pinned source: ``llama-server`` built once per machine, and its GGUF converters.

Why a source build: the engine's speed on CPUs comes from kernels compiled for the machine's own SIMD
(``GGML_NATIVE``), and the only registry this project may use is PyPI. The PyPI sdist of ``llama-cpp-python``
vendors the whole llama.cpp tree at a known commit (the server, ``convert_hf_to_gguf.py`` and
``convert_lora_to_gguf.py``), so redpo downloads that sdist, checks its sha256, and builds only the
``llama-server`` target with the CPU backend.

The build lands in ``REDPO_CACHE/llama.cpp/<sdist>-<flags>-<cpu>/`` with a ``build.json`` marker written last,
keyed by the sdist's hash, the build flags and the CPU's feature flags: a second ``make setup``, or a fresh clone
on the same machine, finds it and builds nothing; another machine type builds its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from redpo.config import cache_dir
from redpo.core.hashing import sha256_file
from redpo.core.io import write_json
from redpo.models.registry import ModelError

SDIST = "llama-cpp-python==0.3.36"
SDIST_FILE = "llama_cpp_python-0.3.36.tar.gz"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
VENDORED = "llama_cpp_python-0.3.36/vendor/llama.cpp/"
"""The llama.cpp tree inside the sdist; nothing else of it is extracted."""
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_NATIVE=ON",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
)
"""CPU backend with the machine's SIMD; no tests, examples, web UI download or TLS (the server listens on 127.0.0.1
only, and the build must not reach anything but PyPI)."""
BUILD_MARKER = "build.json"


class EngineBuildError(ModelError):
    """Fetching, checking or building llama.cpp failed; the message names the step, its log and the fix."""


@dataclass(frozen=True)
class LlamaCppBuild:
    """A finished build: the server binary, the vendored source (converters, gguf-py) and what was built."""

    root: Path
    info: dict[str, Any]

    @property
    def server(self) -> Path:
        return self.root / "bin" / "llama-server"

    @property
    def source(self) -> Path:
        return self.root / "src"

    @property
    def version(self) -> str:
        return str(self.info.get("version", ""))


def cpu_flags() -> list[str]:
    """The CPU feature flags a native build depends on (SIMD families), sorted; empty off Linux."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    wanted = re.compile(r"^(avx\w*|fma|f16c|sse\w*|amx\w*|bmi\w*)$")
    return sorted({f for f in line.partition(":")[2].split() if wanted.match(f)})


def build_key() -> str:
    """``<sdist hash>-<flags hash>-<cpu hash>``: one build per source, flag set and machine type."""
    digest = lambda text: hashlib.sha256(text.encode()).hexdigest()[:10]  # noqa: E731
    return f"{SDIST_SHA256[:12]}-{digest(' '.join(CMAKE_FLAGS))}-{digest(' '.join(cpu_flags()))}"


def build_dir() -> Path:
    return cache_dir() / "llama.cpp" / build_key()


def find_build() -> LlamaCppBuild | None:
    """The finished build for this machine, or None (the marker is written last, so a half build is None)."""
    root = build_dir()
    try:
        info = json.loads((root / BUILD_MARKER).read_text())
    except (OSError, ValueError):
        return None
    build = LlamaCppBuild(root, info)
    return build if build.server.is_file() else None


def require_build() -> LlamaCppBuild:
    """The build, or an error that says how to make it."""
    build = find_build()
    if build is None:
        raise EngineBuildError(
            f"llama-server is not built for this machine (expected under {build_dir()}); run `make setup` or "
            "`python -m redpo engine --build` (about 10 min on 2 idle cores, once per machine)"
        )
    return build


_BUILD_PERCENT = re.compile(r"^\[\s*(\d+)%\]")
"""CMake's Makefile generator prefixes each step with how far the build is: ``[ 42%] Building CXX object ...``."""
_BUILD_COUNT = re.compile(r"^\[(\d+)/(\d+)\]")
"""Ninja's prefix: ``[123/456] Building CXX object ...``."""


def build_percent(line: str) -> int | None:
    """How far a build is, in percent, from one line of CMake's build output (``None``: the line does not say)."""
    if match := _BUILD_PERCENT.match(line):
        return int(match.group(1))
    if match := _BUILD_COUNT.match(line):
        return 100 * int(match.group(1)) // max(int(match.group(2)), 1)
    return None


def _run(cmd: list[str], log: Path, step: str, cwd: Path | None = None,
         on_line: Callable[[str], object] | None = None) -> None:
    """Run ``cmd`` with its output appended to ``log``; ``on_line`` also reads each line as it comes."""
    with log.open("a") as fh:
        fh.write(f"$ {shlex.join(cmd)}\n")
        fh.flush()
        if on_line is None:
            proc = subprocess.run(cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, check=False)
        else:
            with subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  errors="replace") as proc:
                assert proc.stdout is not None
                for line in proc.stdout:
                    fh.write(line)
                    on_line(line)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-8:])
        raise EngineBuildError(f"llama.cpp {step} failed (exit {proc.returncode}); log: {log}\n{tail}")


def fetch_sdist(work: Path, log: Path) -> Path:
    """Download the pinned sdist with pip (PyPI is the one registry here) and check its sha256."""
    _run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:", SDIST,
          "-d", str(work)], log, f"download of {SDIST}")
    sdist = work / SDIST_FILE
    actual = sha256_file(sdist) if sdist.is_file() else "missing"
    if actual != SDIST_SHA256:
        raise EngineBuildError(
            f"{sdist}: sha256 {actual}, expected {SDIST_SHA256} for {SDIST}; the download was corrupted or "
            "replaced. Retry; if it persists, do not build from it"
        )
    return sdist


def extract_vendored(sdist: Path, dest: Path) -> Path:
    """Extract only ``vendor/llama.cpp/`` from the sdist into ``dest`` (tar's ``data`` filter: no links out)."""
    with tarfile.open(sdist) as tar:
        members = []
        for m in tar.getmembers():
            if m.name.startswith(VENDORED) and len(m.name) > len(VENDORED):
                m.name = m.name[len(VENDORED):]
                members.append(m)
        tar.extractall(dest, members=members, filter="data")
    return dest


def build_llama_server(*, jobs: int | None = None, progress: bool = True) -> LlamaCppBuild:
    """Build ``llama-server`` once for this machine (see the module docstring); a finished build is reused."""
    found = find_build()
    if found is not None:
        return found
    root = build_dir()
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    log = root.parent / f"{root.name}.build.log"  # outside the staging folder: it outlives a failed build
    jobs = jobs or len(os.sched_getaffinity(0))
    start = time.perf_counter()
    bar = tqdm(total=100, desc="build llama-server", unit="%", disable=not progress,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}] {postfix}")
    try:
        if progress:
            bar.write(f"building llama-server from {SDIST} with {jobs} job(s); log: {log}", file=sys.stderr)
        bar.set_postfix_str("download")
        src = extract_vendored(fetch_sdist(staging, log), staging / "src")
        (staging / SDIST_FILE).unlink()
        build = staging / "build"
        bar.set_postfix_str("configure")
        _run(["cmake", "-S", str(src), "-B", str(build), *CMAKE_FLAGS], log, "configure")
        bar.set_postfix_str("compile")
        _run(["cmake", "--build", str(build), "--target", "llama-server", "-j", str(jobs)], log, "build",
             on_line=lambda line: advance(bar, line))
        advance(bar, "[100%]")  # built: a bar short of 100 would read as a failure
        bar.close()
        (staging / "bin").mkdir()
        shutil.copy2(build / "bin" / "llama-server", staging / "bin" / "llama-server")
        shutil.rmtree(build)
        version = subprocess.run([str(staging / "bin" / "llama-server"), "--version"], capture_output=True,
                                 text=True, timeout=60, check=False)
        info = {
            "sdist": SDIST,
            "sdist_sha256": SDIST_SHA256,
            "cmake_flags": list(CMAKE_FLAGS),
            "cpu_flags": cpu_flags(),
            "jobs": jobs,
            "build_seconds": round(time.perf_counter() - start, 1),
            "version": " ".join((version.stdout + version.stderr).split()),
            "server_sha256": sha256_file(staging / "bin" / "llama-server"),
        }
        write_json(staging / BUILD_MARKER, info)
        if root.exists():  # a concurrent build finished first: keep it
            shutil.rmtree(staging)
        else:
            staging.rename(root)
    except BaseException:
        bar.close()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return require_build()


def advance(bar: Any, line: str) -> None:
    """Move a percentage bar up to where a build output line says the build is (never back: CMake counts per
    target, so a later line can show a smaller percentage)."""
    percent = build_percent(line)
    if percent is not None and percent > bar.n:
        bar.update(min(percent, 100) - bar.n)


# ---- GGUF export with the vendored converter ---------------------------------------------------------------
GGUF_TYPES = ("f32", "f16", "bf16", "q8_0")


def convert_to_gguf(hf_dir: Path, out_file: Path, outtype: str, *, pre_tokenizer: str | None = None) -> Path:
    """``convert_hf_to_gguf.py`` from the build's own source: HF weights -> one GGUF file.

    ``pre_tokenizer`` names llama.cpp's pre-tokenizer for a tokenizer the converter cannot recognise. It
    recognises tokenizers by hashing how a *published* vocabulary splits a test string, which a freshly trained
    vocabulary (the smoke model's byte-level BPE) can never match; redpo then states the pre-tokenizer it built
    (``gpt-2``: GPT-2's byte-level regex) instead of letting the converter guess.
    """
    if outtype not in GGUF_TYPES:
        raise ValueError(f"outtype {outtype!r} is not one of {', '.join(GGUF_TYPES)}")
    build = require_build()
    out_file.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "redpo.models.gguf_export", str(build.source), pre_tokenizer or "",
           str(hf_dir), "--outfile", str(out_file), "--outtype", outtype]
    log = out_file.with_suffix(".convert.log")
    _run(cmd, log, f"conversion of {hf_dir} to GGUF")
    return out_file


def convert_lora_to_gguf(adapter_dir: Path, base_dir: Path, out_file: Path) -> Path:
    """A PEFT LoRA adapter -> GGUF LoRA with the build's own ``convert_lora_to_gguf.py`` (f32, as trained).

    ``base_dir`` is the HF folder of the weights the adapter was trained on (only its config is read). The server
    then applies the adapter on its GGUF base, per request, at the scale the request names.
    """
    build = require_build()
    out_file.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(build.source / "convert_lora_to_gguf.py"), "--base", str(base_dir),
           "--outfile", str(out_file), "--outtype", "f32", str(adapter_dir)]
    _run(cmd, out_file.with_suffix(".convert.log"), f"conversion of the LoRA adapter {adapter_dir} to GGUF")
    return out_file
