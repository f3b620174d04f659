"""The plateau's RE runs: the grid of notebook 04 trained on every prefix N of the plateau generations.

For each N, ``gen:<arm>`` (the arm's own first N per relation) and ``mix:<arm>`` (manual + those) are trained in
every grid cell on the shared dev/test subsets through :func:`redpo.extraction.grid.run_training_sets`, so a
training set equal to one already trained is read from the run store. Each curve holds its own arm's samples
(:func:`prefix_sets`); what it held per relation at each N is saved, and the claims report says how many samples
the two judged N trained on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from redpo.config import Profile, derive
from redpo.core.io import ResultsDir
from redpo.core.manifest import recorded_peak
from redpo.data.splits import load_profile_kshot, profile_schema
from redpo.extraction.grid import run_training_sets
from redpo.extraction.training_sets import comparable_sets, describe_grid, mixed_sets
from redpo.generation.store import ArmKey, ArmResult
from redpo.plateau.generate import plateau_splits


def plateau_grid_profile(profile: Profile) -> Profile:
    """The profile the plateau's RE runs train under: ``plateau.seeds_per_split`` classifier seeds per split when
    set (the cells are the first of notebook 04's cells, under the same run keys), else the encoder's own."""
    seeds = profile.plateau.seeds_per_split
    if seeds is None:
        return profile
    return derive(profile, {"encoder.seeds_per_split": seeds})


def describe_plateau_grid(profile: Profile) -> str:
    """What each plateau point's mean ± sd varies over: the plateau's own splits and classifier seeds, which can be
    fewer than notebook 04's grid (``plateau.splits``, ``plateau.seeds_per_split``)."""
    return describe_grid(plateau_grid_profile(profile), plateau_splits(profile))


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
    with recorded_peak(results, "plateau_re_grid"):
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
