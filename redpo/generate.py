"""Sample generation: the baseline, AAO and OBO loops over a cached, batched LLM backend.

Design, in the order the code uses it:

- A **backend** (:class:`Backend`) turns a batch of rendered prompts into texts. :class:`TransformersBackend`
  is the one shipped; a vLLM backend only has to implement ``render`` and ``generate``.
- :class:`CachedGenerator` puts the content-addressed :class:`~redpo.llm_cache.LLMCache` in front of a backend:
  cached keys are answered from the file, misses go to the model in chunks of ``batch_size``, each chunk is
  one cache line whose sampling RNG is seeded from its keys. A killed run resumes with identical outputs.
- The **loops** advance every relation one *step* at a time, and each step sends the pending requests of all
  relations as one batch, so OBO is batched across relations rather than run one relation after another.
- A relation's **demonstrations** are ``generation.num_demos`` gold samples drawn (seeded by
  ``generation.seed`` and the relation name) from its K-shot samples; the duplicate check compares against
  all K-shot samples of the relation and every earlier valid sample of the same relation and arm.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

from tqdm import tqdm

from redpo import prompts
from redpo.config import Profile, SamplingConfig
from redpo.llm_cache import CacheEntry, LLMCache, batch_seed, cache_key
from redpo.parse import parse_response
from redpo.results import ResultsDir, read_json, read_samples, write_json, write_samples
from redpo.sample import RESample

PromptKind = Literal["baseline", "aao", "obo"]


# ==== backends ==========================================================================================
@dataclass(frozen=True)
class GenerationOutput:
    """One response: the decoded new text (prompt excluded) and how many tokens the model produced."""

    text: str
    n_new_tokens: int


class Backend(Protocol):
    """What the loops need from a model runtime. Add vLLM etc. by implementing this; the loops stay as they are."""

    batch_size: int

    def render(self, messages: prompts.Messages) -> str:
        """The prompt string in the model's own chat format (it is part of the cache key)."""
        ...

    def generate(self, prompts: list[str], sampling: SamplingConfig, seed: int) -> list[GenerationOutput]:
        """One output per prompt, in order; ``seed`` makes sampling reproducible for this exact batch."""
        ...


SHARED_PREFIX_MIN_TOKENS = 256
"""Greedy batches whose prompts share at least this many leading tokens prefill them once (direct-LLM RE)."""


