"""The runner end to end: the smoke profile through notebook 00, and a failing notebook stopping the run."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fakes import write_notebook

from redpo.__main__ import BENCHMARKS, parse_overrides
from redpo.config import load_profile
from redpo.core.manifest import load_manifest, output_files
from redpo.run.console import format_table
from redpo.run.runner import RunnerError, discover


def redpo_cli(*args: str, data_root: Path, results: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REDPO_RESULTS_DIR": str(results), "REDPO_DATA_DIR": str(data_root)}
    return subprocess.run([sys.executable, "-m", "redpo", *args], capture_output=True, text=True, env=env, timeout=900)


@pytest.mark.slow
def test_smoke_pipeline_succeeds_with_full_provenance(smoke_pipeline: Path) -> None:
    run_dir = smoke_pipeline
    manifest = json.loads((run_dir / "manifest.json").read_text())
    notebooks = sorted(p.name for p in discover())
    assert sorted(manifest["notebooks"]) == notebooks
    for name, entry in manifest["notebooks"].items():
        assert entry["status"] == "succeeded" and entry["seconds"] > 0 and entry["error"] is None, name
        assert (run_dir / "notebooks" / name).is_file()
    assert manifest["profile"] == "smoke"
    assert manifest["profile_config"]["fewshot"]["k"] == load_profile("smoke").fewshot.k
    assert manifest["data_files"] and manifest["environment"]["packages"]["papermill"]
    assert set(manifest["git"]) == {"commit", "dirty"}
    assert {m["source"] for m in manifest["models"].values()} <= {"tiny", "local"}  # local: the DPO adapters
    assert all(len(m["sha256"]) == 64 for m in manifest["models"].values())
    kshot = [p for p in (run_dir / "kshot").rglob("*") if p.is_file()]
    assert kshot, "notebook 00 wrote no K-shot split"
    assert json.loads((run_dir / "metrics" / "data.json").read_text())
    listed = manifest["files"]
    assert "notebooks/00_data.ipynb" in listed and "metrics/data.json" in listed
    assert not any(path.startswith("cache/") for path in listed)
    assert all(len(f["sha256"]) == 64 for f in listed.values())


@pytest.mark.slow  # runs a notebook
def test_failing_notebook_stops_the_run_and_is_named(data_root: Path, results_tmp: Path, tmp_path: Path) -> None:
    nbdir = tmp_path / "nbs"
    nbdir.mkdir()
    write_notebook(nbdir / "00_ok.ipynb", "x = 1")
    write_notebook(nbdir / "01_boom.ipynb", "y = 2", "raise ValueError('the data is upside down')")
    write_notebook(nbdir / "02_never.ipynb", "open('ran.txt', 'w').write('should not run')")
    proc = redpo_cli(
        "run",
        "--profile",
        "smoke",
        "--notebooks-dir",
        str(nbdir),
        "-p",
        "seed=7",
        "--no-progress",
        data_root=data_root,
        results=results_tmp,
    )
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    # In [4]: the executed copy's numbering (its own parameters cell, papermill's injected one, y = 2, raise)
    assert "01_boom.ipynb" in last and "ValueError: the data is upside down" in last and "cell In [4]" in last
    assert "Traceback" not in proc.stderr
    manifest = load_manifest(results_tmp / "smoke")
    assert manifest["overrides"] == {"seed": 7}
    assert manifest["notebooks"]["00_ok.ipynb"]["status"] == "succeeded"
    assert manifest["notebooks"]["01_boom.ipynb"]["status"] == "failed"
    assert "02_never.ipynb" not in manifest["notebooks"]
    assert not (nbdir / "ran.txt").exists()
    assert (results_tmp / "smoke" / "notebooks" / "01_boom.ipynb").is_file()


def test_bad_override_is_one_clean_line(data_root: Path, results_tmp: Path) -> None:
    proc = redpo_cli("run", "--profile", "smoke", "-p", "fewshot.k=[0]", data_root=data_root, results=results_tmp)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "fewshot.k" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_discover_orders_and_filters(tmp_path: Path) -> None:
    for name in ("10_late", "02_b", "00_a", "notes"):
        write_notebook(tmp_path / f"{name}.ipynb")
    assert [p.name for p in discover(tmp_path)] == ["00_a.ipynb", "02_b.ipynb", "10_late.ipynb"]
    assert [p.name for p in discover(tmp_path, ["2", "10"])] == ["02_b.ipynb", "10_late.ipynb"]
    with pytest.raises(RunnerError, match="--only 07: no such notebook"):
        discover(tmp_path, ["07"])


def test_output_files_skip_cache_checkpoints_and_manifest(tmp_path: Path) -> None:
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "big.bin").write_bytes(b"x" * 10)
    (tmp_path / "adapters" / "A" / "checkpoints" / "checkpoint-5").mkdir(parents=True)
    (tmp_path / "adapters" / "A" / "checkpoints" / "checkpoint-5" / "optimizer.pt").write_bytes(b"x")
    (tmp_path / "adapters" / "A" / "checkpoints" / "fingerprint").write_text("f")
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "m.json").write_text("{}")
    (tmp_path / "manifest.json").write_text("{}")
    (tmp_path / "RUNLOG.md").write_text("# how the run went\n")  # written by people, no output of the run
    files = output_files(tmp_path)
    assert list(files) == ["metrics/m.json"] and files["metrics/m.json"]["bytes"] == 2
    (tmp_path / "checkpoints.json").write_text("{}")  # only a folder of that name is training state
    assert "checkpoints.json" in output_files(tmp_path)


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_registered_benchmarks_exist(name: str) -> None:
    """Checked by parsing, not importing: a benchmark module may pull in torch and transformers."""
    module, _, func = BENCHMARKS[name].partition(":")
    spec = importlib.util.find_spec(module)
    assert spec and spec.origin, f"bench {name}: no module {module}"
    tree = ast.parse(Path(spec.origin).read_text())
    assert func in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}, f"bench {name}: no {func}"


def test_cli_helpers() -> None:
    assert parse_overrides(["a.b=1", "c=[x, y]", "a.b=2"]) == {"a.b": 2, "c": ["x", "y"]}
    table = format_table([{"name": "m", "size": 3}, {"name": "longer", "size": None}])
    assert table.splitlines()[0].split() == ["name", "size"] and "longer" in table
