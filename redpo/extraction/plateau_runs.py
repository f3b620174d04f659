"""Notebook 05's experiment: generate each plateau arm up to the largest N, then train RE on every prefix N.

- **One generation per arm.** Each arm of ``plateau.arms`` is generated once up to ``max(plateau.n_values)``
  valid samples per relation (``generation.max_attempts`` and ``aao_max_calls`` scaled by the same factor, so each
  mode keeps its call budget per sample) and saved as ``generations/plateau_<arm>_k<K>_s<seed>.*``, beside
  notebook 02's files, never over them.
  Every smaller N takes the first N samples per relation (a prefix). An OBO prompt depends only on the
  demonstrations and the valid samples so far, so the first calls of the longer run are notebook 02's calls, read
  from the cache; ``<arm>_dpo`` arms use notebook 03's adapters (each relation through the other half's adapter).
- **Same RE grid as notebook 04.** For each N, ``gen:<arm>`` (the arm's own first N per relation) and
  ``mix:<arm>`` (manual + those) are trained in every grid cell on the shared dev/test subsets through
  :func:`redpo.extraction.grid.run_training_sets`, so a training set equal to one already trained is read from
  the run store. Each curve holds its own arm's samples (:func:`prefix_sets`); what it held per relation at each N
  is saved, and the claims report says how many samples the two judged N trained on.

The plateau rule and the yield curve that judge these runs are in :mod:`redpo.analysis.plateau`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from redpo.config import Profile
from redpo.core.io import ResultsDir
from redpo.core.replay import replay_models
from redpo.data.splits import generation_splits, load_profile_kshot, profile_schema
from redpo.dpo.generate import generate_dpo_arms
from redpo.dpo.pairs import HALVES, load_halves
from redpo.extraction.grid import run_training_sets
from redpo.extraction.training_sets import comparable_sets, describe_grid, mixed_sets
from redpo.generation.arms import kshot_by_relation, open_generator
from redpo.generation.loops import generate_arm
from redpo.generation.specs import split_dpo_name
from redpo.generation.store import ArmKey, ArmResult, plateau_name, save_arm


def plateau_profile(profile: Profile) -> Profile:
    """The profile with ``generation.n_per_relation = max(plateau.n_values)`` and both call budgets scaled by
    the same factor: OBO's ``max_attempts`` and AAO's ``aao_max_calls``. An AAO call asks for every missing
    sample, but a 0.5B model returns 1-2 valid ones per call, so six calls leave it near notebook 02's N and
    the larger N would train on the same samples as the smaller."""
    gen = profile.generation
    n_max = max(profile.plateau.n_values)

    def scaled(budget: int) -> int:
        return max(budget, math.ceil(budget * n_max / gen.n_per_relation))

    update = {"n_per_relation": n_max, "max_attempts": scaled(gen.max_attempts),
              "aao_max_calls": scaled(gen.aao_max_calls)}
    return profile.model_copy(update={"generation": gen.model_copy(update=update)})



def plateau_splits(profile: Profile) -> list[tuple[int, int]]:
    """The generation splits the plateau runs on: the first ``plateau.splits`` (all when unset)."""
    return generation_splits(profile)[: profile.plateau.splits]


def plateau_grid_profile(profile: Profile) -> Profile:
    """The profile the plateau's RE runs train under: ``plateau.seeds_per_split`` classifier seeds per split when
    set (the cells are the first of notebook 04's cells, under the same run keys), else the encoder's own."""
    seeds = profile.plateau.seeds_per_split
    if seeds is None:
        return profile
    return profile.model_copy(update={"encoder": profile.encoder.model_copy(update={"seeds_per_split": seeds})})


def describe_plateau_grid(profile: Profile) -> str:
    """What each plateau point's mean ± sd varies over: the plateau's own splits and classifier seeds, which can be
    fewer than notebook 04's grid (``plateau.splits``, ``plateau.seeds_per_split``)."""
    return describe_grid(plateau_grid_profile(profile), plateau_splits(profile))


def missing_prerequisite(arm: str, results: ResultsDir) -> str | None:
    """Why ``arm`` cannot be generated yet (a DPO arm needs notebook 03's halves and both adapters), or None."""
    _base, dpo = split_dpo_name(arm)
    if not dpo:
        return None
    if not (results.dpo / "halves.json").is_file():
        return f"{arm}: dpo/halves.json is missing; run notebook 03 first"
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
        generator = open_generator(prof, results)
        for (k, seed), pool in pools.items():
            for arm in plain:
                out[(arm, k, seed)] = generate_arm(
                    arm, prof, schema, pool, generator, k=k, kshot_seed=seed, progress=progress
                )
        del generator
    dpo_bases = [split_dpo_name(arm)[0] for arm in wanted if split_dpo_name(arm)[1]]
    if dpo_bases:
        dpo_prof = prof.model_copy(update={"dpo": prof.dpo.model_copy(update={"arms": dpo_bases})})
        out.update(generate_dpo_arms(dpo_prof, results, load_halves(results), splits, pools,
                                     progress=progress, save=False))
    for result in out.values():
        save_arm(plateau_name(result), results)
    return out, skipped


# ---- RE training on prefixes -----------------------------------------------------------------------------
def prefix_sets(
    arms: Mapping[ArmKey, ArmResult], manual: Mapping[tuple[int, int], Sequence[Any]], n: int,
    negative_label: str | None = None, negative: str = "manual",
) -> tuple[dict[tuple[int, int], dict[str, list[Any]]], dict[str, dict[str, Any]]]:
    """Training sets at one N: ``{(K, seed): {"gen:<arm>": first N per relation, "mix:<arm>": manual + those}}``,
    and what each curve's set holds (``{"n<N>_k<K>_s<seed>_<arm>": Quotas.to_json()}``).

    Each curve takes its own arm's first N samples per relation (a relation it left short keeps what it has),
    not a quota shared with the other plateau arms: the plateau is judged within one curve, and a shared quota
    would cap every curve at the weakest arm's count, so a larger N could train on the same samples as a smaller
    one. The negative label follows ``generation.negative_label`` as in notebook 04 (:func:`comparable_sets`).
    """
    out: dict[tuple[int, int], dict[str, list[Any]]] = {}
    quotas: dict[str, dict[str, Any]] = {}
    for (arm, k, seed), result in arms.items():
        own, quota = comparable_sets({arm: result.all_samples()}, manual[(k, seed)], n, negative_label, negative)
        out.setdefault((k, seed), {}).update(mixed_sets(manual[(k, seed)], own))
        quotas[f"n{n}_k{k}_s{seed}_{arm}"] = quota.to_json()
    return out, quotas


def run_plateau_grid(
    profile: Profile,
    results: ResultsDir,
    arms: Mapping[ArmKey, ArmResult],
    dev: Sequence[Any],
    test: Sequence[Any],
    *,
    progress: bool = True,
) -> dict[str, list[dict[str, Any]]]:
    """Every N x arm x data kind in every grid cell; each run record gains ``n``, ``plateau_arm`` and ``data``;
    ``quotas`` says how many samples per relation each curve held at each N (:func:`prefix_sets`)."""
    manual = {(k, s): load_profile_kshot(profile, results.kshot, k, s) for (_a, k, s) in arms}
    runs: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    quotas: dict[str, dict[str, Any]] = {}
    for n in profile.plateau.n_values:
        sets, held = prefix_sets(arms, manual, n, profile_schema(profile).negative_label,
                                 profile.generation.negative_label)
        quotas.update(held)
        grid = run_training_sets(plateau_grid_profile(profile), results, sets, dev, test, progress=progress)
        for run in grid["runs"]:
            kind, _, arm = run["arm"].partition(":")
            runs.append({**run, "n": n, "plateau_arm": arm, "data": kind})
        skipped += [{**row, "n": n} for row in grid["skipped"]]
    return {"runs": runs, "skipped": skipped, "quotas": quotas}

