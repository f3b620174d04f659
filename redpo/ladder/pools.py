"""The generations the ladder's rungs draw from, made once and saved as ``generations/ladder_*``.

- The arm's **pool**: ``ladder.arm`` generated up to ``max(ladder.n_values)`` valid samples per relation, the call
  budgets scaled as the plateau's (:func:`~redpo.plateau.generate.scaled_profile`). An OBO prompt depends only on
  the demonstrations and the samples so far, so its first calls are notebook 02's, answered from the call cache,
  and its first K samples per relation are notebook 02's. Every generated rung takes a prefix of it, or a filtered
  prefix: the rungs differ in what is kept, never in what was generated.
- The arm's **negatives** (L2): the same prompt asked for the negative label, K per split, so that "generated
  negatives" are written by the same generator and prompt as the positives beside them.
- The **other generator's** samples (L6): the arm generated with ``ladder.generator``, K per relation.

A rung whose generation cannot be made here (no negative label, no other generator named) is skipped with a note.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from redpo.config import Profile, derive
from redpo.core.io import ResultsDir
from redpo.core.relations import RelationSchema
from redpo.core.sample import RESample
from redpo.data.splits import generation_splits, profile_schema
from redpo.generation.arms import kshot_by_relation, open_generator
from redpo.generation.cache import CachedGenerator
from redpo.generation.engines import stop_servers
from redpo.generation.loops import generate_arm
from redpo.generation.store import ArmResult, save_arm
from redpo.plateau.generate import scaled_profile

Split = tuple[int, int]
LADDER_PREFIX = "ladder_"


@dataclass
class Pools:
    """Per split: the arm's pool, its generated negatives and the other generator's samples (empty: not made)."""

    arm: dict[Split, ArmResult]
    negatives: dict[Split, ArmResult] = field(default_factory=dict)
    other: dict[Split, ArmResult] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    """Why a rung's generation was not made."""


def ladder_splits(profile: Profile) -> list[Split]:
    """The generation splits the ladder runs on: the first ``ladder.splits`` (all when unset)."""
    return generation_splits(profile)[: profile.ladder.splits]


def ladder_name(result: ArmResult, what: str) -> ArmResult:
    """The run saved as ``ladder_<what>``, beside notebooks 02-05's files, never over them."""
    name = f"{LADDER_PREFIX}{what}"
    return replace(result, name=name, info={**result.info, "name": name, "ladder_of": result.name})


def other_generator_profile(profile: Profile, k: int) -> Profile:
    """The profile of L6: ``ladder.generator`` in place of ``generator.model`` (a packaged or hub model served
    the same way), K samples per relation, everything else as the arm's."""
    return derive(profile, {"generator.model": profile.ladder.generator, "generator.fit.steps": 0,
                            "generation.n_per_relation": k})


def _generate(arm: str, profile: Profile, generator: CachedGenerator, schema: RelationSchema,
              demos: Mapping[Split, Mapping[str, Sequence[RESample]]], results: ResultsDir, what: str,
              progress: bool) -> dict[Split, ArmResult]:
    """``arm`` on every split with ``generator``, each result saved as ``ladder_<what>``."""
    out = {}
    for (k, seed), pools in demos.items():
        result = generate_arm(arm, profile, schema, pools, generator, k=k, kshot_seed=seed, progress=progress)
        out[(k, seed)] = ladder_name(result, what)
        save_arm(out[(k, seed)], results)
    return out


def generate_pools(profile: Profile, results: ResultsDir, *, progress: bool = True) -> Pools:
    """Every generation the profile's rungs need, on every ladder split (see the module docstring)."""
    schema, lad = profile_schema(profile), profile.ladder
    splits = ladder_splits(profile)
    demos = {split: kshot_by_relation(profile, results, *split, schema) for split in splits}
    # One generator, opened from the profile itself: a derived profile changes what is asked, never who answers
    # (the smoke generator is fitted on prompts shaped by generation settings, so a derived profile would fit,
    # and key its calls by, another model than notebook 02's).
    generator = open_generator(profile, results)
    pool_profile = scaled_profile(profile, max(*lad.n_values, *profile.fewshot.k))
    pools = Pools(_generate(lad.arm, pool_profile, generator, schema, demos, results, f"pool_{lad.arm}", progress))
    negative = schema.negative_label
    if "L2" in lad.rungs and negative is None:
        pools.notes.append(f"L2: dataset {schema.dataset!r} has no negative label, so no negatives to generate")
    elif "L2" in lad.rungs:
        asked = {split: {negative: d[negative]} for split, d in demos.items() if negative in d}
        for k in sorted({k for k, _seed in asked}):
            neg_profile = derive(profile, {"generation.negative_label": "generate", "generation.n_per_relation": k})
            of_k = {split: d for split, d in asked.items() if split[0] == k}
            pools.negatives.update(_generate(lad.arm, neg_profile, generator, schema, of_k, results,
                                             f"negatives_{lad.arm}", progress))
    stop_servers()  # the next generator gets the cores to itself
    if "L6" in lad.rungs and not lad.generator:
        pools.notes.append("L6: ladder.generator is not set")
    elif "L6" in lad.rungs:
        for k in sorted({k for k, _seed in splits}):
            other = other_generator_profile(profile, k)
            of_k = {split: d for split, d in demos.items() if split[0] == k}
            pools.other.update(_generate(lad.arm, other, open_generator(other, results), schema, of_k, results,
                                         f"other_{lad.arm}", progress))
        stop_servers()
    return pools
