"""The direct-LLM RE baseline: answer -> label mapping on hand-made strings, the prompt, and the scoring path.

``run_llm_re`` is checked twice: with a scripted backend (the mapping and counting logic, deterministic) and
with the real tiny Llama (the real generation path end to end; its answers are noise, so only invariants).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar

import pytest

from redpo.config import SamplingConfig, load_profile
from redpo.core.relations import get_schema
from redpo.core.sample import RESample
from redpo.extraction.llm_baseline import llm_test_sentences, parse_label, run_llm_re
from redpo.extraction.llm_prompt import candidate_labels, demonstrations, llm_re_messages
from redpo.generation.arms import make_generator
from redpo.generation.backends import GenerationOutput
from redpo.generation.cache import CachedGenerator, LLMCache, ModelKey

SCHEMA = get_schema("semeval")
LABELS = list(SCHEMA.labels)
RELATIONS = ["Other", "Cause-Effect(e1,e2)", "Cause-Effect(e2,e1)", "Component-Whole(e2,e1)"]


@pytest.mark.parametrize(
    ("answer", "label"),
    [
        ("Cause-Effect(e1,e2)", "Cause-Effect(e1,e2)"),  # exact
        ("  Cause-Effect(e1,e2)\nbecause the storm ...", "Cause-Effect(e1,e2)"),  # first line only
        ("cause-effect(e1, e2)", "Cause-Effect(e1,e2)"),  # case and spaces
        ("**Component-Whole(e2,e1)**.", "Component-Whole(e2,e1)"),  # decorations
        ("Label: Message-Topic(e1,e2)", "Message-Topic(e1,e2)"),
        ("1. Other", "Other"),
        ("Instrument-Agency(e2,", "Instrument-Agency(e2,e1)"),  # cut off: unique prefix
        ("The relation is Entity-Origin(e1,e2) here", "Entity-Origin(e1,e2)"),  # unique contained label
        ("Cause-Effect", None),  # direction missing: a prefix of two labels
        ("Cause-Effect(e1,e2) or Cause-Effect(e2,e1)", None),  # two labels named
        ("", None),
        ("   \n  ", None),
        ("I cannot tell.", None),
        ("Ca", None),  # too short to be a prefix
    ],
)
def test_parse_label(answer: str, label: str | None) -> None:
    assert parse_label(answer, LABELS) == label


def _sample(text: str, relation: str) -> RESample:
    return RESample.from_marked(text, relation)


KSHOT = [
    _sample("a long <e1>storm</e1> caused heavy <e2>damage</e2> in the old town last year .", "Cause-Effect(e1,e2)"),
    _sample("the <e1>storm</e1> caused <e2>damage</e2> .", "Cause-Effect(e1,e2)"),
    _sample("the <e1>fever</e1> came from a <e2>virus</e2> .", "Cause-Effect(e2,e1)"),
    _sample("the <e1>car</e1> has a <e2>wheel</e2> .", "Component-Whole(e2,e1)"),
]


def test_one_shortest_demonstration_per_label_and_every_explanation_in_the_prompt() -> None:
    demos = demonstrations(KSHOT, RELATIONS)
    assert demos["Cause-Effect(e1,e2)"] == KSHOT[1]
    assert "Other" not in demos  # no sample in the split: explanation only
    user = llm_re_messages(KSHOT[2], SCHEMA, RELATIONS, demos)[1]["content"]
    for label in RELATIONS:
        assert f"- {label}: {SCHEMA.explain(label)}" in user
    assert user.count("Example:") == 3
    assert user.rstrip().endswith("Answer with the label name only.")
    assert "Sentence: the <e1>fever</e1> came from a <e2>virus</e2> ." in user


class ScriptedBackend:
    """Answers from the test sentence's first word: a label, a sloppy label, or junk."""

    batch_size = 64
    ANSWERS: ClassVar[dict[str, str]] = {
        "alpha": "Cause-Effect(e1,e2)", "beta": "cause-effect (e2,e1).", "gamma": "no idea", "delta": "Other"
    }

    def __init__(self) -> None:
        self.calls = 0

    def render(self, messages: list[dict[str, str]]) -> str:
        return "\n".join(m["content"] for m in messages)

    def generate(self, prompts: list[str], sampling: SamplingConfig, seed: int) -> list[GenerationOutput]:
        assert sampling.temperature == 0.0
        self.calls += 1
        words = [re.search(r"Sentence: (\w+)", p).group(1) for p in prompts]
        return [GenerationOutput(self.ANSWERS[w], 3) for w in words]


