"""Running generation arms over a profile's K-shot splits, and summarising them for notebooks 01-03.

Notebooks 01 (baseline), 02 (ICL grid) and 03 (DPO) all do the same thing: load the K-shot split, pick the
relations, load the generator once, run some arms through the cache, save them, and compare valid rates and
diversity. Keeping that here keeps the notebooks thin and the comparisons identical.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from redpo.config import Profile
from redpo.core.io import CALLS_CACHE, ResultsDir, write_json
from redpo.core.manifest import record_model, recorded_peak
from redpo.core.relations import RelationSchema
from redpo.core.replay import replay_models
from redpo.core.sample import RESample
from redpo.data.splits import generation_splits, load_profile_kshot, profile_schema
from redpo.generation.backends.transformers import TransformersBackend
from redpo.generation.cache import CachedGenerator, LLMCache, ModelKey
from redpo.generation.diversity import compare_arms
from redpo.generation.embedding import make_encoder_embedder
from redpo.generation.engines import local_served_model, remote_served_model, replay_generator, server_generator
from redpo.generation.judge import INCONSISTENT, JudgeFactory
from redpo.generation.loops import generate_arm
from redpo.generation.smoke_fit import fitted_tiny_llama, fitted_tiny_llama_info
from redpo.generation.specs import ARMS, BASELINE_ARM
from redpo.generation.store import ArmKey, ArmResult, empty_arm_lines, load_arm, save_arm
from redpo.models.load import load_causal_lm, load_encoder, resolve_model
from redpo.models.registry import LoadedModel, ModelInfo


# ---- the generator of a profile ----------------------------------------------------------------------------
def prepare_generator(profile: Profile) -> LoadedModel:
    """The generator LLM of a profile: the fitted tiny Llama when ``generator.fit.steps > 0`` (smoke),
    otherwise ``generator.model`` through :func:`redpo.models.load.load_causal_lm`."""
    if profile.generator.fit.steps > 0:
        return fitted_tiny_llama(profile)
    return load_causal_lm(profile.generator.model, dtype=profile.generator.dtype, device=profile.generator.device)


def generator_info(profile: Profile) -> ModelInfo:
    """The identity :func:`prepare_generator` would load, without loading its weights (the smoke profile's tiny
    model is fitted if missing): the transformers-side name and hash that the closed-set scores and the DPO
    fingerprints are keyed by."""
    if profile.generator.fit.steps > 0:
        return fitted_tiny_llama_info(profile)
    return resolve_model(profile.generator.model)


def generator_identity(profile: Profile) -> ModelInfo:
    """The name and hash the call cache keys the generator by, as :func:`open_generator` computes them, without
    starting a server or loading weights."""
    gen = profile.generator
    if gen.backend == "llama_cpp":
        return remote_served_model(profile) if gen.server.url else local_served_model(profile)
    return generator_info(profile)


def make_generator(
    profile: Profile,
    loaded: LoadedModel,
    *,
    cache: LLMCache | str | Path,
    adapter_sha256: str | None = None,
) -> CachedGenerator:
    """A :class:`CachedGenerator` over ``loaded`` with the profile's batch size, answering through ``cache``."""
    if not isinstance(cache, LLMCache):
        cache = LLMCache(cache)
    backend = TransformersBackend(loaded, profile.generator.batch_size)
    return CachedGenerator(backend, cache, ModelKey.from_info(loaded.info, adapter_sha256))


def call_cache_path(results: ResultsDir) -> Path:
    """``results/<profile>/cache/llm_calls.jsonl``: next to the results it makes resumable."""
    return results.cache / CALLS_CACHE


# ---- which arms run where ----------------------------------------------------------------------------------
def baseline_arms(profile: Profile) -> list[str]:
    """Notebook 01's arms: the Xu et al. baseline, if ``generation.arms`` names it."""
    return [a for a in profile.generation.arms if a == BASELINE_ARM]


def icl_arms(profile: Profile) -> list[str]:
    """Notebook 02's arms: every other arm of ``generation.arms`` (the AAO/OBO x instruction grid)."""
    return [a for a in profile.generation.arms if a != BASELINE_ARM]


def of_split(arms: Mapping[ArmKey, ArmResult], k: int, seed: int) -> dict[ArmKey, ArmResult]:
    """The arms generated on the K-shot split ``(k, seed)``."""
    return {key: res for key, res in arms.items() if key[1:] == (k, seed)}


