"""The ladder's RE runs: every rung's sets in every grid cell of the ladder's splits, and ``metrics/ladder.json``.

The runs go through :func:`redpo.extraction.grid.run_training_sets`, the loop every stage's RE runs share, so a set
equal to one already trained (``L2:gen`` is ``L5:N=K``; ``L0:manual`` is notebook 04's ``manual`` under the same
encoder settings) is read from the run store. L7 runs last: its "best generated set" is the generated set with the
highest mean micro-F1 of the runs before it, trained again with ``ladder.encoder``. Beside the runs,
``metrics/ladder.json`` holds the generators' comparison (:mod:`redpo.ladder.generators`): what ``L2:gen``'s and
``L6:other``'s samples cost and how correct they are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from redpo.config import ARMS, Profile, derive
from redpo.core.io import ResultsDir, write_json
from redpo.core.manifest import recorded_peak
from redpo.core.sample import RESample
from redpo.core.tables import json_safe
from redpo.data.splits import load_profile_kshot, load_split, profile_schema
from redpo.extraction.grid import run_training_sets
from redpo.extraction.oracle import judge_arms
from redpo.extraction.training_sets import describe_grid
from redpo.generation.arms import call_cache_path
from redpo.generation.cache import LLMCache
from redpo.ladder import sets as ladder_sets
from redpo.ladder.generators import Labeller, compare_generators, ladder_generators
from redpo.ladder.pools import Pools, Split, ladder_splits

LADDER_METRICS = "ladder.json"


def ladder_grid_profile(profile: Profile) -> Profile:
    """The profile the ladder's runs train under: ``ladder.seeds_per_split`` classifier seeds per split when set
    (the first of notebook 04's cells), else the encoder's own."""
    seeds = profile.ladder.seeds_per_split
    return profile if seeds is None else derive(profile, {"encoder.seeds_per_split": seeds})


def describe_ladder_grid(profile: Profile) -> str:
    """What each rung's mean varies over: the ladder's splits and classifier seeds."""
    return describe_grid(ladder_grid_profile(profile), ladder_splits(profile))


def split_inputs(profile: Profile, results: ResultsDir, pools: Pools, dev: Sequence[RESample],
                 test: Sequence[RESample]) -> dict[Split, ladder_sets.SplitInputs]:
    """Each split's manual samples, its K other real sentences per relation, and its generations."""
    train = load_split(profile, "train")
    negative = profile_schema(profile).negative_label
    share = ladder_sets.negative_share(train, negative) if profile.ladder.share_negatives else None
    out = {}
    for k, seed in ladder_splits(profile):
        manual = load_profile_kshot(profile, results.kshot, k, seed)
        draw_seed = profile.ladder.seed * 1000 + seed
        real = ladder_sets.real_samples(train, [*manual, *dev, *test], k, draw_seed, {s.relation for s in manual})
        made = [made_by[(k, seed)].all_samples() if (k, seed) in made_by else []
                for made_by in (pools.arm, pools.negatives, pools.other)]
        extra = [] if share is None or negative is None else ladder_sets.extra_negatives(
            train, [*manual, *dev, *test, *real], draw_seed, negative)
        out[(k, seed)] = ladder_sets.SplitInputs(k, manual, real, *made, demos=manual, extra_negatives=extra,
                                                 negative_share=share)
    return out


def ladder_training_sets(profile: Profile, results: ResultsDir, pools: Pools, dev: Sequence[RESample],
                         test: Sequence[RESample], label: Labeller | None,
                         ) -> tuple[dict[Split, dict[str, list[RESample]]], list[str]]:
    """Every split's sets of the rungs before L7 (:func:`redpo.ladder.sets.split_sets`), and a note per set a split
    left out. ``label`` is the oracle (:func:`ladder_labeller`); without it L3 has no sets."""
    lad, schema = profile.ladder, profile_schema(profile)
    sets, notes = {}, []
    inputs_by_split = split_inputs(profile, results, pools, dev, test)
    if lad.share_negatives and any(i.negative_share is None for i in inputs_by_split.values()):
        notes.append(f"{ladder_sets.GEN_NEGSHARE}: the training split has no negative label to share")
    for (k, seed), inputs in inputs_by_split.items():
        sets[(k, seed)], left_out = ladder_sets.split_sets(inputs, lad.rungs, lad.n_values, schema.negative_label,
                                                           profile.generation.near_copy_threshold, label)
        notes += [f"k{k}_s{seed} {note}" for note in left_out]
    return sets, notes


def ladder_labeller(profile: Profile, results: ResultsDir, pools: Pools, *, progress: bool = True
                    ) -> Labeller | None:
    """The oracle, where a rung needs it: L3 filters by it, and the generators' comparison gives its agreement with
    L6's samples. ``progress`` reaches its training, which this may start (a profile whose 02 and 03 never ran)."""
    rungs = profile.ladder.rungs
    if not pools.arm and not pools.other:
        return None  # nothing generated, nothing to label
    if "L3" in rungs or ("L6" in rungs and pools.other):
        return oracle_labeller(profile, results, pools, progress=progress)
    return None


def oracle_labeller(profile: Profile, results: ResultsDir, pools: Pools, *, progress: bool = True) -> Labeller:
    """The oracle, labelling the pool and L6's samples once as notebooks 02 and 03 label their arms: the labels are
    saved as ``metrics/correctness_ladder.json`` and ``correctness_ladder_labels.jsonl``, so every L3 set can be
    rebuilt from disk and a replay answers from the committed labels."""
    made = [*pools.arm.items(), *pools.other.items()]  # L6's samples too, for the generators' comparison
    judged = judge_arms(profile, results, {(res.name, k, seed): res for (k, seed), res in made},
                        "correctness_ladder", progress=progress)
    known = dict(zip(judged.labels["marked"], judged.labels["oracle"], strict=True))
    # L3 labels the pool's generated positives, a subset of what judge_arms labelled (every generated sample);
    # the oracle reads one sentence at a time, so a sentence that two generators both wrote has one label
    return lambda samples: [known[s.to_marked()] for s in samples]


def generator_comparison(profile: Profile, results: ResultsDir, pools: Pools,
                         sets: Mapping[Split, Mapping[str, Sequence[RESample]]],
                         label: Labeller | None) -> list[dict[str, Any]]:
    """The arm's generator beside ``ladder.generator`` (:mod:`redpo.ladder.generators`), on each split's own K and
    on the sets the ladder trains (:func:`ladder_training_sets`)."""
    lad, gen = profile.ladder, profile.generation
    def base_set(k: int) -> str:  # L2:gen, or where L2 did not run the same set as L5 names it at the split's K
        return ladder_sets.GEN if "L2" in lad.rungs or "L5" not in lad.rungs else ladder_sets.count_set(k)

    return compare_generators(
        ladder_generators(profile.generator.model, lad.generator if "L6" in lad.rungs else None, pools.arm,
                          pools.other, base_set),
        sets, gen.aao_max_calls if ARMS[lad.arm].many else gen.max_attempts,
        profile_schema(profile).negative_label, LLMCache(call_cache_path(results)), label, gen.near_copy_threshold)


def best_generated(runs: Sequence[Mapping[str, Any]]) -> str | None:
    """The generated set with the highest mean micro-F1 over its runs (L7 trains it with the other encoder)."""
    means = {arm: float(np.mean([r["micro_f1"] for r in runs if r["arm"] == arm]))
             for arm in ladder_sets.generated_sets(dict.fromkeys(r["arm"] for r in runs))}
    return max(means, key=lambda a: (means[a], a)) if means else None


def run_ladder(profile: Profile, results: ResultsDir, pools: Pools, dev: Sequence[RESample],
               test: Sequence[RESample], *, progress: bool = True) -> dict[str, Any]:
    """Train every rung's sets in every ladder cell (L7 last, with ``ladder.encoder``), write
    ``metrics/ladder.json`` and return it. The peak RSS is recorded in the manifest as ``ladder_re_grid``."""
    lad, grid_profile = profile.ladder, ladder_grid_profile(profile)
    with recorded_peak(results, "ladder_re_grid"):
        label = ladder_labeller(profile, results, pools, progress=progress)
        sets, left_out = ladder_training_sets(profile, results, pools, dev, test, label)
        generators = generator_comparison(profile, results, pools, sets, label)  # before the grid: costs no run
        grid = run_training_sets(grid_profile, results, sets, dev, test, progress=progress)
        runs, skipped = list(grid["runs"]), list(grid["skipped"])
        best = best_generated(runs)
        if "L7" in lad.rungs and best is not None:
            pairs = {split: {ladder_sets.L7_MANUAL: s[ladder_sets.MANUAL], ladder_sets.L7_BEST: s[best]}
                     for split, s in sets.items() if best in s}
            other = run_training_sets(derive(grid_profile, {"encoder.model": lad.encoder}), results, pairs, dev,
                                      test, progress=progress)
            runs += other["runs"]
            skipped += other["skipped"]
    k = max(profile.fewshot.k)
    payload = json_safe({
        "profile": profile.name,
        "arm": lad.arm,
        "rungs": list(lad.rungs),
        "n_values": list(lad.n_values),
        "encoders": {"base": profile.encoder.model, "L7": lad.encoder},
        "generator": {"base": profile.generator.model, "L6": lad.generator},
        "negative_label": profile_schema(profile).negative_label,
        "grid": describe_ladder_grid(profile),
        "notes": [*pools.notes, *left_out],
        "best_generated": best,
        "generators": generators,
        "comparisons": [asdict(c) for c in ladder_sets.comparisons(lad.rungs, lad.n_values, k,
                                                                   share_negatives=lad.share_negatives)],
        "sets": {f"k{split_k}_s{seed}": {name: {"n": len(samples), "per_relation": _per_relation(samples)}
                                         for name, samples in s.items()}
                 for (split_k, seed), s in sets.items()},
        "runs": [{key: v for key, v in r.items() if key not in {"confusion", "per_relation", "labels"}}
                 for r in runs],
        "skipped_runs": skipped,
    })
    write_json(results.metrics / LADDER_METRICS, payload)
    return payload


def _per_relation(samples: Sequence[RESample]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for s in samples:
        counts[s.relation] = counts.get(s.relation, 0) + 1
    return dict(sorted(counts.items()))