class TransformersBackend:
    """Left-padded batched ``model.generate`` on a loaded HF causal LM (CPU or GPU)."""

    def __init__(self, loaded: Any, batch_size: int, *, min_shared_prefix: int = SHARED_PREFIX_MIN_TOKENS) -> None:
        self.model = loaded.model.eval()
        self.min_shared_prefix = min_shared_prefix
        self.tokenizer = loaded.tokenizer
        self.info = loaded.info
        self.batch_size = batch_size
        self.tokenizer.padding_side = "left"  # decoder-only batching: the new tokens must all start at one column
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        self._eos_ids = set(eos if isinstance(eos, list) else [eos])
        self.calls = 0
        self._prefix: tuple[list[int], Any] | None = None
        """(token ids, KV cache) of the last shared prompt prefix; see :meth:`_reuse_shared_prefix`."""

    def render(self, messages: prompts.Messages) -> str:
        return prompts.render(messages, self.tokenizer)

    def generate(self, prompts: list[str], sampling: SamplingConfig, seed: int) -> list[GenerationOutput]:
        import torch  # here, not at module level: `python -m redpo figures` reads arm files without torch

        torch.manual_seed(seed)
        if sampling.temperature == 0:
            encoded = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
            if self._reuse_shared_prefix(encoded):
                return [self._greedy_after_prefix(ids, sampling) for ids in encoded]
        out: list[GenerationOutput] = []
        for start in range(0, len(prompts), self.batch_size):
            out.extend(self._generate_batch(prompts[start : start + self.batch_size], sampling))
        return out

    def _generate_kwargs(self, sampling: SamplingConfig) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "max_new_tokens": sampling.max_new_tokens,
            "repetition_penalty": sampling.repetition_penalty,
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        if sampling.temperature > 0:
            kwargs.update(
                do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k
            )
        else:  # greedy; clear the model's sampling defaults so they neither apply nor warn
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kwargs

    def _generate_batch(self, batch: list[str], sampling: SamplingConfig) -> list[GenerationOutput]:
        import torch

        # The rendered chat template already holds any BOS; adding special tokens again would double it.
        enc = self.tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False)
        enc = enc.to(self.model.device)
        with torch.inference_mode():
            seqs = self.model.generate(**enc, **self._generate_kwargs(sampling))
        new = seqs[:, enc["input_ids"].shape[1] :].tolist()
        self.calls += 1
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return [GenerationOutput(t, self._n_generated(ids)) for t, ids in zip(texts, new, strict=True)]

    def _reuse_shared_prefix(self, encoded: list[list[int]]) -> bool:
        """Make ``self._prefix`` the KV cache of the leading tokens all of ``encoded`` share, if that is long.

        Why: the direct-LLM RE prompts repeat ~1,200 tokens of label explanations and differ only in the final
        sentence, so prefilling the shared part once and each sentence alone is many times cheaper than
        prefilling every prompt in full. A later batch that shares less of the cached prefix gets the common part
        prefilled anew (once: the batches after it share that part too). Greedy decoding only, so the answers
        equal full-prompt decoding up to float rounding.
        """
        import torch

        shared = min(len(ids) for ids in encoded) - 1  # every prompt keeps >= 1 token to feed the model
        for ids in encoded[1:]:
            shared = _common_length(ids, encoded[0], shared)
        if self._prefix is not None:
            shared = _common_length(self._prefix[0], encoded[0], shared)
            if shared == len(self._prefix[0]):
                return True
        if shared < self.min_shared_prefix:
            return False
        prefix_ids = encoded[0][:shared]
        with torch.inference_mode():
            out = self.model(torch.tensor([prefix_ids], device=self.model.device), use_cache=True)
        self._prefix = (prefix_ids, out.past_key_values)
        return True

    def _greedy_after_prefix(self, ids: list[int], sampling: SamplingConfig) -> GenerationOutput:
        import copy

        import torch

        assert self._prefix is not None
        cache = copy.deepcopy(self._prefix[1])  # generate() extends the cache in place
        input_ids = torch.tensor([ids], device=self.model.device)
        with torch.inference_mode():
            seqs = self.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                past_key_values=cache,
                **self._generate_kwargs(sampling),
            )
        new = seqs[0, len(ids) :].tolist()
        self.calls += 1
        return GenerationOutput(self.tokenizer.decode(new, skip_special_tokens=True), self._n_generated(new))

    def _n_generated(self, ids: list[int]) -> int:
        """Tokens the model actually produced: up to and including the first EOS (the rest is padding)."""
        for i, tok in enumerate(ids):
            if tok in self._eos_ids:
                return i + 1
        return len(ids)


def _common_length(a: Sequence[int], b: Sequence[int], limit: int) -> int:
    """How many leading tokens ``a`` and ``b`` share, counting at most ``limit``."""
    limit = min(limit, len(a), len(b))
    return next((i for i in range(limit) if a[i] != b[i]), limit)


# ==== cache in front of a backend =======================================================================
@dataclass(frozen=True)
class ModelKey:
    """What identifies the weights in a cache key: name, content hash, and the LoRA adapter's hash if any."""

    name: str
    sha256: str
    adapter_sha256: str | None = None

    @classmethod
    def from_info(cls, info: Any, adapter_sha256: str | None = None) -> ModelKey:
        adapter = (getattr(info, "details", None) or {}).get("adapter") or {}
        return cls(info.name, info.sha256, adapter_sha256 or adapter.get("sha256"))


