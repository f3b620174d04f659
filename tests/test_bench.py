"""``redpo bench generation`` on the tiny Llama: both modes measured on the same prompts, prefill split out."""

from __future__ import annotations

from pathlib import Path

import pytest

from redpo.config import load_profile


@pytest.mark.slow
def test_bench_generation_measures_both_modes_and_their_prefill(
    data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from redpo.generation.bench import bench_generation
    from redpo.models.load import load_causal_lm

    monkeypatch.setenv("REDPO_DATA_DIR", str(data_root))
    prof = load_profile("smoke", {"generator.sampling.max_new_tokens": 8})
    result = bench_generation(prof, loaded=load_causal_lm("tiny-random-llama"))
    batched, single = result["batched"], result["single"]
    assert batched["requests"] == single["requests"] == len(prof.dataset.relations)
    assert (batched["batch_size"], single["batch_size"]) == (prof.generator.batch_size, 1)
    for mode in (batched, single):
        assert mode["prefill_seconds"] >= 0 and mode["seconds"] > 0  # rounded to 10 ms: a tiny prefill reads 0
        assert 0 < mode["new_tokens"] <= 8 * mode["requests"]
        # decoding is a part of the run, so its rate is higher; the tiny model's timing noise can exceed its
        # decode time, and then there is no decode rate at all
        assert mode["decode_tokens_per_s"] is None or mode["decode_tokens_per_s"] >= mode["tokens_per_s"]
    assert result["speedup_tokens_per_s"] == round(batched["tokens_per_s"] / single["tokens_per_s"], 2)
