"""The non-LLM RE classifier: entity markers + the encoder's states at the two entity-start markers.

This is the "improved baseline" of Zhou & Chen (2021, "An Improved Baseline for Sentence-level Relation
Extraction"), chosen over KnowPrompt's ``[MASK]`` scoring because the offline encoders (all-MiniLM-L6-v2,
all-mpnet-base-v2) ship no masked-LM head:

* **Input.** Entity markers around the head and tail, cropped around the pair (:mod:`redpo.extraction.encoding`).
* **Representation.** The hidden states at the two entity-*start* markers, concatenated, then
  dropout -> linear -> ReLU -> dropout -> linear (their head); dropout is the encoder's own
  ``hidden_dropout_prob``.
* **Training.** HF ``Trainer``; dev micro-F1 (negative label excluded) after every epoch, or every
  ``encoder.eval_steps`` optimizer steps (:func:`schedule`), early stopping on it and the best evaluation's weights
  restored. Checkpoints go to a scratch directory that is deleted on return.
* **Labels** are the schema's (or the caller's) full label list, so a training set that lacks a relation
  still predicts over every relation, and the output layer's size never depends on the sample.
"""

from __future__ import annotations

import copy
import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import (
    DataCollatorWithPadding,
    EarlyStoppingCallback,
    PreTrainedModel,
    PrinterCallback,
    Trainer,
    TrainingArguments,
    set_seed,
)
from transformers.modeling_outputs import SequenceClassifierOutput

from redpo.config import EncoderConfig
from redpo.core.relations import RelationSchema
from redpo.core.sample import MARKERS, RESample
from redpo.extraction.encoding import Inputs
from redpo.extraction.metrics import micro_f1_without_negative, score
from redpo.models.load import load_encoder


# ---- the model -------------------------------------------------------------------------------------------
class REClassifier(nn.Module):
    """Encoder + MLP over the concatenated entity-start states (Zhou & Chen 2021)."""

    def __init__(self, encoder: PreTrainedModel, num_labels: int) -> None:
        super().__init__()
        hidden = encoder.config.hidden_size
        dropout = getattr(encoder.config, "hidden_dropout_prob", 0.1)
        self.encoder = encoder
        self.num_labels = num_labels
        self.head = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(2 * hidden, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_labels),
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        head_pos: torch.Tensor,
        tail_pos: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> SequenceClassifierOutput:
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        rows = torch.arange(states.size(0), device=states.device)
        pair = torch.cat([states[rows, head_pos], states[rows, tail_pos]], dim=-1)
        logits = self.head(pair)
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


