"""``executor.kind: ray``: each RE run is one Ray task; this process (the driver) sends the inputs and gets the
records back, and stays the only writer of the run store.

What reaches a worker, and how it is checked:

- the profile as its JSON, validated again on the worker;
- dev and test as KnowPrompt JSON, put in Ray's object store once per grid, and each run's training set with its
  task; the worker recomputes the run's fingerprint from what it received and refuses a mismatch, so a record is
  only ever stored under the key of the data it was trained on;
- the encoder's files, put in the object store once per model. A worker uses the driver's folder when it holds the
  same content (one machine, or a shared file system), else writes the files to
  ``REDPO_CACHE/models/shipped-<sha256>``; either way the folder must hash to the sha256 the manifest records. A
  worker never resolves a model name, so it never builds or downloads a model.

Ray moves these between its own processes with its own serialization; nothing redpo reads from disk is unpickled.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from redpo.config import ExecutorConfig, Profile, cache_dir
from redpo.core.sample import RESample
from redpo.extraction.executor import GridInputs, RunJob, torch_threads, train_run
from redpo.extraction.run_store import run_fingerprint, samples_digest
from redpo.extraction.training_sets import GridCell
from redpo.models.load import load_encoder
from redpo.models.packaged import hash_model_dir
from redpo.models.registry import ModelIntegrityError

OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
"""Set in every worker: whatever goes wrong, a worker never reaches the hub."""


@dataclass(frozen=True)
class ShippedModel:
    """A model folder in Ray's object store: where the driver has it, its content hash, and the files."""

    name: str
    sha256: str
    path: str
    files: list[Any]
    """One object ref to ``{relative path: bytes}``, inside a list so that Ray does not fetch it with every task."""


_SHIPPED: dict[tuple[str, str], ShippedModel] = {}
"""Models already put in the object store, by (sha256, Ray job): each grid of a process reuses them."""


def connect(cfg: ExecutorConfig) -> None:
    """Join the cluster ``executor.address`` names, or start the private one (once per process)."""
    import ray

    if ray.is_initialized():
        return
    quiet = {"log_to_driver": False, "logging_level": "warning"}  # worker logs stay in Ray's session folder
    if cfg.address == "local":
        ray.init(address="local", num_cpus=cfg.local_cpus, include_dashboard=False, **quiet)
    else:
        ray.init(address=cfg.address, **quiet)


def ship_model(name: str) -> ShippedModel:
    """The driver's copy of model ``name`` (resolved as the manifest records it), in the object store."""
    import ray

    info = load_encoder(name).info
    key = (info.sha256, ray.get_runtime_context().get_job_id())
    if key not in _SHIPPED:
        root = Path(info.path)
        files = {p.relative_to(root).as_posix(): p.read_bytes()
                 for p in sorted(root.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}
        _SHIPPED[key] = ShippedModel(info.name, info.sha256, str(root), [ray.put(files)])
    return _SHIPPED[key]


def local_copy(model: ShippedModel) -> str:
    """A folder on this node with exactly the shipped model's content (see the module docstring)."""
    import ray

    source = Path(model.path)
    if source.is_dir() and hash_model_dir(source) == model.sha256:
        return str(source)
    target = cache_dir() / "models" / f"shipped-{model.sha256[:16]}"
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{target}.lock"):  # workers of one node write the copy once
        if target.is_dir() and hash_model_dir(target) == model.sha256:
            return str(target)
        files: dict[str, bytes] = ray.get(model.files[0])
        scratch = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
        try:
            for rel, data in files.items():
                (scratch / rel).parent.mkdir(parents=True, exist_ok=True)
                (scratch / rel).write_bytes(data)
            actual = hash_model_dir(scratch)
            if actual != model.sha256:
                raise ModelIntegrityError(f"the files of {model.name} shipped to this worker hash to {actual[:16]}…,"
                                          f" not {model.sha256[:16]}…; the driver's folder {model.path} changed "
                                          "while the grid ran: rerun")
            shutil.rmtree(target, ignore_errors=True)  # a copy another content left there
            os.replace(scratch, target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return str(target)


def train_task(profile_json: dict[str, Any], job: dict[str, Any], dev: list[dict[str, Any]],
               test: list[dict[str, Any]], encoder: ShippedModel) -> dict[str, Any]:
    """One run on a worker: the inputs rebuilt and checked against the run's fingerprint, then :func:`train_run`
    with ``executor.num_cpus`` torch threads (or ``encoder.threads``)."""
    os.environ.update(OFFLINE)
    profile = Profile.model_validate(profile_json)
    run = RunJob(job["arm"], GridCell(*job["cell"]), tuple(RESample.from_json(s) for s in job["train"]),
                 job["epoch_size"], job["fingerprint"], job["content"])
    dev_samples, test_samples = [RESample.from_json(s) for s in dev], [RESample.from_json(s) for s in test]
    received = run_fingerprint(profile, run.arm, run.cell, run.train, samples_digest(dev_samples),
                               samples_digest(test_samples), run.epoch_size)
    if received != run.fingerprint:
        raise RuntimeError(f"run {run.arm} {run.cell.name}: the inputs this worker received fingerprint to "
                           f"{received[:16]}…, not {run.fingerprint[:16]}…; the worker runs other redpo code than "
                           "the driver (install the same checkout on every node)")
    inputs = GridInputs(profile, dev_samples, test_samples)
    with torch_threads(profile.encoder.threads or profile.executor.num_cpus):
        return train_run(inputs, run, encoder_source=local_copy(encoder))


def _job_json(job: RunJob) -> dict[str, Any]:
    cell = job.cell
    return {"arm": job.arm, "cell": [cell.k, cell.split_seed, cell.seed_index], "train": [s.to_json() for s in
            job.train], "epoch_size": job.epoch_size, "fingerprint": job.fingerprint, "content": job.content}


class RayExecutor:
    """Every run one task with the profile's resources (``executor.num_cpus``, ``executor.num_gpus``); records come
    back in the order they finish. A task whose worker died is re-run by Ray (``executor.max_retries``); a task
    that raised fails the grid after the runs already back were handed over, and the rest are cancelled."""

    def __init__(self, cfg: ExecutorConfig, task: Any = train_task) -> None:
        self.cfg = cfg
        self.task = task
        """The function each task runs (a test swaps in one that kills its own worker)."""

    def run(self, inputs: GridInputs, jobs: Sequence[RunJob]) -> Iterator[tuple[RunJob, dict[str, Any]]]:
        if not jobs:
            return
        import ray

        connect(self.cfg)
        remote = ray.remote(self.task).options(num_cpus=self.cfg.num_cpus, num_gpus=self.cfg.num_gpus,
                                               max_retries=self.cfg.max_retries)
        profile_json = inputs.profile.model_dump(mode="json")
        dev = ray.put([s.to_json() for s in inputs.dev])
        test = ray.put([s.to_json() for s in inputs.test])
        encoder = ship_model(inputs.profile.encoder.model)
        pending = {remote.remote(profile_json, _job_json(job), dev, test, encoder): job for job in jobs}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                job = pending.pop(done[0])
                yield job, ray.get(done[0])
        finally:  # an error, or the caller stopped: nothing of this grid keeps training
            for ref in pending:
                ray.cancel(ref, force=True)
