"""The ladder's numbers (notebook 06): every set against manual, each rung against its neighbour, and the gap
decomposed in points, all paired by cell and sentence, from ``metrics/ladder.json`` alone.

- **Sets** (:func:`set_table`): mean micro-F1, the paired difference from manual and the ratio to manual, each
  with its 95% hierarchical-bootstrap CI; and two checks of its runs' health: *collapsed* runs (each predicts one
  class for every test sentence: a schedule that stopped before learning) and the set's *negative ratio*
  P(negative | gold positive) / P(negative | gold negative), pooled over the set's runs with its 95% CI
  (:func:`redpo.analysis.evidence.negative_ratio_effect`): near 1 when the model calls gold positives negative as
  often as gold negatives, well below 1 for manual data.
- **Rungs** (:func:`rung_table`): the comparisons :mod:`redpo.ladder.sets` declares, each changing one thing.
- **Gap** (:func:`gap_table`): manual - generated as the pipeline makes it, and beside it what each rung says a
  piece of it is worth. The pieces are separate paired estimates, not an additive split: they overlap (label
  noise and near copies are not independent), and each says what fixing one thing gains on its own.
- **Generators** (:func:`generator_table`): each generator's cost and sample quality
  (:mod:`redpo.ladder.generators`) beside the F1 its set buys, and that F1 per hour of generation: what the
  generator is chosen on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from redpo.analysis.evidence import f1_effect, negative_ratio_effect
from redpo.analysis.re_tables import ratio_text, run_health
from redpo.analysis.stats import Effect
from redpo.config import ClaimsConfig
from redpo.core.io import MissingMetrics, ResultsDir, read_json, read_metrics, write_json
from redpo.core.tables import save_table

LADDER_METRICS = "ladder.json"
DETAIL = "ladder_detail.json"
MANUAL = "L0:manual"


def _effect_cells(effect: Effect | None) -> dict[str, Any]:
    if effect is None:
        return {"estimate": None, "low": None, "high": None, "p": None, "cells": None}
    return {"estimate": effect.estimate, "low": effect.low, "high": effect.high, "p": effect.p_value,
            "cells": effect.n_cells}


def _ratio_cells(effect: Effect | None) -> dict[str, Any]:
    """A negative ratio as :func:`_effect_cells` saves it, an unbounded upper end as ``None`` (JSON has no
    infinity), with its per-split values and the replicates where it was undefined."""
    if effect is None:
        return {**_effect_cells(None), "per_split": {}, "undefined": None}
    cells = _effect_cells(effect)
    return {**cells, "high": cells["high"] if np.isfinite(cells["high"]) else None,
            "per_split": dict(effect.per_split), "undefined": effect.undefined}


def ladder_detail(payload: Mapping[str, Any], settings: ClaimsConfig) -> dict[str, Any]:
    """Every number the tables and the figure show, computed once (the bootstraps are the slow part)."""
    runs, negative = payload["runs"], payload.get("negative_label") or "\u2205"
    names = list(dict.fromkeys(r["arm"] for r in runs))
    manual_of = {name: ("L7:manual" if name.startswith("L7:") else MANUAL) for name in names}
    sets = []
    for name in names:
        mine = [r for r in runs if r["arm"] == name]
        health = [run_health(r) for r in mine]
        reference = manual_of[name]
        diff = ratio = None
        if name != reference:
            diff = f1_effect(runs, name, reference, negative, settings)[0]
            ratio = f1_effect(runs, name, reference, negative, settings, statistic="ratio", null=1.0)[0]
        sets.append({
            "set": name, "rung": name.split(":", 1)[0], "reference": reference, "runs": len(mine),
            "mean_f1": float(np.mean([r["micro_f1"] for r in mine])),
            "sd_f1": float(np.std([r["micro_f1"] for r in mine], ddof=1)) if len(mine) > 1 else None,
            "n_train": float(np.mean([r["n_train"] for r in mine])),
            "vs_manual": _effect_cells(diff), "ratio": _effect_cells(ratio),
            "collapsed": sum(h["collapsed"] for h in health),
            "negative_ratio": _ratio_cells(negative_ratio_effect(runs, name, negative, settings)),
        })
    rungs = []
    for c in sorted(payload["comparisons"], key=lambda c: c["rung"]):  # ladder order, whatever order a run wrote
        effect, note = f1_effect(runs, c["a"], c["b"], negative, settings)
        rungs.append({**c, **_effect_cells(effect), "note": note})
    return {"sets": sets, "rungs": rungs, "gap": gap_rows(payload, sets, rungs),
            "generators": generator_rows(payload, sets), "grid": payload.get("grid"),
            "best_generated": payload.get("best_generated"), "notes": payload.get("notes", [])}


def generator_rows(payload: Mapping[str, Any], sets: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each generator's totals (``payload["generators"]``, per-split measures left in the metrics file) with the
    mean micro-F1 and ratio to manual of the set its samples make."""
    by_set = {s["set"]: s for s in sets}
    rows = []
    for g in payload.get("generators", []):
        trained = by_set.get(g["set"])
        rows.append({**{key: v for key, v in g.items() if key != "per_split"},
                     "mean_f1": None if trained is None else trained["mean_f1"],
                     "ratio": None if trained is None else trained["ratio"]})
    return rows


