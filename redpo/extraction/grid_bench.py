"""``python -m redpo bench grid --backends local,ray``: notebook 04's RE grid trained from scratch by each executor.

Each executor trains every run of the grid (the results folder's K-shot splits and generations, the profile's dev
and test) into a run store of its own under ``bench_grid/<executor>/``, emptied first, so nothing is read from a
cache; the stores stay, so executors benchmarked one at a time (``--backends local``, then ``--backends ray``) are
still compared. Reported per executor: the wall
time of the grid (``ray`` also the time to start or join its cluster, apart), the workers that trained at once,
the runs' own cost (``train_seconds`` + ``predict_seconds`` as their records give them) and the overhead per run:
wall time x workers - the runs' own cost, over the runs. For the local loop that is loading, tokenizing and
scoring around the timed parts; for Ray it adds the worker processes' start, the encoder's load in each, moving
inputs and records, and workers idle at the end of the grid. Each executor's records are compared with every
other executor's store there, run by run: the same keys, identical predictions, the largest difference in micro-F1.
"""

from __future__ import annotations

import os
import platform
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from redpo.config import ConfigError, Profile, derive
from redpo.core.io import RUNS_CACHE, ResultsDir
from redpo.extraction.grid import run_training_sets
from redpo.extraction.ray_executor import connect
from redpo.extraction.run_store import RunRecord, RunStore
from redpo.extraction.training_sets import arm_training_sets, evaluation_sets, grid_cells

EXECUTORS = ("local", "ray")


def _cpu() -> str:
    """The CPU's model name (``/proc/cpuinfo``), for the report's provenance."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")


def _workers(profile: Profile) -> int:
    """How many runs train at once: one in this process, else the cluster's CPUs (or GPUs) over a run's share."""
    cfg = profile.executor
    if cfg.kind == "local":
        return 1
    import ray

    resources = ray.cluster_resources()
    slots = [int(resources.get("CPU", 0) // cfg.num_cpus)]
    if cfg.num_gpus:
        slots.append(int(resources.get("GPU", 0) // cfg.num_gpus))
    return max(1, min(slots))


def bench_grid(profile: Profile, results: ResultsDir, *, backends: Sequence[str] = EXECUTORS) -> dict[str, Any]:
    """The report described in the module docstring (``backends`` are executor kinds)."""
    unknown = sorted(set(backends) - set(EXECUTORS))
    if unknown:
        raise ConfigError(f"bench grid --backends: unknown executor(s) {unknown}; it takes {', '.join(EXECUTORS)}")
    dev, test = evaluation_sets(profile)
    splits = dict.fromkeys((c.k, c.split_seed) for c in grid_cells(profile))
    sets = {split: arm_training_sets(profile, results, *split) for split in splits}
    report: dict[str, Any] = {"cpu": _cpu(), "cores": os.cpu_count(), "threads": profile.encoder.threads,
                              "executors": {}, "agreement": {}}
    for kind in backends:
        prof = derive(profile, {"executor.kind": kind})
        row: dict[str, Any] = {}
        if kind == "ray":
            start = time.perf_counter()
            connect(prof.executor)
            row["cluster_start_seconds"] = round(time.perf_counter() - start, 2)
        scratch = results.root / "bench_grid" / kind
        shutil.rmtree(scratch, ignore_errors=True)
        start = time.perf_counter()
        grid = run_training_sets(prof, ResultsDir(prof, root=scratch), sets, dev, test, progress=False)
        wall = time.perf_counter() - start
        runs = [r for r in grid["runs"] if not r["cached"]]
        own = sum(r["train_seconds"] + r["predict_seconds"] for r in runs)
        workers = _workers(prof)
        row.update(wall_seconds=round(wall, 2), runs=len(runs), workers=workers,
                   run_seconds_mean=round(own / max(len(runs), 1), 2),
                   overhead_per_run_seconds=round((wall * workers - own) / max(len(runs), 1), 2))
        report["executors"][kind] = row
    stores = {kind: _trained(results, profile, kind) for kind in EXECUTORS}
    for kind in backends:
        for other in EXECUTORS:
            if other != kind and stores[other]:
                report["agreement"][f"{kind} vs {other}"] = _agreement(stores[kind], stores[other])
    return report


def _trained(results: ResultsDir, profile: Profile, kind: str) -> dict[str, dict[str, Any]]:
    """The runs an executor trained in its bench store (runs taken from another arm's set left out)."""
    store = ResultsDir(profile, root=results.root / "bench_grid" / kind).cache / RUNS_CACHE
    if not store.is_file():
        return {}
    return {k: r for k, r in RunStore(store, RunRecord).runs.items() if "same_run_as" not in r}


def _agreement(ours: dict[str, dict[str, Any]], theirs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    pairs = [(r, theirs[k]) for k, r in ours.items() if k in theirs]
    return {
        "runs": len(ours),
        "same_keys": sorted(ours) == sorted(theirs),
        "identical_predictions": sum(a["predictions"] == b["predictions"] for a, b in pairs),
        "max_abs_delta_micro_f1": max((abs(a["micro_f1"] - b["micro_f1"]) for a, b in pairs), default=None),
    }
