"""``python -m redpo bench generation --backends transformers,llama_cpp``: the engines on identical work.

Every engine answers the same prompts with the same sampling, bypassing the call cache, so every number is a
real model call. Three workloads, over every relation of the profile:

- **cold step**: one OBO request per relation, nothing cached;
- **OBO chain**: ``CHAIN_STEPS`` OBO steps per relation whose prompts grow by one demonstration per step, as OBO's
  do. The added demonstrations are gold train samples (not the model's own output), so the prompts are
  byte-identical across engines and the comparison is of engines alone;
- **AAO**: one all-at-once call per relation asking for ``generation.n_per_relation`` samples.

Each reports wall seconds, prompt tokens computed, new tokens, valid samples (the parser's verdict), valid samples
per minute, and how many replies copied a demonstration of their prompt (exactly: the parser's ``copy_of_demo``; or
nearly: a valid sample at or above the near-copy threshold); the cold step also times the prompt pass alone
(prefill), so prefill and decode rates are separated. Ratios are against transformers batched, in both currencies:
valid samples per minute and seconds (:func:`ratios`). The **bound** of the chain is what this machine could do at
best: the prompt tokens that must be computed when no prefix is recomputed (each relation's first prompt, then only
what each step adds), plus the engine's new tokens, at the peak prefill and decode rates any engine of the same model
reached on the cold step (:func:`chain_bound`), computed on every run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from redpo.config import ARMS, ConfigError, Profile, SamplingConfig, derive
from redpo.core.io import ResultsDir
from redpo.core.relations import RelationSchema
from redpo.core.sample import RESample
from redpo.data.splits import load_split, profile_schema
from redpo.generation import engines, prompts
from redpo.generation.arms import prepare_generator
from redpo.generation.backends import GenerationOutput
from redpo.generation.backends.transformers import TransformersBackend
from redpo.generation.loops import arm_sampling, select_demos
from redpo.generation.parse import is_near_copy, parse_response

CHAIN_STEPS = 8
BACKENDS = ("transformers", "llama_cpp")
"""Engines by name; ``llama_cpp:<model>`` also runs another registry model's packaged GGUF through llama.cpp on the
same prompts (e.g. ``llama_cpp:qwen2.5-coder-1.5b-instruct``), so a profile's model choice rests on measured
valid samples per hour; ``llama_cpp@<type>`` serves a GGUF of that type (``f32``, ``f16``, ``bf16``, ``q8_0``)
converted from the very weights transformers loads (``generator.server.weights``), so engine and weight type are
compared on the same weights."""
WEIGHT_TYPES = ("f32", "f16", "bf16", "q8_0")
Workload = list[list[str]]
"""Prompts per step, each step one prompt per relation."""


@dataclass(frozen=True)
class Workloads:
    relations: list[str]
    cold: Workload
    chain: Workload
    aao: Workload
    fresh_prompt_tokens: int
    """Prompt tokens of the chain when no prefix is recomputed: first prompts in full, then each step's growth."""
    demos: dict[str, list[RESample]]
    """Per relation, every demonstration any of its prompts shows (a copy of any of them is a copy)."""


def _demos(
    profile: Profile, train: Sequence[RESample], relation: str, extra: int
) -> tuple[list[RESample], list[RESample]]:
    pool = [s for s in train if s.relation == relation]
    demos = select_demos(pool, profile.generation.num_demos, profile.generation.seed, relation)
    return demos, [s for s in pool if s not in demos][:extra]