def gap_rows(payload: Mapping[str, Any], sets: Sequence[Mapping[str, Any]],
             rungs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The gap to manual of the generated set as the pipeline makes it (``L2:gen``, negated so positive = manual
    ahead), then each rung's paired estimate of what one change is worth, in the order of the ladder."""
    by_set = {s["set"]: s for s in sets}
    rows = []
    gen = by_set.get("L2:gen")
    if gen is not None and gen["vs_manual"]["estimate"] is not None:
        v = gen["vs_manual"]
        rows.append({"piece": "gap: manual − generated (L0 − L2:gen)", "estimate": -v["estimate"],
                     "low": -v["high"], "high": -v["low"], "cells": v["cells"]})
    for r in rungs:
        rows.append({"piece": f"{r['rung']}: {r['meaning']} ({r['a']} − {r['b']})", "estimate": r["estimate"],
                     "low": r["low"], "high": r["high"], "cells": r["cells"]})
    return rows


# ---- tables ----------------------------------------------------------------------------------------------
def _count(n: int | None) -> str:
    return "" if n is None else str(n)


def _points(cell: Mapping[str, Any], scale: float = 100.0, sign: str = "+") -> str:
    if cell["estimate"] is None:
        return ""
    return f"{cell['estimate'] * scale:{sign}.1f} [{cell['low'] * scale:.1f}, {cell['high'] * scale:.1f}]"


def set_table(detail: Mapping[str, Any]) -> pd.DataFrame:
    """One row per set: mean F1, its difference from and ratio to manual (95% CI), and its runs' health."""
    return pd.DataFrame([{
        "set": s["set"], "runs": s["runs"], "train samples": round(s["n_train"]),
        "micro-F1 %": round(s["mean_f1"] * 100, 1),
        f"Δ vs {s['reference']} [95% CI]": _points(s["vs_manual"]) if s["set"] != s["reference"] else "",
        "% of manual [95% CI]": _points(s["ratio"], sign="") if s["set"] != s["reference"] else "",
        "collapsed runs": s["collapsed"],
        "negative ratio [95% CI]": ratio_text(s["negative_ratio"]),
    } for s in detail["sets"]]).rename(columns=lambda c: c.replace("L0:manual", "manual"))


def rung_table(detail: Mapping[str, Any]) -> pd.DataFrame:
    """One row per declared comparison: what changes, and the paired ΔF1 it is worth (95% CI, p, cells)."""
    return pd.DataFrame([{"rung": r["rung"], "comparison": f"{r['a']} − {r['b']}", "what changes": r["meaning"],
                          "Δ micro-F1 [95% CI]": _points(r) or r["note"],
                          "p": "" if r["p"] is None else f"{r['p']:.3g}", "cells": _count(r["cells"])}
                         for r in detail["rungs"]])


def gap_table(detail: Mapping[str, Any]) -> pd.DataFrame:
    """The gap and its pieces in points (95% CI), as :func:`gap_rows` orders them."""
    return pd.DataFrame([{"piece": g["piece"], "points [95% CI]": _points(g), "cells": _count(g["cells"])}
                         for g in detail["gap"]])


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def generator_table(detail: Mapping[str, Any]) -> pd.DataFrame:
    """One row per generator: the samples its set trains on, what they cost (calls, model seconds) and how good
    they are (oracle agreement, near-copy share), the set's micro-F1 and ratio to manual, and micro-F1 points per
    hour of generation (one split's set: its mean F1 over its generation time)."""
    rows = []
    for g in detail.get("generators", []):
        seconds = g["model_seconds_per_split"]  # None when a call's seconds are not in the cache
        hours = None if seconds is None else seconds / 3600
        f1 = None if g["mean_f1"] is None else g["mean_f1"] * 100
        rows.append({
            "generator": g["model"], "set": g["set"], "splits": g["splits"], "samples": g["samples"],
            "relations short of K": g["relations_short"], "calls": g["calls"],
            "valid per call": _rounded(g["valid_per_call"], 2),
            "model s per sample": _rounded(g["seconds_per_sample"], 1),
            "generation min per split": None if seconds is None else round(seconds / 60, 1),
            "oracle agreement": _rounded(g["oracle_agreement"], 2),
            "near-copy share": _rounded(g["near_copy_share"], 2),
            "micro-F1 %": _rounded(f1, 1),
            "% of manual [95% CI]": "" if g["ratio"] is None else _points(g["ratio"], sign=""),
            "micro-F1 per generation hour": None if f1 is None or not hours else round(f1 / hours, 1),
        })
    return pd.DataFrame(rows)


def ladder_tables(results: ResultsDir, settings: ClaimsConfig) -> dict[str, pd.DataFrame]:
    """``tables/ladder_sets``, ``ladder_rungs``, ``ladder_gap`` and ``ladder_generators`` (CSV + markdown; the last
    only when the metrics hold a generator comparison) and ``tables/ladder_detail.json`` (the figure's input), from
    ``metrics/ladder.json``."""
    detail = ladder_detail(read_metrics(results, LADDER_METRICS), settings)
    write_json(results.tables / DETAIL, detail)
    tables = {"ladder_sets": set_table(detail), "ladder_rungs": rung_table(detail), "ladder_gap": gap_table(detail)}
    if detail["generators"]:
        tables["ladder_generators"] = generator_table(detail)
    for name, frame in tables.items():
        save_table(results, name, frame, index=False)
    return tables


# ---- figure ----------------------------------------------------------------------------------------------
def ladder_figure(results: ResultsDir) -> Figure:
    """micro-F1 of every set, top to bottom in ladder order, manual as a line. Each bar is the 95% CI of the set's
    paired difference from manual drawn around manual's F1 plus that difference: the paired CI is what decides,
    and an unpaired CI of each mean would hide the pairing (the split draw moves both)."""
    path = results.tables / DETAIL
    if not path.is_file():
        raise MissingMetrics(f"{path} does not exist (the ladder's tables write it)")
    sets = read_json(path)["sets"]
    by_set = {s["set"]: s for s in sets}
    fig, ax = plt.subplots(figsize=(8, 0.42 * len(sets) + 1.4))
    palette = dict(zip(sorted({s["rung"] for s in sets}), sns.color_palette("colorblind", 10), strict=False))
    for y, s in enumerate(reversed(sets)):
        ref = by_set.get(s["reference"], s)
        x = s["mean_f1"] * 100
        color = palette[s["rung"]]
        if s["vs_manual"]["estimate"] is not None:
            centre = (ref["mean_f1"] + s["vs_manual"]["estimate"]) * 100
            lo, hi = (ref["mean_f1"] + s["vs_manual"]["low"]) * 100, (ref["mean_f1"] + s["vs_manual"]["high"]) * 100
            ax.plot([lo, hi], [y, y], color=color, linewidth=2)
            x = centre
        ax.plot([x], [y], "o", color=color)
        if s["collapsed"]:
            ax.annotate(f"{s['collapsed']} collapsed", (x, y), xytext=(6, 4), textcoords="offset points", fontsize=7)
    ax.axvline(by_set[MANUAL]["mean_f1"] * 100, color="black", linewidth=0.8, linestyle="--", label="manual")
    ax.set_yticks(range(len(sets)), [s["set"] for s in reversed(sets)])
    ax.set_xlabel("micro-F1 (%); bars: 95% CI of the paired difference from manual (L7: from L7:manual)")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Gap ladder: where generated data loses to manual data")
    return fig
