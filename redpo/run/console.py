"""Plain tables for the terminal: what the command line prints, readable in a CI log without extra packages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Plain aligned columns: readable in a terminal and in CI logs without extra dependencies."""
    if not rows:
        return "(empty)"
    cols = list(dict.fromkeys(k for row in rows for k in row))
    cells = [[_cell(row.get(c, "")) for c in cols] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    """Lists show their first item and a count, so a multi-part wheel list does not flood the table."""
    if isinstance(value, (list, tuple)):
        if len(value) > 1:
            return f"{value[0]} (+{len(value) - 1} more)"
        return str(value[0]) if value else ""
    return str(value)
