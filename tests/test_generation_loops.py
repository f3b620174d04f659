"""Generation loops (with a deterministic fake backend: these tests are about loop logic) and crash-resume
(on the real tiny Llama backend: that test is about real sampling being replayed exactly)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from fakes import Fault, FaultyBackend

from redpo.config import Profile, SamplingConfig, load_profile
from redpo.core.relations import get_schema
from redpo.core.sample import RESample
from redpo.generation.arms import make_generator
from redpo.generation.backends import GenerationOutput
from redpo.generation.cache import CachedGenerator, LLMCache, ModelKey
from redpo.generation.loops import generate_arm
from redpo.generation.store import load_arm, save_arm

RELATIONS = ["Other", "Cause-Effect(e1,e2)", "Component-Whole(e2,e1)", "Entity-Destination(e1,e2)"]
SCHEMA = get_schema("semeval")
_GOLD = [
    "the <e1>storm</e1> caused heavy <e2>damage</e2> in the town .",
    "a <e1>spark</e1> started the <e2>fire</e2> last night .",
    "the <e1>virus</e1> produced a high <e2>fever</e2> in the patient .",
    "her <e1>speech</e1> led to loud <e2>applause</e2> from the crowd .",
]


def demos() -> dict[str, list[RESample]]:
    return {r: [RESample.from_marked(t, r) for t in _GOLD] for r in RELATIONS}


def profile(**overrides: Any) -> Profile:
    base = {"dataset.relations": RELATIONS, "generation.n_per_relation": 2, "generation.max_attempts": 4,
            "generation.negative_label": "generate"}  # every relation goes through the loops
    return load_profile("smoke", {**base, **overrides})


class FakeBackend:
    """Writes a fresh valid sample per call, except for relations listed in ``broken`` (no markers)."""

    batch_size = 64

    def __init__(self, broken: tuple[str, ...] = ()) -> None:
        self.broken = broken
        self.batches: list[list[str]] = []
        self.stops: list[list[str]] = []

    def render(self, messages: list[dict[str, str]]) -> str:
        return "\n".join(m["content"] for m in messages)

    def generate(self, prompts: list[str], sampling: SamplingConfig, seed: int) -> list[GenerationOutput]:
        self.batches.append(list(prompts))
        self.stops.append(list(sampling.stop))
        out = []
        for i, p in enumerate(prompts):
            rel = re.search(r"relation '([^']+)'", p).group(1)
            n = sum(len(b) for b in self.batches) + i
            text = "no sample here" if rel in self.broken else f"the <e1>alpha{n}</e1> met the <e2>beta{n}</e2> today ."
            out.append(GenerationOutput(text, 5))
        return out


def run(arm: str, prof: Profile, backend: FakeBackend, **kw: Any) -> Any:
    gen = CachedGenerator(backend, LLMCache(None), ModelKey("fake", "0" * 64))
    return generate_arm(arm, prof, SCHEMA, demos(), gen, progress=False, **kw)


def prompts_of(backend: FakeBackend, relation: str) -> list[str]:
    return [p for b in backend.batches for p in b if f"relation '{relation}'" in p]


def test_obo_appends_every_valid_sample_to_the_next_prompt() -> None:
    backend = FakeBackend()
    result = run("obo", profile(**{"generation.n_per_relation": 3}), backend)
    for rel in RELATIONS:
        prompts = prompts_of(backend, rel)
        assert len(result.samples[rel]) == 3 and len(prompts) == 3
        for s in result.samples[rel]:
            later = prompts[s.meta["attempt"] + 1 :]
            assert all(s.to_marked() in p for p in later)
            assert s.to_marked() not in prompts[s.meta["attempt"]]


def test_obo_window_keeps_only_the_last_demonstrations() -> None:
    backend = FakeBackend()
    prof = profile(**{"generation.n_per_relation": 3, "generation.obo_window": 2})
    result = run("obo", prof, backend)
    rel = RELATIONS[1]
    last_prompt = prompts_of(backend, rel)[-1]
    assert len(re.findall(r"^\d+\. ", last_prompt, flags=re.M)) == 2
    assert all(s.to_marked() in last_prompt for s in result.samples[rel][:2])


def test_each_step_batches_all_pending_relations_and_stops_at_n_or_budget() -> None:
    backend = FakeBackend(broken=("Component-Whole(e2,e1)",))
    result = run("obo", profile(), backend)  # n=2, max_attempts=4
    assert [len(b) for b in backend.batches] == [4, 4, 1, 1]
    broken = result.stats["Component-Whole(e2,e1)"]
    assert (broken.attempts, broken.valid, broken.stop, broken.rejects["no_markers"]) == (4, 0, "budget", 4)
    ok = result.stats["Cause-Effect(e1,e2)"]
    assert (ok.attempts, ok.valid, ok.stop) == (2, 2, "n_reached")
    assert len(result.records) == 2 * 3 + 4


def test_aao_asks_for_the_missing_samples_within_its_call_budget() -> None:
    backend = FakeBackend()  # one sample per reply, so every relation needs two calls
    result = run("aao", profile(**{"generation.aao_max_calls": 2}), backend)
    assert [len(b) for b in backend.batches] == [4, 4]
    assert "Generate 2 new samples" in backend.batches[0][0] and "Generate 1 new samples" in backend.batches[1][0]
    assert all(len(v) == 2 for v in result.samples.values())


@pytest.mark.parametrize("mode", ["manual", "generate"])
def test_negative_label_manual_or_generated(mode: str, tmp_path: Path) -> None:
    backend = FakeBackend()
    result = run("baseline", profile(**{"generation.negative_label": mode}), backend, k=4, kshot_seed=1)
    other = result.samples["Other"]
    if mode == "manual":
        assert [s.to_marked() for s in other] == _GOLD and all(s.meta["source"] == "manual" for s in other)
        assert not prompts_of(backend, "Other") and result.stats["Other"].stop == "manual"
    else:
        assert len(other) == 2 and all(s.meta["source"] == "generated" for s in other)
        assert prompts_of(backend, "Other")
    paths = save_arm(result, tmp_path)
    assert paths["samples"].name == "baseline_k4_s1.jsonl"
    back = load_arm(tmp_path, "baseline", k=4, seed=1)
    assert back.samples == result.samples and back.stats == result.stats and back.records == result.records


# ---- crash-resume on the real tiny Llama -----------------------------------------------------------------
def test_resume_after_crash_gives_identical_outputs_without_repeated_calls(tmp_path: Path) -> None:
    from redpo.models.load import load_causal_lm

    loaded = load_causal_lm("tiny-random-llama")
    prof = profile(
        **{"generator.batch_size": 3, "generator.sampling.max_new_tokens": 6, "generation.max_attempts": 3}
    )

    def attempt(cache: Path, limit: int | None) -> tuple[Any, CachedGenerator]:
        gen = make_generator(prof, loaded, cache=cache)
        gen.backend = FaultyBackend(gen.backend, limit)
        return generate_arm("obo", prof, SCHEMA, demos(), gen, progress=False), gen

    reference, ref_gen = attempt(tmp_path / "ref.jsonl", None)
    assert ref_gen.backend_calls == 6  # 3 steps x (4 relations in chunks of 3); the random model finds nothing
    with pytest.raises(Fault):
        attempt(tmp_path / "run.jsonl", 3)
    resumed, gen = attempt(tmp_path / "run.jsonl", None)
    assert gen.backend_calls == 3 and gen.cache.hits == 4 + 3  # step 1 and 3 of step 2 were saved
    assert [r.text for r in resumed.records] == [r.text for r in reference.records]
    lines = (tmp_path / "run.jsonl").read_text().splitlines()
    keys = [e["key"] for line in lines for e in json.loads(line)["entries"]]
    assert len(lines) == 6 and len(keys) == len(set(keys)) == 12


def test_merge_arms_joins_halves_and_sums_their_run_counts() -> None:
    """The DPO arm is two runs (one per adapter); its saved info must describe both, not the first alone."""
    from redpo.generation.loops import merge_arms
    from redpo.generation.store import ArmResult, RelationStats

    def half(rel: str, seconds: float, responses: int, adapter: str = "a" * 64) -> ArmResult:
        sample = RESample.from_marked(f"the <e1>{rel}</e1> met the <e2>dog</e2> .", rel)
        info = {"name": "obo_dpo", "relations": [rel], "seconds": seconds, "model_seconds": seconds - 1,
                "responses": responses, "backend_calls": 2, "cached_responses": 0, "steps": 3,
                "model": {"name": "m", "sha256": "s", "adapter_sha256": adapter}}
        return ArmResult("obo", "obo_dpo", {rel: [sample]}, {rel: RelationStats(rel)}, [], info)

    merged = merge_arms([half("Other", 10.0, 4), half("Cause-Effect(e1,e2)", 20.5, 6, adapter="b" * 64)])
    assert merged.info["model"]["adapter_sha256"] is None  # two adapters: the manifest names both, by relation
    assert [(p["adapter_sha256"][0], p["relations"]) for p in merged.info["model"]["parts"]] == [
        ("a", ["Other"]), ("b", ["Cause-Effect(e1,e2)"])]
    same = merge_arms([half("Other", 1.0, 1), half("Cause-Effect(e1,e2)", 1.0, 1)])
    assert same.info["model"] == {"name": "m", "sha256": "s", "adapter_sha256": "a" * 64}
    assert merged.info["relations"] == ["Other", "Cause-Effect(e1,e2)"]
    assert (merged.info["seconds"], merged.info["model_seconds"]) == (30.5, 28.5)
    assert (merged.info["responses"], merged.info["backend_calls"]) == (10, 4)
    assert merged.info["steps"] == 3 and len(merged.info["parts"]) == 2
    assert set(merged.samples) == {"Other", "Cause-Effect(e1,e2)"}
    with pytest.raises(ValueError, match="overlapping"):
        merge_arms([half("Other", 1.0, 1), half("Other", 1.0, 1)])


def test_notebooks_01_and_02_take_their_arms_from_the_profile() -> None:
    from redpo.generation.arms import baseline_arms, icl_arms

    prof = load_profile("smoke", {"generation.arms": ["obo", "baseline", "aao"], "dpo.arms": ["obo"]})
    assert baseline_arms(prof) == ["baseline"] and icl_arms(prof) == ["obo", "aao"]
    no_baseline = load_profile("smoke", {"generation.arms": ["obo"], "dpo.arms": ["obo"]})
    assert baseline_arms(no_baseline) == [] and icl_arms(no_baseline) == ["obo"]


def test_of_split_keeps_the_arms_of_one_kshot_split() -> None:
    from redpo.generation.arms import of_split
    from redpo.generation.store import ArmResult

    arms = {(name, 8, seed): ArmResult(name, name, {}, {}) for name in ("obo", "aao") for seed in (1, 2)}
    assert sorted(of_split(arms, 8, 2)) == [("aao", 8, 2), ("obo", 8, 2)]
    assert of_split(arms, 16, 1) == {}


def test_only_obo_calls_carry_the_obo_stop_strings() -> None:
    prof = profile(**{"generation.obo_stop": ["\n"]})
    obo, aao = FakeBackend(), FakeBackend()
    run("obo", prof, obo)
    run("aao", prof, aao)
    assert obo.stops and all(stop == ["\n"] for stop in obo.stops)
    assert aao.stops and all(stop == [] for stop in aao.stops)


def test_an_arm_that_came_back_empty_is_one_line_with_its_calls_and_rejects() -> None:
    """The notebooks print one line per empty arm instead of leaving a row missing further on; an arm with one valid
    sample anywhere, or only manual negative copies beside its generated relations, is judged by what it wrote."""
    from collections import Counter

    from redpo.generation.store import ArmResult, RelationStats, empty_arm_lines

    def arm(name: str, valid: int, rejects: dict[str, int]) -> ArmResult:
        stats = {"r": RelationStats("r", attempts=6, valid=valid, rejects=Counter(rejects)),
                 "Other": RelationStats("Other", manual=True, valid=4, stop="manual")}
        return ArmResult(name, name, {}, stats)

    rejects = {"too_short": 3, "no_markers": 2, "same_entity": 1, "bad_type": 1, "surplus": 5}
    arms = {("obo", 4, 1): arm("obo", 0, rejects), ("obo", 4, 2): arm("obo", 0, {"too_short": 4}),
            ("aao", 4, 1): arm("aao", 1, {}), ("aao", 4, 2): arm("aao", 0, {"wrong_relation": 6})}
    assert empty_arm_lines(arms) == [
        "arm obo: no valid sample in splits k4_s1, k4_s2 (12 calls; rejects: too_short 7, no_markers 2, "
        "same_entity 1, …) — nothing to train",
        "arm aao: no valid sample in split k4_s2 (6 calls; rejects: wrong_relation 6) — nothing to train",
    ]
    assert empty_arm_lines({("aao", 4, 1): arms[("aao", 4, 1)]}) == []


def test_an_arm_done_before_its_step_budget_ends_its_bar_full(capsys: pytest.CaptureFixture[str]) -> None:
    """In JupyterLab a tqdm widget closed short of its total turns red, which reads as a failure; an arm whose
    relations all reach n before generation.max_attempts steps has succeeded, so its bar ends at its own total."""
    gen = CachedGenerator(FakeBackend(), LLMCache(None), ModelKey("fake", "0" * 64))
    result = generate_arm("obo", profile(), SCHEMA, demos(), gen, progress=True)
    steps = result.info["steps"]
    assert steps < profile().generation.max_attempts
    assert f"{steps}/{steps} [" in capsys.readouterr().err.split("\r")[-1]
