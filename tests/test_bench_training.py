"""``bench training`` and ``bench generation``'s arithmetic: parts, merged repeats, speed-ups, the equivalence CI,
both generation ratios and the machine's bound. Timings are faked: what is tested is what is done with them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from redpo.config import REPO_ROOT, ConfigError, load_profile
from redpo.core.io import ResultsDir
from redpo.run import bench_training as bt

MACHINE = {"type": "AVX512-test", "cpu": "test", "native_bf16": True}
SECONDS = {("fp32", "longest"): 120.0, ("fp32", "fixed"): 150.0, ("bf16", "longest"): 60.0, ("bf16", "fixed"): 75.0}


def _fake_re(profile: Any, size: int, precision: str, padding: str) -> dict[str, Any]:
    s = SECONDS[(precision, padding)] * size / 144
    return {"size": size, "precision": precision, "padding": padding, "run_seconds": s, "run_cpu_seconds": 2 * s}


@pytest.fixture()
def faked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[Any, ResultsDir]:
    monkeypatch.setattr(bt, "time_re_run", _fake_re)
    monkeypatch.setattr(bt, "machine_type", lambda: dict(MACHINE))
    prof = load_profile("smoke")
    return prof, ResultsDir(prof, root=tmp_path)


def test_repeated_timings_merge_into_a_spread_and_the_table_compares_with_the_first_edition(
        faked: tuple[Any, ResultsDir]) -> None:
    prof, results = faked
    path = results.metrics / bt.BENCH_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(bt.bench_training(prof, results, backends=["re:144"])))  # as the CLI saves it
    report = bt.bench_training(prof, results, backends=["re:144@bf16"])  # one precision: a short locked piece
    machine = report["machines"]["AVX512-test"]
    assert machine["re"]["144/fp32/longest"]["wall"]["n"] == 1
    assert machine["re"]["144/bf16/longest"]["wall"] == {"median": 60.0, "min": 60.0, "max": 60.0, "n": 2}
    (row,) = machine["table"]
    assert row["workload"] == "RE run, 144 samples"
    assert row["speed-up bf16 longest"] == 2.0 and row["speed-up fp32 fixed"] == 0.8
    assert row["speed-up fp32 longest"] == 1.0 and row["fp32 longest cpu"] == 240.0
    cells = "| 150.0 s (300.0 s) | 120.0 s (240.0 s) | 75.0 s (150.0 s) | 60.0 s (120.0 s) | 2.0x"
    assert f"| RE run, 144 samples {cells}" in report["markdown"]


def test_a_setting_killed_mid_part_leaves_the_earlier_ones_summarised_in_the_saved_file(
        faked: tuple[Any, ResultsDir], monkeypatch: pytest.MonkeyPatch) -> None:
    """A setting that runs out of memory kills the process (no exception to catch): what was saved before it must
    already hold its medians and its row of the table."""
    prof, results = faked

    def dies_at_fixed(profile: Any, size: int, precision: str, padding: str) -> dict[str, Any]:
        if padding == "fixed":
            raise SystemExit(137)  # stands in for the kernel's OOM kill: nothing after this line runs
        return _fake_re(profile, size, precision, padding)

    monkeypatch.setattr(bt, "time_re_run", dies_at_fixed)
    with pytest.raises(SystemExit):
        bt.bench_training(prof, results, backends=["re:144@fp32"])
    saved = json.loads((results.metrics / bt.BENCH_FILE).read_text())
    machine = saved["machines"]["AVX512-test"]
    assert machine["re"]["144/fp32/longest"]["wall"]["median"] == 120.0
    assert machine["table"][0]["fp32 longest"] == 120.0 and "| RE run, 144 samples |" in saved["markdown"]


def test_a_planned_dpo_step_is_its_own_workload_sped_up_over_the_first_editions_step(
        faked: tuple[Any, ResultsDir], monkeypatch: pytest.MonkeyPatch) -> None:
    """The training's step (planned, completion scored) and the first edition's (batch unplanned) are different
    workloads; a model whose first-edition step was never timed has no speed-up rather than one over itself."""
    prof, results = faked
    first_edition = {("fp32", "longest"): 80.0, ("fp32", "fixed"): 100.0}
    training = {("fp32", "longest"): 64.0, ("bf16", "longest"): 40.0, ("fp32", "fixed"): 90.0, ("bf16", "fixed"): 50.0}

    def fake_step(profile: Any, pairs: Any, model: str, precision: str, padding: str, *, path: str) -> dict[str, Any]:
        seconds = (first_edition if path == "first edition" else training)[(precision, padding)]
        whole = path == "first edition" or model == "small"
        plan = {"micro_batch": 4 if whole else 1, "accumulation": 1 if whole else 4, "checkpointing": not whole}
        steps = [{"seconds": 2 * seconds, "cpu_seconds": 4 * seconds}, {"seconds": seconds, "cpu_seconds": 2 * seconds}]
        return {"model": model, "path": path, "batch_size": 4, "plan": plan, "precision": precision,
                "padding": padding, "steps": steps}

    monkeypatch.setattr(bt, "time_dpo_steps", fake_step)
    monkeypatch.setattr(bt, "_half_a_pairs", lambda profile, results: None)
    bt.bench_training(prof, results, backends=["dpo_first_edition:small@fp32"])
    machine = bt.bench_training(prof, results, backends=["dpo:small", "dpo:large@bf16/longest"])["machines"][
        "AVX512-test"]
    assert sorted(k for k in machine["dpo"] if k.startswith("large")) == [
        "large, training's step (micro-batch 1 x 4, activation checkpointing)/bf16/longest"]
    rows = {row["workload"]: row for row in machine["table"]}
    assert set(rows) == {
        "DPO step, small, first edition's step (batch 4 unplanned, every position scored)",
        "DPO step, small, training's step (micro-batch 4 x 1)",
        "DPO step, large, training's step (micro-batch 1 x 4, activation checkpointing)"}
    small = rows["DPO step, small, training's step (micro-batch 4 x 1)"]
    assert small["fp32 longest"] == 64.0 and small["speed-up fp32 longest"] == 1.25  # over the first edition's 80 s
    assert small["speed-up bf16 longest"] == 2.0 and small["speed-up bf16 longest cpu"] == 2.0
    large = rows["DPO step, large, training's step (micro-batch 1 x 4, activation checkpointing)"]
    assert large["bf16 longest"] == 40.0 and "speed-up bf16 longest" not in large and "baseline" not in large
    assert small["baseline"] == "the first edition's step" and "baseline" not in rows[
        "DPO step, small, first edition's step (batch 4 unplanned, every position scored)"]
    markdown = bt.markdown({"machines": {"AVX512-test": machine}})
    assert "| 2.0x (2.0x cpu), over the first edition's step |" in markdown
    # a plan timed with fixed padding only (its own workload) shows its fastest timed setting's speed-up
    fixed_only = {"workload": "DPO step, small, training's step (micro-batch 2 x 2)", "bf16 fixed": 25.0,
                  "bf16 fixed cpu": 50.0, "speed-up bf16 fixed": 3.2, "speed-up bf16 fixed cpu": 3.2,
                  "baseline": "the first edition's step"}
    one = bt.markdown({"machines": {"AVX512-test": {**machine, "table": [fixed_only]}}})
    assert "| n/a | n/a | 25.0 s (50.0 s) | n/a | 3.2x (3.2x cpu), over the first edition's step |" in one


def test_without_native_bf16_only_fp32_is_timed_and_the_report_says_why(
        faked: tuple[Any, ResultsDir], monkeypatch: pytest.MonkeyPatch) -> None:
    prof, results = faked
    monkeypatch.setattr(bt, "machine_type", lambda: {**MACHINE, "type": "AVX2-test", "native_bf16": False})
    machine = bt.bench_training(prof, results, backends=["re:144", "re_equivalence"])["machines"]["AVX2-test"]
    assert sorted(machine["re"]) == ["144/fp32/fixed", "144/fp32/longest"]
    assert "no native bf16" in machine["bf16"] and "skipped" in machine["re_equivalence"]


@pytest.mark.parametrize("item", ["nope", "re:big", "re_equivalence:3", "dpo@fp16", "re_equivalence@bf16",
                                  "dpo@bf16/tight", "dpo@/longest"])
def test_unknown_parts_are_refused_naming_what_exists(item: str) -> None:
    with pytest.raises(ConfigError, match="re:<size>"):
        bt._parts([item], load_profile("smoke"))


def test_the_cli_refuses_an_unknown_part_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from redpo import __main__ as cli

    assert cli.main(["bench", "training", "--profile", "smoke", "--results-dir", str(tmp_path),
                     "--backends", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unknown bench training part 'nope'")


def _equivalence(bf16_wrong: int) -> dict[str, Any]:
    gold = ["A", "B", "Other", "A", "B", "A"] * 50
    fp32 = list(gold)
    bf16 = ["Other" if i < bf16_wrong else g for i, g in enumerate(gold)]
    run = lambda pred: {"seed": 0, "steps": 10, "micro_f1": 0.0,  # noqa: E731
                        "predictions": {"ids": [str(i) for i in range(len(gold))], "gold": gold, "pred": pred}}
    return {"k": 8, "split_seed": 1, "n_train": 152, "seeds": [0, 1], "negative_label": "Other",
            "runs": {"fp32": [run(fp32), run(fp32)], "bf16": [run(bf16), run(bf16)]}}


@pytest.mark.parametrize(("wrong", "contains_zero"), [(0, True), (120, False)])
def test_re_equivalence_is_the_paired_bootstrap_of_bf16_minus_fp32(
        wrong: int, contains_zero: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bt, "equivalence_runs", lambda *a, **k: _equivalence(wrong))
    out = bt.re_equivalence(load_profile("smoke", {"claims.bootstrap_replicates": 200}))
    assert out["ci_contains_zero"] is contains_zero
    assert (out["delta_micro_f1"]["estimate"] < 0) is (wrong > 0)
    changed = sum(g != "Other" for g in _equivalence(0)["runs"]["fp32"][0]["predictions"]["gold"][:wrong])
    assert out["prediction_agreement"] == [round(1 - changed / 300, 4)] * 2
    assert out["seed_agreement"] == {"fp32": 1.0, "bf16": 1.0}
    assert "predictions" not in out["runs"]["bf16"][0]  # the file keeps scores, not 2,717 labels per run


def _probe_rows(shares: dict[str, tuple[int, int]]) -> list[dict[str, Any]]:
    """Rows as probe_agreement keeps them: relation -> (agreeing, written), all on split (8, 1)."""
    return [{"k": 8, "seed": 1, "relation": rel, "oracle": rel if i < agree else "Other", "marked": f"{rel} {i}"}
            for rel, (agree, n) in shares.items() for i in range(n)]


@pytest.mark.parametrize(("bf16_accuracy", "bf16_shares", "within", "contains"),
                         [(0.75, {"A": (4, 8), "B": (1, 8), "C": (7, 8)}, True, True),
                          (0.0, {"A": (8, 8), "B": (7, 8), "C": (8, 8)}, False, False)])
def test_dpo_equivalence_puts_a_wilson_interval_on_each_probe_and_compares_the_samples_paired_by_relation(
        bf16_accuracy: float, bf16_shares: dict[str, tuple[int, int]], within: bool, contains: bool) -> None:
    probe = {"held_out_pairs": 12, "adapters": {
        "fp32": {"reward_accuracy": 0.75, "reward_margin": 0.1, "losses": [0.69]},
        "bf16": {"reward_accuracy": bf16_accuracy, "reward_margin": 0.1, "losses": [0.69]}}}
    fp32_shares = {"A": (3, 8), "B": (2, 8), "C": (6, 8)}
    agreement = {}
    for precision, shares in (("fp32", fp32_shares), ("bf16", bf16_shares)):
        rows = _probe_rows(shares)
        agrees = sum(r["relation"] == r["oracle"] for r in rows)
        agreement[precision] = {"n": len(rows), "agrees": agrees, "oracle_agreement": agrees / len(rows),
                                "arm": "aao", "splits": 1, "samples": rows}
    out = bt.dpo_equivalence(probe, agreement)
    low, high = out["adapters"]["fp32"]["reward_accuracy_ci"]
    assert 0.4 < low < 0.75 < high < 1.0  # 9 of 12: wide, and inside [0, 1]
    assert out["second_within_first_ci"] is within and out["pair"] == ["fp32", "bf16"]
    low, high = out["samples"]["fp32"]["oracle_agreement_ci"]
    assert 0.27 < low < 11 / 24 < high < 0.65  # 11 of 24, per sample
    delta = out["delta_oracle_agreement"]
    expected = sum(b[0] / b[1] - f[0] / f[1] for b, f in zip(bf16_shares.values(), fp32_shares.values(),
                                                              strict=True)) / 3
    assert delta["clusters"] == 3 and delta["estimate"] == pytest.approx(expected, abs=1e-6)
    assert out["samples_ci_contains_zero"] is contains
    text = bt.markdown({"machines": {"AVX512-test": {"dpo_equivalence": out}}})
    assert f"reward accuracy {bf16_accuracy} " in text and ("inside" if within else "outside") in text
    assert f"the oracle agrees with {agreement['bf16']['agrees']} of its 24 aao samples on 1 splits" in text
    assert ("contains" if contains else "excludes") + " 0)." in text and "(0 unpaired)" in text
    assert "delta_oracle_agreement" not in bt.dpo_equivalence(probe)  # no samples: nothing decided
    # the seed yardstick is the same comparison between two other probes, named in its lines
    named = {"fp32": probe["adapters"]["fp32"], "fp32, seed 43": probe["adapters"]["bf16"]}
    noise = bt.dpo_equivalence({**probe, "adapters": named},
                               {"fp32": agreement["fp32"], "fp32, seed 43": agreement["bf16"]},
                               pair=("fp32", "fp32, seed 43"))
    assert noise["delta_oracle_agreement"]["estimate"] == pytest.approx(expected, abs=1e-6)
    lines = bt.markdown({"machines": {"AVX512-test": {"dpo_seed_noise": noise}}})
    assert "(training seed), fp32, seed 43 - fp32, mean over 3 relations x splits" in lines


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and modification time."""
    return {str(f.relative_to(folder)): (f.stat().st_size, f.stat().st_mtime_ns) for f in folder.rglob("*")
            if f.is_file()}


