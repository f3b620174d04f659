"""Every figure of the pipeline, drawn from the saved metrics only, in one seaborn style.

The notebooks call these functions after writing their metrics, and ``python -m redpo figures`` calls the same
functions on the same files, so both write the same bytes. Nothing here imports torch or loads a model.
Saving is deterministic (no software/date metadata), so re-drawing a committed figure leaves git clean.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.text import Annotation

from redpo.analysis.ladder import DETAIL as LADDER_DETAIL
from redpo.analysis.ladder import ladder_figure
from redpo.analysis.re_tables import best_arm, per_relation_frame, summed_confusion
from redpo.analysis.stats import FAILS, HOLDS, INCONCLUSIVE, NOT_RUN
from redpo.analysis.tables import diversity_frame
from redpo.config import ARMS
from redpo.core.io import MissingMetrics, ResultsDir, read_json, read_metrics
from redpo.plateau import figures as plateau_figures

DPI = 110
FORMATS = ("png", "pdf")
METADATA = {"png": {"Software": None}, "pdf": {"Creator": None, "Producer": None, "CreationDate": None}}
"""No software version or timestamp in the files: the same metrics give the same bytes."""
ICL_ORDER = ("gold", *ARMS)
"""Notebook 02's arms in the order of the arm vocabulary, the gold K-shot samples first."""
DIVERSITY_METRICS = ("tfidf_cos", "tfidf_cos_masked", "embed_cos", "self_bleu", "distinct_2", "near_copy_share")
MANY_LABELS = 25
"""Above this many labels (TACRED: 42) heatmaps shrink their annotations or drop the counts."""
STYLE_RC = {"figure.facecolor": "white", "savefig.facecolor": "white", "figure.dpi": 100}
"""Fixed regardless of the backend (Jupyter's inline backend sets its own figure defaults)."""


