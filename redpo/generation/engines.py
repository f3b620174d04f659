"""Which engine answers a profile's generator calls: transformers in this process, or an inference server.

``generator.backend: transformers`` loads the model here and generates in batches. ``generator.backend:
llama_cpp`` serves the model's GGUF with a local ``llama-server`` (started here, stopped at exit), or talks to
the server at ``generator.server.url`` (``llama-server``, ``vllm serve`` or SGLang), starting nothing. Either
way the calls go through the same cache; the engine and its version are part of the cache key's model name,
so answers of one engine are never served as another's.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer

from redpo.config import GeneratorConfig, LlamaServerConfig, Profile
from redpo.core.hashing import sha256_file
from redpo.core.io import ResultsDir
from redpo.core.manifest import record_model
from redpo.core.replay import ReplayModels
from redpo.generation.backends.llama_server import LlamaServer, free_cores
from redpo.generation.backends.replay import ReplayBackend
from redpo.generation.backends.server import ServerBackend
from redpo.generation.cache import CachedGenerator, LLMCache, ModelKey
from redpo.generation.smoke_fit import fitted_tiny_llama_info
from redpo.models.llama_cpp import SDIST, LlamaCppBuild, convert_lora_to_gguf, convert_to_gguf, require_build
from redpo.models.load import resolve_model
from redpo.models.packaged import cached_build, packaged_gguf, packaged_tokenizer
from redpo.models.registry import PACKAGED, ModelError, ModelInfo, model_dir

GGUF_FILE = "model.gguf"
GGUF_EXPORT_VERSION = 1
"""Bump when the export recipe changes: GGUFs exported before are then made again."""
_SERVERS: dict[tuple[object, ...], LlamaServer] = {}
"""Running servers of this process by (binary, model, adapters, settings): a notebook that opens the generator
twice, or notebook 04 after notebook 02 in one kernel, reuses one server."""


class EngineError(ModelError):
    """The profile asks an engine for something it cannot serve; the message says what to change."""


def gguf_weights(profile: Profile) -> ModelInfo:
    """The GGUF file llama.cpp serves for the profile's generator (``generator.server.weights``).

    ``packaged`` serves a packaged model's own GGUF; any other type is converted once, with the pinned
    llama.cpp's converter, from the weights transformers would load (the fitted tiny model on smoke) and cached
    under ``REDPO_CACHE/models/<source>-<type>-gguf/``.
    """
    gen = profile.generator
    kind = gen.server.weights
    if gen.fit.steps == 0 and kind == "packaged":
        if gen.model in PACKAGED and PACKAGED[gen.model].kind == "gguf":
            return packaged_gguf(PACKAGED[gen.model])
        raise EngineError(
            f"generator.model {gen.model!r} has no packaged GGUF (those are "
            f"{', '.join(n for n, m in PACKAGED.items() if m.kind == 'gguf')}); set generator.server.weights to "
            "f16 or q8_0 to convert its weights, or serve it yourself and set generator.server.url"
        )
    if kind == "packaged":
        raise EngineError("the smoke profile's fitted generator has no packaged GGUF; set generator.server.weights "
                          "to f32 (or f16, q8_0)")
    source = fitted_tiny_llama_info(profile) if gen.fit.steps > 0 else resolve_model(gen.model)
    # A tokenizer redpo trained itself is GPT-2 byte-level BPE, which the converter cannot recognise by hash.
    pre_tokenizer = "gpt-2" if source.source == "tiny" else None
    out = model_dir(f"{Path(source.path).name}-{kind}-gguf")
    def convert(folder: Path) -> dict[str, str]:
        convert_to_gguf(Path(source.path), folder / GGUF_FILE, kind, pre_tokenizer=pre_tokenizer)
        return {"from": source.path, "from_sha256": source.sha256, "type": kind}

    info = cached_build(source.name, out, convert, "local", GGUF_EXPORT_VERSION)
    return dataclasses.replace(info, path=str(out / GGUF_FILE))


def chat_source(profile: Profile) -> str:
    """Where the chat template comes from: the fitted model's folder on smoke, else ``generator.model``."""
    gen = profile.generator
    return str(fitted_tiny_llama_info(profile).path) if gen.fit.steps > 0 else gen.model


@functools.cache
def chat_tokenizer(model: str) -> object:
    """The model's HF tokenizer, for its chat template only: prompts render exactly as the transformers backend
    renders them. A packaged GGUF model's tokenizer is read from the GGUF alone (the same tokenizer its
    transformers conversion saves), so rendering never needs the weights; any other ``model`` resolves as for
    transformers (a folder or the hub)."""
    entry = PACKAGED.get(model)
    source = packaged_tokenizer(entry) if entry is not None and entry.kind == "gguf" else resolve_model(model).path
    return AutoTokenizer.from_pretrained(source, trust_remote_code=False)