@dataclass
class TrainedRE:
    """A trained classifier plus everything needed to use it and to report how it was made."""

    model: REClassifier
    tokenizer: Any
    labels: tuple[str, ...]
    typed_markers: bool
    max_length: int
    eval_batch_size: int
    encoder_name: str
    encoder_info: dict[str, Any]
    seed: int
    n_train: int
    n_dev: int
    train_seconds: float
    epochs_run: float
    best_dev_micro_f1: float | None
    steps: int = 0
    """Optimizer steps taken (with early stopping, fewer than the cap)."""
    stopped_early: bool = False
    """True when early stopping ended training before the epoch cap: the run converged by the rule."""
    history: list[dict[str, float]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """JSON-safe description (everything but the model and tokenizer) for metrics files."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in {"model", "tokenizer"}}


def _info_dict(info: Any) -> dict[str, Any]:
    return asdict(info) if is_dataclass(info) and not isinstance(info, type) else {"repr": repr(info)}


def prepare_encoder(encoder_name: str, typed: bool, seed: int) -> tuple[PreTrainedModel, Any, dict[str, Any]]:
    """A private copy of the (memoised) encoder and tokenizer, with the untyped markers added if needed.

    Seeds the global RNGs *after* loading, so that the new marker embeddings and the head that follow get
    the same initial values whether or not the encoder came from the in-process cache.
    """
    loaded = load_encoder(encoder_name)
    encoder, tokenizer = copy.deepcopy(loaded.model), copy.deepcopy(loaded.tokenizer)
    set_seed(seed)
    if not typed:
        added = tokenizer.add_special_tokens({"additional_special_tokens": list(MARKERS)})
        if added:
            encoder.resize_token_embeddings(len(tokenizer))
    return encoder, tokenizer, _info_dict(loaded.info)


@dataclass(frozen=True)
class Schedule:
    """How long a run trains and how often it is judged, in optimizer steps."""

    steps_per_epoch: int
    interval: int
    """Steps between dev evaluations; early stopping's patience counts these."""
    cap: int
    warmup: int
    min_steps: int
    by_steps: bool
    """The Trainer runs to ``cap`` steps (cycling the data) instead of for ``epochs`` passes."""


def schedule(encoder_cfg: EncoderConfig, n_train: int, epoch_size: int | None = None) -> Schedule:
    """The run's schedule: in epochs when ``encoder.eval_steps`` is unset (an evaluation per pass over the set, or
    over ``epoch_size`` samples' worth of steps), else in steps (``eval_steps``, ``min_steps``, ``max_steps``,
    ``warmup_steps``), the same for every set size, so a small generated set is not judged after a few steps."""
    cfg = encoder_cfg
    steps_per_epoch = math.ceil((epoch_size or n_train) / cfg.batch_size)
    if cfg.eval_steps is None:
        cap = steps_per_epoch * cfg.epochs
        return Schedule(steps_per_epoch, steps_per_epoch, cap, math.ceil(cfg.warmup_ratio * cap), 0,
                        by_steps=epoch_size is not None)
    cap = cfg.max_steps or steps_per_epoch * cfg.epochs
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else math.ceil(cfg.warmup_ratio * cap)
    return Schedule(steps_per_epoch, cfg.eval_steps, cap, warmup, cfg.min_steps, by_steps=True)


class EarlyStoppingAfter(EarlyStoppingCallback):
    """Early stopping that may not fire before ``min_steps``: evaluations before then still pick the best weights
    but count no patience, so a run is never declared converged while it is still warming up."""

    def __init__(self, min_steps: int, patience: int, threshold: float) -> None:
        super().__init__(patience, threshold)
        self.min_steps = min_steps

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: Any, **kwargs: Any) -> None:
        super().on_evaluate(args, state, control, metrics, **kwargs)
        if state.global_step < self.min_steps:
            self.early_stopping_patience_counter = 0
            control.should_training_stop = False