def set_style() -> None:
    """One seaborn theme for every figure, so plots from different notebooks look alike."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind", rc=STYLE_RC)


def save_figure(fig: Figure, results: ResultsDir, name: str) -> list[Path]:
    """``figures/<name>.png`` and ``.pdf`` at a modest dpi, without metadata that changes between runs."""
    paths = []
    for fmt in FORMATS:
        path = results.figures / f"{name}.{fmt}"
        fig.savefig(path, format=fmt, dpi=DPI, bbox_inches="tight", metadata=METADATA[fmt])
        paths.append(path)
    return paths


# ---- one function per figure -------------------------------------------------------------------------------
def data_label_distribution(results: ResultsDir) -> Figure:
    """Samples per relation and split (notebook 00; ``metrics/data.json``)."""
    data = read_metrics(results, "data.json")
    labels = pd.DataFrame([
        {"split": split, "relation": rel, "samples": n}
        for split, dist in data["label_distribution"].items()
        for rel, n in (dist or {}).items()
    ])
    order = labels[labels.split == "train"].sort_values("samples", ascending=False).relation
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(order) + 1.5))
    sns.barplot(data=labels, y="relation", x="samples", hue="split", order=order, ax=ax)
    ax.set(title=f"{data['dataset']}: samples per relation", xlabel="samples", ylabel="")
    return fig


def _message_figure(title: str, message: str) -> Figure:
    """A figure that says why it has no data: a run whose data leave nothing to plot still gets its file, and
    the reader sees the reason instead of a missing image or a crashed notebook."""
    fig, ax = plt.subplots(figsize=(6.5, 2.0))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, transform=ax.transAxes)
    ax.set_title(title)
    return fig


def _diversity_bars(metrics_file: str, results: ResultsDir, order: list[str], title: str) -> Figure:
    table = diversity_frame(read_metrics(results, metrics_file)["diversity"])
    long = table.melt(id_vars=["split", "arm"], value_vars=[m for m in DIVERSITY_METRICS if m in table],
                      var_name="metric").dropna(subset=["value"])
    if long.empty:  # every relation has < 2 generated samples in some arm: no pairwise similarity to show
        return _message_figure(title, "no relation has two or more generated samples in every arm,\n"
                                      "so no arm's diversity can be compared on the same relations")
    g = sns.catplot(data=long, x="arm", y="value", col="metric", kind="bar", col_wrap=3, sharey=False,
                    height=2.8, aspect=1.3, order=[a for a in order if a in set(table["arm"])], errorbar="sd")
    for ax in g.axes.flat:  # every facet names its arms: a shared, hidden x axis leaves the bars anonymous
        ax.tick_params(axis="x", labelbottom=True, labelrotation=40)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
        ax.set_xlabel("")
    g.figure.subplots_adjust(hspace=0.55)
    g.figure.suptitle(title, y=1.03)
    return g.figure


def generation_diversity(results: ResultsDir) -> Figure:
    """Diversity of the baseline and the AAO/OBO x instruction grid against gold (notebook 02)."""
    return _diversity_bars("generation_icl.json", results, list(ICL_ORDER),
                           "Diversity per arm (lower cosine / Self-BLEU, higher distinct-2 = more diverse)")


def generation_dpo_diversity(results: ResultsDir) -> Figure:
    """Diversity with vs without DPO, each DPO arm beside its base arm (notebook 03)."""
    arms = diversity_frame(read_metrics(results, "generation_dpo.json")["diversity"])["arm"].unique()
    dpo = [a for a in arms if a.endswith("_dpo")]
    order = ["gold", *(x for a in dpo for x in (a.removesuffix("_dpo"), a))]
    return _diversity_bars("generation_dpo.json", results, order,
                           "Diversity with vs without DPO (lower cosine / Self-BLEU, higher distinct-2 = more diverse)")


def diversity_vs_correctness(results: ResultsDir) -> Figure:
    """One point per arm: masked TF-IDF cosine (structural sameness; lower = more diverse) against the oracle's
    agreement with the intended relation (notebooks 02 and 03; ``metrics/correctness_*.json``). Diverse samples
    that express the wrong relation sit low on the right of the ideal corner."""
    rows: dict[str, dict[str, Any]] = {}
    found = False
    for stem in ("icl", "dpo"):
        try:
            correctness = read_metrics(results, f"correctness_{stem}.json")
            diversity = diversity_frame(read_metrics(results, f"generation_{stem}.json")["diversity"])
        except MissingMetrics:
            continue
        found = True
        if "tfidf_cos_masked" not in diversity:  # no split had a relation to measure: no macro value at all
            continue
        means = diversity.groupby("arm")["tfidf_cos_masked"].mean().dropna()
        for arm, shares in correctness["arms"].items():
            if arm in means.index and shares["oracle_agreement"] is not None:
                rows[arm] = {"arm": arm, "tfidf_cos_masked": float(means[arm]), **shares}
    if not found:
        raise MissingMetrics(f"{results.root / 'metrics'}/correctness_icl.json (notebook 02) holds no arm yet")
    if not rows:
        return _message_figure("Diversity vs correctness per arm", "no arm has both an oracle agreement and a "
                               "diversity measured on relations\nwith two or more generated samples in every arm")
    frame = pd.DataFrame(rows.values())
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    sns.scatterplot(data=frame, x="tfidf_cos_masked", y="oracle_agreement", hue="arm", s=70, ax=ax, legend=False)
    ax.set(title="Diversity vs correctness per arm", xlabel="masked TF-IDF cosine (lower = more diverse)",
           ylabel="oracle agreement (share labelled as intended)", ylim=(0, 1.02))
    _label_points(ax, frame, "tfidf_cos_masked", "oracle_agreement", "arm")
    return fig


def _label_points(ax: Axes, frame: pd.DataFrame, x: str, y: str, label: str) -> None:
    """Name each point above and to its right. Where two points sit within a tenth of the axes' width and a
    twentieth of their height, the left one's name moves below and to its left (clear of the names further left
    too), so arms that land together (e.g. ``obo`` and ``obo_nodiv``) keep readable names. The distances are in
    axes fractions, so call it after the limits are set."""
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    placed: list[tuple[float, float, Annotation]] = []
    for row in frame.sort_values([x, y]).itertuples():
        px, py = getattr(row, x), getattr(row, y)
        for qx, qy, name in placed:
            if abs(px - qx) < 0.1 * (x1 - x0) and abs(py - qy) < 0.05 * (y1 - y0):
                name.xyann = (-5, -11)
                name.set_horizontalalignment("right")
        name = ax.annotate(getattr(row, label), (px, py), textcoords="offset points", xytext=(5, 4), fontsize=8)
        placed.append((px, py, name))


def dpo_training_curves(results: ResultsDir) -> Figure:
    """Loss, reward margin and reward accuracy per step of each adapter (notebook 03)."""
    history = pd.DataFrame(read_metrics(results, "dpo_history.json"), columns=["adapter", "step", "metric", "value"])
    g = sns.relplot(data=history, x="step", y="value", hue="adapter", col="metric", kind="line", marker="o",
                    facet_kws={"sharey": False}, height=3, aspect=1.2)
    g.figure.suptitle("DPO training: loss, reward margin, reward accuracy per adapter", y=1.04)
    return g.figure


def _re_runs(results: ResultsDir) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    payload = read_metrics(results, "re_results.json")
    return payload["runs"], [*payload["runs"], *payload["llm_baseline"]]


def re_per_relation_f1(results: ResultsDir) -> Figure:
    """Mean F1 per relation and arm (notebook 04)."""
    per_relation = per_relation_frame(_re_runs(results)[1])
    fig, ax = plt.subplots(figsize=(0.55 * per_relation.shape[1] + 3, 0.4 * per_relation.shape[0] + 2))
    small = {"size": 7} if per_relation.shape[1] > MANY_LABELS else {}  # TACRED's 42 labels stay legible
    sns.heatmap(per_relation, annot=True, fmt=".2f", cmap="viridis", vmin=0, vmax=1, cbar_kws={"label": "F1"},
                annot_kws=small, ax=ax)
    ax.set_title("Per-relation F1 (mean over cells)")
    ax.set_xlabel("")
    return fig


def re_confusion_best(results: ResultsDir) -> Figure:
    """Row-normalised confusion matrix of the best trained arm, counts annotated (notebook 04)."""
    runs = _re_runs(results)[0]
    best = best_arm(runs)
    confusion = summed_confusion(runs, best)
    share = confusion.div(confusion.sum(axis=1).where(lambda s: s > 0), axis=0).fillna(0)
    fig, ax = plt.subplots(figsize=(0.5 * len(share) + 3, 0.45 * len(share) + 2))
    many = len(share) > MANY_LABELS  # 42 x 42 counts would be noise: colour only (counts: re_results.json)
    sns.heatmap(share, annot=False if many else confusion, fmt="d", cmap="Blues", vmin=0, vmax=1,
                cbar_kws={"label": "share of gold row"}, ax=ax)
    ax.set_title(f"Confusion matrix: {best} (counts over {sum(r['arm'] == best for r in runs)} runs)")
    return fig


VERDICT_COLORS = {HOLDS: "#1b7837", FAILS: "#b2182b", INCONCLUSIVE: "#666666", NOT_RUN: "#999999"}


def claims_forest(results: ResultsDir) -> Figure:
    """One row per claim's primary comparison: the effect with its 95% CI (points: micro-F1, or cosine x 100),
    the zero line, and the claim's margin where it has one (claim 4's band, claim 7's smallest gain). A claim not
    run keeps its row, marked "not run" on the zero line; the legend lists "not run" only when a row is."""
    path = results.tables / "claims_detail.json"
    if not path.is_file():
        raise MissingMetrics(f"{path} does not exist (the claims report writes it)")
    rows = [(c, cmp) for c in read_json(path) for cmp in c["comparisons"] if cmp["primary"]]
    if not any(cmp["effect"] for _c, cmp in rows):
        not_run = [str(c["claim"]) for c, _cmp in rows if c["verdict"] == NOT_RUN]
        raise MissingMetrics(f"{path} holds no primary comparison with data"
                             + (f" (claims {', '.join(not_run)}: not run)" if not_run else ""))
    fig, ax = plt.subplots(figsize=(8, 0.55 * len(rows) + 1.2))
    for y, (claim, cmp) in enumerate(reversed(rows)):
        e, color = cmp["effect"], VERDICT_COLORS[claim["verdict"]]
        if e is None:
            ax.annotate(NOT_RUN, (0, y), ha="center", va="center", color=color, fontsize=8,
                        bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": color})
            continue
        spread = [[(e["estimate"] - e["low"]) * 100], [(e["high"] - e["estimate"]) * 100]]
        ax.errorbar(e["estimate"] * 100, y, xerr=spread, fmt="o", color=color, capsize=4)
        for bound in (cmp["margin"], cmp["upper"]):
            if bound:
                ax.plot([bound * 100] * 2, [y - 0.3, y + 0.3], color=color, linestyle=":", linewidth=1.5)
    labels = [f"{c['claim']}: {cmp['label']} ({cmp['unit']})" for c, cmp in reversed(rows)]
    ax.set_yticks(range(len(rows)), labels)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("paired effect, claimed direction positive (95% CI; dotted: the claim's margin)")
    shown = {c["verdict"] for c, _cmp in rows}
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=c, label=v) for v, c in VERDICT_COLORS.items()
               if v != NOT_RUN or v in shown]
    ax.legend(handles=handles, loc="best", fontsize=8, title="verdict")
    ax.set_title("Claims: primary comparisons")
    return fig


@dataclass(frozen=True)
class FigureSpec:
    """One figure of the registry: the function that draws it, the files it is drawn from, and what it shows.

    ``inputs`` are paths relative to the results folder, declared as showyourwork declares a figure's data: the
    figure is rebuilt from these files and nothing else (``tests/test_plots.py`` draws every committed figure from
    a folder that holds only them), and the documentation site links each figure to them."""

    draw: Callable[[ResultsDir], Figure]
    inputs: tuple[str, ...]
    shows: str


CORRECTNESS_INPUTS = tuple(f"metrics/{kind}_{stem}.json" for stem in ("icl", "dpo")
                           for kind in ("correctness", "generation"))
FIGURES: dict[str, FigureSpec] = {
    "data_label_distribution": FigureSpec(
        data_label_distribution, ("metrics/data.json",), "samples per relation in train / val / test"),
    "generation_diversity": FigureSpec(
        generation_diversity, ("metrics/generation_icl.json",),
        "diversity metrics of gold, the baseline and the AAO/OBO × instruction grid"),
    "dpo_training_curves": FigureSpec(
        dpo_training_curves, ("metrics/dpo_history.json",),
        "DPO loss, reward margin and reward accuracy per step, adapters A and B"),
    "diversity_vs_correctness": FigureSpec(
        diversity_vs_correctness, CORRECTNESS_INPUTS,
        "each arm's masked TF-IDF cosine against its oracle agreement (split means), gold for reference"),
    "generation_dpo_diversity": FigureSpec(
        generation_dpo_diversity, ("metrics/generation_dpo.json",), "diversity of OBO/AAO with and without DPO"),
    "re_per_relation_f1": FigureSpec(
        re_per_relation_f1, ("metrics/re_results.json",), "mean F1 per relation and RE arm (heatmap)"),
    "re_confusion_best": FigureSpec(
        re_confusion_best, ("metrics/re_results.json",), "row-normalised confusion matrix of the best RE arm"),
    "plateau_f1": FigureSpec(
        plateau_figures.plateau_f1, plateau_figures.INPUTS,
        "micro-F1 against N per arm, generated-only and mixed, mean ± sd band, plateau marked"),
    "plateau_yield": FigureSpec(
        plateau_figures.plateau_yield, plateau_figures.INPUTS,
        "valid samples per call by the time N were reached, and the share of relations reaching N"),
    "claims_forest": FigureSpec(
        claims_forest, ("tables/claims_detail.json",),
        "each claim's primary paired effect with its 95% CI, the zero line and the claim's margin"),
    "ladder_f1": FigureSpec(
        ladder_figure, (f"tables/{LADDER_DETAIL}",),
        "micro-F1 of every set of the gap ladder, each with the 95% CI of its paired difference from manual"),
}
"""Every figure, in notebook order: ``figures/<name>.png|pdf``, drawn by ``FIGURES[name].draw``."""


def draw(results: ResultsDir, name: str, *, close: bool = False) -> Figure:
    """Draw figure ``name`` from the saved metrics in the common style, save PNG + PDF, return it for display."""
    set_style()
    fig = FIGURES[name].draw(results)
    save_figure(fig, results, name)
    if close:
        plt.close(fig)
    return fig


def show(results: ResultsDir, name: str) -> None:
    """Draw figure ``name`` (:func:`draw`) and display it, or print in one line why not: what a notebook calls, so a
    figure whose input holds nothing to plot (every arm came back empty) ends in a statement, not a crash."""
    try:
        draw(results, name)
    except MissingMetrics as err:
        print(f"figure {name} not drawn: {err}")
        return
    plt.show()


def draw_all(results: ResultsDir) -> dict[str, list[Path] | str]:
    """Every figure whose metrics exist: ``{name: [png, pdf]}``, or ``{name: "skipped: <missing file>"}``."""
    out: dict[str, list[Path] | str] = {}
    for name in FIGURES:
        try:
            draw(results, name, close=True)
        except MissingMetrics as err:
            out[name] = f"skipped: {err}"
            continue
        out[name] = [results.figures / f"{name}.{fmt}" for fmt in FORMATS]
    return out
