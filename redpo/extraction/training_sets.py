"""The RE grid's cells and every arm's training set: what each RE run trains and evaluates on.

**The grid.** A *cell* is a generation split ``(K, split seed)`` from :func:`redpo.data.splits.generation_splits`
and a classifier seed index ``j < encoder.seeds_per_split``; its classifier seed is
``split_seed * CLASSIFIER_SEED_STRIDE + j`` (so seeds never collide across splits). Every arm is trained in
every cell, and all arms of all cells share one dev and one test set, so arms differ only in training data.

**The arms** of one split (:func:`arm_training_sets`):

* ``manual``: the K-shot split itself;
* ``gen:<arm>``: samples of ``generations/<arm>_k<K>_s<seed>.jsonl``, for every generation arm whose file exists
  (DPO arms join automatically once notebook 03 has written them), made comparable by :func:`comparable_sets`;
* ``mix:<arm>``: manual plus ``gen:<arm>`` (a generated sample equal to a manual one is kept once), for every
  ICL and DPO arm (not the Xu et al. baseline);
* ``manual-steps``: the manual set again, trained on the step schedule of the mixed sets (:func:`epoch_sizes`).
  A mixed set is about twice the manual one, so with the same epoch cap and patience it gets about twice the
  optimizer steps; "mixed beats manual" could then mean only "more steps". This control gets the same steps.
  Under a schedule in steps that no set's size changes (:func:`size_free_schedule`), every set already trains on
  the same schedule, and ``manual-steps`` is the manual run, reused rather than trained again.

**Comparable arms.** An arm comparison is confounded if arms differ in how much they train on, so every
generated arm of a split takes the *same number of samples per relation*: the smallest count any arm reached
(at most K, in generation order). A relation some arm left short is listed per arm in the quota report, and a
relation some arm has no sample of is left out of every generated arm (the tables name it). An arm that produced
nothing at all is left out of the comparison instead of emptying the others. The negative label follows
``generation.negative_label``: ``manual`` (the default) gives every generated arm the split's K manual negative
samples, so the arms differ only in their generated positives; ``generate`` treats it as one more quota.

**The primary pair** (``gen:<arm>@pair``, ``mix:<arm>@pair`` for the arms of :data:`PRIMARY_PAIR`, OBO and OBO+DPO).
The all-arm quota is set by the weakest of every arm, so a relation that an arm no claim compares left empty (a
``_nodiv`` arm, the baseline) is taken from OBO and OBO+DPO too, and one weak arm can drop a good share of the
relations from every set. Claims 3-6 are decided on OBO and OBO+DPO only, so they train on the pair's own quota: the
same per-relation counts for both, from the relations both have. The all-arm sets stay, for the arm table and the
secondary comparisons.

**A consistent arm** (beyond the paper, e.g. ``obo_consistent``) never enters the paper arms' quotas, so listing it
changes no paper arm's set. It trains matched count by count with the paper arm it filters (its *twin*, ``obo``):
``gen:<arm>`` and ``gen:<twin>@<arm>`` hold the same per-relation counts (the smaller of the two, at most K), so
their difference is the filter's alone. Without its twin it trains at its own first K per relation. It gets no
mixed set (:data:`redpo.generation.specs.MIXED_ARMS` says why).

Nothing here loads a model, so the tables and figures can describe the grid without torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from redpo.config import EncoderConfig, Profile
from redpo.core.io import ResultsDir, read_samples
from redpo.core.sample import RESample
from redpo.data.splits import generation_splits, load_profile_kshot, load_split, profile_schema, stratified_subset
from redpo.generation.specs import CONSISTENT_ARMS, GENERATED_ARMS, MIXED_ARMS, paper_twin
from redpo.generation.store import arm_paths

PRIMARY_PAIR: tuple[str, str] = ("obo", "obo_dpo")
"""The generated arms claims 3-6 are decided on; they also get training sets at their own common quota."""
PAIR_SUFFIX = "@pair"
"""Marks an arm trained at :data:`PRIMARY_PAIR`'s quota (``gen:obo_dpo@pair``) rather than the all-arm one."""

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


def describe_grid(profile: Profile, splits: Sequence[tuple[int, int]] | None = None) -> str:
    """One sentence saying what the mean ± sd of a table cell varies over (for notebooks and the docs).

    ``splits`` narrows it to the generation splits a stage actually runs on (the plateau may use fewer than
    notebook 04), so a notebook never claims cells it did not train."""
    splits = generation_splits(profile) if splits is None else list(splits)
    seeds = sorted({s for _k, s in splits})
    n = profile.encoder.seeds_per_split
    return (
        f"{len(seeds) * n} cells per K: K-shot split seed(s) {seeds} x {n} classifier seed(s) "
        f"(seed = split seed x {CLASSIFIER_SEED_STRIDE} + 0..{n - 1}); mean ± sd are over these cells"
    )