def build_workloads(profile: Profile, schema: RelationSchema, render: Callable[[prompts.Messages], str],
                    count_tokens: Callable[[str], int]) -> Workloads:
    """The three workloads' rendered prompts (see the module docstring), for every relation with train data."""
    train = load_split(profile, "train")
    gen = profile.generation
    relations = [r for r in (profile.dataset.relations or schema.labels) if any(s.relation == r for s in train)]
    chain: Workload = [[] for _ in range(CHAIN_STEPS)]
    aao, fresh, shown = [], 0, {}
    for rel in relations:
        demos, extra = _demos(profile, train, rel, CHAIN_STEPS - 1)
        shown[rel] = demos + extra
        previous = ""
        for step in range(CHAIN_STEPS):
            text = render(prompts.icl_prompt(schema, rel, demos + extra[:step], mode="obo", n=1, dissimilar=True))
            chain[step].append(text)
            fresh += count_tokens(text) - (count_tokens(_shared(previous, text)) if previous else 0)
            previous = text
        aao.append(render(prompts.icl_prompt(schema, rel, demos, mode="aao", n=gen.n_per_relation, dissimilar=True)))
    return Workloads(relations, [chain[0]], chain, [aao], fresh, shown)


def _shared(a: str, b: str) -> str:
    n = next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), min(len(a), len(b)))
    return a[:n]


def _judge(outputs: Sequence[GenerationOutput], work: Workloads, profile: Profile, schema: RelationSchema,
           expect: str) -> tuple[int, int, int]:
    """``(valid, exact copies, near copies)`` of one step's replies, against each relation's demonstrations."""
    gen = profile.generation
    valid = exact = near = 0
    for out, rel in zip(outputs, work.relations, strict=True):
        parsed = parse_response(out.text, rel, schema, demos=work.demos[rel], expect=expect,  # type: ignore[arg-type]
                                min_tokens=gen.min_tokens, max_tokens=gen.max_tokens)
        valid += len(parsed.valid)
        exact += parsed.reason_counts().get("copy_of_demo", 0)
        near += sum(is_near_copy(s, work.demos[rel], gen.near_copy_threshold) for s in parsed.valid)
    return valid, exact, near


def run_workload(generate: Callable[[list[str], SamplingConfig], list[GenerationOutput]], work: Workload,
                 sampling: SamplingConfig, workloads: Workloads, profile: Profile, schema: RelationSchema,
                 expect: str) -> dict[str, Any]:
    """Every step of ``work`` through ``generate``; seconds, new tokens, valid samples, copies, valid per minute."""
    t0 = time.perf_counter()
    new_tokens = valid = exact = near = 0
    for step in work:
        outputs = generate(step, sampling)
        new_tokens += sum(o.n_new_tokens for o in outputs)
        v, e, n = _judge(outputs, workloads, profile, schema, expect)
        valid, exact, near = valid + v, exact + e, near + n
    seconds = time.perf_counter() - t0
    return {"seconds": round(seconds, 2), "steps": len(work), "requests": sum(map(len, work)),
            "new_tokens": new_tokens, "valid": valid, "valid_per_min": round(60 * valid / seconds, 2),
            "exact_copies": exact, "near_copies": near}


def _rates(result: dict[str, Any], prompt_tokens: int, prefill_seconds: float) -> dict[str, Any]:
    decode_seconds = result["seconds"] - prefill_seconds
    return {**result, "prompt_tokens": prompt_tokens, "prefill_seconds": round(prefill_seconds, 2),
            "prefill_tok_s": round(prompt_tokens / prefill_seconds, 1) if prefill_seconds > 0 else None,
            "decode_tok_s": round(result["new_tokens"] / decode_seconds, 1) if decode_seconds > 0 else None}


