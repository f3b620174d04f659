"""A trained RE classifier kept in a cache folder: safetensors weights and a JSON summary, the summary written last.

The oracle (:mod:`redpo.extraction.oracle`) and the consistency filter's K-shot judge
(:mod:`redpo.extraction.consistency`) are each trained once and read back on every later run, from a folder named
by their fingerprint. One recipe for both: the summary's presence marks a complete folder (a run killed while
saving leaves weights without a summary, and trains again), and loading rebuilds the classifier the summary
describes and reads its weights with safetensors, so nothing is ever unpickled.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safetensors.torch import load_model, save_model

from redpo.core.io import atomic_write
from redpo.extraction.model import REClassifier, TrainedRE, prepare_encoder

WEIGHTS = "model.safetensors"


def load_saved(folder: Path, summary_name: str) -> tuple[TrainedRE, dict[str, Any]] | None:
    """The classifier saved in ``folder`` and its summary, or ``None`` when the folder holds no complete one."""
    if not ((folder / WEIGHTS).is_file() and (folder / summary_name).is_file()):
        return None
    summary = json.loads((folder / summary_name).read_text())
    return load_classifier(folder, summary), summary


def save_trained(folder: Path, trained: TrainedRE, summary: Mapping[str, Any], summary_name: str) -> dict[str, Any]:
    """Save the weights, then the summary (last: its presence marks a complete folder); the summary comes back as
    JSON types, the same whether a caller trained now or loads it later."""
    text = json.dumps(summary, indent=1, sort_keys=True)
    folder.mkdir(parents=True, exist_ok=True)
    save_model(trained.model, str(folder / WEIGHTS))
    atomic_write(folder / summary_name, text)
    return json.loads(text)


def load_classifier(folder: Path, summary: Mapping[str, Any]) -> TrainedRE:
    """Rebuild the classifier the summary describes and load its saved weights (safetensors; nothing unpickled)."""
    labels = tuple(summary["labels"])
    encoder, tokenizer, _info = prepare_encoder(summary["encoder_name"], bool(summary["typed_markers"]),
                                                int(summary["seed"]))
    model = REClassifier(encoder, len(labels))
    load_model(model, str(folder / WEIGHTS))
    model.eval()
    fields = {k: summary[k] for k in ("max_length", "eval_batch_size", "encoder_name", "encoder_info", "seed",
                                      "n_train", "n_dev", "train_seconds", "epochs_run", "best_dev_micro_f1")}
    return TrainedRE(model=model, tokenizer=tokenizer, labels=labels, typed_markers=bool(summary["typed_markers"]),
                     precision=summary.get("precision", "fp32"), **fields)  # predicts as it was trained
