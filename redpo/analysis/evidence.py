"""The evidence behind each claim: pre-declared paired comparisons, computed from saved files only.

Every claim has one *primary* comparison, fixed here before any number is seen, and may show *secondary* ones
that do not decide it. Each comparison is an :class:`~redpo.analysis.stats.Effect` (a paired difference with a
95% CI) signed so that positive is the claimed direction:

- **F1** (``kind="f1"``): micro-F1(a) - micro-F1(b) from the per-sentence predictions in
  ``metrics/re_results.json``, paired by grid cell (K-shot split x classifier seed) and by test sentence, by the
  hierarchical bootstrap of :func:`~redpo.analysis.stats.paired_f1_bootstrap`. The direct LLM has one run per
  split (no classifier seed): it is paired with every cell of its split. Only sentences both arms were scored on
  are compared (the LLM may run on a stratified subset of the RE test set).
- **Diversity** (``kind="diversity"``): similarity(b) - similarity(a), TF-IDF cosine, per relation at *equal N*
  (both arms' first ``min(n_a, n_b)`` samples of the relation, so an arm is not favoured for writing fewer), per
  split, averaged over splits per relation; the CI resamples relations.
- **Plateau** (``kind="plateau"``): F1 at the smaller N - F1 at the larger N of one curve, paired by cell
  (``metrics/plateau.json``): "no noticeable gain" holds when the gain's CI stays below ``plateau.min_gain``.

Nothing here loads a model: ``python -m redpo figures`` rebuilds the report in seconds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from redpo.analysis.stats import (
    Effect,
    Metric,
    PairedCells,
    Statistic,
    negative_ratio_bootstrap,
    paired_f1_bootstrap,
    paired_mean_bootstrap,
)
from redpo.config import ClaimsConfig
from redpo.core.io import ResultsDir, read_json, read_samples
from redpo.core.sample import RESample, generated_only
from redpo.extraction.training_sets import MANUAL_STEPS_ARM, PAIR_SUFFIX, PRIMARY_PAIR
from redpo.generation.diversity import metric_texts, tfidf_cosine
from redpo.generation.store import arm_paths

Kind = Literal["f1", "ratio", "diversity", "plateau"]
PLATEAU_RANGE = (16, 32)
"""The paper: RE performance stops improving noticeably after about 16-32 generated samples per relation."""


@dataclass(frozen=True)
class Spec:
    """One pre-declared comparison: ``a`` is claimed to beat ``b`` (for plateau: ``a`` is the curve)."""

    kind: Kind
    a: str
    b: str = ""
    primary: bool = False
    margin: float = 0.0
    """The CI must lie above this (0: the claimed side of zero)."""
    upper: float | None = None
    """...and below this, for a band claim (claim 4)."""

    @property
    def label(self) -> str:
        return f"{self.a} curve" if self.kind == "plateau" else f"{self.a} vs {self.b}"


@dataclass(frozen=True)
class Evidence:
    """A :class:`Spec` and what the saved files gave for it (``effect`` None: not run, with the reason)."""

    spec: Spec
    effect: Effect | None = None
    macro: Effect | None = None
    """SemEval's official macro-F1 difference, for primary F1 comparisons on SemEval."""
    note: str = ""