@pytest.mark.slow
def test_the_probe_adapters_write_samples_that_the_oracle_judges(smoke_pipeline: Path, data_root: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe trains an adapter per precision (fp32 alone here: the CI machine may lack native bf16), each
    writes samples for the relations half A's adapter generates for, and the oracle labels every one of them."""
    from redpo.core.sample import generated_only
    from redpo.data.splits import generation_splits
    from redpo.dpo.bench import PROBE_ARM, PROBE_SPLITS, probe_equivalence
    from redpo.dpo.halves import load_halves
    from redpo.dpo.pairs import load_pairs

    monkeypatch.setenv("REDPO_DATA_DIR", str(data_root))
    prof = load_profile("smoke")
    results = ResultsDir(prof, root=smoke_pipeline.parent)
    logs = _files(results.root / "logs")
    probe = probe_equivalence(prof, load_pairs(results, "A"), results=results,
                              probes={"fp32": {"dpo.precision": "fp32"}})
    (by_split,) = probe["samples"].values()
    assert sorted(by_split) == generation_splits(prof)[:PROBE_SPLITS]
    half_b = set(load_halves(results).generate_relations("A"))
    assert all(arm.arm == PROBE_ARM and set(arm.samples) <= half_b for arm in by_split.values())
    agreement = bt.probe_agreement(prof, results, probe.pop("samples"))
    made = agreement["fp32"]
    judged = sum(len(generated_only(arm.all_samples())) for arm in by_split.values())  # copies: not judged
    assert 0 < made["n"] == len(made["samples"]) == judged
    assert made["agrees"] == sum(s["relation"] == s["oracle"] for s in made["samples"])
    assert _files(results.root / "logs") == logs  # the probe's server log stays in its scratch folder


def test_the_docs_table_is_the_committed_measurement_rendered() -> None:
    """docs/benchmarks.md quotes bench training's numbers only through blocks rendered from the committed file: a
    number typed by hand, or a file measured again without refreshing the page, fails here."""
    docs = REPO_ROOT / "docs" / "benchmarks.md"
    text = docs.read_text(encoding="utf-8")
    assert bt.DOCS_BLOCK.search(text), "docs/benchmarks.md lost its bench_training block"
    fresh = bt.fill_docs(text, REPO_ROOT / "results")
    assert fresh == text, ("docs/benchmarks.md's bench_training block differs from the committed file; rewrite it "
                           "with redpo.run.bench_training.fill_docs (the page's 'Still to measure' has the command)")


def test_the_table_renders_the_same_from_memory_and_from_the_saved_file(faked: tuple[Any, ResultsDir]) -> None:
    prof, results = faked
    report = bt.bench_training(prof, results, backends=["re:144"])
    report["machines"]["AVX2-other"] = report["machines"]["AVX512-test"]  # inserted last, sorted first
    saved = json.loads(json.dumps(report, sort_keys=True))
    assert bt.markdown(saved) == bt.markdown(report)


# ---- bench generation: both ratios and the bound, on the committed benchmark's own numbers -------------------
COMMITTED = REPO_ROOT / "results" / "cpu-full" / "metrics" / "bench_generation.json"


def test_generation_reports_both_ratios_for_every_engine() -> None:
    from redpo.generation.bench import ratios

    backends = json.loads(COMMITTED.read_text())["backends"]
    out = ratios(backends)
    assert out["llama_cpp"]["valid_per_min"]["obo_chain"] == 2.3 and out["llama_cpp"]["seconds"]["obo_chain"] == 1.84
    assert out["llama_cpp"]["seconds"]["cold_step"] == 0.97
    assert set(out) == {"llama_cpp", "llama_cpp:qwen2.5-coder-1.5b-instruct"}


def test_the_chain_bound_exists_when_llama_cpp_lost_its_decode_rate_and_uses_each_models_own_rates() -> None:
    """The committed run's llama.cpp prefill pass took longer than its whole cold step, so its decode rate is None
    and the old bound was null; the bound takes the machine's peak rates for the same model instead."""
    from redpo.generation.bench import chain_bound

    report = json.loads(COMMITTED.read_text())
    assert report["backends"]["llama_cpp"]["cold_step"]["decode_tok_s"] is None
    out = chain_bound(report["backends"], report["chain_fresh_prompt_tokens"])
    small, large = out["engines"]["llama_cpp"], out["engines"]["llama_cpp:qwen2.5-coder-1.5b-instruct"]
    assert small["decode_from"] == "transformers" and small["seconds"] == round(18440 / 158.0 + 4736 / 24.0, 1)
    assert large["decode_from"] == "llama_cpp:qwen2.5-coder-1.5b-instruct" and large["decode_tok_s"] == 16.4
    assert 0 < small["fraction_reached"] < 1 and out["seconds"] == small["seconds"]


@pytest.mark.parametrize("name", ["llama_cpp@fp8", "transformers@bf16", "vllm"])
def test_unknown_generation_backends_are_refused(name: str, tmp_path: Path) -> None:
    from redpo.generation.bench import bench_generation

    prof = load_profile("smoke")
    with pytest.raises(ConfigError, match="llama_cpp@"):
        bench_generation(prof, ResultsDir(prof, root=tmp_path), backends=[name])


# ---- the DPO step on the smoke generator ---------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(("padding", "path"), [("longest", "training"), ("fixed", "training"),
                                               ("longest", "first edition")])