@dataclass(frozen=True)
class Request:
    """One model call. ``seed`` and ``attempt`` are key fields: the same prompt retried is a new call."""

    prompt: str
    sampling: SamplingConfig
    seed: int
    attempt: int


@dataclass(frozen=True)
class Response:
    key: str
    text: str
    n_new_tokens: int
    seconds: float
    """Wall time of the batch that produced it, divided by the batch size."""
    cached: bool


class CachedGenerator:
    """Answers :class:`Request` lists from the cache, sending only the misses to the backend, in chunks."""

    def __init__(
        self, backend: Backend, cache: LLMCache, model_key: ModelKey, *, batch_size: int | None = None
    ) -> None:
        self.backend = backend
        self.cache = cache
        self.model_key = model_key
        self.batch_size = batch_size or backend.batch_size
        self.backend_calls = 0

    def render(self, messages: prompts.Messages) -> str:
        return self.backend.render(messages)

    def key(self, request: Request) -> str:
        return cache_key(
            model=self.model_key.name,
            model_sha256=self.model_key.sha256,
            adapter_sha256=self.model_key.adapter_sha256,
            prompt=request.prompt,
            sampling=request.sampling.model_dump(mode="json"),
            seed=request.seed,
            attempt=request.attempt,
        )

    def generate(self, requests: Sequence[Request]) -> list[Response]:
        """Responses in request order. Misses are grouped by sampling config, then chunked, in request order,
        so a run resumed after a crash forms exactly the chunks the lost ones were (same keys, same seeds)."""
        keys = [self.key(r) for r in requests]
        found = {k: (e, True) for k, e in self.cache.lookup(keys).items()}
        groups: dict[str, list[tuple[str, Request]]] = {}
        queued: set[str] = set()
        for k, r in zip(keys, requests, strict=True):
            if k not in found and k not in queued:
                queued.add(k)
                groups.setdefault(r.sampling.model_dump_json(), []).append((k, r))
        for group in groups.values():
            for start in range(0, len(group), self.batch_size):
                chunk = group[start : start + self.batch_size]
                for entry in self._call_backend(chunk):
                    found[entry.key] = (entry, False)
        return [
            Response(k, found[k][0].text, found[k][0].n_new_tokens, found[k][0].seconds, found[k][1])
            for k in keys
        ]

    def _call_backend(self, chunk: list[tuple[str, Request]]) -> list[CacheEntry]:
        chunk_keys = [k for k, _ in chunk]
        seed = batch_seed(chunk_keys)
        t0 = time.perf_counter()
        outputs = self.backend.generate([r.prompt for _, r in chunk], chunk[0][1].sampling, seed)
        seconds = time.perf_counter() - t0
        self.backend_calls += 1
        if len(outputs) != len(chunk):
            raise RuntimeError(f"backend returned {len(outputs)} outputs for {len(chunk)} prompts")
        entries = [
            CacheEntry(k, o.text, int(o.n_new_tokens), seconds / len(chunk))
            for k, o in zip(chunk_keys, outputs, strict=True)
        ]
        self.cache.append_batch(entries, model=self.model_key.name, batch_seed=seed, batch_seconds=seconds)
        return entries

    def stats(self) -> dict[str, int]:
        return {**self.cache.stats(), "backend_calls": self.backend_calls}


# ==== arms ==============================================================================================
@dataclass(frozen=True)
class ArmSpec:
    """Which prompt an arm uses and whether the dissimilarity sentence is in it."""

    prompt: PromptKind
    dissimilar: bool

    @property
    def many(self) -> bool:
        """Baseline and AAO ask for many samples per call; OBO for one."""
        return self.prompt != "obo"


ARMS: dict[str, ArmSpec] = {
    "baseline": ArmSpec("baseline", dissimilar=False),
    "aao": ArmSpec("aao", dissimilar=True),
    "aao_nodiv": ArmSpec("aao", dissimilar=False),
    "obo": ArmSpec("obo", dissimilar=True),
    "obo_nodiv": ArmSpec("obo", dissimilar=False),
}


