"""The plateau analysis (notebook 05): RE micro-F1 against N generated samples per relation.

- **One generation per arm.** Each arm of ``plateau.arms`` is generated once up to ``max(plateau.n_values)``
  valid samples per relation (``generation.max_attempts`` scaled by the same factor, so OBO keeps its budget per
  sample) and saved as ``generations/plateau_<arm>_k<K>_s<seed>.*``, beside notebook 02's files, never over them.
  Every smaller N takes the first N samples per relation (a prefix). An OBO prompt depends only on the
  demonstrations and the valid samples so far, so the first calls of the longer run are notebook 02's calls, read
  from the cache; ``<arm>_dpo`` arms use notebook 03's adapters (each relation through the other half's adapter).
- **Same RE grid as notebook 04.** For each N, ``gen:<arm>`` (the prefix) and ``mix:<arm>`` (manual + prefix) are
  trained in every grid cell on the shared dev/test subsets through :func:`redpo.re_experiments.run_training_sets`,
  so a training set equal to one notebook 04 trained is read from the resume cache.
- **Plateau rule** (:func:`plateau_point`): the plateau is the first N from which no later step to the next N
  gains more than ``max(plateau.min_gain, larger seed sd of the two points)`` in mean micro-F1.
- **Yield** (:func:`yield_curve`): per relation, N over the calls it took to reach N valid samples, the figure
  the paper blames the plateau on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from redpo.config import Profile
from redpo.generate import ARMS, ArmResult, ResponseRecord, arm_stem, generate_arm, save_arm
from redpo.re_experiments import mean_sd
from redpo.results import ResultsDir, write_json

PREFIX = "plateau_"
DPO_SUFFIX = "_dpo"
DATA_KINDS = ("gen", "mix")
"""``gen``: the N generated samples per relation alone; ``mix``: the K manual samples plus those."""


# ---- generation ------------------------------------------------------------------------------------------
def plateau_profile(profile: Profile) -> Profile:
    """The profile with ``generation.n_per_relation = max(plateau.n_values)`` and the OBO call budget scaled
    by the same factor (AAO keeps ``aao_max_calls``: each of its calls asks for all missing samples)."""
    gen = profile.generation
    n_max = max(profile.plateau.n_values)
    attempts = max(gen.max_attempts, math.ceil(gen.max_attempts * n_max / gen.n_per_relation))
    return profile.model_copy(
        update={"generation": gen.model_copy(update={"n_per_relation": n_max, "max_attempts": attempts})}
    )


def base_arm(arm: str) -> tuple[str, bool]:
    """``"obo_dpo"`` -> ``("obo", True)``; ``"aao"`` -> ``("aao", False)``; unknown arms are errors."""
    dpo = arm.endswith(DPO_SUFFIX)
    base = arm[: -len(DPO_SUFFIX)] if dpo else arm
    if base not in ARMS:
        raise ValueError(
            f"plateau.arms: unknown arm {arm!r}; use one of {', '.join(ARMS)} or <arm>_dpo (e.g. obo_dpo)"
        )
    return base, dpo


def missing_prerequisite(arm: str, results: ResultsDir) -> str | None:
    """Why ``arm`` cannot be generated yet (a DPO arm needs notebook 03's halves and both adapters), or None."""
    from redpo.dpo_pairs import HALVES

    _base, dpo = base_arm(arm)
    if not dpo:
        return None
    if not (results.dpo / "halves.json").is_file():
        return f"{arm}: dpo/halves.json is missing; run notebook 03 first"
    for half in HALVES:
        if not (results.adapters / half / "adapter_config.json").is_file():
            return f"{arm}: adapter {half} is missing under adapters/; run notebook 03 first"
    return None


def plateau_name(result: ArmResult) -> ArmResult:
    """The same run under the name ``plateau_<name>``, so saving it leaves notebook 02/03's files alone."""
    name = PREFIX + result.name
    return replace(result, name=name, info={**result.info, "name": name, "plateau_of": result.name})


def generate_plateau_arms(
    profile: Profile, results: ResultsDir, *, progress: bool = True
) -> tuple[dict[tuple[str, int, int], ArmResult], list[str]]:
    """Generate every ``plateau.arms`` arm up to max N on every generation split, save each as ``plateau_*``.

    Returns the results keyed ``(arm, K, seed)`` (``arm`` without the prefix) and one note per skipped arm.
    """
    from redpo import arms as A
    from redpo.data import profile_schema

    prof = plateau_profile(profile)
    schema = profile_schema(prof)
    splits = A.generation_splits(prof)
    pools = {split: A.kshot_by_relation(prof, results, *split, schema) for split in splits}
    notes = {arm: missing_prerequisite(arm, results) for arm in prof.plateau.arms}
    skipped = [note for note in notes.values() if note]
    wanted = [arm for arm, note in notes.items() if note is None]
    out: dict[tuple[str, int, int], ArmResult] = {}
    plain = [arm for arm in wanted if not base_arm(arm)[1]]
    if plain:
        generator = A.open_generator(prof, results)
        for (k, seed), pool in pools.items():
            for arm in plain:
                out[(arm, k, seed)] = generate_arm(
                    arm, prof, schema, pool, generator, k=k, kshot_seed=seed, progress=progress
                )
        del generator
    dpo_bases = [base_arm(arm)[0] for arm in wanted if base_arm(arm)[1]]
    if dpo_bases:
        from redpo.dpo_pairs import load_halves
        from redpo.dpo_train import generate_dpo_arms

        dpo_prof = prof.model_copy(update={"dpo": prof.dpo.model_copy(update={"arms": dpo_bases})})
        out.update(generate_dpo_arms(dpo_prof, results, load_halves(results), splits, pools,
                                     progress=progress, save=False))
    for result in out.values():
        save_arm(plateau_name(result), results)
    return out, skipped


# ---- RE training on prefixes -----------------------------------------------------------------------------
def prefix_sets(
    arms: Mapping[tuple[str, int, int], ArmResult], manual: Mapping[tuple[int, int], Sequence[Any]], n: int
) -> dict[tuple[int, int], dict[str, list[Any]]]:
    """Training sets at one N: ``{(K, seed): {"gen:<arm>": first N per relation, "mix:<arm>": manual + those}}``.

    The arm names are notebook 04's, so at N = K the fingerprint of a set equal to notebook 04's matches and
    the run comes from the resume cache.
    """
    from redpo.re_experiments import first_per_relation, union

    out: dict[tuple[int, int], dict[str, list[Any]]] = {}
    for (arm, k, seed), result in arms.items():
        generated = first_per_relation(result.all_samples(), n)
        sets = out.setdefault((k, seed), {})
        sets[f"gen:{arm}"] = generated
        sets[f"mix:{arm}"] = union(manual[(k, seed)], generated)
    return out


def run_plateau_grid(
    profile: Profile,
    results: ResultsDir,
    arms: Mapping[tuple[str, int, int], ArmResult],
    dev: Sequence[Any],
    test: Sequence[Any],
    *,
    progress: bool = True,
) -> dict[str, list[dict[str, Any]]]:
    """Every N x arm x data kind in every grid cell; each run record gains ``n``, ``plateau_arm`` and ``data``."""
    from redpo.data import load_profile_kshot
    from redpo.re_experiments import run_training_sets

    manual = {(k, s): load_profile_kshot(profile, results.kshot, k, s) for (_a, k, s) in arms}
    runs: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for n in profile.plateau.n_values:
        grid = run_training_sets(profile, results, prefix_sets(arms, manual, n), dev, test, progress=progress)
        for run in grid["runs"]:
            kind, _, arm = run["arm"].partition(":")
            runs.append({**run, "n": n, "plateau_arm": arm, "data": kind})
        skipped += [{**row, "n": n} for row in grid["skipped"]]
    return {"runs": runs, "skipped": skipped}


# ---- the plateau rule ------------------------------------------------------------------------------------
def curve_summary(runs: Sequence[Mapping[str, Any]], metric: str = "micro_f1") -> pd.DataFrame:
    """One row per (arm, data, N): runs, mean and sd of ``metric`` over the grid cells."""
    rows = []
    frame = pd.DataFrame([{"arm": r["plateau_arm"], "data": r["data"], "n": r["n"], "v": r[metric]} for r in runs])
    if frame.empty:
        return pd.DataFrame(columns=["arm", "data", "n", "runs", "mean", "sd"])
    for (arm, data, n), group in frame.groupby(["arm", "data", "n"], sort=False):
        mean, sd = mean_sd(group["v"].tolist())
        rows.append({"arm": arm, "data": data, "n": int(n), "runs": len(group), "mean": mean, "sd": sd})
    return pd.DataFrame(rows).sort_values(["arm", "data", "n"]).reset_index(drop=True)


def plateau_point(
    n_values: Sequence[int], means: Sequence[float], sds: Sequence[float], min_gain: float = 0.01
) -> int | None:
    """The first N from which no later step to the next N gains more than ``max(min_gain, larger sd)``.

    ``None`` when even the last step gains more (the curve is still rising at the largest N) or when there is
    only one N (no step to judge). A missing sd (one run) counts as 0, leaving ``min_gain`` as the threshold.
    """
    if len(n_values) < 2:
        return None
    sd = [0.0 if s is None or np.isnan(s) else float(s) for s in sds]
    rising = [
        means[i + 1] - means[i] > max(min_gain, sd[i], sd[i + 1]) for i in range(len(n_values) - 1)
    ]
    if rising[-1]:
        return None
    last_rise = max((i for i, r in enumerate(rising) if r), default=-1)
    return int(n_values[last_rise + 1])


def plateau_table(summary: pd.DataFrame, min_gain: float) -> pd.DataFrame:
    """Per (arm, data): the plateau N by :func:`plateau_point`, and the mean F1 at the first and last N."""
    rows = []
    for (arm, data), g in summary.groupby(["arm", "data"], sort=False):
        g = g.sort_values("n")
        rows.append({
            "arm": arm, "data": data,
            "plateau_n": plateau_point(g["n"].tolist(), g["mean"].tolist(), g["sd"].tolist(), min_gain),
            "first_n": int(g["n"].iloc[0]), "f1_first": float(g["mean"].iloc[0]),
            "last_n": int(g["n"].iloc[-1]), "f1_last": float(g["mean"].iloc[-1]),
        })
    return pd.DataFrame(rows, columns=["arm", "data", "plateau_n", "first_n", "f1_first", "last_n", "f1_last"])


# ---- valid-sample yield ----------------------------------------------------------------------------------
def calls_to_reach(records: Sequence[ResponseRecord], n: int) -> dict[str, int | None]:
    """Per relation: how many calls it took until ``n`` valid samples were kept (``None``: never reached)."""
    by_relation: dict[str, list[ResponseRecord]] = {}
    for rec in records:
        by_relation.setdefault(rec.relation, []).append(rec)
    out: dict[str, int | None] = {}
    for rel, recs in by_relation.items():
        valid, out[rel] = 0, None
        for rec in sorted(recs, key=lambda r: r.attempt):
            valid += len(rec.valid)
            if valid >= n:
                out[rel] = rec.attempt + 1
                break
    return out


def yield_curve(arms: Mapping[tuple[str, int, int], ArmResult], n_values: Sequence[int]) -> pd.DataFrame:
    """Per arm, split and N: valid samples per call by the time N were reached (mean over the relations that
    reached N) and the share of relations that reached N within the call budget."""
    rows = []
    for (arm, k, seed), result in arms.items():
        for n in n_values:
            calls = calls_to_reach(result.records, n)
            reached = [c for c in calls.values() if c is not None]
            rows.append({
                "arm": arm, "k": k, "seed": seed, "n": n, "relations": len(calls),
                "reached_share": len(reached) / len(calls) if calls else 0.0,
                "valid_per_call": float(np.mean([n / c for c in reached])) if reached else None,
            })
    return pd.DataFrame(rows)


# ---- saving ----------------------------------------------------------------------------------------------
def save_plateau_metrics(
    profile: Profile,
    results: ResultsDir,
    arms: Mapping[tuple[str, int, int], ArmResult],
    grid: Mapping[str, Sequence[Mapping[str, Any]]],
    skipped_arms: Sequence[str],
) -> dict[str, Any]:
    """``metrics/plateau.json``: runs, the curve summary, the plateau per curve, the yield curve and the rule."""
    from redpo.re_experiments import _json_safe

    summary = curve_summary(grid["runs"])
    payload = {
        "profile": profile.name,
        "n_values": list(profile.plateau.n_values),
        "arms": list(profile.plateau.arms),
        "skipped_arms": list(skipped_arms),
        "min_gain": profile.plateau.min_gain,
        "rule": plateau_rule_text(profile.plateau.min_gain),
        "generation": {
            f"{arm}_k{k}_s{seed}": {
                "file": arm_stem(PREFIX + res.name, k, seed),
                "valid": sum(len(v) for v in res.samples.values()),
                "calls": sum(st.attempts for st in res.stats.values()),
            }
            for (arm, k, seed), res in arms.items()
        },
        "summary": summary.to_dict(orient="records"),
        "plateau": plateau_table(summary, profile.plateau.min_gain).to_dict(orient="records"),
        "yield": yield_curve(arms, profile.plateau.n_values).to_dict(orient="records"),
        "runs": [{k: v for k, v in r.items() if k not in {"confusion", "per_relation", "labels"}}
                 for r in grid["runs"]],
        "skipped_runs": list(grid.get("skipped", [])),
    }
    payload = _json_safe(payload)
    write_json(results.metrics / "plateau.json", payload)
    return payload


def plateau_rule_text(min_gain: float) -> str:
    """The rule in one sentence, for the notebook, the figure caption and the claims report."""
    return (
        "the plateau is the first N from which no later step to the next N raises mean micro-F1 by more than "
        f"max({min_gain * 100:.1f} F1 points, the larger seed sd of the two points)"
    )
