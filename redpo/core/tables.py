"""The small table helpers every stage's results share: markdown, CSV + markdown files, mean ± sd, JSON safety.

They sit in ``core`` because every stage that writes a table uses them, the plateau stage and the analysis alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from redpo.core.io import ResultsDir


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; NaN for a single value, which has no spread to report)."""
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else float("nan")


def format_mean_sd(mean: float, sd: float, scale: float = 100.0) -> str:
    """``"61.4 ± 2.1"`` in percent; a single run shows its value alone."""
    if np.isnan(sd):
        return f"{mean * scale:.1f}"
    return f"{mean * scale:.1f} ± {sd * scale:.1f}"


def share(count: float, total: float) -> float | None:
    """``count / total`` to four decimals (a summary to read and diff, not to compute on), ``None`` when ``total``
    is 0."""
    return round(count / total, 4) if total else None


def markdown_table(frame: pd.DataFrame, index: bool = True, digits: int = 3) -> str:
    """A GitHub markdown table (written here because pandas' ``to_markdown`` needs the optional tabulate)."""
    frame = frame.reset_index() if index else frame
    def cell(v: Any) -> str:
        if v is pd.NA:
            return ""
        if isinstance(v, float):
            return "" if np.isnan(v) else f"{v:.{digits}f}"
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(str(c) for c in frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def save_table(results: ResultsDir, name: str, frame: pd.DataFrame, index: bool = True) -> list[Path]:
    """``tables/<name>.csv`` and ``tables/<name>.md``."""
    csv, md = results.tables / f"{name}.csv", results.tables / f"{name}.md"
    frame.to_csv(csv, index=index)
    md.write_text(markdown_table(frame, index=index))
    return [csv, md]


def json_safe(obj: Any) -> Any:
    """NaN (a one-run sd) becomes ``null``; numpy scalars become Python numbers."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and np.isnan(obj):
        return None
    return obj
