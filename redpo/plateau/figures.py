"""The plateau's two figures, drawn from ``metrics/plateau.json`` alone (registered in :mod:`redpo.analysis.plots`)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from redpo.core.io import MissingMetrics, ResultsDir, read_metrics

INPUTS = ("metrics/plateau.json",)
"""The one file both plateau figures are drawn from (relative to the results folder), declared for the registry."""


def plateau_f1(results: ResultsDir) -> Figure:
    """Micro-F1 against N per arm, generated-only and mixed, mean line with a ±1 sd band; plateaus marked."""
    payload = read_metrics(results, "plateau.json")
    summary = pd.DataFrame(payload["summary"], columns=["arm", "data", "n", "runs", "mean", "sd"])
    if summary.empty:
        empty = sorted({arm for quotas in payload.get("quotas", {}).values() for arm in quotas.get("empty_arms", [])})
        why = f" (arms with no valid sample to train on: {', '.join(empty)})" if empty else ""
        raise MissingMetrics(f"{results.root}/metrics/plateau.json holds no RE runs{why}")
    summary["sd"] = summary["sd"].astype(float).fillna(0.0)
    kinds = {"gen": "generated only", "mix": "manual + generated"}
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    palette = dict(zip(payload["arms"], sns.color_palette("colorblind", len(payload["arms"])), strict=True))
    marks = {(p["arm"], p["data"]): p["plateau_n"] for p in payload["plateau"]}
    for ax, (kind, label) in zip(axes, kinds.items(), strict=True):
        for arm, g in summary[summary["data"] == kind].groupby("arm", sort=False):
            g = g.sort_values("n")
            color = palette.get(arm)
            ax.plot(g["n"], g["mean"] * 100, marker="o", color=color, label=arm)
            ax.fill_between(g["n"], (g["mean"] - g["sd"]) * 100, (g["mean"] + g["sd"]) * 100, color=color,
                            alpha=0.2, linewidth=0)
            plateau = marks.get((arm, kind))
            if plateau is not None:
                y = float(g.loc[g["n"] == plateau, "mean"].iloc[0]) * 100
                ax.plot([plateau], [y], marker="*", markersize=15, color=color, markeredgecolor="black")
        ax.set_xscale("log", base=2)
        ax.set_xticks(payload["n_values"], [str(n) for n in payload["n_values"]])
        ax.set(title=label, xlabel="N generated samples per relation", ylabel="micro-F1 (%)")
    axes[0].legend(title="arm (★ = plateau)")
    runs = sorted({int(r) for r in summary["runs"]})  # say how few runs a band rests on
    count = str(runs[0]) if len(runs) == 1 else f"{runs[0]}–{runs[-1]}"
    fig.suptitle(f"RE score against N\n(mean ± sd over {count} runs per point: splits × classifier seeds; "
                 "claim 7 is decided by a paired CI)", y=1.1)
    return fig


def plateau_yield(results: ResultsDir) -> Figure:
    """Valid samples per generation call by the time N were reached, and the share of relations reaching N."""
    payload = read_metrics(results, "plateau.json")
    frame = pd.DataFrame(payload["yield"], columns=["arm", "k", "seed", "n", "relations", "reached_share",
                                                    "valid_per_call"])
    if frame.empty:
        raise MissingMetrics(f"{results.root}/metrics/plateau.json holds no generation")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, col, ylabel in ((axes[0], "valid_per_call", "valid samples per call"),
                            (axes[1], "reached_share", "share of relations reaching N")):
        sns.lineplot(data=frame, x="n", y=col, hue="arm", hue_order=payload["arms"], marker="o", errorbar="sd",
                     ax=ax)
        ax.set_xscale("log", base=2)
        ax.set_xticks(payload["n_values"], [str(n) for n in payload["n_values"]])
        ax.set(xlabel="N valid samples per relation", ylabel=ylabel)
    axes[1].set_ylim(0, 1.05)
    fig.suptitle("Valid-sample yield of the plateau generations", y=1.02)
    return fig
