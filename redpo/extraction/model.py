"""The non-LLM RE classifier: entity markers + the encoder's states at the two entity-start markers.

This is the "improved baseline" of Zhou & Chen (2021, "An Improved Baseline for Sentence-level Relation
Extraction"), chosen over KnowPrompt's ``[MASK]`` scoring because the offline encoders (all-MiniLM-L6-v2,
all-mpnet-base-v2) ship no masked-LM head:

* **Input.** Entity markers around the head and tail. Untyped: ``<e1> head </e1>`` and ``<e2> tail </e2>``,
  added to the tokenizer as special tokens (new embedding rows). Typed, when the schema has entity types and
  ``EncoderConfig.typed_markers`` is set: Zhou & Chen's "typed entity marker (punct)",
  ``@ * person * head @`` and ``# ^ city ^ tail #``, which reuses existing vocabulary so that the type words
  keep their pretrained meaning and no embedding is learned from scratch.
* **Representation.** The hidden states at the two entity-*start* markers, concatenated, then
  dropout -> linear -> ReLU -> dropout -> linear (their head); dropout is the encoder's own
  ``hidden_dropout_prob``.
* **Truncation** never loses an entity: see :func:`keep_words`.
* **Training.** HF ``Trainer``; dev micro-F1 (negative label excluded) after every epoch, early stopping on
  it and the best epoch's weights restored. Checkpoints go to a scratch directory that is deleted on return.
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
from itertools import chain, zip_longest
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from torch import nn
from transformers import (
    DataCollatorWithPadding,
    EarlyStoppingCallback,
    PreTrainedModel,
    Trainer,
    TrainingArguments,
    set_seed,
)
from transformers.modeling_outputs import SequenceClassifierOutput

from redpo.config import EncoderConfig
from redpo.core.relations import RelationSchema
from redpo.core.sample import HEAD_CLOSE, HEAD_OPEN, MARKERS, TAIL_CLOSE, TAIL_OPEN, RESample
from redpo.extraction.metrics import micro_f1_without_negative, score
from redpo.models.load import load_encoder

# Zhou & Chen's typed-marker punctuation: (open/close, around-type) for head and tail.
TYPED_HEAD = ("@", "*")
TYPED_TAIL = ("#", "^")


# ---- input encoding --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MarkedWords:
    """Words with markers inserted; ``head``/``tail`` are the word ranges from start marker to end marker."""

    words: list[str]
    head: range
    tail: range


def _type_words(entity_type: str | None, role: str, sample: RESample) -> list[str]:
    if not entity_type:
        raise ValueError(
            f"typed markers need a {role} type, but the sample {sample.to_marked()!r} has none; "
            "set encoder.typed_markers=false or give every sample head_type/tail_type"
        )
    return entity_type.lower().replace("_", " ").split()


def mark(sample: RESample, typed: bool) -> MarkedWords:
    """Insert the entity markers into the sample's words (see the module docstring for both styles)."""
    if typed:
        (ho, ht), (to, tt) = TYPED_HEAD, TYPED_TAIL
        head_open = [ho, ht, *_type_words(sample.head_type, "head", sample), ht]
        tail_open = [to, tt, *_type_words(sample.tail_type, "tail", sample), tt]
        head_close, tail_close = [ho], [to]
    else:
        head_open, head_close, tail_open, tail_close = [HEAD_OPEN], [HEAD_CLOSE], [TAIL_OPEN], [TAIL_CLOSE]
    words: list[str] = []
    spans: dict[str, range] = {}
    for i, token in enumerate(sample.tokens):
        for role, (start, _), opener in (("head", sample.head, head_open), ("tail", sample.tail, tail_open)):
            if i == start:
                spans[role] = range(len(words), len(words))  # the start marker's index, completed below
                words.extend(opener)
        words.append(token)
        for role, (_, end), closer in (("head", sample.head, head_close), ("tail", sample.tail, tail_close)):
            if i == end - 1:
                words.extend(closer)
                spans[role] = range(spans[role].start, len(words))
    return MarkedWords(words, spans["head"], spans["tail"])


def keep_words(costs: Sequence[int], head: range, tail: range, budget: int) -> list[int]:
    """Which words to keep so that their subword count fits ``budget``, never losing an entity.

    Priority: the two start markers (the classifier reads their states), then the rest of both marked
    entities (interleaved, from the start), then context. If the stretch from the first entity to the end of
    the second fits, the words between the entities come first, so the result is one window around the
    pair; otherwise context is taken by distance from the nearest entity, giving one window around each.
    An entity longer than what is left keeps its first words (so its end marker can be lost, never its start).
    """
    n = len(costs)
    if sum(costs) <= budget:
        return list(range(n))
    first, second = sorted((head, tail), key=lambda r: r.start)
    entity = [first.start, second.start]
    entity += [i for i in chain(*zip_longest(first[1:], second[1:])) if i is not None]
    between = range(first.stop, second.start)
    pair_fits = sum(costs[first.start : second.stop]) <= budget

    def distance(i: int) -> int:
        return min(r.start - i if i < r.start else i - r.stop + 1 for r in (first, second))

    context = sorted(
        (i for i in range(n) if i not in first and i not in second),
        key=lambda i: (not (pair_fits and i in between), distance(i), i),
    )
    kept, used = [], 0
    for rank, i in enumerate(entity + context):
        if used + costs[i] <= budget:
            kept.append(i)
            used += costs[i]
        elif rank >= len(entity):
            break  # context stops at the first word that does not fit: no holes inside a window
    return sorted(kept)