# ---- evaluation sets -------------------------------------------------------------------------------------
def evaluation_sets(profile: Profile) -> tuple[list[RESample], list[RESample]]:
    """``(dev, test)``: each the full split or one stratified subset seeded by ``profile.seed``.

    Computed once and shared by every arm, cell and the direct-LLM baseline, so they all see the same
    sentences in the same order (``dataset.dev_subsample`` / ``dataset.test_subsample``).
    Every sample carries ``meta["id"]`` = ``<split>:<position in the split file>`` (or the file's own id), which
    per-sentence predictions are keyed by.
    """
    out = []
    for split, n in (("val", profile.dataset.dev_subsample), ("test", profile.dataset.test_subsample)):
        samples = [replace(s, meta={**s.meta, "id": s.meta.get("id", f"{split}:{i}")})
                   for i, s in enumerate(load_split(profile, split))]
        out.append(stratified_subset(samples, n, profile.seed) if n else samples)
    return out[0], out[1]


# ---- training sets ---------------------------------------------------------------------------------------
def first_per_relation(samples: Sequence[RESample], n: int | Mapping[str, int]) -> list[RESample]:
    """The first ``n`` samples of each relation (or ``n[relation]``; absent relations: none), in file order."""
    seen: dict[str, int] = {}
    out = []
    for s in samples:
        limit = n if isinstance(n, int) else n.get(s.relation, 0)
        if seen.get(s.relation, 0) < limit:
            seen[s.relation] = seen.get(s.relation, 0) + 1
            out.append(s)
    return out


def union(manual: Sequence[RESample], generated: Sequence[RESample]) -> list[RESample]:
    """Manual samples, then generated ones not equal to a manual one (e.g. copied negative-label samples)."""
    have = set(manual)
    return [*manual, *(s for s in generated if s not in have)]


@dataclass(frozen=True)
class Quotas:
    """What :func:`comparable_sets` gave every generated arm of one split, and why (saved beside the runs)."""

    target: int
    """Samples per relation asked of every arm (K, or N on the plateau)."""
    per_relation: dict[str, int]
    """Generated samples each compared arm contributes per relation (0: left out of every arm)."""
    negative: str
    """How the negative label enters: ``"manual"`` (the K manual samples in every arm) or ``"generated"``."""
    short: dict[str, dict[str, int]] = field(default_factory=dict)
    """Arm -> {relation: samples it had} for every relation it left below ``target``."""
    empty_arms: list[str] = field(default_factory=list)
    """Arms with no generated sample at all: not compared."""

    @property
    def left_out(self) -> list[str]:
        return [r for r, n in self.per_relation.items() if n == 0]

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "negative_label": self.negative, "per_relation": self.per_relation,
                "relations_left_out": self.left_out, "short": self.short, "empty_arms": self.empty_arms}


def comparable_sets(
    generated: Mapping[str, Sequence[RESample]],
    manual: Sequence[RESample],
    target: int,
    negative_label: str | None,
    negative: str = "manual",
) -> tuple[dict[str, list[RESample]], Quotas]:
    """Every arm's generated training set with the same per-relation counts (see the module docstring).

    ``generated`` maps arm -> samples in generation order; relations are those of the split and the arms. With
    ``negative="manual"`` the negative label's generated samples are ignored and the manual ones used in every arm.
    """
    copy_negative = negative == "manual" and negative_label is not None
    seen = dict.fromkeys(s.relation for s in (*manual, *(s for samples in generated.values() for s in samples)))
    relations = [r for r in seen if not (copy_negative and r == negative_label)]
    counts = {arm: {r: 0 for r in relations} for arm in generated}
    for arm, samples in generated.items():
        for s in first_per_relation(samples, target):
            if s.relation in counts[arm]:
                counts[arm][s.relation] += 1
    empty = [arm for arm, c in counts.items() if not any(c.values())]
    compared = [arm for arm in generated if arm not in empty]
    quota = {r: min((counts[a][r] for a in compared), default=0) for r in relations}
    negatives = [s for s in manual if s.relation == negative_label] if copy_negative else []
    sets = {arm: [*first_per_relation(generated[arm], quota), *negatives] for arm in compared}
    short = {arm: {r: n for r, n in counts[arm].items() if n < target} for arm in compared}
    return sets, Quotas(target, quota, "manual" if copy_negative else "generated",
                        {a: s for a, s in short.items() if s}, empty)


def available_generated_arms(results: ResultsDir, k: int, split_seed: int) -> list[str]:
    """Generation arms that have a samples file for this split, in :data:`GENERATED_ARMS` order."""
    return [a for a in GENERATED_ARMS if arm_paths(results, a, k, split_seed)["samples"].is_file()]


def mixed_sets(
    manual: Sequence[RESample], generated: Mapping[str, Sequence[RESample]], suffix: str = ""
) -> dict[str, list[RESample]]:
    """``{"gen:<arm><suffix>": ..., "mix:<arm><suffix>": ...}`` in arm order; mixed only for :data:`MIXED_ARMS`."""
    sets: dict[str, list[RESample]] = {}
    for arm, samples in generated.items():
        sets[f"gen:{arm}{suffix}"] = list(samples)
        if arm in MIXED_ARMS:
            sets[f"mix:{arm}{suffix}"] = union(manual, samples)
    return sets


MANUAL_STEPS_ARM = "manual-steps"
"""The step-matched manual control: the manual samples on the mixed arms' step schedule."""


