"""The paper's published RE numbers (main and ablation tables), as data, with the redpo arms each is compared with.

Every number comes from a third-party reading note of the paper, so treat it as approximate and as a target for
the *direction* of an effect, not as a value to match. Values are KnowPrompt micro-F1 in percent (negative label
excluded), the paper's main number.

Mapping to redpo arms (``manual``, ``gen:<arm>``, ``mix:<arm>``, ``llm``):

* "K generated / relation (OBO + DPO)" and the ablation's "OBO + DPO" -> ``gen:obo_dpo``; "OBO, no DPO" ->
  ``gen:obo``; "OBO, no DPO, no dissimilarity instruction" -> ``gen:obo_nodiv``; AAO likewise.
* "manual + OBO-generated" / "manual + AAO-generated": the note does not say whether that generator was
  DPO-tuned, so the number is shown beside both ``mix:obo`` and ``mix:obo_dpo`` (AAO likewise).
* "LLM directly as RE model" -> ``llm``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

SOURCE = "the paper's main and ablation tables, via a third-party reading note (approximate; KnowPrompt, micro-F1 %)"


@dataclass(frozen=True)
class PublishedNumber:
    """One cell of a published table: dataset, K, the paper's row wording, the value and the redpo arms."""

    table: str
    row: str
    arms: tuple[str, ...]
    dataset: str
    k: int
    micro_f1: float
    source: str = "N"


_MAIN_ROWS: dict[str, tuple[str, ...]] = {
    "K manual samples / relation": ("manual",),
    "K generated / relation (OBO + DPO)": ("gen:obo_dpo", "gen:obo_dpo@pair"),
    "manual + OBO-generated": ("mix:obo", "mix:obo_dpo", "mix:obo@pair", "mix:obo_dpo@pair"),
    "manual + AAO-generated": ("mix:aao", "mix:aao_dpo"),
    "LLM directly as RE model": ("llm",),
}
_MAIN_COLUMNS = (("tacred", 8), ("tacred", 16), ("retacred", 8), ("semeval", 8))
_MAIN_VALUES: dict[str, tuple[float | None, ...]] = {
    "K manual samples / relation": (22.07, 30.00, 44.77, 61.39),
    "K generated / relation (OBO + DPO)": (22.48, 27.99, 34.77, 42.02),
    "manual + OBO-generated": (33.48, 34.93, 57.41, 67.92),
    "manual + AAO-generated": (34.30, 35.56, 56.01, 70.32),
    "LLM directly as RE model": (21.17, None, 33.30, 25.55),
}

_ABLATION_ROWS: dict[str, tuple[str, ...]] = {
    "OBO + DPO": ("gen:obo_dpo", "gen:obo_dpo@pair"),
    "OBO, no DPO": ("gen:obo", "gen:obo@pair"),
    "OBO, no DPO, no dissimilarity instruction": ("gen:obo_nodiv",),
    "AAO + DPO": ("gen:aao_dpo",),
    "AAO, no DPO": ("gen:aao",),
}
_ABLATION_COLUMNS = (("tacred", 8), ("tacred", 32), ("retacred", 32), ("semeval", 32))
_ABLATION_VALUES: dict[str, tuple[float, ...]] = {
    "OBO + DPO": (22.48, 30.41, 50.72, 47.70),
    "OBO, no DPO": (18.35, 23.70, 40.45, 30.03),
    "OBO, no DPO, no dissimilarity instruction": (21.86, 25.66, 32.74, 25.88),
    "AAO + DPO": (21.86, 26.39, 46.50, 56.34),
    "AAO, no DPO": (18.97, 36.04, 36.66, 49.58),
}


def _table(
    name: str,
    rows: dict[str, tuple[str, ...]],
    columns: Sequence[tuple[str, int]],
    values: dict[str, Sequence[float | None]],
) -> list[PublishedNumber]:
    return [
        PublishedNumber(name, row, arms, dataset, k, value)
        for row, arms in rows.items()
        for (dataset, k), value in zip(columns, values[row], strict=True)
        if value is not None
    ]


PUBLISHED: tuple[PublishedNumber, ...] = (
    *_table("main", _MAIN_ROWS, _MAIN_COLUMNS, _MAIN_VALUES),
    *_table("ablation", _ABLATION_ROWS, _ABLATION_COLUMNS, _ABLATION_VALUES),
)


def published(dataset: str, k: int | None = None) -> list[PublishedNumber]:
    """The published numbers for one dataset (and K), main table first."""
    return [p for p in PUBLISHED if p.dataset == dataset and (k is None or p.k == k)]


def paper_value(dataset: str, k: int, arm: str) -> float | None:
    """The published micro-F1 (%) redpo's ``arm`` is compared with, or ``None`` if the paper has none.

    TACRED K=8 "OBO + DPO" is in both tables with the same value; the main table's entry is used.
    """
    return next((p.micro_f1 for p in published(dataset, k) if arm in p.arms), None)