@dataclass
class RelationStats:
    """Per relation and arm: what was asked, what came back valid, and why the rest was rejected."""

    relation: str
    manual: bool = False
    attempts: int = 0
    valid: int = 0
    surplus: int = 0
    """Valid samples beyond ``n_per_relation`` that an AAO call returned; dropped, not counted as valid."""
    new_tokens: int = 0
    rejects: Counter[str] = field(default_factory=Counter)
    stop: str = ""
    """``n_reached``, ``budget`` or ``manual``."""

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "rejects": dict(sorted(self.rejects.items()))}

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> RelationStats:
        return cls(**{**row, "rejects": Counter(row.get("rejects", {}))})


@dataclass(frozen=True)
class ResponseRecord:
    """One raw response with its parse outcome, kept for the notebooks' reject-reason tables."""

    relation: str
    step: int
    attempt: int
    n_requested: int
    key: str
    cached: bool
    n_new_tokens: int
    text: str
    valid: list[str]
    """Marked text of the samples kept from this response."""
    rejects: list[dict[str, str]]
    """``{"reason", "text"}`` for every line that was dropped (surplus lines get reason ``surplus``)."""


@dataclass
class ArmResult:
    """The samples of one arm per relation, the stats behind them, and every raw response."""

    arm: str
    name: str
    """File stem: the arm, plus ``_<adapter>`` for an adapter-driven run (e.g. ``obo_dpo``)."""
    samples: dict[str, list[RESample]]
    stats: dict[str, RelationStats]
    records: list[ResponseRecord] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    """Model, adapter, K, K-shot seed, profile, steps, seconds and cache counters."""

    def all_samples(self) -> list[RESample]:
        return [s for rel in self.samples.values() for s in rel]

    def reject_counts(self) -> Counter[str]:
        return sum((st.rejects for st in self.stats.values()), Counter())

    def table(self) -> list[dict[str, Any]]:
        """One row per relation (attempts, valid, stop, reject reasons) for a notebook DataFrame."""
        return [
            {"arm": self.name, **{k: v for k, v in st.to_json().items() if k != "rejects"}, **st.rejects}
            for st in self.stats.values()
        ]


@dataclass
class _RelState:
    relation: str
    gold: list[RESample]
    """The demonstrations drawn from the K-shot split."""
    pool: list[RESample]
    """All K-shot samples of the relation (duplicate check)."""
    stats: RelationStats
    valid: list[RESample] = field(default_factory=list)


def select_demos(pool: Sequence[RESample], n: int, seed: int, relation: str) -> list[RESample]:
    """``n`` samples drawn without replacement, seeded per relation so adding a relation changes no other."""
    rng = random.Random(_stable_int(f"demos:{seed}:{relation}"))
    return rng.sample(list(pool), min(n, len(pool)))


def _stable_int(text: str) -> int:
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:15], 16)


def _arm_sampling(profile: Profile, spec: ArmSpec) -> SamplingConfig:
    """``sampling.max_new_tokens`` is per sample: a many-sample call gets it times ``n_per_relation``.

    One budget for every call of the arm keeps them in one batch; generation still stops at EOS.
    """
    sampling = profile.generator.sampling
    if not spec.many:
        return sampling
    return sampling.model_copy(
        update={"max_new_tokens": sampling.max_new_tokens * profile.generation.n_per_relation}
    )


def _messages(spec: ArmSpec, schema: Any, state: _RelState, n: int, window: int | None) -> prompts.Messages:
    if spec.prompt == "baseline":
        return prompts.baseline_prompt(schema, state.relation, state.gold, n)
    if spec.prompt == "aao":
        return prompts.icl_prompt(schema, state.relation, state.gold, mode="aao", n=n, dissimilar=spec.dissimilar)
    demos = state.gold + state.valid  # OBO: every valid sample joins the demonstrations of the next call
    if window is not None:
        demos = demos[-window:]
    return prompts.icl_prompt(schema, state.relation, demos, mode="obo", n=1, dissimilar=spec.dissimilar)


