"""Training and scoring the RE classifier on every (arm, cell) of the grid, through the run store.

Runs found in the store are reused, so re-running notebook 04 (or notebook 05 asking for a training set that
notebook 04 already trained) costs nothing; the rest are trained with the profile's encoder settings, by the
profile's executor (``executor.kind``: in this process, or as Ray tasks, :mod:`redpo.extraction.executor`). This
process stays the only writer of the store: it appends each record as it arrives, so a killed driver or worker
loses no finished run, and a restart submits only the runs the store lacks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tqdm.auto import tqdm

from redpo.config import Profile
from redpo.core.io import RUNS_CACHE, ResultsDir
from redpo.core.manifest import record_model, recorded_peak
from redpo.core.sample import RESample
from redpo.extraction.executor import Executor, GridInputs, LocalExecutor, RunJob
from redpo.extraction.ray_executor import RayExecutor
from redpo.extraction.run_store import RunRecord, RunStore, run_fingerprint, samples_digest
from redpo.extraction.training_sets import arm_training_sets, epoch_sizes, grid_cells
from redpo.models.load import load_encoder


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
    prefix equal to notebook 04's set). Arms of one call that share a set wait for the one run that trains it."""
    record_model(results, load_encoder(profile.encoder.model).info)
    store = RunStore(results.cache / RUNS_CACHE, RunRecord)
    dev_digest, test_digest = samples_digest(dev), samples_digest(test)
    cells = grid_cells(profile)
    work = []
    for (k, split_seed), sets in sets_by_split.items():
        mine = [c for c in cells if (c.k, c.split_seed) == (k, split_seed)]
        sizes = epoch_sizes(sets, profile.encoder)
        work += [(c, arm, train, sizes.get(arm)) for c in mine for arm, train in sets.items()]
    runs: dict[int, dict[str, Any]] = {}  # by place in ``work``: the returned runs keep that order
    skipped: list[dict[str, Any]] = []
    # An arm-less fingerprint -> the first run trained on that content (records carry it as "content").
    by_content = {r["content"]: r for r in reversed(list(store.runs.values())) if "content" in r}
    jobs: dict[str, tuple[int, RunJob]] = {}  # content -> the run that trains it, and its place
    waiting: dict[str, list[tuple[int, str, str]]] = {}  # content -> (place, arm, fingerprint) of its other arms

    def same_run(place: int, arm: str, fingerprint: str, same: dict[str, Any]) -> None:
        # Training never reads the arm's name: the same samples, cell and schedule give the same run.
        record = store.add({**same, "arm": arm, "fingerprint": fingerprint,
                            "same_run_as": same.get("same_run_as", same["arm"])})
        runs[place] = {**record, "cached": True}

    with tqdm(total=len(work), desc="RE runs", unit="run", disable=not progress) as bar:
        for place, (cell, arm, train, epoch_size) in enumerate(work):
            if not train:
                skipped.append({"arm": arm, "cell": cell.name, "reason": "empty training set"})
            else:
                fingerprint = run_fingerprint(profile, arm, cell, train, dev_digest, test_digest, epoch_size)
                content = run_fingerprint(profile, "", cell, train, dev_digest, test_digest, epoch_size)
                record = store.get(fingerprint)
                if record is not None:
                    by_content.setdefault(content, record)
                    runs[place] = {**record, "cached": True}
                elif content in by_content:
                    same_run(place, arm, fingerprint, by_content[content])
                elif content in jobs:  # another arm of this grid trains the same set: wait for its record
                    waiting.setdefault(content, []).append((place, arm, fingerprint))
                    continue
                else:
                    jobs[content] = (place, RunJob(arm, cell, tuple(train), epoch_size, fingerprint, content))
                    continue
            bar.update()
        places = {job.fingerprint: place for place, job in jobs.values()}
        inputs = GridInputs(profile, dev, test, results.cache)
        for job, result in executor_for(profile).run(inputs, [job for _, job in jobs.values()]):
            record = store.add({**result, "fingerprint": job.fingerprint, "content": job.content})
            runs[places[job.fingerprint]] = {**record, "cached": False}
            by_content.setdefault(job.content, record)
            for place, arm, fingerprint in waiting.pop(job.content, []):
                same_run(place, arm, fingerprint, record)
                bar.update()
            bar.update()
    return {"runs": [runs[place] for place in sorted(runs)], "skipped": skipped}


def executor_for(profile: Profile) -> Executor:
    """The profile's executor (``executor.kind``)."""
    return RayExecutor(profile.executor) if profile.executor.kind == "ray" else LocalExecutor()
