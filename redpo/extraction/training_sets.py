"""The RE grid's cells and every arm's training set: what each RE run trains and evaluates on.

**The grid.** A *cell* is a generation split ``(K, split seed)`` from :func:`redpo.data.splits.generation_splits`
and a classifier seed index ``j < encoder.seeds_per_split``; its classifier seed is
``split_seed * CLASSIFIER_SEED_STRIDE + j`` (so seeds never collide across splits). Every arm is trained in
every cell, and all arms of all cells share one dev and one test set, so arms differ only in training data.

**The arms** of one split (:func:`arm_training_sets`):

* ``manual``: the K-shot split itself;
* ``gen:<arm>``: the first K samples per relation of ``generations/<arm>_k<K>_s<seed>.jsonl``, for every
  generation arm whose file exists (DPO arms join automatically once notebook 03 has written them). The
  negative label's samples are whatever generation produced (``generation.negative_label``: generated, or
  the K manual ones copied);
* ``mix:<arm>``: manual plus ``gen:<arm>`` (a generated sample equal to a manual one is kept once), for every
  ICL and DPO arm (not the Xu et al. baseline).

Nothing here loads a model, so the tables and figures can describe the grid without torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from redpo.config import Profile
from redpo.core.io import ResultsDir, read_samples
from redpo.core.sample import RESample
from redpo.data.splits import generation_splits, load_profile_kshot, load_split, stratified_subset
from redpo.generation.specs import GENERATED_ARMS, MIXED_ARMS
from redpo.generation.store import arm_paths

CLASSIFIER_SEED_STRIDE = 1000
"""Classifier seed = split seed x stride + seed index: distinct across splits for any ``seeds_per_split`` < 1000."""

# ---- grid ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GridCell:
    """One (K, split seed, classifier seed) cell: every arm is trained once per cell."""

    k: int
    split_seed: int
    seed_index: int

    @property
    def classifier_seed(self) -> int:
        return self.split_seed * CLASSIFIER_SEED_STRIDE + self.seed_index

    @property
    def name(self) -> str:
        return f"k{self.k}_s{self.split_seed}_c{self.classifier_seed}"


def grid_cells(profile: Profile) -> list[GridCell]:
    """Every generation split times ``encoder.seeds_per_split`` classifier seeds, in a stable order."""
    return [
        GridCell(k, seed, j)
        for k, seed in generation_splits(profile)
        for j in range(profile.encoder.seeds_per_split)
    ]


def describe_grid(profile: Profile) -> str:
    """One sentence saying what the mean ± sd of a table cell varies over (for notebooks and the README)."""
    splits = generation_splits(profile)
    seeds = sorted({s for _k, s in splits})
    n = profile.encoder.seeds_per_split
    return (
        f"{len(grid_cells(profile))} cells per K: K-shot split seed(s) {seeds} x {n} classifier seed(s) "
        f"(seed = split seed x {CLASSIFIER_SEED_STRIDE} + 0..{n - 1}); mean ± sd are over these cells"
    )


# ---- evaluation sets -------------------------------------------------------------------------------------
def evaluation_sets(profile: Profile) -> tuple[list[RESample], list[RESample]]:
    """``(dev, test)``: each the full split or one stratified subset seeded by ``profile.seed``.

    Computed once and shared by every arm, cell and the direct-LLM baseline, so they all see the same
    sentences in the same order (``dataset.dev_subsample`` / ``dataset.test_subsample``).
    """
    out = []
    for split, n in (("val", profile.dataset.dev_subsample), ("test", profile.dataset.test_subsample)):
        samples = load_split(profile, split)
        out.append(stratified_subset(samples, n, profile.seed) if n else samples)
    return out[0], out[1]


# ---- training sets ---------------------------------------------------------------------------------------
def first_per_relation(samples: Sequence[RESample], n: int) -> list[RESample]:
    """The first ``n`` samples of each relation, in file order (generation order within a relation)."""
    seen: dict[str, int] = {}
    out = []
    for s in samples:
        if seen.get(s.relation, 0) < n:
            seen[s.relation] = seen.get(s.relation, 0) + 1
            out.append(s)
    return out


def union(manual: Sequence[RESample], generated: Sequence[RESample]) -> list[RESample]:
    """Manual samples, then generated ones not equal to a manual one (e.g. copied negative-label samples)."""
    have = set(manual)
    return [*manual, *(s for s in generated if s not in have)]


def available_generated_arms(results: ResultsDir, k: int, split_seed: int) -> list[str]:
    """Generation arms that have a samples file for this split, in :data:`GENERATED_ARMS` order."""
    return [a for a in GENERATED_ARMS if arm_paths(results, a, k, split_seed)["samples"].is_file()]


def arm_training_sets(
    profile: Profile, results: ResultsDir, k: int, split_seed: int
) -> dict[str, list[RESample]]:
    """``{"manual": ..., "gen:<arm>": ..., "mix:<arm>": ...}`` for one split (see the module docstring)."""
    manual = load_profile_kshot(profile, results.kshot, k, split_seed)
    wanted = profile.dataset.relations
    sets: dict[str, list[RESample]] = {"manual": manual}
    for arm in available_generated_arms(results, k, split_seed):
        path = arm_paths(results, arm, k, split_seed)["samples"]
        generated = [s for s in read_samples(path) if wanted is None or s.relation in wanted]
        sets[f"gen:{arm}"] = first_per_relation(generated, k)
        if arm in MIXED_ARMS:
            sets[f"mix:{arm}"] = union(manual, sets[f"gen:{arm}"])
    return sets

