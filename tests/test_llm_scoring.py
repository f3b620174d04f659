"""Closed-set scoring, the direct-LLM baseline's primary row: exact log-likelihoods, calibration, no parsing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from redpo.config import load_profile
from redpo.core.io import ResultsDir
from redpo.core.relations import get_schema
from redpo.core.sample import RESample
from redpo.extraction import llm_scoring

SEMEVAL = get_schema("semeval")


def test_every_semeval_label_is_a_statement_with_its_direction_in_words() -> None:
    assert SEMEVAL.verbalize("Cause-Effect(e1,e2)", "influx", "drain") == "'influx' causes 'drain'."
    assert SEMEVAL.verbalize("Cause-Effect(e2,e1)", "influx", "drain") == "'drain' causes 'influx'."
    assert SEMEVAL.verbalize("Other", "a", "b") == "'a' and 'b' are not related in any of these ways."
    statements = [SEMEVAL.verbalize(label, "X", "Y") for label in SEMEVAL.labels]
    assert len(set(statements)) == len(statements) == 19  # no two labels read alike
    assert get_schema("tacred").verbalize("per:title", "ann", "ceo").startswith("'ann' and 'ceo': ")


def test_calibration_divides_out_the_content_free_prior() -> None:
    # Uncalibrated, label 0 wins every sentence; the content-free inputs show the model simply likes label 0.
    scores = np.array([[-1.0, -1.2, -3.0], [-1.0, -3.0, -1.1]])
    content_free = np.array([[-0.5, -2.5, -2.5], [-0.6, -2.4, -2.4]])
    best, raw, prior = llm_scoring.calibrated_choice(scores, content_free)
    assert raw.tolist() == [0, 0] and best.tolist() == [1, 2]
    assert prior.sum() == pytest.approx(1.0) and prior.argmax() == 0
    flat = np.zeros((2, 3))  # a flat prior changes nothing
    assert llm_scoring.calibrated_choice(scores, flat)[0].tolist() == [0, 0]


def test_scores_equal_full_sequence_log_likelihoods_with_and_without_the_shared_head() -> None:
    import torch

    from redpo.models.load import load_causal_lm

    loaded = load_causal_lm("tiny-random-llama")
    scorer = llm_scoring.ContinuationScorer(loaded)
    head = "System: rate statements. The shared head of every prompt, long enough to matter. "
    prompts = [head + "Sentence one: a storm.", head + "Sentence two: a flood."]
    conts = [" it causes damage.", " no.", " the flood came from the river nearby today."]

    def brute(prompt: str, cont: str) -> float:
        p, c = scorer.encode(prompt), scorer.encode(cont)
        with torch.inference_mode():
            logits = loaded.model(torch.tensor([p + c], device=loaded.model.device)).logits[0].float()
        logp = torch.log_softmax(logits, dim=-1)
        return sum(float(logp[len(p) + j - 1, c[j]]) for j in range(len(c))) / len(c)

    cold = [scorer.score(p, conts) for p in prompts]
    assert scorer.prefill_head(prompts) > 10
    warm = [scorer.score(p, conts) for p in prompts]
    for prompt, a, b in zip(prompts, cold, warm, strict=True):
        expected = [brute(prompt, c) for c in conts]
        assert a == pytest.approx(expected, abs=1e-4) and b == pytest.approx(expected, abs=1e-4)


@pytest.mark.slow
def test_a_closed_set_run_parses_nothing_and_resumes_from_its_cache(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from redpo.data.splits import load_split

    monkeypatch.setenv("REDPO_DATA_DIR", str(data_root))
    prof = load_profile("smoke")
    results = ResultsDir(prof, root=tmp_path)
    test = [RESample(s.tokens, s.head, s.tail, s.relation, meta={"id": f"test:{i}"})
            for i, s in enumerate(load_split(prof, "test")[:12])]
    kshot = load_split(prof, "train")[:8]
    first = llm_scoring.run_closed_set(prof, results, SEMEVAL, test, kshot, k=4, split_seed=1)
    record = first.record()
    assert record["unparseable"] == 0 and set(first.predictions) <= set(prof.dataset.relations)
    assert record["predictions"]["ids"] == [f"test:{i}" for i in range(12)]
    assert len(first.prior) == len(prof.dataset.relations) and sum(first.prior) == pytest.approx(1.0, abs=1e-5)
    again = llm_scoring.run_closed_set(prof, results, SEMEVAL, test, kshot, k=4, split_seed=1)
    assert again.cached == len(test) + len(prof.llm_re.calibration_inputs)  # nothing scored twice
    assert again.predictions == first.predictions