def profile_tokenizer(profile: Profile) -> object:
    """The tokenizer whose chat template renders the profile's prompts (no weights are loaded)."""
    return chat_tokenizer(chat_source(profile))


def identity_settings(gen: GeneratorConfig) -> dict[str, Any]:
    """The generator settings that decide which model answers (so which cached answers are valid): the model, its
    weights type, the engine and its pinned version, the backend and dtype, the smoke fitter's settings. A replay
    archive records them, and a profile whose generator differs is refused instead of being answered wrongly."""
    local_engine = gen.backend == "llama_cpp" and not gen.server.url
    return {
        "model": gen.model,
        "backend": gen.backend,
        "dtype": gen.dtype,
        "fit": gen.fit.model_dump(mode="json"),
        "weights": gen.server.weights if local_engine else None,
        "engine": SDIST if local_engine else None,
        "url": fleet_name(gen.server),
        "served_model": gen.server.served_model,
    }


def fleet_name(settings: LlamaServerConfig) -> str | None:
    """The servers at ``generator.server.url`` as the cache keys name them: one URL as it is, a fleet as its sorted
    URLs, so the order of the list changes no key and a one-server list keys as that URL alone."""
    return ",".join(sorted(settings.urls)) or None


def verified_server_binary(build: LlamaCppBuild) -> Path:
    """The build's ``llama-server``, after checking it is the binary that was built (the sha256 ``build.json``
    records, which the manifest then names): a binary replaced since is refused, as a tampered GGUF is."""
    expected, actual = build.info.get("server_sha256"), sha256_file(build.server)
    if actual != expected:
        raise EngineError(f"{build.server}: sha256 {actual}, but {build.root / 'build.json'} records {expected}; the "
                          f"binary changed after it was built. Delete {build.root} and run `python -m redpo engine "
                          "--build`")
    return build.server


def local_server(profile: Profile, results: ResultsDir, weights: Path, loras: tuple[Path, ...] = ()) -> LlamaServer:
    """The ``llama-server`` for these weights and settings, started on first use and reused afterwards."""
    settings = profile.generator.server
    build = require_build()
    threads = settings.threads or free_cores()
    key = (str(build.server), str(weights), tuple(map(str, loras)), threads, settings.parallel, settings.ctx_per_slot)
    server = _SERVERS.get(key)
    if server is None or server.process is None or server.process.poll() is not None:
        server = LlamaServer(
            verified_server_binary(build), weights, log_dir=results.logs, threads=threads,
            parallel=settings.parallel, ctx_per_slot=settings.ctx_per_slot, loras=loras,
            startup_timeout=settings.startup_timeout,
        ).start()
        _SERVERS[key] = server
    return server


def server_backend(profile: Profile, url: str | Sequence[str], tokenizer: Any, *, api_key: str | None = None,
                   **options: Any) -> ServerBackend:
    """A client of the server (or fleet) at ``url`` with the profile's slots per server, context and time-outs
    (``options`` go to :class:`ServerBackend` as they are: ``kind``, ``lora``, ``served_model``)."""
    settings = profile.generator.server
    return ServerBackend(url, tokenizer, slots=settings.parallel, context=settings.ctx_per_slot, api_key=api_key,
                         connect_timeout=settings.connect_timeout, read_timeout=settings.read_timeout, **options)


def local_backend(profile: Profile, server: LlamaServer, tokenizer: Any, **options: Any) -> ServerBackend:
    """A client of a server this process started (its URL and this start's key)."""
    return server_backend(profile, server.url, tokenizer, api_key=server.api_key, **options)


def remote_api_key(profile: Profile) -> str | None:
    """The key of a server someone else runs, read from the variable ``generator.server.api_key_env`` names."""
    name = profile.generator.server.api_key_env
    if name is None:
        return None
    key = os.environ.get(name)
    if not key:
        raise EngineError(f"generator.server.api_key_env is {name!r}, but that environment variable is not set; "
                          f"export {name}=<the key of the server at {fleet_name(profile.generator.server)}>")
    return key


def stop_servers() -> None:
    """Stop every server this process started (they also stop at exit, or when this process dies)."""
    for server in _SERVERS.values():
        server.stop()
    _SERVERS.clear()


def base_hf_dir(profile: Profile) -> Path:
    """The HF folder of the weights adapters are trained on: the fitted model on smoke, else ``generator.model``."""
    if profile.generator.fit.steps > 0:
        return Path(chat_source(profile))
    return Path(resolve_model(profile.generator.model).path)