def encode(sample: RESample, tokenizer: Any, max_length: int, typed: bool) -> dict[str, Any]:
    """Token ids of the marked sample (cropped by :func:`keep_words`) and the two start-marker positions."""
    marked = mark(sample, typed)
    plain = tokenizer(marked.words, is_split_into_words=True, add_special_tokens=False)
    costs = [0] * len(marked.words)
    for w in plain.word_ids():
        costs[w] += 1
    kept = keep_words(costs, marked.head, marked.tail, max_length - tokenizer.num_special_tokens_to_add())
    enc = tokenizer([marked.words[i] for i in kept], is_split_into_words=True, add_special_tokens=True)
    word_ids = enc.word_ids()
    new_index = {old: new for new, old in enumerate(kept)}
    head_pos = word_ids.index(new_index[marked.head.start])
    tail_pos = word_ids.index(new_index[marked.tail.start])
    out = {k: list(v) for k, v in enc.items()}
    return {**out, "head_pos": head_pos, "tail_pos": tail_pos}


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


def _label_ids(samples: Sequence[RESample], labels: Sequence[str]) -> list[int]:
    index = {lab: i for i, lab in enumerate(labels)}
    unknown = sorted({s.relation for s in samples} - set(index))
    if unknown:
        raise ValueError(
            f"samples have relations {unknown} outside the label set {list(labels)}; "
            "filter them out or pass labels= including them"
        )
    return [index[s.relation] for s in samples]


@dataclass(frozen=True)
class _Inputs:
    """How samples become model inputs; shared by training and prediction so both encode identically."""

    tokenizer: Any
    max_length: int
    typed: bool

    def dataset(self, samples: Sequence[RESample], labels: Sequence[str] | None = None) -> Dataset:
        """Tokenized samples as a ``datasets.Dataset``, with ``labels`` ids when a label list is given."""
        rows = [encode(s, self.tokenizer, self.max_length, self.typed) for s in samples]
        if labels is not None:
            for row, y in zip(rows, _label_ids(samples, labels), strict=True):
                row["labels"] = y
        return Dataset.from_list(rows)


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
    inputs = _Inputs(tokenizer, encoder_cfg.max_length, typed)
    train_ds = inputs.dataset(train, labels)
    dev_ds = inputs.dataset(dev, labels) if dev else None

    def compute_metrics(eval_pred: Any) -> dict[str, float]:
        pred = [labels[i] for i in np.argmax(eval_pred.predictions, axis=-1)]
        gold = [labels[i] for i in eval_pred.label_ids]
        return {"micro_f1": micro_f1_without_negative(gold, pred, schema.negative_label)["f1"]}

    steps_per_epoch = math.ceil((epoch_size or len(train_ds)) / encoder_cfg.batch_size)
    steps = steps_per_epoch * encoder_cfg.epochs
    by_steps = epoch_size is not None
    strategy = ("steps" if by_steps else "epoch") if dev_ds is not None else "no"
    if output_dir is not None:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="re_ckpt_", dir=output_dir) as scratch:
        args = TrainingArguments(
            output_dir=scratch,
            per_device_train_batch_size=encoder_cfg.batch_size,
            per_device_eval_batch_size=encoder_cfg.eval_batch_size,
            num_train_epochs=encoder_cfg.epochs,
            max_steps=steps if by_steps else -1,
            eval_steps=steps_per_epoch,
            save_steps=steps_per_epoch,
            logging_steps=steps_per_epoch,
            learning_rate=encoder_cfg.learning_rate,
            warmup_steps=math.ceil(encoder_cfg.warmup_ratio * steps),
            weight_decay=encoder_cfg.weight_decay,
            eval_strategy=strategy,
            save_strategy=strategy,
            save_total_limit=1,
            save_only_model=True,
            load_best_model_at_end=dev_ds is not None,
            metric_for_best_model="micro_f1",
            greater_is_better=True,
            logging_strategy="steps" if by_steps else "epoch",
            report_to=[],
            disable_tqdm=True,
            seed=seed,
            data_seed=seed,
            dataloader_num_workers=0,
            dataloader_pin_memory=torch.cuda.is_available(),
        )
        callbacks = [
            EarlyStoppingCallback(encoder_cfg.early_stopping_patience, encoder_cfg.early_stopping_threshold)
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
        epochs_run=round(state.global_step / steps_per_epoch, 4),
        best_dev_micro_f1=None if state.best_metric is None else float(state.best_metric),
        steps=int(state.global_step),
        stopped_early=dev_ds is not None and state.global_step < steps,
        history=history,
    )


def predict(trained: TrainedRE, samples: Sequence[RESample], batch_size: int | None = None) -> list[str]:
    """Predicted label per sample, in order (batched, no gradients; default batch = eval_batch_size)."""
    if not samples:
        return []
    batch_size = batch_size or trained.eval_batch_size
    rows = _Inputs(trained.tokenizer, trained.max_length, trained.typed_markers).dataset(samples).to_list()
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
