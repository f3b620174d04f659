"""One row per generation arm: how much it yielded, how correct and how diverse its samples are (saved metrics only).

Why one table: notebooks 01-03 each show their own arms, but a reader of a finished run wants every arm side by
side, with the yield (what a sample cost), the oracle's correctness estimate and the diversity together, because
diversity bought with wrong-relation or copied samples is no gain. Each arm is read from the first metrics file
that holds it (``generation_icl`` before ``generation_baseline`` before ``generation_dpo``; the same generations
are summarised in each), counts are summed over the generation splits, rates are pooled over them (correctness)
or averaged over them (diversity macros, each a mean over that split's relations).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from redpo.core.io import ResultsDir, read_json
from redpo.core.tables import save_table

GENERATION_FILES = ("generation_icl", "generation_baseline", "generation_dpo")
CORRECTNESS_FILES = ("correctness_icl", "correctness_dpo")
DIVERSITY_COLUMNS = {
    "tfidf_cos": "TF-IDF cos",
    "tfidf_cos_masked": "TF-IDF cos masked",
    "embed_cos": "embedding cos",
    "self_bleu": "self-BLEU",
    "near_copy_share": "near-copy share",
}
ARM_ORDER = ("gold", "baseline", "aao", "aao_nodiv", "obo", "obo_nodiv", "aao_dpo", "obo_dpo", "obo_consistent")


def _first_holder(blocks: Mapping[str, Mapping[str, Any]], arm: str, find: Any) -> Any:
    """The value ``find(block, arm)`` from the first file (in ``blocks`` order) where it is not ``None``."""
    for block in blocks.values():
        value = find(block, arm)
        if value is not None:
            return value
    return None


def _yield_row(block: Mapping[str, Any], arm: str) -> dict[str, Any] | None:
    rows = [r for r in block.get("yield", []) if r["arm"] == arm]
    if not rows:
        return None
    valid, calls = sum(r["valid"] for r in rows), sum(r["calls"] for r in rows)
    return {
        "splits": len(rows),
        "valid": valid,
        "calls": calls,
        "valid per call": valid / calls if calls else float("nan"),
        "relations short": sum(r.get("relations_short", 0) for r in rows),
        "model minutes": sum(r.get("model_seconds", 0.0) for r in rows) / 60,
    }


def _diversity_row(block: Mapping[str, Any], arm: str) -> dict[str, Any] | None:
    reports = [split["arms"][arm] for split in block["diversity"]["splits"].values() if arm in split["arms"]]
    if not reports:
        return None
    # a split with no relation to compare has no macro keys at all; gold has no near-copy share
    row: dict[str, Any] = {"diversity relations": float(np.mean([r["macro_n"].get("tfidf_cos", 0) for r in reports]))}
    for key, label in DIVERSITY_COLUMNS.items():
        values = [r["macro"][key] for r in reports if r["macro"].get(key) is not None]
        row[label] = float(np.mean(values)) if values else float("nan")
    return row


def _correctness_row(block: Mapping[str, Any], arm: str) -> dict[str, Any] | None:
    report = block["arms"].get(arm)
    if report is None:
        return None
    return {"oracle agreement": report["oracle_agreement"], "direction flips": report["direction_flip_rate"],
            "labelled negative": report["negative_share"], "oracle n": report["n"]}


def generation_quality(results: ResultsDir) -> pd.DataFrame:
    """Yield, oracle correctness and diversity per arm (``tables/generation_quality``)."""
    generation = {name: read_json(path) for name in GENERATION_FILES
                  if (path := results.metrics / f"{name}.json").is_file()}
    correctness = {name: read_json(path) for name in CORRECTNESS_FILES
                   if (path := results.metrics / f"{name}.json").is_file()}
    found = {arm for block in generation.values() for split in block["diversity"]["splits"].values()
             for arm in split["arms"]}
    arms = [a for a in ARM_ORDER if a in found] + sorted(found - set(ARM_ORDER))
    rows = []
    for arm in arms:
        row: dict[str, Any] = {"arm": arm}
        for part in (_first_holder(generation, arm, _yield_row), _first_holder(correctness, arm, _correctness_row),
                     _first_holder(generation, arm, _diversity_row)):
            row.update(part or {})
        rows.append(row)
    columns = ["arm", "splits", "valid", "calls", "valid per call", "relations short", "model minutes", "oracle n",
               "oracle agreement", "direction flips", "labelled negative", "diversity relations",
               *DIVERSITY_COLUMNS.values()]
    frame = pd.DataFrame(rows, columns=columns).set_index("arm")
    counts = ["splits", "valid", "calls", "relations short", "oracle n"]
    return frame.astype({c: "Int64" for c in counts})  # gold has no yield: blank, not a float count


def generation_tables(results: ResultsDir) -> dict[str, pd.DataFrame]:
    """Every generation table :func:`redpo.analysis.report.build_all` writes."""
    tables = {"generation_quality": generation_quality(results)}
    for name, frame in tables.items():
        save_table(results, name, frame)
    return tables
