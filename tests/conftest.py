"""Shared fixtures. Real data comes from ``REDPO_DATA_DIR`` (``make data`` fills ``data/`` from the mirror)."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from redpo.config import REPO_ROOT, data_dir

FIXTURES = Path(__file__).parent / "fixtures"

pytest_plugins = ["pytester"]  # test_pipeline_golden runs its own module as an unpinned machine would


def _real_data_root() -> Path:
    root = data_dir()
    if (root / "semeval2010_task8").is_dir():
        return root
    mirror = Path(os.environ.get("REDPO_DATA_MIRROR") or REPO_ROOT.parent / "shared" / "data")
    if (mirror / "semeval2010_task8").is_dir():
        return mirror
    raise RuntimeError(f"no SemEval data under {root} or {mirror}; run `make data` (see README 'Data')")


@pytest.fixture(scope="session")
def data_root() -> Path:
    """Folder holding ``semeval2010_task8/`` and ``fewrel/`` (real data, read-only)."""
    return _real_data_root()


@pytest.fixture()
def results_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point ``REDPO_RESULTS_DIR`` at a temporary folder so tests never touch ``results/``."""
    monkeypatch.setenv("REDPO_RESULTS_DIR", str(tmp_path / "results"))
    return tmp_path / "results"


@pytest.fixture()
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def smoke_pipeline(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Path:
    """Run ``python -m redpo run --profile smoke`` over every notebook once; return ``<results>/smoke``.

    One shared run keeps the suite fast: each notebook's test reads the metrics files this run wrote
    (never notebook outputs). A failed run fails every test that uses it, with the runner's error.
    """
    import subprocess
    import sys

    results = tmp_path_factory.mktemp("smoke_results")
    env = {**os.environ, "REDPO_RESULTS_DIR": str(results), "REDPO_DATA_DIR": str(data_root)}
    proc = subprocess.run(
        [sys.executable, "-m", "redpo", "run", "--profile", "smoke", "--no-progress"],
        capture_output=True, text=True, env=env, timeout=1200,
    )
    if proc.returncode != 0:
        pytest.fail(f"smoke pipeline failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return results / "smoke"


@pytest.fixture()
def small_semeval(data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The first 10 lines of each label of each real SemEval split in a private data folder (REDPO_DATA_DIR)."""
    src = data_root / "semeval2010_task8" / "knowprompt_split"
    dst = tmp_path / "semeval2010_task8" / "knowprompt_split"
    dst.mkdir(parents=True)
    (dst / "rel2id.json").write_bytes((src / "rel2id.json").read_bytes())
    for name in ("train.txt", "val.txt", "test.txt"):
        seen: Counter[str] = Counter()
        keep = []
        for line in (src / name).read_bytes().splitlines(keepends=True):
            label = json.loads(line)["relation"]
            seen[label] += 1
            if seen[label] <= 10:
                keep.append(line)
        (dst / name).write_bytes(b"".join(keep))
    monkeypatch.setenv("REDPO_DATA_DIR", str(tmp_path))
    return dst


@pytest.fixture()
def tmp_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A throwaway ``REDPO_CACHE`` and an empty in-process model LRU, so tests never see each other's models."""
    from redpo.models.load import clear_model_cache

    monkeypatch.setenv("REDPO_CACHE", str(tmp_path / "cache"))
    clear_model_cache()
    yield tmp_path / "cache"
    clear_model_cache()
