"""``executor: ray``: the RE grid as Ray tasks on a local cluster (``ray.init(num_cpus=2)``) stores what the local
loop stores, resumes from the store, and loses or repeats nothing when a worker or the driver is killed (slow); a
worker without the driver's model folder gets the shipped files, checked (fast, no cluster)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from test_re_grid import RELATIONS, _profile, _results, _s

from redpo.config import Profile
from redpo.extraction import grid
from redpo.extraction.grid import run_grid
from redpo.extraction.ray_executor import RayExecutor

ray = pytest.importorskip("ray", reason="the optional ray extra is not installed (make setup EXTRAS=ray)")

TIMINGS = {"train_seconds", "predict_seconds"}
"""What two trainings of one run may differ in: wall time."""


@pytest.fixture(scope="module")
def local_cluster() -> Any:
    """A local Ray cluster of two CPUs, shared by this module's tests (``executor.address: local`` is not needed:
    the executor joins the cluster this process already has)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _store(folder: Path) -> dict[str, dict[str, Any]]:
    """The run store's records by fingerprint (a torn last line left out); a fingerprint stored twice fails here."""
    complete = (folder / "re_runs.jsonl").read_text().split("\n")[:-1]
    rows = [json.loads(line) for line in complete]
    by_key = {r["fingerprint"]: r for r in rows}
    assert len(by_key) == len(rows), "a run was stored twice"
    return by_key


def _notebook_04_runs(results: Path) -> dict[str, dict[str, Any]]:
    """The local store's records of notebook 04's grid alone (the shared smoke run's store also holds the plateau's
    and the ladder's runs), by the fingerprints its ``metrics/re_results.json`` lists."""
    grid = {run["fingerprint"] for run in json.loads((results / "metrics" / "re_results.json").read_text())["runs"]}
    return {key: record for key, record in _store(results / "cache").items() if key in grid}


def _same_runs(ours: dict[str, dict[str, Any]], theirs: dict[str, dict[str, Any]]) -> None:
    """The same run keys, and per key the same record (predictions, metrics, steps) but for wall times."""
    assert sorted(ours) == sorted(theirs)
    for key, record in ours.items():
        assert {k: v for k, v in record.items() if k not in TIMINGS} == {
            k: v for k, v in theirs[key].items() if k not in TIMINGS}, record["arm"]


def _tiny(tmp_path: Path, name: str, **overrides: Any) -> tuple[Profile, Any, list[Any]]:
    """The tiny grid of ``test_re_grid`` in its own results folder, with its dev = test sentences."""
    prof = _profile(**{"fewshot.k": [2], "encoder.epochs": 1, "encoder.threads": 1, **overrides})
    return prof, _results(tmp_path / name, prof), [_s(i, rel, "t") for rel in RELATIONS for i in range(2)]


@pytest.mark.slow
def test_ray_grid_stores_what_the_local_loop_stores_and_resumes(tmp_path: Path, local_cluster: Any) -> None:
    local_prof, local, samples = _tiny(tmp_path, "local")
    ray_prof, remote, _ = _tiny(tmp_path, "ray", executor="ray")
    first = run_grid(local_prof, local, samples, samples, progress=False)
    by_ray = run_grid(ray_prof, remote, samples, samples, progress=False)
    _same_runs(_store(remote.cache), _store(local.cache))  # one thread per task: the very same predictions
    assert [(r["arm"], r["cell"], r["cached"]) for r in by_ray["runs"]] == [
        (r["arm"], r["cell"], r["cached"]) for r in first["runs"]]  # same order, same runs shared by content
    again = run_grid(ray_prof, remote, samples, samples, progress=False)
    assert all(r["cached"] for r in again["runs"])  # resume: nothing in the store is submitted


