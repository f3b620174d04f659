"""Sample generation: the baseline, AAO and OBO loops over a cached, batched LLM backend.

Design, in the order the code uses it:

- The **loops** advance every relation one *step* at a time, and each step sends the pending requests of all
  relations as one batch through a :class:`~redpo.generation.cache.CachedGenerator`, so OBO is batched across
  relations rather than run one relation after another.
- A relation's **demonstrations** are ``generation.num_demos`` gold samples drawn (seeded by
  ``generation.seed`` and the relation name) from its K-shot samples; the duplicate check compares against
  all K-shot samples of the relation and every earlier valid sample of the same relation and arm.
- A **consistent** arm judges each round's valid samples in one batch before any joins the demonstrations
  (:mod:`redpo.generation.judge`); the paper's arms keep every valid sample.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from tqdm.auto import tqdm

from redpo.config import GenerationConfig, Profile, SamplingConfig, derive
from redpo.core.relations import RelationSchema
from redpo.core.sample import RESample
from redpo.generation import prompts
from redpo.generation.cache import CachedGenerator, Request, Response
from redpo.generation.grammar import output_grammar
from redpo.generation.judge import INCONSISTENT, Judge, verdicts
from redpo.generation.parse import ParseResult, Strictness, parse_response
from redpo.generation.specs import ARMS, ArmSpec
from redpo.generation.store import ArmResult, RelationStats, ResponseRecord


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


def arm_sampling(sampling: SamplingConfig, generation: GenerationConfig, spec: ArmSpec,
                 schema: RelationSchema) -> SamplingConfig:
    """``sampling.max_new_tokens`` is per sample: a many-sample call gets it times ``n_per_relation``; an OBO call
    stops at ``generation.obo_stop`` instead. With ``generation.constrained`` every call carries the arm's output
    grammar (:func:`~redpo.generation.grammar.output_grammar`), the same for every relation.

    One budget (and one grammar) for every call of the arm keeps them in one batch; generation still stops at EOS.
    """
    changes: dict[str, object] = (
        {"max_new_tokens": sampling.max_new_tokens * generation.n_per_relation} if spec.many
        else {"stop": list(generation.obo_stop)})
    if generation.constrained:
        changes["grammar"] = output_grammar(schema, many=spec.many, with_relation=spec.prompt == "baseline")
    return derive(sampling, changes)


def _messages(spec: ArmSpec, schema: RelationSchema, state: _RelState, n: int, window: int | None) -> prompts.Messages:
    if spec.prompt == "baseline":
        return prompts.baseline_prompt(schema, state.relation, state.gold, n)
    if spec.prompt == "aao":
        return prompts.icl_prompt(schema, state.relation, state.gold, mode="aao", n=n, dissimilar=spec.dissimilar)
    demos = state.gold + state.valid  # OBO: every valid sample joins the demonstrations of the next call
    if window is not None:
        demos = demos[-window:]
    return prompts.icl_prompt(schema, state.relation, demos, mode="obo", n=1, dissimilar=spec.dissimilar)


def first_prompt(
    arm: str, profile: Profile, schema: RelationSchema, relation: str, pool: Sequence[RESample], generator: Any
) -> str:
    """The rendered prompt of ``relation``'s first call in ``arm`` (for the bench and for showing prompts)."""
    gen = profile.generation
    demos = select_demos(pool, gen.num_demos, gen.seed, relation)
    state = _RelState(relation, demos, list(pool), RelationStats(relation))
    return generator.render(_messages(ARMS[arm], schema, state, gen.n_per_relation, gen.obo_window))

