"""Chaos: notebook 02 killed with SIGKILL mid-generation (the whole run, the kernel alone, or the llama-server
alone), restarted, ends exactly where an uninterrupted run does, and its cache holds every call once.

Every test starts from one copy of the same finished notebooks 00-01 and compares with one uninterrupted run of 02
on another copy, so each costs only its own runs of notebook 02.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil
import pytest

pytestmark = pytest.mark.slow
KILLS = 3
SEED = 20261127
CACHE = "smoke/cache/llm_calls.jsonl"
Picker = Callable[[psutil.Process], list[psutil.Process]]
"""The processes to SIGKILL, given the runner's process."""


def _start(results: Path, data_root: Path, only: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "REDPO_RESULTS_DIR": str(results), "REDPO_DATA_DIR": str(data_root)}
    env.pop("REDPO_RESULTS_LOCK", None)
    return subprocess.Popen([sys.executable, "-m", "redpo", "run", "--profile", "smoke", "--only", only,
                             "--no-progress"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)


def _tree(runner: psutil.Process) -> list[psutil.Process]:
    """The runner and everything below it: Jupyter starts the kernel in a session of its own, and the kernel starts
    llama-server, so a process-group kill would leave both running."""
    return [runner, *runner.children(recursive=True)]


def _matching(runner: psutil.Process, wanted: Callable[[list[str]], bool]) -> list[psutil.Process]:
    found = []
    for proc in runner.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            if wanted(proc.cmdline()):
                found.append(proc)
    return found


def _kernel(runner: psutil.Process) -> list[psutil.Process]:
    return _matching(runner, lambda argv: any("ipykernel" in part for part in argv))


def _server(runner: psutil.Process) -> list[psutil.Process]:
    return _matching(runner, lambda argv: bool(argv) and argv[0].endswith("llama-server"))


def _finish(proc: subprocess.Popen[bytes]) -> None:
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err.decode()[-3000:]


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.is_file() else 0


def _generations(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / "smoke" / "generations").glob("*.jsonl"))}


def _keys(root: Path) -> list[str]:
    """Every answered key, once per cache entry: a key answered twice appears twice."""
    return [e["key"] for line in (root / CACHE).read_text().splitlines() if line.strip()
            for e in json.loads(line)["entries"]]


@pytest.fixture(scope="module")
def after_01(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Path:
    """Notebooks 00-01 finished once (02 reads 01's baseline); each test works on a copy."""
    root = tmp_path_factory.mktemp("chaos") / "after_01"
    _finish(_start(root, data_root, "00,01"))
    return root


@pytest.fixture(scope="module")
def reference(after_01: Path, data_root: Path) -> Path:
    root = after_01.parent / "reference"
    shutil.copytree(after_01, root)
    _finish(_start(root, data_root, "02"))
    assert _lines(root / CACHE) > _lines(after_01 / CACHE) + KILLS, "notebook 02 wrote too few cache lines"
    return root


def _kill_at(results: Path, data_root: Path, target: int, pick: Picker) -> int | None:
    """Run notebook 02 until the cache holds ``target`` lines, SIGKILL what ``pick`` names; the run's exit code."""
    proc = _start(results, data_root, "02")
    while _lines(results / CACHE) < target and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, "notebook 02 finished before the kill point"
    victims = pick(psutil.Process(proc.pid))
    assert victims, "nothing to kill"
    for victim in victims:
        with contextlib.suppress(psutil.NoSuchProcess):
            victim.send_signal(signal.SIGKILL)
    proc.wait(timeout=120)
    return proc.returncode


def _assert_resumed_exactly(chaos: Path, reference: Path, data_root: Path) -> None:
    _finish(_start(chaos, data_root, "02"))
    assert _generations(chaos) == _generations(reference) and _generations(reference)
    keys = _keys(chaos)
    assert len(keys) == len(set(keys)), "a call was answered twice"
    assert set(keys) == set(_keys(reference)), "the resumed run asked other calls than an uninterrupted one"
    assert sorted((chaos / "smoke" / "logs").glob("llama-server*.pid")) == []  # the killed kernel's was cleared


def test_killed_and_restarted_generation_equals_an_uninterrupted_run(
    tmp_path: Path, data_root: Path, after_01: Path, reference: Path
) -> None:
    chaos = tmp_path / "chaos"
    shutil.copytree(after_01, chaos)
    first, total = _lines(after_01 / CACHE), _lines(reference / CACHE)
    targets = sorted(np.random.default_rng(SEED).choice(np.arange(first + 1, total), size=KILLS,
                                                        replace=False).tolist())
    for target in targets:
        assert _kill_at(chaos, data_root, target, _tree) == -signal.SIGKILL
    _assert_resumed_exactly(chaos, reference, data_root)


@pytest.mark.parametrize("victim", [_kernel, _server], ids=["kernel", "llama-server"])
def test_a_kernel_or_server_killed_alone_resumes_exactly(
    victim: Picker, tmp_path: Path, data_root: Path, after_01: Path, reference: Path
) -> None:
    """The run outlives what was killed: it reports notebook 02 failed (exit 1), and a rerun ends where an
    uninterrupted run does. A server killed alone fails its in-flight requests; a kernel killed alone takes its
    server with it (PR_SET_PDEATHSIG) and leaves a pid file that the next start clears."""
    chaos = tmp_path / "chaos"
    shutil.copytree(after_01, chaos)
    first, total = _lines(after_01 / CACHE), _lines(reference / CACHE)
    assert _kill_at(chaos, data_root, first + (total - first) // 2, victim) == 1
    _assert_resumed_exactly(chaos, reference, data_root)