@pytest.mark.slow
def test_a_killed_worker_loses_no_run_and_stores_none_twice(tmp_path: Path, local_cluster: Any,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    local_prof, local, samples = _tiny(tmp_path, "local")
    ray_prof, remote, _ = _tiny(tmp_path, "ray", executor="ray")
    marks = tmp_path / "killed"
    marks.mkdir()
    doomed = {"manual", "manual-steps"}  # two runs of their own (arms sharing a set are not submitted)

    def dies_once(profile_json: dict[str, Any], job: dict[str, Any], *rest: Any) -> dict[str, Any]:
        """Two arms' first attempts SIGKILL their own worker process; Ray runs them again."""
        from redpo.extraction.ray_executor import train_task

        mark = marks / job["fingerprint"]
        if job["arm"] in doomed and not mark.exists():
            mark.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return train_task(profile_json, job, *rest)

    monkeypatch.setattr(grid, "executor_for", lambda profile: RayExecutor(profile.executor, task=dies_once))
    run_grid(ray_prof, remote, samples, samples, progress=False)
    assert {p.name for p in marks.iterdir()} and len(list(marks.iterdir())) == len(doomed)  # both workers died
    run_grid(local_prof, local, samples, samples, progress=False)
    _same_runs(_store(remote.cache), _store(local.cache))


@pytest.mark.slow
def test_bench_grid_times_each_executor_and_finds_their_runs_identical(
    tmp_path: Path, local_cluster: Any, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from redpo.extraction.grid_bench import bench_grid

    monkeypatch.setenv("REDPO_DATA_DIR", str(data_root))  # dev and test: small subsets of the real splits
    prof, results, _ = _tiny(tmp_path, "bench")
    prof = prof.model_copy(update={"dataset": prof.dataset.model_copy(update={"test_subsample": 8,
                                                                             "dev_subsample": 8})})
    local = bench_grid(prof, results, backends=["local"])
    assert local["agreement"] == {} and local["executors"]["local"]["workers"] == 1
    on_ray = bench_grid(prof, results, backends=["ray"])  # one at a time: compared through the stores they left
    row = on_ray["executors"]["ray"]
    assert row["workers"] == 2 and row["runs"] == local["executors"]["local"]["runs"] > 0
    agreement = on_ray["agreement"]["ray vs local"]
    assert agreement["same_keys"] and agreement["identical_predictions"] == agreement["runs"]
    assert agreement["max_abs_delta_micro_f1"] == 0


def test_a_worker_without_the_drivers_folder_writes_the_shipped_files_once_and_checks_their_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node that lacks the driver's model folder (another machine, no shared file system) writes the files from
    the object store to ``REDPO_CACHE/models/shipped-<sha256>`` once, and refuses files that hash to another sha256."""
    from redpo.extraction.ray_executor import ShippedModel, local_copy
    from redpo.models.packaged import hash_model_dir
    from redpo.models.registry import ModelIntegrityError

    files = {"config.json": b"{}", "sub/model.safetensors": b"weights"}
    driver = tmp_path / "driver"
    for rel, data in files.items():
        (driver / rel).parent.mkdir(parents=True, exist_ok=True)
        (driver / rel).write_bytes(data)
    sha = hash_model_dir(driver)
    fetched: list[Any] = []
    monkeypatch.setattr(ray, "get", lambda ref: fetched.append(ref) or ref)  # the object store, without a cluster
    monkeypatch.setenv("REDPO_CACHE", str(tmp_path / "cache"))
    assert local_copy(ShippedModel("m", sha, str(driver), [files])) == str(driver) and not fetched  # same content
    elsewhere = ShippedModel("m", sha, str(tmp_path / "not-on-this-node"), [files])
    copy = Path(local_copy(elsewhere))
    assert copy.parent == tmp_path / "cache" / "models" and copy.name.startswith("shipped-")
    assert {rel: (copy / rel).read_bytes() for rel in files} == files
    assert local_copy(elsewhere) == str(copy) and len(fetched) == 1  # the second task finds the copy
    with pytest.raises(ModelIntegrityError, match="changed while the grid ran"):
        local_copy(ShippedModel("m", "0" * 64, elsewhere.path, [files]))
    assert sorted(p.name for p in copy.parent.iterdir() if p.is_dir()) == [copy.name]  # no half-written copy left


# ---- notebook 04 on smoke, driver killed -----------------------------------------------------------------------
def _kernel_of(runner: subprocess.Popen[bytes]) -> int | None:
    """The notebook's kernel (the Ray driver): the runner's child process that runs ipykernel."""
    for child in psutil.Process(runner.pid).children(recursive=True):
        try:
            if any("ipykernel" in part for part in child.cmdline()):
                return child.pid
        except psutil.NoSuchProcess:
            continue
    return None


AGENTS = {"ray::DashboardAgent", "ray::RuntimeEnvAgent"}
"""A node's agent processes: they run no task and exit when they find the raylet gone, which takes them longer."""


def _name(process: psutil.Process) -> str:
    try:
        return process.name()
    except psutil.NoSuchProcess:
        return ""


def _still_running(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Those of ``processes`` still running after up to ``timeout`` seconds. A zombie counts as ended: it runs
    nothing, and where the container's init does not reap orphans, the exited agents of a killed cluster stay
    zombies (``psutil.wait_procs`` would count them as alive)."""

    def running(p: psutil.Process) -> bool:
        try:
            return p.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    deadline = time.monotonic() + timeout
    alive = [p for p in processes if running(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.5)
        alive = [p for p in alive if running(p)]
    return alive


@pytest.mark.slow
def test_notebook_04_on_ray_matches_the_local_store_after_its_driver_is_killed(
    smoke_pipeline: Path, data_root: Path, tmp_path: Path
) -> None:
    """Notebook 04 on smoke with ``executor: ray`` (a private cluster of 2 CPUs), its kernel SIGKILLed once
    mid-grid and run again: the store holds the local run's keys and predictions, each once, and the restart
    trained only what the killed run had not stored."""
    root = tmp_path / "results"
    shutil.copytree(smoke_pipeline, root / "smoke", ignore=shutil.ignore_patterns("re_runs.jsonl"))
    env = {**os.environ, "REDPO_RESULTS_DIR": str(root), "REDPO_DATA_DIR": str(data_root)}
    command = [sys.executable, "-m", "redpo", "run", "--profile", "smoke", "--only", "04", "--no-progress",
               "-p", "executor.kind=ray", "-p", "executor.local_cpus=2"]
    store = root / "smoke" / "cache" / "re_runs.jsonl"
    runner = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    while not (store.is_file() and len(store.read_text().splitlines()) >= 4) and runner.poll() is None:
        assert time.monotonic() < deadline, "no run stored within 10 minutes"
        time.sleep(0.2)
    kernel = _kernel_of(runner)
    assert kernel is not None and runner.poll() is None, "the grid finished before the driver could be killed"
    ray_processes = psutil.Process(kernel).children(recursive=True)  # the private cluster: raylet, GCS, workers
    assert ray_processes
    os.kill(kernel, signal.SIGKILL)
    runner.wait(timeout=120)
    agents = [p for p in ray_processes if _name(p) in AGENTS]
    alive = _still_running([p for p in ray_processes if p not in agents], timeout=60)
    assert not alive, f"the killed driver left Ray processes training: {[p.pid for p in alive]}"
    # The node's agents train nothing; they notice the raylet is gone on their own slower health check
    alive = _still_running(agents, timeout=240)
    assert not alive, f"the killed driver's cluster left agents behind: {[p.pid for p in alive]}"
    local = _notebook_04_runs(smoke_pipeline)
    before = _store(store.parent)
    assert 4 <= len(before) < len(local), "killed after the grid, not mid-grid"
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    after = _store(store.parent)
    _same_runs(after, local)
    assert all(after[key] == record for key, record in before.items())  # the killed run's records kept as they were
    runs = json.loads((root / "smoke" / "metrics" / "re_results.json").read_text())["runs"]
    trained_now = {r["fingerprint"] for r in runs if not r["cached"]}
    assert trained_now and not trained_now & set(before)  # nothing stored before the kill was trained again
    assert trained_now == {k for k, r in after.items() if k not in before and "same_run_as" not in r}
