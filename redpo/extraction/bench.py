"""The RE half of ``python -m redpo bench training``: what an RE run costs, and whether bf16 changes what it predicts.

- **Timing** (:func:`time_re_run`): one RE run, train and predict, on a stratified subset of the train split of
  ``size`` sentences, with the profile's encoder settings but a fixed schedule: ``RE_EPOCHS[size]`` epochs, dev
  evaluated after each (as the committed runs are), no early stopping, so every setting does the same work. Then
  prediction on the profile's whole test set. Wall seconds and process CPU seconds are both kept: on a machine that
  other jobs share, CPU seconds move less with the load.
- **Equivalence** (:func:`equivalence_runs`): the real schedule (early stopping) on one K-shot split for a few
  classifier seeds, in fp32 and in bf16, with per-sentence predictions, so the caller can put a paired bootstrap CI
  on F1(bf16) - F1(fp32) (this layer may not import the statistics).
"""

from __future__ import annotations

import math
import resource
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from redpo.config import Profile, derive
from redpo.data.splits import kshot_sample, load_split, profile_schema, stratified_subset
from redpo.extraction.metrics import per_sentence, score
from redpo.extraction.model import Padding, predict, train_re_model
from redpo.extraction.training_sets import evaluation_sets
from redpo.models.precision import Precision

RE_SIZES = (144, 680)
"""Training-set sizes timed: a K = 8 generated arm of SemEval's 18 positive relations (144), and the largest sets
of the committed run, the plateau's N = 32 sets with their manual negatives (~680)."""
RE_EPOCHS = {144: 15, 680: 3}
"""Epochs of the fixed schedule per size. 144: the median of the committed ``cpu-full`` runs near that size (15.5).
680: three epochs (129 steps, with a dev evaluation after each epoch as in the committed runs) to keep the benchmark
within minutes on a shared machine; the time per epoch is what matters for the ratios."""


@contextmanager
def clock(out: dict[str, Any], key: str) -> Iterator[None]:
    """Wall and process CPU seconds of the block into ``out[key + "_seconds"]`` and ``out[key + "_cpu_seconds"]``."""
    wall, cpu = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    try:
        yield
    finally:
        after = resource.getrusage(resource.RUSAGE_SELF)
        out[f"{key}_seconds"] = round(time.perf_counter() - wall, 2)
        out[f"{key}_cpu_seconds"] = round(after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime, 2)


def time_re_run(profile: Profile, size: int, precision: Precision, padding: Padding, *,
                epochs: int | None = None) -> dict[str, Any]:
    """One timed RE run (see the module docstring): seconds to train, to predict, and in all."""
    schema = profile_schema(profile)
    train = stratified_subset(load_split(profile, "train"), size, profile.seed)
    dev, test = evaluation_sets(profile)
    epochs = epochs or RE_EPOCHS.get(size, 10)
    steps = math.ceil(len(train) / profile.encoder.batch_size) * epochs
    encoder = derive(profile.encoder, {"precision": precision, "eval_steps": math.ceil(steps / epochs),
                                       "max_steps": steps, "min_steps": steps})
    out: dict[str, Any] = {"size": len(train), "precision": precision, "padding": padding, "epochs": epochs,
                           "steps": steps, "dev": len(dev), "test": len(test)}
    with clock(out, "run"):
        with clock(out, "train"):
            trained = train_re_model(train, dev, schema, encoder, encoder_name=profile.encoder.model,
                                     seed=profile.seed, padding=padding)
        with clock(out, "predict"):
            pred = predict(trained, test)
    out["steps_run"] = trained.steps
    out["micro_f1"] = round(score([s.relation for s in test], pred, schema)["micro_f1"], 4)
    return out


def equivalence_runs(profile: Profile, *, k: int, split_seed: int, seeds: Sequence[int],
                     precisions: Sequence[Precision] = ("fp32", "bf16")) -> dict[str, Any]:
    """fp32 and bf16 RE runs with the profile's real schedule on the K-shot split ``(k, split_seed)``, one per
    classifier seed: per-sentence predictions of each, and the run's seconds."""
    schema = profile_schema(profile)
    train = kshot_sample(load_split(profile, "train"), k, split_seed, chained=profile.fewshot.chained_shuffle)
    dev, test = evaluation_sets(profile)
    runs: dict[str, list[dict[str, Any]]] = {p: [] for p in precisions}
    for seed in seeds:
        for precision in precisions:
            encoder = derive(profile.encoder, {"precision": precision})
            row: dict[str, Any] = {"seed": seed}
            with clock(row, "run"):
                trained = train_re_model(train, dev, schema, encoder, encoder_name=profile.encoder.model, seed=seed)
                pred = predict(trained, test)
            metrics = score([s.relation for s in test], pred, schema)
            runs[precision].append({**row, "steps": trained.steps, "micro_f1": round(metrics["micro_f1"], 4),
                                    "predictions": per_sentence(test, pred)})
    return {"k": k, "split_seed": split_seed, "n_train": len(train), "seeds": list(seeds),
            "negative_label": schema.negative_label, "runs": runs}