def lora_gguf(adapter_dir: Path, base_dir: Path, adapter_sha256: str) -> Path:
    """A PEFT adapter as GGUF LoRA, converted once and cached by the adapter's content hash."""
    out = model_dir(f"lora-{adapter_sha256[:16]}") / "adapter.gguf"
    if not out.is_file():
        convert_lora_to_gguf(adapter_dir, base_dir, out)
    return out


def server_generator(
    profile: Profile,
    results: ResultsDir,
    cache: LLMCache,
    *,
    adapters: Sequence[tuple[Path, str]] = (),
    active: int | None = None,
) -> CachedGenerator:
    """A :class:`CachedGenerator` whose backend is an inference server (see the module docstring).

    ``adapters`` are PEFT adapters ``(folder, sha256)``: the local server loads all of them (as GGUF LoRA) and this
    generator applies adapter ``active`` at scale 1 and every other at 0 on each request; the active adapter's
    hash joins the cache key, as on the transformers backend.
    """
    gen, settings = profile.generator, profile.generator.server
    tokenizer = profile_tokenizer(profile)
    adapter_sha = adapters[active][1] if active is not None else None
    if settings.url:  # a server someone else runs: nothing to start, its model is whatever it serves
        # Adapters are served by the user: vLLM/SGLang under their folder names (``--lora-modules A=... B=...``),
        # llama-server in the order A, B (``--lora A.gguf --lora B.gguf``). Their hashes still key the cache.
        served = settings.served_model or gen.model
        if settings.kind == "openai" and active is not None:
            served = adapters[active][0].name
        scales = [{"id": i, "scale": 1.0 if i == active else 0.0} for i in range(len(adapters))]
        backend = server_backend(profile, settings.urls, tokenizer, api_key=remote_api_key(profile),
                                 kind=settings.kind, served_model=served,
                                 lora=scales if settings.kind == "llama_cpp" and adapters else None)
        remote = remote_served_model(profile)
        return CachedGenerator(backend, cache, ModelKey(remote.name, remote.sha256, adapter_sha))
    served = local_served_model(profile)
    loras = tuple(lora_gguf(folder, base_hf_dir(profile), sha) for folder, sha in adapters)
    server = local_server(profile, results, Path(served.path), loras)
    record_model(results, served)
    scales = [{"id": i, "scale": 1.0 if i == active else 0.0} for i in range(len(loras))]
    backend = local_backend(profile, server, tokenizer, lora=scales)
    return CachedGenerator(backend, cache, ModelKey(served.name, served.sha256, adapter_sha))


def remote_served_model(profile: Profile) -> ModelInfo:
    """A server someone else runs (``generator.server.url``), as the cache keys name it: its weights are not ours
    to hash, so the URL and the served model's name stand in for them."""
    gen, settings = profile.generator, profile.generator.server
    fleet = fleet_name(settings)
    return ModelInfo(f"{gen.model}@{settings.kind}:{fleet}", str(fleet), f"served:{settings.served_model or gen.model}",
                     "hub")


def local_served_model(profile: Profile) -> ModelInfo:
    """What the local ``llama-server`` serves, as the cache keys name it: ``<weights>@llama.cpp:<sdist>`` and the
    GGUF's hash (the engine's version is in the name, so one engine's answers are never served as another's)."""
    weights = gguf_weights(profile)
    build = require_build()
    engine = f"llama.cpp:{build.info.get('sdist', '')}"
    return ModelInfo(f"{weights.name}@{engine}", weights.path, weights.sha256, weights.source,
                     {"engine": engine, "server_sha256": build.info.get("server_sha256")})


def replay_generator(
    profile: Profile, results: ResultsDir, cache: LLMCache, models: ReplayModels, *, adapter: str | None = None
) -> CachedGenerator:
    """The generator of a replaying results folder (:mod:`redpo.core.replay`): keys from the archive's model
    identities, prompts rendered with the generator's tokenizer, no weights loaded and no server started."""
    if adapter is None:
        identity = models.identity_for(results, identity_settings(profile.generator))
    else:  # adapters are trained on the profile's own generator only
        models.check_settings(results, identity_settings(profile.generator))
        identity = models.generator
    adapter_sha = models.adapter(results, adapter).sha256 if adapter is not None else None
    label = "generator" if adapter is None else f"generator with adapter {adapter}"
    backend = ReplayBackend(profile_tokenizer(profile), results, label=label)
    return CachedGenerator(backend, cache, ModelKey(identity.name, identity.sha256, adapter_sha))
