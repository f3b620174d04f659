"""What notebook 03 reports of the adapters: training curves, one summary row per adapter, and ``metrics/dpo.json``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from redpo.core.io import ResultsDir, write_json
from redpo.dpo.pairs import DPOPairs


def training_history(logs: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Per-step loss, reward margin and reward accuracy of every adapter, long format for seaborn."""
    rows = [
        {"adapter": name, "step": row["step"], "metric": key, "value": row[key]}
        for name, log in logs.items()
        for row in log["history"]
        for key in ("loss", "rewards/margins", "rewards/accuracies")
        if key in row
    ]
    return pd.DataFrame(rows, columns=["adapter", "step", "metric", "value"])


def steps_run(log: Mapping[str, Any]) -> int:
    """Optimizer steps this training log's process ran: all of them, less those a resumed checkpoint held
    (``checkpoint-<step>``, the Trainer's naming). ``train_seconds`` covers only these."""
    resumed = log.get("resumed_from")
    return log["steps"] - (int(str(resumed).rsplit("-", 1)[1]) if resumed else 0)


def seconds_per_step(log: Mapping[str, Any]) -> float | None:
    """Training seconds per optimizer step of the process that wrote ``log`` (None if it ran none)."""
    ran = steps_run(log)
    return round(log["train_seconds"] / ran, 3) if ran > 0 else None


def training_summary(logs: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """One row per adapter: pairs, steps, epochs and precision, time, the micro-batch the memory plan chose and
    the training's peak RSS, first/last training loss, and reward accuracy, margin and loss on the held-out pairs
    (the last training batch's accuracy is not a measurement: it is one batch). Logs written before the plan
    existed have no memory entries."""
    rows = []
    for name, log in logs.items():
        hist = log["history"]
        memory = log.get("memory", {})
        rows.append({
            "adapter": name,
            "pairs": log["pairs_trained"],
            "steps": log["steps"],
            # the epochs configured, unless a step cap (dpo.max_steps, as in smoke) cut them short
            "epochs": log.get("dpo", {}).get("epochs") if log.get("dpo", {}).get("max_steps", -1) in (-1, None)
            else None,
            "precision": log.get("dpo", {}).get("precision", "fp32"),  # a log from before the setting: fp32
            "seconds": log["total_seconds"],
            "seconds_per_step": seconds_per_step(log),
            "micro_batch": memory.get("micro_batch"),
            "peak_rss_gb": memory.get("peak_rss_gb"),
            "first_loss": hist[0]["loss"] if hist else None,
            "last_loss": hist[-1]["loss"] if hist else None,
            "held_out_pairs": log.get("held_out", {}).get("pairs"),
            "held_out_reward_accuracy": log.get("held_out", {}).get("reward_accuracy"),
            "held_out_reward_margin": log.get("held_out", {}).get("reward_margin"),
            "held_out_loss": log.get("held_out", {}).get("loss"),
            "reused": log.get("reused", False),
            "replayed": log.get("replayed", False),
        })
    return pd.DataFrame(rows)


def save_dpo_history(results: ResultsDir, history: pd.DataFrame) -> Path:
    """``metrics/dpo_history.json``: per-step adapter training curves, so the figure needs no adapter files."""
    return write_json(results.metrics / "dpo_history.json", history.to_dict(orient="records"))


def save_dpo_metrics(
    results: ResultsDir, pairs: DPOPairs, leakage: Mapping[str, Any], logs: Mapping[str, Mapping[str, Any]]
) -> Path:
    """``metrics/dpo.json``: pair counts per half and kind, the leakage verdict and each adapter's training
    summary (steps, seconds per step, micro-batch and peak RSS, final loss and reward accuracy), for the README and
    the claims report."""
    frame = pairs.frame()
    return write_json(results.metrics / "dpo.json", {
        "pairs": {h: len(ds) for h, ds in pairs.datasets.items()},
        "pairs_by_kind": {h: g["kind"].value_counts().to_dict() for h, g in frame.groupby("half")},
        "halves": pairs.halves.to_json(),
        "skipped_relations": pairs.skipped,
        "leakage_ok": bool(leakage["ok"]),
        "training": training_summary(logs).to_dict(orient="records"),
    })