def kshot_by_relation(
    profile: Profile, results: ResultsDir, k: int, seed: int, schema: RelationSchema
) -> dict[str, list[RESample]]:
    """The split's gold samples grouped by relation, restricted to the profile's relations.

    Relations with no gold sample in the split (SemEval's ``Entity-Destination(e2,e1)`` has none in train)
    are left out: with nothing to demonstrate, there is nothing to generate from.
    """
    grouped: dict[str, list[RESample]] = {rel: [] for rel in profile.dataset.relations or schema.labels}
    for s in load_profile_kshot(profile, results.kshot, k, seed):
        grouped[s.relation].append(s)
    return {rel: pool for rel, pool in grouped.items() if pool}


def open_generator(profile: Profile, results: ResultsDir) -> CachedGenerator:
    """Load the profile's generator once, record its hash in the manifest, and wrap it in the call cache.

    A replaying results folder (:mod:`redpo.core.replay`) gets a generator that answers from the cache alone.
    """
    models = replay_models(results)
    if models is not None:
        return replay_generator(profile, results, LLMCache(call_cache_path(results)), models)
    if profile.generator.backend == "llama_cpp":
        return server_generator(profile, results, LLMCache(call_cache_path(results)))
    loaded = prepare_generator(profile)
    record_model(results, loaded.info)
    return make_generator(profile, loaded, cache=call_cache_path(results))


def run_arms(
    profile: Profile,
    results: ResultsDir,
    arms: Sequence[str],
    *,
    generator: CachedGenerator | None = None,
    judges: JudgeFactory | None = None,
    progress: bool = True,
) -> dict[ArmKey, ArmResult]:
    """Generate every arm on every generation split, save each, and return them keyed ``(arm, K, seed)``.

    Answers already in the call cache cost nothing, so re-running a finished notebook is quick and a killed
    run resumes where it stopped. ``judges`` gives each consistent arm its judge on each split
    (:func:`redpo.extraction.consistency.split_judges`); it is asked for nothing when no listed arm is consistent.
    """
    schema = profile_schema(profile)
    out: dict[ArmKey, ArmResult] = {}
    with recorded_peak(results, f"generation:{'+'.join(arms)}"):  # the kernel and its llama-server
        generator = generator or open_generator(profile, results)
        for k, seed in generation_splits(profile):
            pools = kshot_by_relation(profile, results, k, seed, schema)
            for arm in arms:
                judge = judges(arm, k, seed) if judges is not None and ARMS[arm].consistent else None
                result = generate_arm(arm, profile, schema, pools, generator, k=k, kshot_seed=seed, judge=judge,
                                      progress=progress)
                save_arm(result, results)
                out[(result.name, k, seed)] = result
    return out


def load_arms(profile: Profile, results: ResultsDir, names: Sequence[str]) -> dict[ArmKey, ArmResult]:
    """Read back saved arms (from an earlier notebook) for every generation split."""
    return {
        (name, k, seed): load_arm(results, name, k=k, seed=seed)
        for k, seed in generation_splits(profile)
        for name in names
    }


def gold_arm(profile: Profile, results: ResultsDir, k: int, seed: int) -> ArmResult:
    """The K-shot gold samples dressed as an arm: the reference row in every diversity table."""
    schema = profile_schema(profile)
    pools = kshot_by_relation(profile, results, k, seed, schema)
    return ArmResult("gold", "gold", pools, {}, [], {"k": k, "kshot_seed": seed})


# ---- summaries -----------------------------------------------------------------------------------------
def yield_summary(results: Mapping[ArmKey, ArmResult]) -> pd.DataFrame:
    """One row per arm and split: calls, candidates, valid samples, valid rate and the top reject reasons.

    ``valid_rate`` is valid samples over *candidate samples* (valid + rejected lines, surplus excluded), which
    compares AAO (many per call) with OBO (one per call) fairly; ``valid_per_call`` is the per-call yield.
    ``model_seconds`` is the generation time behind the responses, including calls answered from the cache
    (what the arm cost); ``seconds`` is this run's wall time (near zero when everything was cached).
    """
    rows = []
    for (name, k, seed), res in results.items():
        generated = [st for st in res.stats.values() if not st.manual]
        rejects = res.reject_counts()
        rejects.pop("surplus", None)
        valid = sum(st.valid for st in generated)
        calls = sum(st.attempts for st in generated)
        candidates = valid + sum(rejects.values())
        rows.append({
            "arm": name,
            "k": k,
            "seed": seed,
            "relations": len(generated),
            "calls": calls,
            "valid": valid,
            "valid_rate": valid / candidates if candidates else 0.0,
            "valid_per_call": valid / calls if calls else 0.0,
            "relations_short": sum(st.stop == "budget" for st in generated),
            "model_seconds": res.info.get("model_seconds"),
            "seconds": res.info.get("seconds"),
            "top_rejects": ", ".join(f"{r} {n}" for r, n in rejects.most_common(3)),
        })
    return pd.DataFrame(rows)