def generate_arm(
    arm: str,
    profile: Profile,
    schema: RelationSchema,
    demos_by_relation: Mapping[str, Sequence[RESample]],
    generator: CachedGenerator,
    *,
    adapter: str | None = None,
    k: int | None = None,
    kshot_seed: int | None = None,
    judge: Judge | None = None,
    progress: bool = True,
) -> ArmResult:
    """Generate ``generation.n_per_relation`` valid samples per relation with one arm.

    ``demos_by_relation`` maps each relation to generate for to its K-shot samples (the caller picks the
    relations, e.g. one DPO half). ``adapter`` labels an adapter-driven run (the generator must carry the
    adapter's hash in its cache key) and names the result ``<arm>_<adapter>``. ``judge`` is the consistency
    filter of a consistent arm (required there, refused elsewhere: :mod:`redpo.generation.judge`).
    """
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; known arms: {', '.join(ARMS)} (profile key generation.arms)")
    if ARMS[arm].consistent and judge is None:
        raise ValueError(f"arm {arm!r} keeps only samples its consistency judge agrees with, and no judge was given: "
                         "pass judges=redpo.extraction.consistency.split_judges(profile, results) (notebook 02 does)")
    if judge is not None and not ARMS[arm].consistent:
        raise ValueError(f"arm {arm!r} is a paper arm and keeps every valid sample; a judge would filter it "
                         "silently: run a consistent arm (e.g. obo_consistent) instead")
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
    sampling = arm_sampling(profile.generator.sampling, profile.generation, spec, schema)
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
        parsed = [_parse(s, resp, spec, schema, profile) for s, resp in zip(pending, responses, strict=True)]
        judged = verdicts(judge, [p.valid for p in parsed]) if judge is not None else [None] * len(parsed)
        for s, n, resp, p, labels in zip(pending, asked, responses, parsed, judged, strict=True):
            records.append(_absorb(s, resp, n, p, labels, profile, name, step))
        step += 1
        bar.update(1)
        bar.set_postfix(valid=sum(len(s.valid) for s in states), pending=len(pending))
        pending = [s for s in pending if not _finished(s, gen.n_per_relation, budget)]
    bar.total = step  # every relation done before the step budget is a success, not a bar stopped short (red)
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
        **({"judge": judge.identity()} if judge is not None else {}),
    }
    return ArmResult(arm, name, samples, stats, records, info)


def _finished(state: _RelState, n: int, budget: int) -> bool:
    st = state.stats
    if len(state.valid) >= n:
        st.stop = "n_reached"
    elif st.attempts >= budget:
        st.stop = "budget"
    return bool(st.stop)


def _parse(state: _RelState, resp: Response, spec: ArmSpec, schema: RelationSchema, profile: Profile) -> ParseResult:
    """The response's lines, each valid or rejected with its reason (nothing is kept yet)."""
    gen = profile.generation
    return parse_response(
        resp.text,
        state.relation,
        schema,
        demos=state.pool,
        previous=state.valid,
        expect="many" if spec.many else "one",
        min_tokens=gen.min_tokens,
        max_tokens=gen.max_tokens,
        strict=Strictness(gen.near_copy_threshold, schema.explanations.get(state.relation, ""))
        if gen.filter == "strict" else None,
    )


def _absorb(
    state: _RelState,
    resp: Response,
    n_requested: int,
    parsed: ParseResult,
    judged: Sequence[str] | None,
    profile: Profile,
    name: str,
    step: int,
) -> ResponseRecord:
    """Keep one response's valid samples (those its judge agrees with, when ``judged`` holds the judge's labels)
    in the relation's state, up to its quota, and return the response's record."""
    st = state.stats
    attempt = st.attempts
    st.attempts += 1
    st.new_tokens += resp.n_new_tokens
    rejects = [{"reason": r.reason, "text": r.text} for r in parsed.rejects]
    consistent = list(parsed.valid)
    if judged is not None:
        consistent = [s for s, y in zip(parsed.valid, judged, strict=True) if y == s.relation]
        rejects += [{"reason": INCONSISTENT, "text": s.to_marked(), "judged": y}
                    for s, y in zip(parsed.valid, judged, strict=True) if y != s.relation]
    missing = profile.generation.n_per_relation - len(state.valid)
    kept, surplus = consistent[:missing], consistent[missing:]
    meta = {"arm": name, "source": "generated", "step": step, "attempt": attempt}
    state.valid.extend(replace(s, meta={**s.meta, **meta}) for s in kept)
    st.valid = len(state.valid)
    st.surplus += len(surplus)
    st.rejects.update(r["reason"] for r in rejects)
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
    models = [r.info.get("model") for r in results]
    if all(models) and any(m != models[0] for m in models):  # one adapter per DPO half: name each, not the first
        info["model"] = {**models[0], "adapter_sha256": None, "parts": [
            {**m, "relations": list(r.info.get("relations", r.samples))} for m, r in zip(models, results, strict=True)
        ]}
    merged = ArmResult(first.arm, first.name, {}, {}, [], info)
    for r in results:
        overlap = set(merged.samples) & set(r.samples)
        if overlap or r.name != first.name:
            raise ValueError(f"cannot merge {r.name} into {first.name}: overlapping relations {sorted(overlap)}")
        merged.samples.update(r.samples)
        merged.stats.update(r.stats)
        merged.records.extend(r.records)
    return merged