def bench_transformers(profile: Profile, work: Workloads, schema: RelationSchema) -> dict[str, Any]:
    """transformers batched (``generator.batch_size``), as notebook runs with that backend send the steps."""
    loaded = prepare_generator(profile)
    backend = TransformersBackend(loaded, profile.generator.batch_size)
    sampling, seed = _obo_sampling(profile), profile.generation.seed
    count = lambda text: len(loaded.tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    generate = lambda batch, s: backend.generate(batch, s, seed)  # noqa: E731
    generate(work.cold[0][:1], sampling)  # warm-up: first-call allocations
    t0 = time.perf_counter()
    for start in range(0, len(work.cold[0]), backend.batch_size):
        enc = loaded.tokenizer(work.cold[0][start : start + backend.batch_size], return_tensors="pt", padding=True,
                               add_special_tokens=False)
        with torch.inference_mode():
            loaded.model(**enc, logits_to_keep=1)
    prefill = time.perf_counter() - t0
    cold_tokens = sum(map(count, work.cold[0]))
    out = {"cold_step": _rates(run_workload(generate, work.cold, sampling, work, profile, schema, "one"),
                               cold_tokens, prefill)}
    chain = run_workload(generate, work.chain, sampling, work, profile, schema, "one")
    out["obo_chain"] = {**chain, "prompt_tokens": sum(count(p) for step in work.chain for p in step)}
    aao_sampling = _aao_sampling(profile)
    out["aao"] = run_workload(generate, work.aao, aao_sampling, work, profile, schema, "many")
    out["engine"] = {"name": "transformers", "model": loaded.info.name, "sha256": loaded.info.sha256,
                     "torch_threads": torch.get_num_threads(), "batch_size": backend.batch_size}
    return out


def bench_llama_cpp(profile: Profile, results: ResultsDir, work: Workloads, schema: RelationSchema,
                    model: str | None = None, weights_type: str | None = None) -> dict[str, Any]:
    """``llama-server`` with one slot per relation; each workload on a fresh server, so nothing starts cached.

    ``model`` serves another registry model's packaged GGUF instead of the profile's (same prompts: a model of the
    same family shares the chat template and tokenizer); ``weights_type`` a GGUF of that type converted from the
    weights transformers loads."""
    sampling, seed = _obo_sampling(profile), profile.generation.seed
    slots = len(work.relations)
    other_model = {"generator.server.weights": "packaged", "generator.model": model, "generator.fit.steps": 0}
    other_type = {"generator.server.weights": weights_type}
    prof = derive(profile, {"generator.server.parallel": slots, **(other_model if model else {}),
                            **(other_type if weights_type else {})})
    tokenizer = engines.profile_tokenizer(profile)
    weights = engines.gguf_weights(prof)
    out: dict[str, Any] = {}
    for name, workload, sampling_, expect in (("cold_step", work.cold, sampling, "one"),
                                               ("obo_chain", work.chain, sampling, "one"),
                                               ("aao", work.aao, _aao_sampling(profile), "many")):
        engines.stop_servers()
        server = engines.local_server(prof, results, Path(weights.path))
        backend = engines.local_backend(prof, server, tokenizer)
        if name == "cold_step":  # the prompt pass alone: n_predict 0 evaluates the prompts and stops
            t0 = time.perf_counter()
            # A request, not a profile: 0 new tokens is outside what a profile may ask, so it is not derived.
            backend.generate(workload[0], sampling.model_copy(update={"max_new_tokens": 0}), seed)
            prefill = time.perf_counter() - t0
            engines.stop_servers()
            server = engines.local_server(prof, results, Path(weights.path))
            backend = engines.local_backend(prof, server, tokenizer)
        result = run_workload(lambda batch, s, b=backend: b.generate(batch, s, seed), workload, sampling_,
                              work, profile, schema, expect)
        result["prompt_tokens"] = backend.stats.prompt_tokens
        out[name] = _rates(result, backend.stats.prompt_tokens, prefill) if name == "cold_step" else result
    engines.stop_servers()
    out["engine"] = {"name": "llama.cpp", "model": prof.generator.model, "weights": weights.path,
                     "weights_type": prof.generator.server.weights,
                     "sha256": weights.sha256, "threads": prof.generator.server.threads or engines.free_cores(),
                     "slots": slots}
    return out


def _obo_sampling(profile: Profile) -> SamplingConfig:
    """OBO calls' sampling, as the loops send it (with ``generation.obo_stop``)."""
    return arm_sampling(profile.generator.sampling, profile.generation, ARMS["obo"], profile_schema(profile))


def _aao_sampling(profile: Profile) -> SamplingConfig:
    return arm_sampling(profile.generator.sampling, profile.generation, ARMS["aao"], profile_schema(profile))


def bench_generation(profile: Profile, results: ResultsDir, *, backends: Sequence[str] = BACKENDS) -> dict[str, Any]:
    """Run the workloads on each backend in turn (one engine at a time: they never share the cores)."""
    unknown = sorted(b for b in backends if b.partition(":")[0].partition("@")[0] not in BACKENDS
                     or (b.startswith("transformers") and b != "transformers")
                     or b.partition("@")[2] not in ("", *WEIGHT_TYPES))
    if unknown:
        raise ConfigError(f"unknown backend(s) {unknown}; use {', '.join(BACKENDS)}, llama_cpp:<registry model> or "
                          f"llama_cpp@<{'|'.join(WEIGHT_TYPES)}>")
    schema = profile_schema(profile)
    tokenizer = engines.profile_tokenizer(profile)
    work = build_workloads(profile, schema, lambda m: prompts.render(m, tokenizer),
                           lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"]))
    report: dict[str, Any] = {"profile": profile.name, "model": profile.generator.model,
                              "relations": len(work.relations), "chain_steps": CHAIN_STEPS,
                              "chain_fresh_prompt_tokens": work.fresh_prompt_tokens, "backends": {}}
    for name in backends:
        print(f"bench: {name} ...", flush=True)
        spec, _, weights_type = name.partition("@")
        engine, _, model = spec.partition(":")
        report["backends"][name] = (bench_transformers(profile, work, schema) if engine == "transformers"
                                    else bench_llama_cpp(profile, results, work, schema, model or None,
                                                         weights_type or None))
    report["ratios"] = ratios(report["backends"])
    if "llama_cpp" in report["ratios"]:  # the names the committed benchmark used
        report["ratio_valid_per_min"] = report["ratios"]["llama_cpp"]["valid_per_min"]
        report["ratio_seconds"] = report["ratios"]["llama_cpp"]["seconds"]
    for result in report["backends"].values():  # each engine's rates on the same prompts
        for mode in ("cold_step", "obo_chain", "aao"):
            r = result[mode]
            replies = r["requests"]
            r["valid_per_request"] = round(r["valid"] / replies, 3) if replies else None
            r["exact_copy_rate"] = round(r["exact_copies"] / replies, 3) if replies else None
            r["near_copy_share"] = round(r["near_copies"] / r["valid"], 3) if r["valid"] else None
    report["chain_bound"] = chain_bound(report["backends"], work.fresh_prompt_tokens)
    return report


MODES = ("cold_step", "obo_chain", "aao")


def ratios(backends: dict[str, Any]) -> dict[str, Any]:
    """Each other engine against transformers, per workload, in both currencies: valid samples per minute (what a
    run buys) and seconds for the same requests (what the engine costs). They differ when the engines' samples
    differ in validity: a faster engine can also write more or fewer usable samples."""
    if "transformers" not in backends:
        return {}
    t = backends["transformers"]
    return {name: {"valid_per_min": {m: round(r[m]["valid_per_min"] / t[m]["valid_per_min"], 2)
                                     if t[m]["valid_per_min"] else None for m in MODES},
                   "seconds": {m: round(t[m]["seconds"] / r[m]["seconds"], 2) for m in MODES}}
            for name, r in backends.items() if name != "transformers"}


def chain_bound(backends: dict[str, Any], fresh_prompt_tokens: int) -> dict[str, Any]:
    """The machine's bound on the OBO chain, per engine: the prompt tokens no engine can avoid computing (no prefix
    recomputed) at the fastest prefill rate measured on this machine for the same model, plus the engine's own new
    tokens at the fastest decode rate, whichever engine reached them on the cold step. Peak rates across engines,
    so the bound exists whenever any engine's cold step measured both (llama.cpp's decode rate is lost when its
    separately timed prefill pass takes as long as its whole step, as it can on a busy machine)."""
    def peak(model: str, key: str) -> tuple[float | None, str | None]:
        rated = [(r["cold_step"][key], name) for name, r in backends.items()
                 if r["engine"]["model"] == model and r["cold_step"].get(key)]
        return max(rated) if rated else (None, None)

    out: dict[str, Any] = {"fresh_prompt_tokens": fresh_prompt_tokens, "engines": {}}
    for name, r in backends.items():
        (prefill, prefill_from), (decode, decode_from) = (peak(r["engine"]["model"], "prefill_tok_s"),
                                                          peak(r["engine"]["model"], "decode_tok_s"))
        bound = fresh_prompt_tokens / prefill + r["obo_chain"]["new_tokens"] / decode if prefill and decode else None
        out["engines"][name] = {"seconds": round(bound, 1) if bound else None,
                                "fraction_reached": round(bound / r["obo_chain"]["seconds"], 2) if bound else None,
                                "prefill_tok_s": prefill, "prefill_from": prefill_from,
                                "decode_tok_s": decode, "decode_from": decode_from}
    if "llama_cpp" in out["engines"]:  # the names the committed benchmark used
        out.update({k: out["engines"]["llama_cpp"][k] for k in ("seconds", "fraction_reached")})
    return out


# ---- determinism -------------------------------------------------------------------------------------------
DETERMINISM_SLOTS = (1, 4, 0)
"""Server slot counts compared; 0 means one slot per relation (what ``bench generation`` uses)."""


def bench_determinism(profile: Profile, results: ResultsDir, *, backends: Sequence[str] = ("llama_cpp",),
                      repeats: int = 2) -> dict[str, Any]:
    """Does ``llama-server`` give the same reply for the same prompt and seed across runs and slot counts?

    One OBO step's prompts (one per relation, the chain's second step), sampled as the profile samples, on a fresh
    server per run: ``repeats`` runs at each slot count of :data:`DETERMINISM_SLOTS`. Every run is compared with the
    first run overall (across slot counts) and with the first run at its own slot count (across repeats).
    """
    if list(backends) != ["llama_cpp"]:
        raise ValueError(f"bench determinism measures llama_cpp only, got {list(backends)}")
    schema = profile_schema(profile)
    tokenizer = engines.profile_tokenizer(profile)
    work = build_workloads(profile, schema, lambda m: prompts.render(m, tokenizer),
                           lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"]))
    step, sampling, seed = work.chain[1], _obo_sampling(profile), profile.generation.seed
    weights = engines.gguf_weights(profile)
    runs: dict[str, list[str]] = {}
    for slots in dict.fromkeys(n or len(step) for n in DETERMINISM_SLOTS):
        prof = derive(profile, {"generator.server.parallel": slots})
        for repeat in range(repeats):
            engines.stop_servers()
            server = engines.local_server(prof, results, Path(weights.path))
            backend = engines.local_backend(prof, server, tokenizer)
            runs[f"slots={slots} run={repeat + 1}"] = [o.text for o in backend.generate(step, sampling, seed)]
    engines.stop_servers()
    first_name, first = next(iter(runs.items()))
    same = {name: sum(a == b for a, b in zip(first, texts, strict=True)) for name, texts in runs.items()}
    repeats_agree = {}  # per slot count: replies identical in every repeat (run 1 vs each later run)
    for name, texts in runs.items():
        slots_name, _, run = name.partition(" ")
        base = runs[f"{slots_name} run=1"]
        if run != "run=1":
            repeats_agree[f"{slots_name} {run} vs run=1"] = sum(a == b for a, b in zip(base, texts, strict=True))
    return {"profile": profile.name, "model": profile.generator.model, "weights_sha256": weights.sha256,
            "threads": profile.generator.server.threads or engines.free_cores(), "prompts": len(step),
            "sampling": sampling.model_dump(mode="json"), "reference": first_name,
            "identical_to_reference": same, "identical_across_repeats": repeats_agree,
            "all_identical": all(n == len(step) for n in same.values())}
