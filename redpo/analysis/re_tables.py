"""Tables of RE runs: summaries over grid cells, the main results table, per-relation F1, confusion, timing.

They read run records (``metrics/re_results.json``), never a model, so ``python -m redpo figures`` rebuilds them
without torch. :func:`save_re_results` writes that file at the end of notebook 04.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from redpo.analysis import paper_numbers
from redpo.analysis.evidence import negative_ratio_effect
from redpo.analysis.stats import Effect
from redpo.config import ClaimsConfig, Profile
from redpo.core.io import ResultsDir, read_json, write_json
from redpo.core.sample import RESample
from redpo.core.tables import format_mean_sd, json_safe, mean_sd, save_table
from redpo.data.splits import generation_splits, profile_schema
from redpo.extraction.training_sets import (
    CLASSIFIER_SEED_STRIDE,
    MANUAL_STEPS_ARM,
    PAIR_SUFFIX,
    PRIMARY_PAIR,
    arm_training_sets,
    arm_training_sets_with_quotas,
    describe_grid,
    grid_cells,
)
from redpo.generation.specs import CONSISTENT_ARMS, GENERATED_ARMS, LLM_ARMS, MIXED_ARMS, paper_twin
from redpo.generation.store import ArmResult, empty_arm_line, load_arm


def arm_order(arms: Sequence[str]) -> list[str]:
    """Display order: manual, generated, mixed (each in :data:`GENERATED_ARMS` order), the primary pair, each
    consistent arm's twin at the consistent arm's counts, then the LLM."""
    pair = [f"{kind}:{a}{PAIR_SUFFIX}" for kind in ("gen", "mix") for a in PRIMARY_PAIR]
    twins = [f"gen:{paper_twin(a)}@{a}" for a in CONSISTENT_ARMS]
    order = ["manual", MANUAL_STEPS_ARM, *(f"gen:{a}" for a in GENERATED_ARMS), *(f"mix:{a}" for a in MIXED_ARMS),
             *pair, *twins, *LLM_ARMS]
    known = [a for a in order if a in set(arms)]
    return known + sorted(set(arms) - set(order))



def training_quotas(profile: Profile, results: ResultsDir) -> dict[str, dict[str, Any]]:
    """Per generation split (``k8_s1``; ``k8_s1@own:<arm>`` per arm with ``training_sets.quota: own``) and, for
    the primary pair's sets, ``k8_s1@pair``: the per-relation quotas the generated arms trained on, the relations
    each arm left short, the relations left out and the arms not compared (``Quotas.to_json``)."""
    out = {}
    for k, seed in generation_splits(profile):
        scopes = arm_training_sets_with_quotas(profile, results, k, seed)[1]
        out.update({f"k{k}_s{seed}{_scope_suffix(scope)}": quotas.to_json() for scope, quotas in scopes.items()})
    return out


def _scope_suffix(scope: str) -> str:
    return {"all": "", "pair": PAIR_SUFFIX}.get(scope, f"@{scope}")


def quota_table(profile: Profile, results: ResultsDir) -> pd.DataFrame:
    """Rows relations, columns splits: generated samples per relation that every compared arm trains on, and which
    arms fell short of K there (notebook 04 shows it before any run)."""
    return quota_frame(training_quotas(profile, results))


def quota_frame(quotas_by_split: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """:func:`training_quotas` (or ``re_results.json``'s ``quotas``) as one row per split and relation."""
    rows = []
    for split, quotas in quotas_by_split.items():
        for relation, n in quotas["per_relation"].items():
            short = [f"{arm} ({c[relation]})" for arm, c in quotas["short"].items() if relation in c]
            rows.append({"split": split, "relation": relation, "quota": n, "target": quotas["target"],
                         "short_arms": ", ".join(short), "left_out": n == 0})
    return pd.DataFrame(rows, columns=["split", "relation", "quota", "target", "short_arms", "left_out"])


def _not_trained(arm: str, everywhere: bool) -> str:
    sets = " or ".join(f"{kind}:{arm}" for kind in ("gen", "mix") if kind == "gen" or arm in MIXED_ARMS)
    pair = f", nor the primary pair's {PAIR_SUFFIX} sets" if arm in PRIMARY_PAIR else ""
    then = "comparisons with them are not run" if everywhere else "comparisons with them use the other splits"
    return f"no {sets} run there{pair}; {then}"


def empty_arm_lines(profile: Profile, results: ResultsDir) -> list[str]:
    """One line per generation arm that the grid leaves out of a split because it wrote no valid sample there
    (the quotas' ``empty_arms``): what it cost, why its replies were rejected, and which sets it takes with it."""
    by_arm: dict[str, dict[str, ArmResult]] = {}
    splits = generation_splits(profile)
    for k, seed in splits:
        scopes = arm_training_sets_with_quotas(profile, results, k, seed)[1]
        for arm in dict.fromkeys(a for s, q in scopes.items() if s != "pair" for a in q.empty_arms):
            by_arm.setdefault(arm, {})[f"k{k}_s{seed}"] = load_arm(results, arm, k=k, seed=seed)
    return [empty_arm_line(arm, empty, _not_trained(arm, len(empty) == len(splits)))
            for arm, empty in by_arm.items()]


def say_empty_arms(profile: Profile, results: ResultsDir) -> None:
    """Print :func:`empty_arm_lines` (notebook 04, before any run); nothing when every arm wrote a sample."""
    for line in empty_arm_lines(profile, results):
        print(line)


def training_set_sizes(profile: Profile, results: ResultsDir) -> pd.DataFrame:
    """Rows arms (display order), columns generation splits, values training-set sizes (notebook 04)."""
    sizes = pd.DataFrame([
        {"split": f"k{k}_s{seed}", "arm": arm, "n_train": len(train)}
        for k, seed in generation_splits(profile)
        for arm, train in arm_training_sets(profile, results, k, seed).items()
    ])
    table = sizes.pivot(index="arm", columns="split", values="n_train")
    return table.loc[arm_order(table.index.tolist())]


def summarize(runs: Sequence[Mapping[str, Any]], metric: str = "micro_f1") -> pd.DataFrame:
    """One row per (arm, K): runs, mean and sd of ``metric`` over the grid cells, in display order."""
    frame = pd.DataFrame([{"arm": r["arm"], "k": r["k"], "value": r[metric]} for r in runs if metric in r])
    if frame.empty:
        return pd.DataFrame(columns=["arm", "k", "n", "mean", "sd"])
    rows = []
    for (arm, k), group in frame.groupby(["arm", "k"], sort=False):
        mean, sd = mean_sd(group["value"].tolist())
        rows.append({"arm": arm, "k": int(k), "n": len(group), "mean": mean, "sd": sd})
    out = pd.DataFrame(rows)
    out["order"] = out["arm"].map({a: i for i, a in enumerate(arm_order(out["arm"].unique()))})
    return out.sort_values(["order", "k"]).drop(columns="order").reset_index(drop=True)




def results_table(
    runs: Sequence[Mapping[str, Any]], dataset: str, metric: str = "micro_f1", with_paper: bool = True
) -> pd.DataFrame:
    """Rows arms, columns K: redpo's mean ± sd (%) and, for micro-F1, the paper's number beside it."""
    summary = summarize(runs, metric)
    arms = list(dict.fromkeys(summary["arm"]))
    table = pd.DataFrame(index=pd.Index(arms, name="arm"))
    for k in sorted(summary["k"].unique()):
        part = summary[summary["k"] == k].set_index("arm")
        table[f"K={k}"] = [format_mean_sd(part.at[a, "mean"], part.at[a, "sd"]) if a in part.index else ""
                           for a in arms]
        table[f"n K={k}"] = [int(part.at[a, "n"]) if a in part.index else 0 for a in arms]
        # The direct LLM may score a stratified subset of the test set: say so in the row, not only in a note.
        table[f"sentences K={k}"] = [max((len(r["predictions"]["ids"]) for r in runs
                                          if r["arm"] == a and r["k"] == k and "predictions" in r), default=0)
                                     for a in arms]
        if with_paper:
            values = [paper_numbers.paper_value(dataset, int(k), a) for a in arms]
            table[f"paper K={k}"] = [f"{v:.2f}" if v is not None else "" for v in values]
    return table


def per_relation_frame(runs: Sequence[Mapping[str, Any]], labels: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean per-relation F1, rows arms, columns relations with gold support in the test set."""
    rows = [
        {"arm": r["arm"], "label": p["label"], "f1": p["f1"]}
        for r in runs
        for p in r.get("per_relation", [])
        if p["support"] > 0 and (labels is None or p["label"] in labels)
    ]
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows).pivot_table(index="arm", columns="label", values="f1", aggfunc="mean")
    return frame.loc[arm_order(frame.index.tolist())]


def best_arm(runs: Sequence[Mapping[str, Any]], metric: str = "micro_f1") -> str:
    """The arm with the highest mean ``metric`` over all its runs (ties: display order)."""
    summary = summarize([r for r in runs if r["arm"] not in LLM_ARMS], metric)
    if summary.empty:
        raise ValueError("no trained runs to choose the best arm from; run the grid first")
    means = summary.groupby("arm", sort=False)["mean"].mean()
    return str(means.idxmax())


def summed_confusion(runs: Sequence[Mapping[str, Any]], arm: str) -> pd.DataFrame:
    """The confusion counts of all of an arm's runs, summed; rows gold, columns predicted; empty labels dropped."""
    mine = [r for r in runs if r["arm"] == arm]
    if not mine:
        raise ValueError(f"no runs of arm {arm!r}; known arms: {sorted({r['arm'] for r in runs})}")
    labels = mine[0]["labels"]
    total = np.sum([np.asarray(r["confusion"]) for r in mine], axis=0)
    frame = pd.DataFrame(total, index=pd.Index(labels, name="gold"), columns=pd.Index(labels, name="predicted"))
    used = (frame.sum(axis=0) + frame.sum(axis=1)) > 0
    return frame.loc[used, used]


def timing_table(runs: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Per arm: training-set size and wall time per training run (a run another arm's equal set took over,
    ``same_run_as``, was not trained and is not counted)."""
    frame = pd.DataFrame([r for r in runs if r["arm"] not in LLM_ARMS and "same_run_as" not in r])
    if frame.empty:
        return pd.DataFrame()
    columns = {
        "runs": ("train_seconds", "size"),
        "n_train": ("n_train", "mean"),
        "epochs": ("epochs_run", "mean"),
        "steps": ("steps", "mean"),  # absent from runs recorded before steps were
        "train_seconds_mean": ("train_seconds", "mean"),
        "train_seconds_max": ("train_seconds", "max"),
        "predict_seconds": ("predict_seconds", "mean"),
    }
    out = frame.groupby("arm", sort=False).agg(**{k: v for k, v in columns.items() if v[0] in frame.columns})
    return out.loc[arm_order(out.index.tolist())].round(2)



def convergence(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """How many trained runs stopped by early stopping rather than at the epoch cap (a run that hits the cap may
    not have converged, so a comparison of such runs compares training budgets, not training data)."""
    trained = [r for r in runs if r["arm"] not in LLM_ARMS and "stopped_early" in r and "same_run_as" not in r]
    early = sum(bool(r["stopped_early"]) for r in trained)
    return {"runs": len(trained), "stopped_early": early,
            "share": early / len(trained) if trained else None,
            "at_cap": sorted(f"{r['arm']} {r['cell']}" for r in trained if not r["stopped_early"])}


def convergence_table(runs: Sequence[Mapping[str, Any]], negative: str | None,
                      claims: ClaimsConfig) -> pd.DataFrame:
    """Per arm: runs, the share that stopped early, the epochs and optimizer steps they took, how many collapsed
    (:func:`run_health`: one class predicted for every sentence) and, where the dataset has a ``negative`` label,
    the negative ratio with its 95% CI (:func:`redpo.analysis.evidence.negative_ratio_effect`, with the
    ``claims``' bootstrap settings; near 1, the negative predictions ignore whether a sentence is negative; with one
    run per arm, the CI resamples sentences only). A collapsed run stays in every comparison; the table says where
    one is."""
    trained = [r for r in runs if r["arm"] not in LLM_ARMS and "stopped_early" in r]
    frame = pd.DataFrame([{**r, "collapsed": run_health(r)["collapsed"] if "predictions" in r else None}
                          for r in trained])
    if frame.empty:
        return pd.DataFrame()
    out = frame.groupby("arm", sort=False).agg(
        runs=("stopped_early", "size"), stopped_early=("stopped_early", "mean"), epochs=("epochs_run", "mean"),
        epochs_max=("epochs_run", "max"), steps=("steps", "mean"), collapsed=("collapsed", "sum"),
    )
    out = out.loc[arm_order(out.index.tolist())].round(3)
    if negative is not None:
        out["negative ratio [95% CI]"] = [ratio_text(_json(negative_ratio_effect(trained, arm, negative, claims)))
                                         for arm in out.index]
    return out


def _json(effect: Effect | None) -> dict[str, Any] | None:
    return None if effect is None else effect.to_json()


def ratio_text(effect: Mapping[str, Any] | None) -> str:
    """A negative ratio and its CI, two decimals, from an :class:`~redpo.analysis.stats.Effect`'s JSON (or the
    ladder's saved cells, where an unbounded end is ``None``): ``undefined`` where no cell called a gold negative
    negative, and an upper end of ``∞`` where enough replicates drew none."""
    if effect is None or effect["estimate"] is None:
        return "undefined"
    high = effect["high"]
    upper = "∞" if high is None or not np.isfinite(high) else f"{high:.2f}"
    return f"{effect['estimate']:.2f} [{effect['low']:.2f}, {upper}]"


def run_health(run: Mapping[str, Any]) -> dict[str, Any]:
    """``predicted_labels`` (distinct) and ``collapsed`` (one label for every sentence) of one run, from its
    per-sentence predictions."""
    labels = len(set(run["predictions"]["pred"]))
    return {"predicted_labels": labels, "collapsed": labels == 1}


def save_re_results(
    profile: Profile,
    results: ResultsDir,
    grid: Mapping[str, Sequence[Mapping[str, Any]]],
    llm: Sequence[Mapping[str, Any]],
    dev: Sequence[RESample],
    test: Sequence[RESample],
) -> Path:
    """``metrics/re_results.json``: every run, the LLM baseline, the summaries, and how the sets were made."""
    runs = list(grid["runs"])
    every = [*runs, *llm]
    payload = {
        "profile": profile.name,
        "dataset": profile.dataset.name,
        "grid": {
            "cells": [c.name for c in grid_cells(profile)],
            "description": describe_grid(profile),
            "classifier_seed_rule": f"split_seed * {CLASSIFIER_SEED_STRIDE} + seed_index",
        },
        "dev": {"n": len(dev), "subsample": profile.dataset.dev_subsample, "seed": profile.seed},
        "test": {"n": len(test), "subsample": profile.dataset.test_subsample, "seed": profile.seed},
        "encoder": profile.encoder.model_dump(mode="json"),
        "negative_label": profile_schema(profile).negative_label,
        "semeval_macro_f1": profile_schema(profile).semeval_macro_f1,
        "negative_label_samples": profile.generation.negative_label,
        "quotas": training_quotas(profile, results),
        "runs": runs,
        "convergence": convergence(runs),
        "skipped": list(grid.get("skipped", [])),
        "llm_baseline": list(llm),
        "summary": {
            "micro_f1": summarize(every, "micro_f1").to_dict(orient="records"),
            **({"semeval_macro_f1": summarize(every, "semeval_macro_f1").to_dict(orient="records")}
               if profile_schema(profile).semeval_macro_f1 else {}),
        },
        "paper_source": paper_numbers.SOURCE,
    }
    return write_json(results.metrics / "re_results.json", json_safe(payload))


def re_tables(results: ResultsDir, claims: ClaimsConfig) -> dict[str, pd.DataFrame]:
    """Notebook 04's tables from ``metrics/re_results.json``, saved under ``tables/`` (CSV + markdown); ``claims``
    gives the bootstrap behind the convergence table's negative ratios."""
    payload = read_json(results.root / "metrics" / "re_results.json")
    runs, every = payload["runs"], [*payload["runs"], *payload["llm_baseline"]]
    tables = {"re_main": results_table(every, payload["dataset"])}
    if payload.get("semeval_macro_f1", payload["dataset"] == "semeval"):
        tables["re_semeval_macro"] = results_table(every, payload["dataset"], metric="semeval_macro_f1",
                                                   with_paper=False)
    tables["re_per_relation"] = per_relation_frame(every).round(4)
    tables["re_train_time"] = timing_table(runs)
    tables["re_convergence"] = convergence_table(runs, payload.get("negative_label"), claims)
    if payload.get("quotas"):  # what every generated arm trained on: equal per-relation counts, shortfalls named
        tables["re_quotas"] = quota_frame(payload["quotas"])
    for name, frame in tables.items():
        save_table(results, name, frame)
    return tables
