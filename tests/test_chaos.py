"""Chaos: notebook 02 killed with SIGKILL at random cache lines, restarted, ends exactly where an uninterrupted run
does, and its cache holds every call once."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

pytestmark = pytest.mark.slow
KILLS = 3
SEED = 20261127


def _start(results: Path, data_root: Path, only: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "REDPO_RESULTS_DIR": str(results), "REDPO_DATA_DIR": str(data_root)}
    env.pop("REDPO_RESULTS_LOCK", None)
    return subprocess.Popen([sys.executable, "-m", "redpo", "run", "--profile", "smoke", "--only", only,
                             "--no-progress"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)


def _kill_tree(pid: int) -> None:
    """SIGKILL the runner and everything below it: Jupyter starts the kernel in a session of its own, and the
    kernel starts llama-server, so a process-group kill would leave both running."""
    root = psutil.Process(pid)
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGKILL)


def _finish(proc: subprocess.Popen[bytes]) -> None:
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err.decode()[-3000:]


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.is_file() else 0


def _generations(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / "smoke" / "generations").glob("*.jsonl"))}


def test_killed_and_restarted_generation_equals_an_uninterrupted_run(tmp_path: Path, data_root: Path) -> None:
    reference = tmp_path / "reference"
    _finish(_start(reference, data_root, "00,01,02"))  # 02 reads 01's baseline
    cache = "smoke/cache/llm_calls.jsonl"
    total = _lines(reference / cache)
    assert total > KILLS + 1, f"notebook 02 wrote only {total} cache lines"

    chaos = tmp_path / "chaos"
    _finish(_start(chaos, data_root, "00,01"))
    targets = sorted(np.random.default_rng(SEED).choice(np.arange(1, total), size=KILLS, replace=False).tolist())
    for target in targets:
        proc = _start(chaos, data_root, "02")
        while _lines(chaos / cache) < target and proc.poll() is None:
            time.sleep(0.02)
        assert proc.poll() is None, "notebook 02 finished before the kill point"
        _kill_tree(proc.pid)
        proc.wait(timeout=60)
    _finish(_start(chaos, data_root, "02"))

    assert _generations(chaos) == _generations(reference) and _generations(reference)
    keys = [e["key"] for line in (chaos / cache).read_text().splitlines() if line.strip()
            for e in json.loads(line)["entries"]]
    assert len(keys) == len(set(keys)), "a call was answered twice"