def test_run_llm_re_maps_scores_and_counts_unparseable(tmp_path: Path) -> None:
    prof = load_profile("smoke", {"dataset.relations": RELATIONS, "llm_re.batch_size": 2})
    test = [
        _sample("alpha <e1>rain</e1> caused a <e2>flood</e2> .", "Cause-Effect(e1,e2)"),
        _sample("beta <e1>flood</e1> came from <e2>rain</e2> .", "Cause-Effect(e2,e1)"),
        _sample("gamma <e1>tree</e1> has a <e2>leaf</e2> .", "Component-Whole(e2,e1)"),
        _sample("delta <e1>cat</e1> met a <e2>dog</e2> .", "Other"),
    ]
    backend = ScriptedBackend()
    gen = CachedGenerator(backend, LLMCache(tmp_path / "calls.jsonl"), ModelKey("scripted", "0" * 64))
    result = run_llm_re(prof, SCHEMA, gen, test, KSHOT, k=4, split_seed=1)
    assert result.predictions == ["Cause-Effect(e1,e2)", "Cause-Effect(e2,e1)", "Other", "Other"]
    assert result.unparseable == 1
    assert backend.calls == 2  # llm_re.batch_size prompts per call
    # 2 of 3 positive gold facts found, no wrong positive prediction
    assert result.metrics["micro_precision"] == 1.0
    assert result.metrics["micro_recall"] == pytest.approx(2 / 3)
    record = result.record()
    assert record["arm"] == "llm_generate" and record["unparseable"] == 1 and record["n_test"] == 4
    assert record["predictions"]["pred"] == result.predictions
    again = run_llm_re(prof, SCHEMA, gen, test, KSHOT, k=4, split_seed=1)
    assert backend.calls == 2 and again.cached == 4 and again.predictions == result.predictions


def test_candidate_labels_follow_the_profile_relations() -> None:
    assert candidate_labels(load_profile("smoke"), SCHEMA) == [
        lab for lab in SCHEMA.labels if lab in load_profile("smoke").dataset.relations
    ]
    assert candidate_labels(load_profile("cpu-full"), SCHEMA) == LABELS


@pytest.mark.slow
def test_tiny_llama_runs_through_the_real_generation_path(tmp_path: Path) -> None:
    from redpo.models.load import load_causal_lm

    prof = load_profile("smoke", {"dataset.relations": RELATIONS, "llm_re.max_new_tokens": 4})
    gen = make_generator(prof, load_causal_lm("tiny-random-llama"), cache=tmp_path / "calls.jsonl")
    test = [KSHOT[0], KSHOT[2], KSHOT[3]]
    result = run_llm_re(prof, SCHEMA, gen, test, KSHOT, k=4, split_seed=1)
    assert len(result.predictions) == len(result.answers) == 3
    assert set(result.predictions) <= set(RELATIONS)
    parsed = [parse_label(a, RELATIONS) for a in result.answers]
    assert result.unparseable == sum(p is None for p in parsed)
    assert 0.0 <= result.metrics["micro_f1"] <= 1.0


@pytest.mark.slow
def test_shared_prefix_reuse_gives_the_full_prompt_answers() -> None:
    """Greedy prompts sharing a long head prefill it once (see TransformersBackend); answers must not change,
    including after a later batch shares less of the cached prefix (the prefix shrinks to the common part)."""
    from redpo.generation.backends.transformers import TransformersBackend
    from redpo.models.load import load_causal_lm

    loaded = load_causal_lm("tiny-random-llama")
    greedy = SamplingConfig(temperature=0.0, repetition_penalty=1.0, max_new_tokens=6)
    head = "the <e1>storm</e1> caused heavy <e2>damage</e2> in the old town last year . " * 3
    batches = [
        [head + "alpha one", head + "alpha two two", head + "alpha three"],
        [head[:40] + "beta", head[:40] + "gamma gamma"],
    ]
    reused = TransformersBackend(loaded, batch_size=4, min_shared_prefix=8)
    full = TransformersBackend(loaded, batch_size=4, min_shared_prefix=10**9)
    for prompts in batches:
        assert reused.generate(prompts, greedy, 0) == full.generate(prompts, greedy, 0)
        assert reused._prefix is not None and full._prefix is None
    assert len(reused._prefix[0]) < len(reused.tokenizer(head)["input_ids"])  # shrunk to the shorter head


def test_disabled_baseline_runs_nothing_and_loads_no_model(tmp_path: Path) -> None:
    from redpo.core.io import ResultsDir
    from redpo.extraction.llm_baseline import run_llm_baselines

    prof = load_profile("smoke", {"llm_re.enabled": False})
    assert run_llm_baselines(prof, ResultsDir(prof, root=tmp_path), test=[]) == []


def test_summary_line_names_split_score_and_failures() -> None:
    from redpo.extraction.llm_baseline import LLMREResult

    per = {"ids": ["test:0", "test:1", "test:2", "test:3"], "gold": ["Other"] * 4, "pred": ["Other"] * 4}
    result = LLMREResult(8, 1, ["Other"] * 4, per, ["?"] * 4, 3, {"micro_f1": 0.25}, 12.4, 1)
    assert result.summary() == "k8_s1: micro-F1 0.250, unparseable 3/4, 12 s (1 answers from the cache)"


def test_the_llm_subset_is_a_stratified_subset_of_the_re_test_set() -> None:
    test = [RESample(("a", "b", "c"), (0, 1), (2, 3), lab, meta={"id": f"test:{i}"})
            for i, lab in enumerate(["Other"] * 60 + ["Cause-Effect(e1,e2)"] * 30 + ["Component-Whole(e2,e1)"] * 10)]
    assert llm_test_sentences(load_profile("smoke"), test) == test  # no subsample: every RE test sentence
    part = llm_test_sentences(load_profile("smoke", {"llm_re.test_subsample": 20}), test)
    ids = [s.meta["id"] for s in part]
    assert len(part) == 20 and ids == sorted(ids, key=lambda x: int(x.split(":")[1]))  # test order, a subset
    assert [sum(s.relation == lab for s in part) for lab in ("Other", "Cause-Effect(e1,e2)")] == [12, 6]
