"""``redpo bench generation`` on the smoke generator: both engines on the same workloads, prefix reuse measured."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from redpo.config import load_profile
from redpo.core import lock
from redpo.core.io import ResultsDir


def test_bench_takes_the_results_lock_and_refuses_a_busy_folder_with_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bench writes metrics and starts servers in the results folder, as a run does: one writer at a time."""
    from redpo import __main__ as cli
    from redpo.generation import bench

    monkeypatch.delenv(lock.HELD_ENV, raising=False)
    calls: list[bool] = []

    def fake_bench(profile: Any, results: ResultsDir, **_: Any) -> dict[str, Any]:
        calls.append((results.root / lock.OWNER_NAME).is_file())
        return {"ok": True}

    monkeypatch.setattr(bench, "bench_generation", fake_bench)
    argv = ["bench", "generation", "--profile", "smoke", "--results-dir", str(tmp_path)]
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom redpo.core.lock import hold_results\n"
         "with hold_results(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(600)\n",
         str(tmp_path / "smoke")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert cli.main(argv) == 2 and calls == []
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and f"pid {holder.pid}" in err[0]
    finally:
        holder.kill()
        holder.wait()
    assert cli.main(argv) == 0 and calls == [True]  # free: it runs, holding the folder
    assert not (tmp_path / "smoke" / lock.OWNER_NAME).exists()


@pytest.mark.slow
def test_both_engines_answer_the_same_workloads_and_llama_cpp_reuses_chain_prefixes(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from redpo.generation.bench import CHAIN_STEPS, bench_generation

    monkeypatch.setenv("REDPO_DATA_DIR", str(data_root))
    # Greedy: the f32 GGUF and transformers agree on every top-1 token of the smoke model, so on the same prompts
    # both engines must judge the same (valid samples, demonstration copies), up to a rare near-tie flip.
    prof = load_profile("smoke", {"generator.sampling.max_new_tokens": 8, "generator.sampling.temperature": 0.0,
                                  "generator.server.weights": "f32", "generator.server.threads": 1})
    report = bench_generation(prof, ResultsDir(prof, root=tmp_path))
    relations = len(prof.dataset.relations)
    assert report["relations"] == relations and report["chain_steps"] == CHAIN_STEPS
    hf, ll = report["backends"]["transformers"], report["backends"]["llama_cpp"]
    for mode, steps in (("cold_step", 1), ("obo_chain", CHAIN_STEPS), ("aao", 1)):
        assert hf[mode]["requests"] == ll[mode]["requests"] == steps * relations, mode
        assert hf[mode]["valid"] >= 0 and ll[mode]["valid"] >= 0
        assert report["ratio_seconds"][mode] > 0
        for measure in ("valid", "exact_copies", "near_copies"):
            assert abs(hf[mode][measure] - ll[mode][measure]) <= max(1, 0.1 * hf[mode][measure]), (mode, measure)
    # transformers recomputes every prompt of the chain; the server computes each first prompt and then only
    # what a step adds (a few tokens more at most, where a step boundary splits a token)
    assert ll["obo_chain"]["prompt_tokens"] < hf["obo_chain"]["prompt_tokens"]
    assert ll["obo_chain"]["prompt_tokens"] <= report["chain_fresh_prompt_tokens"] + 8 * CHAIN_STEPS * relations
    assert ll["cold_step"]["prompt_tokens"] == hf["cold_step"]["prompt_tokens"]  # same prompts, same tokens
    fraction = report["chain_bound"]["fraction_reached"]  # None only when the tiny model leaves no decode time
    assert fraction is None or fraction > 0


@pytest.mark.slow
def test_determinism_bench_compares_every_run_with_the_first(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from redpo.generation.bench import DETERMINISM_SLOTS, bench_determinism

    monkeypatch.setenv("REDPO_DATA_DIR", str(data_root))
    prof = load_profile("smoke", {"generator.sampling.max_new_tokens": 12, "generator.server.threads": 1})
    report = bench_determinism(prof, ResultsDir(prof, root=tmp_path), repeats=2)
    same = report["identical_to_reference"]
    slot_counts = {n or report["prompts"] for n in DETERMINISM_SLOTS}  # smoke: 4 relations, so 0 means 4
    assert len(same) == 2 * len(slot_counts) and same[report["reference"]] == report["prompts"]
    # One slot count, two fresh servers, the same seeds: llama.cpp on one thread repeats itself exactly.
    assert same["slots=1 run=2"] == report["prompts"]
    assert report["identical_across_repeats"]["slots=1 run=2 vs run=1"] == report["prompts"]
    assert report["all_identical"] == all(n == report["prompts"] for n in same.values())
    with pytest.raises(ValueError, match="llama_cpp only"):
        bench_determinism(prof, ResultsDir(prof, root=tmp_path), backends=["transformers"])