def first_prompt(
    arm: str, profile: Profile, schema: Any, relation: str, pool: Sequence[RESample], generator: Any
) -> str:
    """The rendered prompt of ``relation``'s first call in ``arm`` (for the bench and for showing prompts)."""
    gen = profile.generation
    demos = select_demos(pool, gen.num_demos, gen.seed, relation)
    state = _RelState(relation, demos, list(pool), RelationStats(relation))
    return generator.render(_messages(ARMS[arm], schema, state, gen.n_per_relation, gen.obo_window))

def generate_arm(
    arm: str,
    profile: Profile,
    schema: Any,
    demos_by_relation: Mapping[str, Sequence[RESample]],
    generator: CachedGenerator,
    *,
    adapter: str | None = None,
    k: int | None = None,
    kshot_seed: int | None = None,
    progress: bool = True,
) -> ArmResult:
    """Generate ``generation.n_per_relation`` valid samples per relation with one arm.

    ``demos_by_relation`` maps each relation to generate for to its K-shot samples (the caller picks the
    relations, e.g. one DPO half). ``adapter`` labels an adapter-driven run (the generator must carry the
    adapter's hash in its cache key) and names the result ``<arm>_<adapter>``.
    """
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; known arms: {', '.join(ARMS)} (profile key generation.arms)")
    if adapter is not None and generator.model_key.adapter_sha256 is None:
        raise ValueError(
            f"adapter {adapter!r} given but the generator's ModelKey has no adapter_sha256: cached calls of the "
            "base model would be reused; build the CachedGenerator with ModelKey(..., adapter_sha256=...)"
        )
    unknown = [r for r in demos_by_relation if r not in schema.labels]
    if unknown:
        raise ValueError(f"relations {unknown} are not labels of dataset {schema.dataset!r}")
    spec, gen = ARMS[arm], profile.generation
    name = arm if adapter is None else f"{arm}_{adapter}"
    relations = [r for r in schema.labels if r in demos_by_relation]
    samples: dict[str, list[RESample]] = {}
    stats: dict[str, RelationStats] = {}
    states: list[_RelState] = []
    for rel in relations:
        pool = list(demos_by_relation[rel])
        if gen.negative_label == "manual" and rel == schema.negative_label:
            samples[rel] = [replace(s, meta={**s.meta, "arm": name, "source": "manual"}) for s in pool]
            stats[rel] = RelationStats(rel, manual=True, valid=len(pool), stop="manual")
            continue
        st = _RelState(rel, select_demos(pool, gen.num_demos, gen.seed, rel), pool, RelationStats(rel))
        stats[rel] = st.stats
        states.append(st)
    budget = gen.aao_max_calls if spec.many else gen.max_attempts
    sampling = _arm_sampling(profile, spec)
    records: list[ResponseRecord] = []
    t0 = time.perf_counter()
    calls_before = generator.backend_calls
    render = generator.render
    bar = tqdm(total=budget, desc=f"generate {name}", unit="step", disable=not progress)
    step, model_seconds = 0, 0.0
    pending = [s for s in states if gen.n_per_relation > 0]
    while pending:
        asked = [gen.n_per_relation - len(s.valid) if spec.many else 1 for s in pending]
        requests = [
            Request(render(_messages(spec, schema, s, n, gen.obo_window)), sampling, gen.seed, s.stats.attempts)
            for s, n in zip(pending, asked, strict=True)
        ]
        responses = generator.generate(requests)
        model_seconds += sum(r.seconds for r in responses)
        for s, n, resp in zip(pending, asked, responses, strict=True):
            records.append(_absorb(s, resp, n, spec, schema, profile, name, step))
        step += 1
        bar.update(1)
        bar.set_postfix(valid=sum(len(s.valid) for s in states), pending=len(pending))
        pending = [s for s in pending if not _finished(s, gen.n_per_relation, budget)]
    bar.close()
    for s in states:
        samples[s.relation] = s.valid
    info = {
        "arm": arm,
        "name": name,
        "adapter": adapter,
        "model": asdict(generator.model_key),
        "profile": profile.name,
        "k": k,
        "kshot_seed": kshot_seed,
        "generation": gen.model_dump(mode="json"),
        "sampling": sampling.model_dump(mode="json"),
        "steps": step,
        "seconds": round(time.perf_counter() - t0, 3),
        "model_seconds": round(model_seconds, 1),
        "backend_calls": generator.backend_calls - calls_before,
        "cached_responses": sum(r.cached for r in records),
        "responses": len(records),
    }
    return ArmResult(arm, name, samples, stats, records, info)


