"""The generation tables that read saved metrics only (diversity per arm, and the effect of one arm over
another), so the notebooks and ``python -m redpo figures`` print the same numbers. The generic table helpers
(markdown, mean ± sd, JSON safety) are in :mod:`redpo.core.tables`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd


def diversity_frame(summary: Mapping[str, Any]) -> pd.DataFrame:
    """Macro metrics as a tidy table: one row per (split, arm)."""
    rows = []
    for split, block in summary["splits"].items():
        for name, report in block["arms"].items():
            rows.append({"split": split, "arm": name, "relations": len(block["relations"]), **report["macro"]})
    return pd.DataFrame(rows)


def effect_table(
    diversity: pd.DataFrame, pairs: Sequence[tuple[str, str]], metrics: Sequence[str]
) -> pd.DataFrame:
    """How much each ``(arm, reference)`` pair differs per metric: the arm's mean minus the reference's.

    ``diversity`` is :func:`diversity_frame`'s table; means are over its splits. A pair with an arm that was
    not generated is left out, so a profile that skips an arm still gets the rest of the table.
    """
    means = diversity.groupby("arm").mean(numeric_only=True)
    rows = [
        {"arm": arm, "reference": reference, "metric": metric,
         "change": float(means.at[arm, metric] - means.at[reference, metric])}
        for arm, reference in pairs
        if arm in means.index and reference in means.index
        for metric in metrics
        if metric in means.columns
    ]
    return pd.DataFrame(rows, columns=["arm", "reference", "metric", "change"])
