"""``python -m redpo bench output``: free against grammar-constrained decoding, on the same arms and prompts.

Why: grammar-constrained decoding (``generation.constrained``) removes the format failures that cost a small
generator many of its replies, but a grammar can also push the model toward copying its demonstrations, toward
wrong samples that merely parse, or slow each token down. Whether it should become the default is therefore
decided on four numbers per arm, measured here on both modes: the yield (valid samples per call and the valid share
of candidate lines), the copies (exact copies of a demonstration, which the parser rejects, and near copies among
the valid samples), the correctness (the oracle's agreement with the intended relation) and the cost (seconds per
call).

Both modes run the real loops (:func:`~redpo.generation.loops.generate_arm`) on the profile's first generation
split, with every other setting of the profile as it is, through the results folder's call cache: a rerun costs
nothing, and a mode's calls are the very calls a run with that setting makes. No arm file is written (the folder may
hold a run whose notebook 02 files must stay as they are); only the caches grow (the calls a run would add, the
oracle) and notebook 00's K-shot files are written if missing.
So a copy of a committed run whose ``replay/models.json`` is deleted (a snapshot: its archived calls are restored,
and what they cannot answer goes to the model) answers the free mode from the run's own calls, and only the
constrained calls cost model time; a folder that still replays is refused, since no archive holds those calls.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from redpo.config import ConfigError, Profile, derive
from redpo.core.io import ResultsDir
from redpo.core.relations import RelationSchema
from redpo.core.replay import MODELS_FILE, ReplayError, prepare_replay, replay_dir, replay_models
from redpo.core.sample import RESample, generated_only
from redpo.core.tables import share
from redpo.data.splits import generation_splits, kshot_dir, profile_schema, write_profile_kshots
from redpo.extraction.oracle import CommittedOracle, Oracle, correctness, ensure_oracle, label_arms
from redpo.generation.arms import kshot_by_relation, open_generator, yield_summary
from redpo.generation.cache import CachedGenerator
from redpo.generation.engines import stop_servers
from redpo.generation.loops import generate_arm
from redpo.generation.parse import COPY_OF_DEMO, MALFORMED_MARKERS, NO_MARKERS, is_near_copy
from redpo.generation.store import ArmKey, ArmResult

ARMS = ("obo", "aao")
"""The paper's two ICL arms: one sample per call, and many per call (a longer reply the grammar must hold)."""
MODES = {"free": False, "constrained": True}
"""Report key -> ``generation.constrained``."""
FORMAT_REASONS = (NO_MARKERS, MALFORMED_MARKERS)
"""The reject reasons a grammar is meant to remove: no entity markers, or markers that do not pair up."""
TABLE_COLUMNS = ("valid_per_call", "valid_share", "format_reject_share", "exact_copy_rate", "near_copy_share",
                 "oracle_agreement", "seconds_per_call")
"""The columns of the report's flat ``table`` (one row per mode and arm): what decides the default."""


def arm_report(result: ArmResult, pools: Mapping[str, Sequence[RESample]], oracle_labels: Sequence[str],
               schema: RelationSchema, near_copy_threshold: float) -> dict[str, Any]:
    """One arm's yield, rejects, copies, correctness and cost.

    ``oracle_labels`` are the oracle's labels of the arm's generated samples, in
    :func:`~redpo.core.sample.generated_only` order. Rates over *candidate lines* (valid + rejected, surplus left
    out, as :func:`~redpo.generation.arms.yield_summary` counts them) compare OBO and AAO fairly; valid per call is
    the yield a call buys. A near copy is a valid sample whose entity-masked tokens match one of the relation's
    K-shot samples at ``near_copy_threshold`` (the diversity tables' measure); ``seconds_per_call`` is the model time
    behind the replies (the cache keeps each call's share of its batch's wall time) over the calls.
    """
    row = yield_summary({(result.name, 0, 0): result}).iloc[0]
    rejects: Counter[str] = result.reject_counts()
    rejects.pop("surplus", None)
    calls, valid = int(row["calls"]), int(row["valid"])
    candidates = valid + sum(rejects.values())
    samples = generated_only(result.all_samples())
    near = sum(is_near_copy(s, pools.get(s.relation, ()), near_copy_threshold) for s in samples)
    judged = correctness([s.relation for s in samples], oracle_labels, schema)
    new_tokens = sum(st.new_tokens for st in result.stats.values() if not st.manual)
    model_seconds = float(result.info.get("model_seconds") or 0.0)
    formats = {reason: rejects.get(reason, 0) for reason in FORMAT_REASONS}
    return {
        "calls": calls,
        "valid": valid,
        "valid_per_call": share(valid, calls),
        "candidates": candidates,
        "valid_share": share(valid, candidates),
        "format_rejects": formats,
        "format_reject_share": share(sum(formats.values()), candidates),
        "rejects": dict(rejects.most_common()),
        "exact_copies": rejects.get(COPY_OF_DEMO, 0),
        "exact_copy_rate": share(rejects.get(COPY_OF_DEMO, 0), candidates),
        "near_copies": near,
        "near_copy_share": share(near, len(samples)),
        **{key: judged[key] for key in ("oracle_agreement", "direction_flip_rate", "negative_share")},
        "relations_short": int(row["relations_short"]),
        "new_tokens_per_call": share(new_tokens, calls),
        "model_seconds": round(model_seconds, 1),
        "seconds_per_call": share(model_seconds, calls),
        "cached_responses": result.info.get("cached_responses"),
    }