def _finished(state: _RelState, n: int, budget: int) -> bool:
    st = state.stats
    if len(state.valid) >= n:
        st.stop = "n_reached"
    elif st.attempts >= budget:
        st.stop = "budget"
    return bool(st.stop)


def _absorb(
    state: _RelState,
    resp: Response,
    n_requested: int,
    spec: ArmSpec,
    schema: Any,
    profile: Profile,
    name: str,
    step: int,
) -> ResponseRecord:
    """Parse one response into the relation's state and return its record."""
    gen, st = profile.generation, state.stats
    attempt = st.attempts
    st.attempts += 1
    st.new_tokens += resp.n_new_tokens
    parsed = parse_response(
        resp.text,
        state.relation,
        schema,
        demos=state.pool,
        previous=state.valid,
        expect="many" if spec.many else "one",
        min_tokens=gen.min_tokens,
        max_tokens=gen.max_tokens,
    )
    missing = gen.n_per_relation - len(state.valid)
    kept, surplus = parsed.valid[:missing], parsed.valid[missing:]
    meta = {"arm": name, "source": "generated", "step": step, "attempt": attempt}
    state.valid.extend(replace(s, meta={**s.meta, **meta}) for s in kept)
    st.valid = len(state.valid)
    st.surplus += len(surplus)
    st.rejects.update(r.reason for r in parsed.rejects)
    rejects = [{"reason": r.reason, "text": r.text} for r in parsed.rejects]
    rejects += [{"reason": "surplus", "text": s.to_marked()} for s in surplus]
    return ResponseRecord(
        state.relation, step, attempt, n_requested, resp.key, resp.cached, resp.n_new_tokens, resp.text,
        [s.to_marked() for s in kept], rejects,
    )


MERGED_SUMS = ("seconds", "model_seconds", "responses", "backend_calls", "cached_responses")


def merge_arms(results: Sequence[ArmResult]) -> ArmResult:
    """Join runs over disjoint relation sets (the two DPO halves) into one result."""
    if not results:
        raise ValueError("nothing to merge")
    first = results[0]
    totals = {  # run-level counts cover every part, not just the first (the parts ran one after the other)
        key: round(sum(r.info.get(key) or 0 for r in results), 3)
        for key in MERGED_SUMS
        if any(key in r.info for r in results)
    }
    relations = [rel for r in results for rel in r.info.get("relations", r.samples)]
    info = {**first.info, **totals, "relations": relations, "parts": [r.info for r in results]}
    merged = ArmResult(first.arm, first.name, {}, {}, [], info)
    for r in results:
        overlap = set(merged.samples) & set(r.samples)
        if overlap or r.name != first.name:
            raise ValueError(f"cannot merge {r.name} into {first.name}: overlapping relations {sorted(overlap)}")
        merged.samples.update(r.samples)
        merged.stats.update(r.stats)
        merged.records.extend(r.records)
    return merged


