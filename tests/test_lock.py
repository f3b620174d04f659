"""One writer per results folder: a second run is refused at once, naming the holder; the first is unharmed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from redpo.core import lock


def _redpo(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "redpo", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _env(results: Path, data_root: Path) -> dict[str, str]:
    env = {**os.environ, "REDPO_RESULTS_DIR": str(results), "REDPO_DATA_DIR": str(data_root)}
    env.pop(lock.HELD_ENV, None)
    return env


def test_a_held_folder_refuses_a_second_run_with_one_line(tmp_path: Path, data_root: Path) -> None:
    folder = tmp_path / "smoke"
    with lock.hold_results(folder):
        assert os.environ[lock.HELD_ENV] == str(folder.resolve())  # what the run's kernels inherit
        proc = _redpo("run", "--profile", "smoke", "--only", "00", env=_env(tmp_path, data_root))
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ")
        assert str(folder) in lines[0] and f"pid {os.getpid()}" in lines[0] and "-p name=" in lines[0]
        with lock.hold_results(folder):  # re-entrant within the holder (a figures call inside a run)
            pass
    assert lock.HELD_ENV not in os.environ and not (folder / lock.OWNER_NAME).exists()
    with lock.hold_results(folder):  # released: the next run takes it
        pass


def test_a_hand_run_notebook_holds_the_folder_for_its_kernel(tmp_path: Path, data_root: Path) -> None:
    """``setup()`` in a kernel not started by ``run`` locks the folder until the kernel exits."""
    code = (f"from redpo.run.notebook import setup; setup('smoke', {str(tmp_path)!r}); print('held', flush=True); "
            "import sys; sys.stdin.readline()")
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=_env(tmp_path, data_root))
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(lock.ResultsInUse, match=f"pid {holder.pid}"):
            lock.hold_results(tmp_path / "smoke").__enter__()
    finally:
        holder.communicate("\n", timeout=60)
    with lock.hold_results(tmp_path / "smoke"):  # the kernel exited: the lock went with it
        pass


@pytest.mark.slow
def test_two_runs_started_together_one_runs_the_other_exits_2(tmp_path: Path, data_root: Path) -> None:
    env = _env(tmp_path, data_root)
    first = _redpo("run", "--profile", "smoke", "--only", "00", "--no-progress", env=env)
    owner_file = tmp_path / "smoke" / lock.OWNER_NAME
    deadline = time.monotonic() + 120
    while not owner_file.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    second = _redpo("run", "--profile", "smoke", "--only", "00", "--no-progress", env=env)
    _, err2 = second.communicate(timeout=120)
    _, err1 = first.communicate(timeout=600)
    assert second.returncode == 2 and f"pid {first.pid}" in err2, err2
    assert first.returncode == 0, err1[-2000:]
    assert (tmp_path / "smoke" / "metrics" / "data.json").is_file()


def test_an_unwritable_results_root_is_one_error_line(tmp_path: Path, data_root: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    proc = _redpo("run", "--profile", "smoke", "--only", "00", "--results-dir", str(blocker),
                  env=_env(tmp_path, data_root))
    _, err = proc.communicate(timeout=120)
    lines = err.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "cannot write there" in lines[0], err


def test_a_folder_held_by_another_notebooks_kernel_says_to_shut_that_kernel_down(tmp_path: Path) -> None:
    """In JupyterLab each notebook has its own kernel: 01 opened while 00's kernel lives meets 00's lock."""
    folder = tmp_path / "smoke"
    with lock.hold_results(folder):
        owner = json.dumps({"pid": 1, "command": "/venv/ipykernel_launcher.py -f /run/kernel-1.json"})
        (folder / lock.OWNER_NAME).write_text(owner)
        with pytest.raises(lock.ResultsInUse, match="Kernel > Shut Down Kernel"):
            lock._acquire(folder)