def say_empty_arms(arms: Mapping[ArmKey, ArmResult], consequence: str = "nothing to train") -> None:
    """Print one line per arm that wrote no valid sample in some split, with its calls and top reject reasons
    (:func:`redpo.generation.store.empty_arm_lines`); print nothing when every arm wrote one."""
    for line in empty_arm_lines(arms, consequence):
        print(line)


def judge_lines(arms: Mapping[ArmKey, ArmResult]) -> list[str]:
    """One line per consistent arm and split: its judge (kind, fingerprint, how it scored on dev where it has a dev
    score), how many valid samples it rejected as inconsistent, and how many relations stayed short of the quota."""
    lines = []
    for (name, k, seed), res in arms.items():
        judge = res.info.get("judge")
        if judge is None:
            continue
        summary = judge.get("summary", {})
        dev = summary.get("best_dev_micro_f1")
        quality = f", dev micro-F1 {dev:.3f} on {summary.get('n_train')} K-shot samples" if dev is not None else ""
        generated = [st for st in res.stats.values() if not st.manual]
        lines.append(f"{name} k{k}_s{seed}: judge {judge['kind']} ({judge['fingerprint'][:12]}{quality}); "
                     f"{res.reject_counts()[INCONSISTENT]} samples rejected as {INCONSISTENT}, "
                     f"{sum(st.valid for st in generated)} kept, "
                     f"{sum(st.stop == 'budget' for st in generated)} of {len(generated)} relations short")
    return lines


def say_judges(arms: Mapping[ArmKey, ArmResult]) -> None:
    """Print :func:`judge_lines` (notebook 02); nothing when no arm is consistent."""
    for line in judge_lines(arms):
        print(line)


def reject_table(results: Mapping[ArmKey, ArmResult]) -> pd.DataFrame:
    """Reject reasons per arm (summed over splits), as shares of each arm's rejected candidates."""
    totals: dict[str, Counter[str]] = {}
    for (name, _k, _seed), res in results.items():
        totals.setdefault(name, Counter()).update(res.reject_counts())
    frame = pd.DataFrame(totals).fillna(0).astype(int).T
    return frame.drop(columns=["surplus"], errors="ignore")


def diversity_summary(
    arms: Mapping[ArmKey, ArmResult],
    profile: Profile,
    results: ResultsDir,
    *,
    embed_model: str | None = None,
    include_gold: bool = True,
) -> dict[str, Any]:
    """Diversity of every arm per split, over the relations that *all* compared arms have (>= 2 samples).

    Returns ``{"splits": {"k8_s1": {"relations": [...], "arms": {name: report}}}}``; the gold K-shot samples
    are added as a reference arm. ``embed_model`` (default: the profile's encoder) embeds for ``embed_cos``.
    """
    encoder = load_encoder(embed_model or profile.encoder.model)
    record_model(results, encoder.info)
    embed = make_encoder_embedder(encoder)
    out: dict[str, Any] = {"embed_model": encoder.info.name, "splits": {}}
    for k, seed in sorted({(k, s) for (_n, k, s) in arms}):
        split_arms = {name: res for (name, kk, ss), res in arms.items() if (kk, ss) == (k, seed)}
        gold = gold_arm(profile, results, k, seed)  # the reference arm and every arm's demonstrations
        if include_gold:
            split_arms = {**split_arms, "gold": gold}
        demos = gold.samples
        report = compare_arms({name: res.samples for name, res in split_arms.items()}, demos, embed=embed,
                              near_copy_threshold=profile.generation.near_copy_threshold,
                              reference="gold" if include_gold else None)
        out["splits"][f"k{k}_s{seed}"] = {"k": k, "seed": seed, **report}
    return out


def save_generation_metrics(
    results: ResultsDir, stem: str, arms: Mapping[ArmKey, ArmResult], diversity: Mapping[str, Any]
) -> None:
    """``metrics/<stem>.json``: yield and diversity in one file, the input of the figures and claims report."""
    write_json(results.metrics / f"{stem}.json", {
        "yield": yield_summary(arms).to_dict(orient="records"),
        "rejects": reject_table(arms).to_dict(orient="index"),
        "diversity": diversity,
    })


def examples_side_by_side(
    arms: Mapping[ArmKey, ArmResult], relation: str, n: int = 4
) -> pd.DataFrame:
    """The first ``n`` samples of one relation from every arm, in columns: the easiest way to *see* diversity."""
    cols = {}
    for (name, k, seed), res in arms.items():
        texts = [s.to_marked() for s in res.samples.get(relation, [])[:n]]
        cols[f"{name} (k{k} s{seed})"] = texts + [""] * (n - len(texts))
    return pd.DataFrame(cols)