# ==== saving ============================================================================================
def arm_stem(name: str, k: int | None = None, seed: int | None = None) -> str:
    """``obo`` or ``obo_k8_s1``: one file set per arm and K-shot split."""
    return name if k is None else f"{name}_k{k}_s{seed}"


def _generations_dir(results_dir: ResultsDir | Path) -> Path:
    if isinstance(results_dir, ResultsDir):
        return results_dir.generations
    path = Path(results_dir) / "generations"
    path.mkdir(parents=True, exist_ok=True)
    return path


def arm_paths(
    results_dir: ResultsDir | Path, name: str, k: int | None = None, seed: int | None = None
) -> dict[str, Path]:
    """Samples (KnowPrompt JSONL), stats (JSON) and raw responses (JSON) of one arm."""
    base = _generations_dir(results_dir) / arm_stem(name, k, seed)
    return {
        "samples": base.with_name(base.name + ".jsonl"),
        "stats": base.with_name(base.name + ".stats.json"),
        "responses": base.with_name(base.name + ".responses.json"),
    }


def save_arm(result: ArmResult, results_dir: ResultsDir | Path) -> dict[str, Path]:
    """Write the arm's three files atomically; the samples file is what the RE model trains on."""
    paths = arm_paths(results_dir, result.name, result.info.get("k"), result.info.get("kshot_seed"))
    write_json(paths["responses"], [asdict(r) for r in result.records])
    write_json(paths["stats"], {
        "info": result.info,
        "relations": list(result.samples),
        "stats": {rel: st.to_json() for rel, st in result.stats.items()},
        "rejects": dict(result.reject_counts().most_common()),
    })
    write_samples(paths["samples"], result.all_samples())
    return paths


def load_arm(
    results_dir: ResultsDir | Path, name: str, *, k: int | None = None, seed: int | None = None
) -> ArmResult:
    """Read back what :func:`save_arm` wrote (``name`` is the arm, or ``<arm>_<adapter>``)."""
    paths = arm_paths(results_dir, name, k, seed)
    meta = read_json(paths["stats"])
    samples: dict[str, list[RESample]] = {rel: [] for rel in meta["relations"]}
    for s in read_samples(paths["samples"]):
        samples.setdefault(s.relation, []).append(s)
    stats = {rel: RelationStats.from_json(row) for rel, row in meta["stats"].items()}
    records = [ResponseRecord(**row) for row in read_json(paths["responses"])] if paths["responses"].is_file() else []
    return ArmResult(meta["info"]["arm"], name, samples, stats, records, meta["info"])


# ==== wiring from a profile =============================================================================
def prepare_generator(profile: Profile) -> Any:
    """The generator LLM of a profile: the fitted tiny Llama when ``generator.fit.steps > 0`` (smoke),
    otherwise ``generator.model`` through :func:`redpo.models.load_causal_lm`."""
    if profile.generator.fit.steps > 0:
        from redpo.smoke_fit import fitted_tiny_llama

        return fitted_tiny_llama(profile)
    from redpo.models import load_causal_lm

    return load_causal_lm(profile.generator.model, dtype=profile.generator.dtype)


def default_cache_path(profile: Profile) -> Path:
    """``results/<profile>/cache/llm_calls.jsonl``: next to the results it makes resumable."""
    return ResultsDir(profile).cache / "llm_calls.jsonl"


def make_generator(
    profile: Profile,
    loaded: Any,
    *,
    cache: LLMCache | str | Path | None = None,
    adapter_sha256: str | None = None,
) -> CachedGenerator:
    """A :class:`CachedGenerator` over ``loaded`` with the profile's batch size (cache: the profile default)."""
    if not isinstance(cache, LLMCache):
        cache = LLMCache(default_cache_path(profile) if cache is None else cache)
    backend = TransformersBackend(loaded, profile.generator.batch_size)
    return CachedGenerator(backend, cache, ModelKey.from_info(loaded.info, adapter_sha256))