def train_re_model(
    train: Sequence[RESample],
    dev: Sequence[RESample],
    schema: RelationSchema,
    encoder_cfg: EncoderConfig,
    *,
    encoder_name: str,
    seed: int,
    output_dir: Path | None = None,
    labels: Sequence[str] | None = None,
    epoch_size: int | None = None,
) -> TrainedRE:
    """Fine-tune encoder + head on ``train``, early-stopping on ``dev`` micro-F1; returns the best epoch.

    ``labels`` defaults to the schema's; ``output_dir`` only chooses where the scratch checkpoint directory
    lives (deleted before returning). An empty ``dev`` trains for all ``encoder_cfg.epochs`` epochs.
    ``epoch_size`` trains on ``train`` with the step schedule of a set of that many samples: an "epoch" (the
    evaluation interval, the unit of patience and of the cap) is ``ceil(epoch_size / batch_size)`` steps, the data
    cycling as needed. The step-matched manual control uses it to get exactly the mixed arms' step budget.
    """
    if not train:
        raise ValueError("train_re_model got no training samples")
    labels = tuple(labels or schema.labels)
    typed = bool(encoder_cfg.typed_markers and schema.entity_types)
    encoder, tokenizer, info = prepare_encoder(encoder_name, typed, seed)
    model = REClassifier(encoder, len(labels))
    inputs = Inputs(tokenizer, encoder_cfg.max_length, typed)
    train_ds = inputs.dataset(train, labels)
    dev_ds = inputs.dataset(dev, labels) if dev else None

    def compute_metrics(eval_pred: Any) -> dict[str, float]:
        pred = [labels[i] for i in np.argmax(eval_pred.predictions, axis=-1)]
        gold = [labels[i] for i in eval_pred.label_ids]
        return {"micro_f1": micro_f1_without_negative(gold, pred, schema.negative_label)["f1"]}

    plan = schedule(encoder_cfg, len(train_ds), epoch_size)
    strategy = ("steps" if plan.by_steps else "epoch") if dev_ds is not None else "no"
    if output_dir is not None:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="re_ckpt_", dir=output_dir) as scratch:
        args = TrainingArguments(
            output_dir=scratch,
            per_device_train_batch_size=encoder_cfg.batch_size,
            per_device_eval_batch_size=encoder_cfg.eval_batch_size,
            num_train_epochs=encoder_cfg.epochs,
            max_steps=plan.cap if plan.by_steps else -1,
            eval_steps=plan.interval,
            save_steps=plan.interval,
            logging_steps=plan.interval,
            learning_rate=encoder_cfg.learning_rate,
            warmup_steps=plan.warmup,
            weight_decay=encoder_cfg.weight_decay,
            eval_strategy=strategy,
            save_strategy=strategy,
            save_total_limit=1,
            save_only_model=True,
            load_best_model_at_end=dev_ds is not None,
            metric_for_best_model="micro_f1",
            greater_is_better=True,
            logging_strategy="steps" if plan.by_steps else "epoch",
            report_to=[],
            disable_tqdm=True,
            seed=seed,
            data_seed=seed,
            dataloader_num_workers=0,
            dataloader_pin_memory=torch.cuda.is_available(),
        )
        callbacks = [
            EarlyStoppingAfter(plan.min_steps, encoder_cfg.early_stopping_patience,
                               encoder_cfg.early_stopping_threshold)
        ] if dev_ds is not None else []
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=train_ds,
            eval_dataset=dev_ds,
            data_collator=DataCollatorWithPadding(tokenizer),
            compute_metrics=compute_metrics,
            callbacks=callbacks,
        )
        trainer.remove_callback(PrinterCallback)  # its per-evaluation dicts flood a notebook; the history keeps them
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
        state = trainer.state
    model.eval()
    history = [{k: float(v) for k, v in r.items() if isinstance(v, int | float)} for r in state.log_history]
    return TrainedRE(
        model=model,
        tokenizer=tokenizer,
        labels=labels,
        typed_markers=typed,
        max_length=encoder_cfg.max_length,
        eval_batch_size=encoder_cfg.eval_batch_size,
        encoder_name=encoder_name,
        encoder_info=info,
        seed=seed,
        n_train=len(train_ds),
        n_dev=len(dev_ds) if dev_ds is not None else 0,
        train_seconds=round(seconds, 2),
        epochs_run=round(state.global_step / plan.steps_per_epoch, 4),
        best_dev_micro_f1=None if state.best_metric is None else float(state.best_metric),
        steps=int(state.global_step),
        stopped_early=dev_ds is not None and state.global_step < plan.cap,
        history=history,
    )


def predict(trained: TrainedRE, samples: Sequence[RESample], batch_size: int | None = None) -> list[str]:
    """Predicted label per sample, in order (batched, no gradients; default batch = eval_batch_size)."""
    if not samples:
        return []
    batch_size = batch_size or trained.eval_batch_size
    rows = Inputs(trained.tokenizer, trained.max_length, trained.typed_markers).dataset(samples).to_list()
    collate = DataCollatorWithPadding(trained.tokenizer, return_tensors="pt")
    model = trained.model.eval()
    device = next(model.parameters()).device
    out: list[str] = []
    with torch.inference_mode():
        for i in range(0, len(rows), batch_size):
            batch = {k: v.to(device) for k, v in collate(rows[i : i + batch_size]).items()}
            out += [trained.labels[j] for j in model(**batch).logits.argmax(-1).tolist()]
    return out


def evaluate(
    trained: TrainedRE, samples: Sequence[RESample], schema: RelationSchema, batch_size: int | None = None
) -> dict[str, Any]:
    """:func:`redpo.extraction.metrics.score` on ``samples`` plus the prediction wall time."""
    start = time.perf_counter()
    pred = predict(trained, samples, batch_size)
    seconds = time.perf_counter() - start
    return {**score([s.relation for s in samples], pred, schema), "predict_seconds": round(seconds, 2)}