def measure_output(profile: Profile, generator: CachedGenerator, oracle: Oracle | CommittedOracle,
                   pools: Mapping[str, Sequence[RESample]], *, k: int, seed: int,
                   progress: bool = True) -> dict[str, Any]:
    """Every arm of :data:`ARMS` in every mode of :data:`MODES` through ``generator``, judged by ``oracle``;
    ``pools`` are the split's K-shot samples per relation to generate for. The oracle's agreement with those
    K-shot samples (``gold_oracle_agreement``) says how far its agreement with the arms can be trusted."""
    schema = profile_schema(profile)
    results: dict[ArmKey, ArmResult] = {}
    for mode, constrained in MODES.items():
        prof = derive(profile, {"generation.constrained": constrained})
        for arm in ARMS:  # not saved: see the module docstring
            results[(f"{mode}/{arm}", k, seed)] = generate_arm(arm, prof, schema, pools, generator, k=k,
                                                               kshot_seed=seed, progress=progress)
    labels = label_arms(oracle, results, schema, {(k, seed): [s for pool in pools.values() for s in pool]})
    gold = labels[labels["arm"] == "gold"]
    report: dict[str, Any] = {
        "profile": profile.name,
        "dataset": profile.dataset.name,
        "dataset_path": profile.dataset.path,
        "relations": list(pools),
        "split": f"k{k}_s{seed}",
        "model": asdict(generator.model_key),
        "filter": profile.generation.filter,
        "near_copy_threshold": profile.generation.near_copy_threshold,
        "oracle": {key: oracle.summary.get(key) for key in ("fingerprint", "n_train", "test_micro_f1", "test_n")},
        "gold_oracle_agreement": correctness(gold["relation"].tolist(), gold["oracle"].tolist(),
                                             schema)["oracle_agreement"],
        "modes": {mode: {} for mode in MODES},
    }
    for (name, _k, _seed), result in results.items():
        mode, _, arm = name.partition("/")
        own = labels.loc[labels["arm"] == name, "oracle"].tolist()
        report["modes"][mode][arm] = arm_report(result, pools, own, schema, profile.generation.near_copy_threshold)
    report["table"] = [{"mode": mode, "arm": arm, **{key: row[key] for key in TABLE_COLUMNS}}
                       for mode, arms in report["modes"].items() for arm, row in arms.items()]
    return report


def bench_output(profile: Profile, results: ResultsDir, *, backends: Sequence[str] = ("llama_cpp",)) -> dict[str, Any]:
    """The profile's first generation split, its oracle (trained once and cached by fingerprint) and its generator
    behind an inference server, measured in both modes (:func:`measure_output`). A snapshot's archived caches are
    restored first, as a notebook restores them (see the module docstring)."""
    if list(backends) != ["llama_cpp"]:
        raise ConfigError(f"bench output measures llama_cpp only (a grammar needs an inference server), got "
                         f"{list(backends)}")
    if profile.generator.backend != "llama_cpp":
        raise ConfigError(f"profile {profile.name!r}: bench output needs generator.backend: llama_cpp (grammar-"
                          "constrained decoding runs in an inference server); add -p generator.backend=llama_cpp")
    if replay_models(results) is not None:
        copy = f"/tmp/bench/{profile.name}"
        raise ReplayError(f"{results.root} replays a committed run ({replay_dir(results) / MODELS_FILE}), whose "
                          f"archive holds no constrained call; measure on a copy without that file: cp -r "
                          f"{results.root} {copy} && rm {copy}/replay/{MODELS_FILE}, then --results-dir /tmp/bench")
    prepare_replay(results)
    k, seed = generation_splits(profile)[0]
    if not (kshot_dir(results.kshot, k, seed) / "train.txt").is_file():
        write_profile_kshots(profile, results.kshot)  # what notebook 00 writes: the same rows every time
    pools = kshot_by_relation(profile, results, k, seed, profile_schema(profile))
    oracle = ensure_oracle(profile, results)
    try:
        return measure_output(profile, open_generator(profile, results), oracle, pools, k=k, seed=seed)
    finally:
        stop_servers()