def size_free_schedule(encoder: EncoderConfig) -> bool:
    """Whether every set trains on the same schedule whatever its size: the schedule in steps with its cap in steps
    (``encoder.eval_steps`` and ``max_steps``; the warm-up is then in steps too, given or a share of the cap).
    Then a set's "epoch" sizes nothing, and ``manual-steps`` is the manual run itself."""
    return encoder.eval_steps is not None and encoder.max_steps is not None


def epoch_sizes(sets: Mapping[str, Sequence[RESample]], encoder: EncoderConfig | None = None) -> dict[str, int]:
    """``{arm: samples per "epoch"}`` for arms trained on another set's step schedule: ``manual-steps`` gets the
    largest mixed set's size, so its evaluation interval, patience and cap in optimizer steps are those of the
    largest mixed arms: the primary pair's (claim 6 compares ``mix:obo_dpo@pair`` with it), whose quota is never
    below the all-arm one; mixed sets of one quota differ only by generated samples equal to a manual one. Empty
    under a size-free ``encoder`` schedule (:func:`size_free_schedule`): there the manual run is already
    step-matched, and the grid reuses it for ``manual-steps`` instead of training the same run twice."""
    if encoder is not None and size_free_schedule(encoder):
        return {}
    mixed = [len(v) for a, v in sets.items() if a.startswith("mix:")]
    return {MANUAL_STEPS_ARM: max(mixed)} if MANUAL_STEPS_ARM in sets and mixed else {}


def arm_training_sets_with_quotas(
    profile: Profile, results: ResultsDir, k: int, split_seed: int
) -> tuple[dict[str, list[RESample]], dict[str, Quotas]]:
    """``{"manual", "manual-steps", "gen:<arm>", "mix:<arm>", "gen:<arm>@pair", "mix:<arm>@pair"}`` training
    sets of one split, and the quotas that made them: ``{"all": ..., "pair": ...}`` with
    ``training_sets.quota: weakest_arm``, ``{"own:<arm>": ..., "pair": ...}`` with ``own`` (``"pair"`` only when
    both arms of :data:`PRIMARY_PAIR` produced samples; see the module docstring)."""
    manual = load_profile_kshot(profile, results.kshot, k, split_seed)
    wanted = profile.dataset.relations
    generated = {
        arm: [s for s in read_samples(arm_paths(results, arm, k, split_seed)["samples"])
              if wanted is None or s.relation in wanted]
        for arm in available_generated_arms(results, k, split_seed)
    }
    schema = profile_schema(profile)
    negative = (schema.negative_label, profile.generation.negative_label)
    paper = {arm: samples for arm, samples in generated.items() if arm not in CONSISTENT_ARMS}
    if profile.training_sets.quota == "own":  # every arm at its own first K per relation
        comparable, scopes = {}, {}
        for arm, samples in paper.items():
            own, scopes[f"own:{arm}"] = comparable_sets({arm: samples}, manual, k, *negative)
            comparable.update(own)
    else:  # every arm cut to the counts of the weakest arm
        comparable, quotas = comparable_sets(paper, manual, k, *negative)
        scopes = {"all": quotas}
    sets = mixed_sets(manual, comparable)
    pair = {arm: generated[arm] for arm in PRIMARY_PAIR if arm in comparable}
    if len(pair) == len(PRIMARY_PAIR):
        pair_sets, scopes["pair"] = comparable_sets(pair, manual, k, *negative)  # matched count by count
        sets.update(mixed_sets(manual, pair_sets, PAIR_SUFFIX))
    for arm in (a for a in generated if a in CONSISTENT_ARMS):
        judged, scopes[f"match:{arm}"] = consistent_sets(arm, generated, manual, k, negative)
        sets.update(judged)
    control = {MANUAL_STEPS_ARM: manual} if any(a.startswith("mix:") for a in sets) else {}
    return {"manual": manual, **control, **sets}, scopes


def consistent_sets(arm: str, generated: Mapping[str, Sequence[RESample]], manual: Sequence[RESample], k: int,
                    negative: tuple[str | None, str]) -> tuple[dict[str, list[RESample]], Quotas]:
    """A consistent arm's generated set matched count by count with its paper twin's (``gen:<arm>`` and
    ``gen:<twin>@<arm>``), or at its own first K when the twin has no samples (see the module docstring)."""
    twin = paper_twin(arm)
    compared = {arm: generated[arm], **({twin: generated[twin]} if twin in generated else {})}
    matched, quotas = comparable_sets(compared, manual, k, *negative)
    if arm not in matched:  # the arm wrote nothing: its twin's copy would compare with nothing
        return {}, quotas
    names = {arm: f"gen:{arm}", twin: f"gen:{twin}@{arm}"}
    return {names[a]: samples for a, samples in matched.items()}, quotas


def arm_training_sets(profile: Profile, results: ResultsDir, k: int, split_seed: int) -> dict[str, list[RESample]]:
    """The training sets of :func:`arm_training_sets_with_quotas`, without the quota report."""
    return arm_training_sets_with_quotas(profile, results, k, split_seed)[0]
