"""Training and scoring the RE classifier on every (arm, cell) of the grid, through the run store.

Runs found in the store are reused, so re-running notebook 04 (or notebook 05 asking for a training set that
notebook 04 already trained) costs nothing; the rest are trained with the profile's encoder settings.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from redpo.config import Profile
from redpo.core.io import RUNS_CACHE, ResultsDir
from redpo.core.manifest import record_model, recorded_peak
from redpo.core.sample import RESample
from redpo.data.splits import profile_schema
from redpo.extraction.metrics import per_sentence, score
from redpo.extraction.model import predict, train_re_model
from redpo.extraction.run_store import RunRecord, RunStore, run_fingerprint, samples_digest
from redpo.extraction.training_sets import GridCell, arm_training_sets, epoch_sizes, grid_cells
from redpo.models.load import load_encoder


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



def _train_and_score(
    profile: Profile,
    arm: str,
    cell: GridCell,
    train: Sequence[RESample],
    dev: Sequence[RESample],
    test: Sequence[RESample],
    output_dir: Path,
    epoch_size: int | None = None,
) -> dict[str, Any]:
    schema = profile_schema(profile)
    trained = train_re_model(
        train, dev, schema, profile.encoder, encoder_name=profile.encoder.model, seed=cell.classifier_seed,
        output_dir=output_dir, epoch_size=epoch_size,
    )
    start = time.perf_counter()
    predictions = predict(trained, test)
    predict_seconds = time.perf_counter() - start
    metrics = score([s.relation for s in test], predictions, schema)
    return {
        "predictions": per_sentence(test, predictions),
        "arm": arm,
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
        "epoch_size": epoch_size,
        "best_dev_micro_f1": trained.best_dev_micro_f1,
        "encoder": trained.encoder_name,
        **metrics,
    }


def run_grid(
    profile: Profile,
    results: ResultsDir,
    dev: Sequence[RESample],
    test: Sequence[RESample],
    *,
    progress: bool = True,
) -> dict[str, list[dict[str, Any]]]:
    """Train and score every arm in every grid cell; ``{"runs": [...], "skipped": [...]}``.

    Runs found in the resume cache are reused (``"cached": true``). An arm whose training set is empty (a
    generation arm that produced nothing valid) is listed under ``skipped`` with the reason, not trained.
    """
    splits = dict.fromkeys((c.k, c.split_seed) for c in grid_cells(profile))
    sets = {split: arm_training_sets(profile, results, *split) for split in splits}
    with recorded_peak(results, "re_grid"):
        return run_training_sets(profile, results, sets, dev, test, progress=progress)


def run_training_sets(
    profile: Profile,
    results: ResultsDir,
    sets_by_split: Mapping[tuple[int, int], Mapping[str, Sequence[RESample]]],
    dev: Sequence[RESample],
    test: Sequence[RESample],
    *,
    progress: bool = True,
) -> dict[str, list[dict[str, Any]]]:
    """:func:`run_grid` on given training sets (``{(K, split seed): {arm: samples}}``), in every grid cell of
    each split, through the same resume cache: a set equal to one notebook 04 trained is not trained again, and
    an arm whose set, cell and schedule equal a run already in the store under another arm's name takes that run
    (``same_run_as``: e.g. ``gen:obo@pair`` on a split where the pair's quota is the all-arm one, or a plateau
    prefix equal to notebook 04's set)."""
    record_model(results, load_encoder(profile.encoder.model).info)
    store = RunStore(results.cache / RUNS_CACHE, RunRecord)
    dev_digest, test_digest = samples_digest(dev), samples_digest(test)
    cells = grid_cells(profile)
    work = []
    for (k, split_seed), sets in sets_by_split.items():
        mine = [c for c in cells if (c.k, c.split_seed) == (k, split_seed)]
        sizes = epoch_sizes(sets)
        work += [(c, arm, train, sizes.get(arm)) for c in mine for arm, train in sets.items()]
    runs: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    # An arm-less fingerprint -> the first run trained on that content (records carry it as "content").
    by_content = {r["content"]: r for r in reversed(list(store.runs.values())) if "content" in r}
    with torch_threads(profile.encoder.threads):
        for cell, arm, train, epoch_size in tqdm(work, desc="RE runs", unit="run", disable=not progress):
            if not train:
                skipped.append({"arm": arm, "cell": cell.name, "reason": "empty training set"})
                continue
            fingerprint = run_fingerprint(profile, arm, cell, train, dev_digest, test_digest, epoch_size)
            content = run_fingerprint(profile, "", cell, train, dev_digest, test_digest, epoch_size)
            record, cached = store.get(fingerprint), True
            if record is None and content in by_content:
                # Training never reads the arm's name: the same samples, cell and schedule give the same run.
                same = by_content[content]
                record = {**same, "arm": arm, "fingerprint": fingerprint,
                          "same_run_as": same.get("same_run_as", same["arm"])}
                store.add(record)
            elif record is None:
                record = {**_train_and_score(profile, arm, cell, train, dev, test, results.cache, epoch_size),
                          "fingerprint": fingerprint, "content": content}
                store.add(record)
                cached = False
            by_content.setdefault(content, record)
            runs.append({**record, "cached": cached})
    return {"runs": runs, "skipped": skipped}

