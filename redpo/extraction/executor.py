"""Where the RE runs of a grid train: one after another in this process, or as tasks on a Ray cluster.

:func:`redpo.extraction.grid.run_training_sets` decides which runs to train (those the run store lacks) and
appends each record as it arrives; an executor only trains. ``executor.kind: local`` trains in this process, as
the grid always did; ``executor.kind: ray`` (:mod:`redpo.extraction.ray_executor`) makes each run one Ray task
and hands the records back in the order they finish. Either way a run is :func:`train_run`, so a record does not
depend on where it was trained.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from redpo.config import Profile
from redpo.core.sample import RESample
from redpo.data.splits import profile_schema
from redpo.extraction.metrics import per_sentence, score
from redpo.extraction.model import predict, train_re_model
from redpo.extraction.training_sets import GridCell


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op threads (``encoder.threads``); ``None`` leaves them alone."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class RunJob:
    """One run to train: an arm's training set in one grid cell, with the keys the run store files it under."""

    arm: str
    cell: GridCell
    train: tuple[RESample, ...]
    epoch_size: int | None
    fingerprint: str
    content: str
    """The arm-less fingerprint: runs of other arms with this content take this run's record (``same_run_as``)."""


@dataclass(frozen=True)
class GridInputs:
    """What every run of one grid shares: the profile it trains under, dev (early stopping) and test."""

    profile: Profile
    dev: Sequence[RESample]
    test: Sequence[RESample]
    scratch: Path | None = None
    """Where a run's checkpoints live while it trains (deleted when it ends); ``None``: the system's temp dir."""


def train_run(inputs: GridInputs, job: RunJob, encoder_source: str | None = None) -> dict[str, Any]:
    """Train and score one run; its record without the store's keys (metrics and per-sentence predictions).

    ``encoder_source`` loads the encoder from that folder instead of resolving ``encoder.model`` (a Ray worker's
    copy of the driver's weights); the record names ``encoder.model`` either way."""
    profile, cell = inputs.profile, job.cell
    schema = profile_schema(profile)
    trained = train_re_model(
        job.train, inputs.dev, schema, profile.encoder, encoder_name=encoder_source or profile.encoder.model,
        seed=cell.classifier_seed, output_dir=inputs.scratch, epoch_size=job.epoch_size,
    )
    start = time.perf_counter()
    predictions = predict(trained, inputs.test)
    predict_seconds = time.perf_counter() - start
    metrics = score([s.relation for s in inputs.test], predictions, schema)
    return {
        "predictions": per_sentence(inputs.test, predictions),
        "arm": job.arm,
        "k": cell.k,
        "split_seed": cell.split_seed,
        "seed_index": cell.seed_index,
        "classifier_seed": cell.classifier_seed,
        "cell": cell.name,
        "n_train": trained.n_train,
        "n_dev": trained.n_dev,
        "train_seconds": trained.train_seconds,
        "predict_seconds": round(predict_seconds, 2),
        "epochs_run": trained.epochs_run,
        "steps": trained.steps,
        "stopped_early": trained.stopped_early,
        "epoch_size": job.epoch_size,
        "best_dev_micro_f1": trained.best_dev_micro_f1,
        "encoder": profile.encoder.model,
        **metrics,
    }


class Executor(Protocol):
    """Trains runs and yields ``(job, record)`` as each finishes, in any order; the caller stores the records."""

    def run(self, inputs: GridInputs, jobs: Sequence[RunJob]) -> Iterator[tuple[RunJob, dict[str, Any]]]: ...


class LocalExecutor:
    """``executor.kind: local``: the runs one after another in this process, with ``encoder.threads`` threads."""

    def run(self, inputs: GridInputs, jobs: Sequence[RunJob]) -> Iterator[tuple[RunJob, dict[str, Any]]]:
        with torch_threads(inputs.profile.encoder.threads):
            for job in jobs:
                yield job, train_run(inputs, job)
