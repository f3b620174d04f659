"""The plateau's generations: each arm of ``plateau.arms`` generated once, up to the largest N.

- **One generation per arm.** Each arm is generated up to ``max(plateau.n_values)`` valid samples per relation
  (``generation.max_attempts`` and ``aao_max_calls`` scaled by the same factor, so each mode keeps its call budget
  per sample) and saved as ``generations/plateau_<arm>_k<K>_s<seed>.*``, beside notebook 02's files, never over
  them. Every smaller N takes the first N samples per relation (a prefix). An OBO prompt depends only on the
  demonstrations and the valid samples so far, so the first calls of the longer run are notebook 02's calls, read
  from the cache; ``<arm>_dpo`` arms use notebook 03's adapters (each relation through the other half's adapter).
"""

from __future__ import annotations

import math

from redpo.config import Profile, derive
from redpo.core.io import ResultsDir
from redpo.core.replay import replay_models
from redpo.data.splits import generation_splits, profile_schema
from redpo.dpo.generate import generate_dpo_arms
from redpo.dpo.halves import HALVES, HALVES_FILE, load_halves
from redpo.generation.arms import kshot_by_relation, open_generator
from redpo.generation.loops import generate_arm
from redpo.generation.specs import split_dpo_name
from redpo.generation.store import ArmKey, ArmResult, plateau_name, save_arm


def plateau_profile(profile: Profile) -> Profile:
    """The profile that generates the plateau's arms: :func:`scaled_profile` to ``max(plateau.n_values)``."""
    return scaled_profile(profile, max(profile.plateau.n_values))


def scaled_profile(profile: Profile, n_max: int) -> Profile:
    """The profile with ``generation.n_per_relation = n_max`` and both call budgets scaled by the same factor:
    OBO's ``max_attempts`` and AAO's ``aao_max_calls``. An AAO call asks for every missing sample, but a 0.5B
    model returns 1-2 valid ones per call, so six calls leave it near notebook 02's N and the larger N would train
    on the same samples as the smaller. Below notebook 02's N, the budgets stay notebook 02's."""
    gen = profile.generation

    def scaled(budget: int) -> int:
        return max(budget, math.ceil(budget * n_max / gen.n_per_relation))

    return derive(profile, {"generation.n_per_relation": n_max,
                            "generation.max_attempts": scaled(gen.max_attempts),
                            "generation.aao_max_calls": scaled(gen.aao_max_calls)})


def plateau_splits(profile: Profile) -> list[tuple[int, int]]:
    """The generation splits the plateau runs on: the first ``plateau.splits`` (all when unset)."""
    return generation_splits(profile)[: profile.plateau.splits]


def missing_prerequisite(arm: str, results: ResultsDir) -> str | None:
    """Why ``arm`` cannot be generated yet (a DPO arm needs notebook 03's halves and both adapters), or None."""
    _base, dpo = split_dpo_name(arm)
    if not dpo:
        return None
    if not (results.dpo / HALVES_FILE).is_file():
        return f"{arm}: dpo/{HALVES_FILE} is missing; run notebook 03 first"
    replaying = replay_models(results)  # a replayed run's adapters are hashes in its archive, not folders
    for half in HALVES:
        if replaying is not None and half in replaying.adapters:
            continue
        if not (results.adapters / half / "adapter_config.json").is_file():
            return f"{arm}: adapter {half} is missing under adapters/; run notebook 03 first"
    return None


def generate_plateau_arms(
    profile: Profile, results: ResultsDir, *, progress: bool = True
) -> tuple[dict[ArmKey, ArmResult], list[str]]:
    """Generate every ``plateau.arms`` arm up to max N on every generation split, save each as ``plateau_*``.

    Returns the results keyed ``(arm, K, seed)`` (``arm`` without the prefix) and one note per skipped arm.
    """
    prof = plateau_profile(profile)
    schema = profile_schema(prof)
    splits = plateau_splits(prof)
    pools = {split: kshot_by_relation(prof, results, *split, schema) for split in splits}
    notes = {arm: missing_prerequisite(arm, results) for arm in prof.plateau.arms}
    skipped = [note for note in notes.values() if note]
    wanted = [arm for arm, note in notes.items() if note is None]
    out: dict[ArmKey, ArmResult] = {}
    plain = [arm for arm in wanted if not split_dpo_name(arm)[1]]
    if plain:
        generator = open_generator(profile, results)  # derived profiles change what is asked, not who answers
        for (k, seed), pool in pools.items():
            for arm in plain:
                out[(arm, k, seed)] = generate_arm(
                    arm, prof, schema, pool, generator, k=k, kshot_seed=seed, progress=progress
                )
        del generator
    dpo_bases = [split_dpo_name(arm)[0] for arm in wanted if split_dpo_name(arm)[1]]
    if dpo_bases:
        out.update(generate_dpo_arms(prof, results, load_halves(results), splits, pools, arms=dpo_bases,
                                     progress=progress, save=False))
    for result in out.values():
        save_arm(plateau_name(result), results)
    return out, skipped