# ---- F1 from per-sentence predictions --------------------------------------------------------------------
def _by_id(run: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    p = run["predictions"]
    return {i: (g, x) for i, g, x in zip(p["ids"], p["gold"], p["pred"], strict=True)}


def _shared_ids(tables: Sequence[Mapping[str, tuple[str, str]]]) -> list[str]:
    """The sentence ids every table (:func:`_by_id`) scored, in the first one's order: runs of one comparison are
    compared on the same sentences only."""
    return [i for i in tables[0] if all(i in t for t in tables[1:])]


def _cell_key(run: Mapping[str, Any]) -> tuple[int, int, int | None]:
    seed = run.get("classifier_seed")
    return int(run["k"]), int(run["split_seed"]), None if seed is None else int(seed)


def _split_label(run: Mapping[str, Any]) -> str:
    """The K-shot split a run belongs to, ``k<K>_s<seed>``: the unit of replication every bootstrap resamples."""
    return "k{}_s{}".format(*_cell_key(run)[:2])


def _same_cell(ra: Mapping[str, Any], rb: Mapping[str, Any]) -> bool:
    ka, kb = _cell_key(ra), _cell_key(rb)
    return ka[:2] == kb[:2] and (ka[2] is None or kb[2] is None or ka[2] == kb[2])


def coverage_note(runs_a: Sequence[Mapping[str, Any]], runs_b: Sequence[Mapping[str, Any]],
                  cells: PairedCells) -> str:
    """What a paired comparison left out, said beside its CI: runs of either arm with no partner run (a cell one
    arm lacks) and sentences not scored by every paired run. Empty when nothing was left out."""
    alone = [r for r in runs_a if not any(_same_cell(r, o) for o in runs_b)]
    alone += [r for r in runs_b if not any(_same_cell(o, r) for o in runs_a)]
    notes = []
    if alone:
        arms = ", ".join(sorted({r["arm"] for r in alone}))
        notes.append(f"{len(alone)} run(s) without a partner cell left out ({arms})")
    scored = max(len(r["predictions"]["ids"]) for r in (*runs_a, *runs_b))
    if len(cells.gold) < scored:
        notes.append(f"paired on {len(cells.gold)} of {scored} sentences")
    return "; ".join(notes)


def paired_cells(runs_a: Sequence[Mapping[str, Any]], runs_b: Sequence[Mapping[str, Any]]) -> PairedCells | None:
    """Two arms' runs paired by cell and sentence; a run without a classifier seed (the direct LLM) pairs with
    every cell of its split. None when no cell or no sentence is shared, or a run has no predictions."""
    if not runs_a or not runs_b or any("predictions" not in r for r in (*runs_a, *runs_b)):
        return None
    pairs = [(ra, rb, _split_label(ra)) for ra in runs_a for rb in runs_b if _same_cell(ra, rb)]
    if not pairs:
        return None
    tables = {id(r): _by_id(r) for ra, rb, _ in pairs for r in (ra, rb)}  # the first pair's `a` run comes first
    first = tables[id(pairs[0][0])]
    ids = _shared_ids(list(tables.values()))
    if not ids:
        return None
    return PairedCells(
        gold=[first[i][0] for i in ids],
        a=[[tables[id(ra)][i][1] for i in ids] for ra, _rb, _s in pairs],
        b=[[tables[id(rb)][i][1] for i in ids] for _ra, rb, _s in pairs],
        splits=[split for _ra, _rb, split in pairs],
    )


def empty_arm_reasons(payload: Mapping[str, Any]) -> dict[str, str]:
    """RE arm -> why it may have no run: the generation arm behind it wrote no valid sample in some split, from the
    quotas notebook 04 saved (``empty_arms``). ``gen:<arm>``/``mix:<arm>`` rest on their arm; the primary pair's
    ``@pair`` sets on both arms of :data:`PRIMARY_PAIR`."""
    splits_of: dict[str, list[str]] = {}
    for scope, quotas in payload.get("quotas", {}).items():  # k8_s1, k8_s1@pair or k8_s1@own:<arm>
        if not scope.endswith(PAIR_SUFFIX):
            for arm in quotas.get("empty_arms", []):
                splits_of.setdefault(arm, []).append(scope.split("@", 1)[0])
    said = {arm: f"arm {arm} wrote no valid sample in {', '.join(splits)}" for arm, splits in splits_of.items()}
    out = {f"{kind}:{arm}": why for arm, why in said.items() for kind in ("gen", "mix")}
    pair = "; ".join(said[arm] for arm in PRIMARY_PAIR if arm in said)
    if pair:
        out.update({f"{kind}:{arm}{PAIR_SUFFIX}": pair for arm in PRIMARY_PAIR for kind in ("gen", "mix")})
    if said:  # the step-matched control is trained only where some mixed set is
        out[MANUAL_STEPS_ARM] = f"{MANUAL_STEPS_ARM} is trained only beside a mixed set"
    return out


def f1_effect(runs: Sequence[Mapping[str, Any]], a: str, b: str, negative: str, claims: ClaimsConfig, *,
              metric: Metric = "micro_f1", why_absent: Mapping[str, str] | None = None,
              statistic: Statistic = "difference", null: float = 0.0) -> tuple[Effect | None, str]:
    """The paired bootstrap of ``metric(a) - metric(b)`` (or, ``statistic="ratio"``, ``metric(a) / metric(b)``
    tested against ``null``) over ``runs`` (records with ``arm``), or the reason not. ``why_absent``
    (:func:`empty_arm_reasons`) says why an arm without runs has none."""
    runs_a, runs_b = [r for r in runs if r["arm"] == a], [r for r in runs if r["arm"] == b]
    cells = paired_cells(runs_a, runs_b)
    if cells is None:
        missing = [x for x in (a, b) if not any(r["arm"] == x for r in runs)]
        if not missing:
            return None, "not run (no per-sentence predictions shared by both arms)"
        reasons = list(dict.fromkeys((why_absent or {})[x] for x in missing if x in (why_absent or {})))
        return None, f"not run (no run of {', '.join(missing)}{': ' if reasons else ''}{'; '.join(reasons)})"
    effect = paired_f1_bootstrap(cells, negative, metric=metric, n_boot=claims.bootstrap_replicates,
                                 seed=claims.bootstrap_seed, statistic=statistic, null=null)
    return effect, coverage_note(runs_a, runs_b, cells)


def negative_ratio_effect(runs: Sequence[Mapping[str, Any]], arm: str, negative: str,
                          claims: ClaimsConfig) -> Effect | None:
    """One arm's negative ratio P(pred negative | gold positive) / P(pred negative | gold negative) over its runs,
    on the sentences every run scored, with its hierarchical 95% CI (:func:`redpo.analysis.stats.
    negative_ratio_bootstrap`); None where no run kept predictions, the sentences lack either kind, or no run
    predicted the negative label for a gold negative (the ratio is undefined)."""
    mine = [r for r in runs if r["arm"] == arm and "predictions" in r]
    if not mine:
        return None
    tables = [_by_id(r) for r in mine]
    ids = _shared_ids(tables)
    gold = [tables[0][i][0] for i in ids]
    if negative not in gold or all(g == negative for g in gold):
        return None
    effect = negative_ratio_bootstrap(gold, [[t[i][1] for i in ids] for t in tables],
                                      [_split_label(r) for r in mine], negative,
                                      n_boot=claims.bootstrap_replicates, seed=claims.bootstrap_seed)
    return effect if np.isfinite(effect.estimate) else None  # no run called a gold negative negative


# ---- diversity at equal N ----------------------------------------------------------------------------------
def _relation_texts(results: ResultsDir, arm: str, k: int, seed: int) -> dict[str, list[str]] | None:
    """An arm's generated texts per relation; the manual copies are left out (:func:`generated_only`)."""
    path = arm_paths(results, arm, k, seed)["samples"]
    if not path.is_file():
        return None
    by_relation: dict[str, list[RESample]] = {}
    for s in generated_only(read_samples(path)):
        by_relation.setdefault(s.relation, []).append(s)
    return {r: metric_texts(samples)[""] for r, samples in by_relation.items()}


def equal_n_differences(results: ResultsDir, a: str, b: str,
                        splits: Sequence[tuple[int, int]]) -> tuple[dict[str, float], int]:
    """``{relation: mean over splits of cos(b) - cos(a)}`` at equal N per relation and split, and the number of
    splits that had both arms. A relation needs >= 2 samples in both arms of a split to count there."""
    per_relation: dict[str, list[float]] = {}
    used = 0
    for k, seed in splits:
        ta, tb = _relation_texts(results, a, k, seed), _relation_texts(results, b, k, seed)
        if ta is None or tb is None:
            continue
        used += 1
        for relation in sorted(set(ta) & set(tb)):
            n = min(len(ta[relation]), len(tb[relation]))
            sim_a, sim_b = tfidf_cosine(ta[relation][:n]), tfidf_cosine(tb[relation][:n])
            if sim_a is not None and sim_b is not None:
                per_relation.setdefault(relation, []).append(sim_b - sim_a)
    return {r: float(np.mean(v)) for r, v in per_relation.items()}, used


def generation_splits_of(results: ResultsDir) -> list[tuple[int, int]]:
    """The (K, seed) splits notebook 02 measured, from ``metrics/generation_icl.json``."""
    path = results.metrics / "generation_icl.json"
    if not path.is_file():
        return []
    blocks = read_json(path)["diversity"]["splits"].values()
    return [(int(b["k"]), int(b["seed"])) for b in blocks]


def diversity_effect(results: ResultsDir, a: str, b: str, claims: ClaimsConfig) -> tuple[Effect | None, str]:
    splits = generation_splits_of(results)
    diffs, used = equal_n_differences(results, a, b, splits)
    if not used:
        return None, "not run (no generation split with both arms)"
    if not diffs:
        empty = [arm for arm in (a, b) if not any(_relation_texts(results, arm, *split) for split in splits)]
        said = "".join(f"; arm {arm} wrote no valid sample" for arm in empty)
        return None, f"not run (no relation with two or more generated samples in both arms in {used} split(s){said})"
    effect = paired_mean_bootstrap(list(diffs.values()), n_boot=claims.bootstrap_replicates,
                                   seed=claims.bootstrap_seed)
    return Effect(effect.estimate, effect.low, effect.high, effect.p_value, used, 1, effect.n_units,
                  effect.n_boot), ""


# ---- plateau ----------------------------------------------------------------------------------------------
def plateau_points(n_values: Sequence[int]) -> tuple[int, int] | None:
    """The two N a plateau is judged between: the largest N <= 16 (or the one before the largest) and the
    largest N. None with fewer than two N."""
    ns = sorted(n_values)
    if len(ns) < 2:
        return None
    below = [n for n in ns[:-1] if n <= PLATEAU_RANGE[0]]
    return (below[-1] if below else ns[-2]), ns[-1]


def plateau_effect(payload: Mapping[str, Any] | None, curve: str, negative: str,
                   claims: ClaimsConfig) -> tuple[Effect | None, str]:
    """F1(N small) - F1(N large) of curve ``gen:<arm>`` / ``mix:<arm>``, paired by cell and sentence."""
    if not payload:
        return None, "not run (no metrics/plateau.json runs)"
    if not any(r["arm"] == curve for r in payload.get("runs", [])):
        return None, f"not run (no run of the {curve} curve in metrics/plateau.json{_plateau_absence(payload, curve)})"
    points = plateau_points(payload["n_values"])
    if points is None:
        return None, f"not run (one N only: {payload['n_values']})"
    lo, hi = points
    runs = [{**r, "arm": f"N={r['n']}"} for r in payload["runs"] if r["arm"] == curve and r["n"] in points]
    if any("n_train" not in r for r in runs):  # records from before sizes were kept: compare as they are
        return f1_effect(runs, f"N={lo}", f"N={hi}", negative, claims)
    sizes = {n: {_cell_key(r): r["n_train"] for r in runs if r["n"] == n} for n in points}
    # Prefixes are nested, so a cell whose set did not grow trains on the same samples at both N: its zero
    # difference measures nothing and would pull the gain toward a plateau. Only cells that grew are compared.
    grew = {cell for cell, size in sizes[hi].items() if cell in sizes[lo] and size > sizes[lo][cell]}
    stalled = len(set(sizes[lo]) & set(sizes[hi])) - len(grew)
    if not grew:
        return None, f"not run (N={hi} adds no training sample over N={lo} in any cell: the arm stopped short)"
    mean = {n: np.mean([sizes[n][cell] for cell in grew]) for n in points}
    said = [f"training samples per run: {mean[lo]:.0f} at N={lo}, {mean[hi]:.0f} at N={hi} (a relation short of N "
            f"keeps what it has)"]
    if stalled:
        said.append(f"{stalled} cell(s) left out: their set did not grow from N={lo} to N={hi}")
    effect, note = f1_effect([r for r in runs if _cell_key(r) in grew], f"N={lo}", f"N={hi}", negative, claims)
    return effect, "; ".join(x for x in (note, *said) if x)


def _plateau_absence(payload: Mapping[str, Any], curve: str) -> str:
    """``: arm obo wrote no valid sample in k4_s1, k4_s2`` (the splits whose quotas list the arm as empty), the note
    of a skipped arm (its prerequisite was missing), or nothing."""
    arm = curve.partition(":")[2]
    skipped = [note for note in payload.get("skipped_arms", []) if note.startswith(f"{arm}:")]
    if skipped:
        return f": {skipped[0]}"
    empty = []
    for key, quotas in payload.get("quotas", {}).items():  # keys n<N>_k<K>_s<seed>_<arm>
        found = re.fullmatch(r"n\d+_(k\d+_s\d+)_(.+)", key)
        if found and found[2] == arm and arm in quotas.get("empty_arms", []) and found[1] not in empty:
            empty.append(found[1])
    return f": arm {arm} wrote no valid sample in {', '.join(empty)}" if empty else ""


def negative_of(payload: Mapping[str, Any]) -> str:
    """The negative label a metrics file was scored with; a dataset without one (FewRel) gets a label that never
    occurs, so micro-F1 counts every sentence."""
    return payload.get("negative_label") or "\u2205 no negative label"


# ---- the pre-declared comparisons -----------------------------------------------------------------------------
def claim_specs(plateau_min_gain: float, close_ratio: float, below_manual: bool) -> dict[int, list[Spec]]:
    """Claims 1-7 -> their comparisons, primary first. Claim 8 (leakage) is a check, not a comparison.

    Claim 4 is a ratio, F1(generated) / F1(manual): "comes close" is a CI whose lower end is at least
    ``close_ratio`` (``claims.close_ratio``; the paper's own ratios are 0.68 on SemEval, 0.78 on Re-TACRED, 1.02
    on TACRED), and, where the claim says generated data stays below manual (``below_manual``: SemEval), a CI
    wholly under 1, which is manual - generated > 0."""
    return {
        1: [Spec("diversity", "obo", "obo_nodiv", primary=True), Spec("diversity", "aao", "aao_nodiv")],
        2: [Spec("diversity", "obo", "aao", primary=True), Spec("diversity", "obo_dpo", "aao_dpo")],
        3: [Spec("f1", "gen:obo_dpo@pair", "gen:obo@pair", primary=True),
            Spec("f1", "mix:obo_dpo@pair", "mix:obo@pair"), Spec("f1", "gen:obo_dpo", "gen:obo"),
            Spec("f1", "gen:aao_dpo", "gen:aao")],
        4: [Spec("ratio", arm, "manual", primary=arm == "gen:obo_dpo@pair", margin=close_ratio,
                 upper=1.0 if below_manual else None)
            for arm in ("gen:obo_dpo@pair", "gen:obo_dpo", "gen:obo@pair")],
        5: [Spec("f1", "gen:obo_dpo@pair", "llm", primary=True), Spec("f1", "gen:obo_dpo", "llm"),
            Spec("f1", "gen:obo@pair", "llm"), Spec("f1", "manual", "llm"),
            Spec("f1", "gen:obo_dpo@pair", "llm_generate")],
        6: [Spec("f1", "mix:obo_dpo@pair", "manual-steps", primary=True), Spec("f1", "mix:obo_dpo@pair", "manual"),
            Spec("f1", "mix:obo_dpo", "manual-steps"), Spec("f1", "mix:obo@pair", "manual-steps"),
            Spec("f1", "mix:aao", "manual-steps")],
        7: [Spec("plateau", f"{kind}:{arm}", primary=(kind, arm) == ("gen", "obo_dpo"), margin=-plateau_min_gain)
            for kind in ("gen", "mix") for arm in ("obo_dpo", "obo", "aao")],
    }


@dataclass(frozen=True)
class SavedMetrics:
    """The metrics files every comparison reads, loaded once per report (``re_results.json`` holds every run's
    per-sentence predictions: tens of MB on ``cpu-full``)."""

    re_results: Mapping[str, Any]
    plateau: Mapping[str, Any]

    @classmethod
    def load(cls, results: ResultsDir) -> SavedMetrics:
        re_path, plateau_path = results.metrics / "re_results.json", results.metrics / "plateau.json"
        return cls(read_json(re_path) if re_path.is_file() else {},
                   read_json(plateau_path) if plateau_path.is_file() else {})


def gather(results: ResultsDir, spec: Spec, saved: SavedMetrics, claims: ClaimsConfig, *,
           with_macro: bool = False) -> Evidence:
    """Compute one comparison from the saved files, with the bootstrap of ``claims``."""
    if spec.kind == "diversity":
        effect, note = diversity_effect(results, spec.a, spec.b, claims)
        return Evidence(spec, effect, note=note)
    if spec.kind == "plateau":
        effect, note = plateau_effect(saved.plateau or None, spec.a, negative_of(saved.plateau), claims)
        return Evidence(spec, effect, note=note)
    payload = saved.re_results
    if not payload:
        return Evidence(spec, note="not run (no metrics/re_results.json)")
    runs = [*payload.get("runs", []), *payload.get("llm_baseline", [])]
    negative = negative_of(payload)
    ratio = {"statistic": "ratio", "null": spec.margin} if spec.kind == "ratio" else {}
    effect, note = f1_effect(runs, spec.a, spec.b, negative, claims, why_absent=empty_arm_reasons(payload),
                             **ratio)
    macro = None
    if effect is not None and with_macro and payload.get("semeval_macro_f1", payload.get("dataset") == "semeval"):
        macro, _ = f1_effect(runs, spec.a, spec.b, negative, claims, metric="semeval_macro_f1", **ratio)
    return Evidence(spec, effect, macro, note)