def test_dpo_steps_are_timed_and_padded_as_asked(smoke_pipeline: Path, padding: str, path: str,
                                                 monkeypatch: pytest.MonkeyPatch, data_root: Path) -> None:
    """TRL pads to the batch's longest pair (what every committed adapter trained with); ``fixed`` pads every forward
    pass to ``dpo.max_length``; each timed step has its seconds and the run its losses. The training's path plans
    its micro-batch as training does; the first edition's trains the profile's batch."""
    from redpo.dpo.bench import time_dpo_steps
    from redpo.dpo.pairs import load_pairs

    monkeypatch.setenv("REDPO_DATA_DIR", str(data_root))
    prof = load_profile("smoke")
    pairs = load_pairs(ResultsDir(prof, root=smoke_pipeline.parent), "A")
    out = time_dpo_steps(prof, pairs, prof.generator.model, "fp32", padding, path=path, steps=2)
    assert len(out["steps"]) == 2 and all(s["seconds"] > 0 for s in out["steps"]) and len(out["losses"]) == 2
    plan = out["plan"]
    assert plan["micro_batch"] * plan["accumulation"] == prof.dpo.batch_size * prof.dpo.gradient_accumulation_steps
    assert ("budget_gb" in plan) == (path == "training")
    if padding == "fixed":
        assert out["padded_lengths"] == [prof.dpo.max_length]
    else:
        assert max(out["padded_lengths"]) <= out["longest_pair_tokens"] + 4 < prof.dpo.max_length  # EOS, split
