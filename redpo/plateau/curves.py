"""The plateau's curves (notebook 05): the plateau rule, the RE score against N, and the valid-sample yield.

- **Plateau rule** (:func:`plateau_point`): the plateau is the first N from which no later step to the next N
  gains more than ``max(plateau.min_gain, larger seed sd of the two points)`` in mean micro-F1.
- **Yield** (:func:`yield_curve`): per relation, N over the calls it took to reach N valid samples, the figure
  the paper blames the plateau on.

Everything here reads run records and generation records only; the runs themselves come from
:mod:`redpo.plateau.runs`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from redpo.config import Profile
from redpo.core.io import ResultsDir, read_json, write_json
from redpo.core.tables import format_mean_sd, json_safe, mean_sd, save_table
from redpo.data.splits import profile_schema
from redpo.generation.store import PLATEAU_PREFIX, ArmKey, ArmResult, ResponseRecord, arm_stem


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


def yield_curve(arms: Mapping[ArmKey, ArmResult], n_values: Sequence[int]) -> pd.DataFrame:
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
    arms: Mapping[ArmKey, ArmResult],
    grid: Mapping[str, Sequence[Mapping[str, Any]]],
    skipped_arms: Sequence[str],
) -> dict[str, Any]:
    """``metrics/plateau.json``: runs, the curve summary, the plateau per curve, the yield curve and the rule."""
    summary = curve_summary(grid["runs"])
    payload = {
        "profile": profile.name,
        "n_values": list(profile.plateau.n_values),
        "arms": list(profile.plateau.arms),
        "skipped_arms": list(skipped_arms),
        "min_gain": profile.plateau.min_gain,
        "negative_label": profile_schema(profile).negative_label,
        "rule": plateau_rule_text(profile.plateau.min_gain),
        "generation": {
            f"{arm}_k{k}_s{seed}": {
                "file": arm_stem(PLATEAU_PREFIX + res.name, k, seed),
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
        "quotas": dict(grid.get("quotas", {})),  # per N, split and curve: the samples per relation it trained on
    }
    payload = json_safe(payload)
    write_json(results.metrics / "plateau.json", payload)
    return payload


def plateau_rule_text(min_gain: float) -> str:
    """The rule in one sentence, for the notebook, the figure caption and the claims report."""
    return (
        "the plateau is the first N from which no later step to the next N raises mean micro-F1 by more than "
        f"max({min_gain * 100:.1f} F1 points, the larger seed sd of the two points)"
    )


def plateau_tables(results: ResultsDir) -> dict[str, pd.DataFrame]:
    """``tables/plateau_f1`` (mean ± sd per arm, data and N), ``plateau_points`` and ``plateau_yield``."""
    payload = read_json(results.root / "metrics" / "plateau.json")
    summary = pd.DataFrame(payload["summary"], columns=["arm", "data", "n", "runs", "mean", "sd"])
    f1 = summary.assign(
        value=[format_mean_sd(m, float("nan") if s is None or pd.isna(s) else s)
               for m, s in zip(summary["mean"], summary["sd"], strict=True)]
    ).pivot_table(index=["arm", "data"], columns="n", values="value", aggfunc="first")
    f1.columns = [f"N={n}" for n in f1.columns]
    tables = {
        "plateau_f1": f1,
        "plateau_points": pd.DataFrame(payload["plateau"]),
        "plateau_yield": pd.DataFrame(payload["yield"]),
    }
    for name, frame in tables.items():
        save_table(results, name, frame, index=name == "plateau_f1")
    return tables
