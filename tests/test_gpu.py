"""The GPU path a user with a hub model takes: ``generator.device: auto`` puts the generator on CUDA, and there it
computes what the CPU computes.

Every test here needs a CUDA device and is skipped without one (CI and the 2-core development machine have none);
run them on a GPU machine with ``pytest -m gpu``. The CPU side of the same rules (what ``auto`` resolves to, a
CUDA device that is not there) is tested in ``test_models``; the tiny models are built from a config, so nothing
is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from redpo.config import SamplingConfig, load_profile
from redpo.models.load import clear_model_cache, load_causal_lm

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run on a GPU machine)"),
]

HEAD = "the <e1>storm</e1> caused heavy <e2>damage</e2> in the old town last year . " * 3


@pytest.fixture(autouse=True)
def _fresh_models() -> None:
    clear_model_cache()
    yield
    clear_model_cache()


def test_auto_puts_the_generator_on_the_gpu_and_the_manifest_says_so(tmp_path: Path) -> None:
    from redpo.core.manifest import load_manifest, record_model

    loaded = load_causal_lm("tiny-random-llama")
    assert loaded.model.device.type == "cuda" and loaded.info.details["device"] == "cuda"
    record_model(tmp_path, loaded.info)
    assert load_manifest(tmp_path)["models"]["tiny-random-llama"]["device"] == "cuda"


def test_greedy_generation_on_the_gpu_gives_the_cpu_answers() -> None:
    """Batched, left-padded ``generate`` and the shared-prefix path (direct-LLM RE) on fp32 weights: the same
    tokens on both devices, so a cache filled on one replays on the other."""
    from redpo.generation.backends.transformers import TransformersBackend

    greedy = SamplingConfig(temperature=0.0, repetition_penalty=1.0, max_new_tokens=6)
    prompts = [HEAD + "alpha one", HEAD + "alpha two two", HEAD + "alpha three", "a short one"]
    answers = {}
    for device in ("cpu", "cuda"):
        loaded = load_causal_lm("tiny-random-llama", device=device)
        batched = TransformersBackend(loaded, batch_size=3, min_shared_prefix=10**9).generate(prompts, greedy, 0)
        prefixed = TransformersBackend(loaded, batch_size=3, min_shared_prefix=8).generate(prompts[:3], greedy, 0)
        assert prefixed == batched[:3]
        answers[device] = batched
    assert answers["cuda"] == answers["cpu"]


def test_sampled_bf16_generation_runs_on_the_gpu() -> None:
    """The paper profile's setting: bf16 weights, nucleus sampling, stop strings."""
    from redpo.generation.backends.transformers import TransformersBackend

    loaded = load_causal_lm("tiny-random-llama", dtype="bfloat16")
    assert loaded.model.dtype == torch.bfloat16 and loaded.model.device.type == "cuda"
    sampling = SamplingConfig(temperature=0.7, top_p=0.9, top_k=20, max_new_tokens=12, stop=["\n"])
    outputs = TransformersBackend(loaded, batch_size=4).generate([HEAD + "x", "one", "two"], sampling, seed=3)
    assert len(outputs) == 3 and all(0 < o.n_new_tokens <= 12 for o in outputs)


def test_closed_set_scores_on_the_gpu_equal_the_cpu_scores() -> None:
    from redpo.extraction.llm_scoring import ContinuationScorer

    prompts = [HEAD + "Sentence one: a storm.", HEAD + "Sentence two: a flood."]
    conts = [" it causes damage.", " no.", " the flood came from the river nearby today."]
    scores = {}
    for device in ("cpu", "cuda"):
        scorer = ContinuationScorer(load_causal_lm("tiny-random-llama", device=device))
        assert scorer.prefill_head(prompts) > 10
        scores[device] = [scorer.score(p, conts) for p in prompts]
    for gpu, cpu in zip(scores["cuda"], scores["cpu"], strict=True):
        assert gpu == pytest.approx(cpu, abs=1e-4)


def test_dpo_trains_in_bf16_on_the_gpu(tmp_path: Path) -> None:
    """TRL's trainer places the policy on the GPU itself; with a bf16 generator it trains in bf16 mixed precision
    and must still learn a trivially separable preference."""
    from datasets import Dataset

    from redpo.dpo.evaluate import evaluate_held_out
    from redpo.dpo.train import train_adapter

    profile = load_profile("smoke", {
        "generator.fit.steps": 0, "generator.model": "tiny-random-llama", "generator.dtype": "bfloat16",
        "dpo.max_steps": 10, "dpo.batch_size": 4, "dpo.learning_rate": 5.0e-3, "dpo.max_length": 64,
    })
    pairs = Dataset.from_list([
        {"prompt": f"<|im_start|>user\nquestion {i}<|im_end|>\n<|im_start|>assistant\n",
         "chosen": "yes yes yes", "rejected": "no no no"}
        for i in range(16)
    ])
    log = train_adapter(profile, pairs, tmp_path / "adapter", progress=False)
    losses = [row["loss"] for row in log["history"]]
    assert log["steps"] == 10 and losses[-1] < losses[0] - 0.05, losses
    held = evaluate_held_out(profile, pairs.select(range(4)), tmp_path / "adapter")  # pairs it trained on
    assert held["reward_accuracy"] == 1.0 and held["reward_margin"] > 0
    adapted = load_causal_lm(profile.generator.model, dtype="bfloat16", adapter=str(tmp_path / "adapter"))
    assert adapted.model.device.type == "cuda"
