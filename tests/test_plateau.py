"""The plateau analysis: the plateau rule on hand-made curves, prefixes, yield, and the one-generation design."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from redpo.config import Profile, SamplingConfig, load_profile
from redpo.core.relations import get_schema
from redpo.core.sample import RESample
from redpo.extraction.training_sets import describe_grid
from redpo.generation.backends import GenerationOutput
from redpo.generation.cache import CachedGenerator, LLMCache, ModelKey
from redpo.generation.loops import generate_arm
from redpo.generation.specs import split_dpo_name
from redpo.generation.store import ArmResult, ResponseRecord
from redpo.plateau import curves as plateau
from redpo.plateau import generate as plateau_generate
from redpo.plateau import runs as plateau_runs

RELATIONS = ["Cause-Effect(e1,e2)", "Component-Whole(e2,e1)"]
GOLD = ["the <e1>storm</e1> caused heavy <e2>damage</e2> in the town .",
        "a <e1>spark</e1> started the <e2>fire</e2> last night ."]


# ---- the plateau rule --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("means", "sds", "expected"),
    [
        ([0.20, 0.30, 0.305, 0.31], [0.01] * 4, 8),  # +10 points 4->8, then +0.5 and +0.5
        ([0.20, 0.30, 0.40, 0.50], [0.01] * 4, None),  # still rising at the largest N
        ([0.20, 0.205, 0.21, 0.212], [0.01] * 4, 4),  # flat from the start
        ([0.20, 0.21, 0.30, 0.305], [0.02] * 4, 16),  # a late jump moves the plateau past it
        ([0.20, 0.26, 0.27, 0.28], [0.08, 0.08, 0.02, 0.02], 4),  # the +6 gain is inside the 8-point seed sd
    ],
)
def test_plateau_point_on_hand_made_curves(means: list[float], sds: list[float], expected: int | None) -> None:
    assert plateau.plateau_point([4, 8, 16, 32], means, sds, min_gain=0.01) == expected


def test_plateau_point_edge_cases() -> None:
    assert plateau.plateau_point([8], [0.3], [0.01]) is None  # one N: no step to judge
    nan = float("nan")
    assert plateau.plateau_point([1, 2], [0.10, 0.105], [nan, nan], min_gain=0.01) == 1  # no sd: min_gain decides
    assert plateau.plateau_point([1, 2], [0.10, 0.13], [nan, nan], min_gain=0.01) is None
    assert plateau.plateau_point([1, 2], [0.10, 0.13], [nan, nan], min_gain=0.05) == 1


def test_curve_summary_and_plateau_table() -> None:
    runs = [{"plateau_arm": "obo", "data": "gen", "n": n, "micro_f1": v}
            for n, vals in ((4, (0.1, 0.2)), (8, (0.4, 0.5)), (16, (0.41, 0.5))) for v in vals]
    summary = plateau.curve_summary(runs)
    assert summary["n"].tolist() == [4, 8, 16] and summary["mean"].tolist() == pytest.approx([0.15, 0.45, 0.455])
    table = plateau.plateau_table(summary, min_gain=0.01)
    assert table.loc[0, "plateau_n"] == 8 and table.loc[0, "f1_last"] == pytest.approx(0.455)


# ---- prefixes, yield, profile ------------------------------------------------------------------------------
def _arm(samples: dict[str, list[str]], records: list[ResponseRecord] | None = None) -> ArmResult:
    return ArmResult("obo", "obo", {r: [RESample.from_marked(t, r) for t in ts] for r, ts in samples.items()},
                     {}, records or [])


def test_prefix_sets_take_the_first_n_per_relation_and_mix_with_manual() -> None:
    texts = [f"the <e1>a{i}</e1> met the <e2>b{i}</e2> today ." for i in range(4)]
    arm = _arm({RELATIONS[0]: texts, RELATIONS[1]: texts[:1]})
    manual = [RESample.from_marked(GOLD[0], RELATIONS[0])]
    sets, quotas = plateau_runs.prefix_sets({("obo", 4, 1): arm}, {(4, 1): manual}, 2)
    assert [s.to_marked() for s in sets[(4, 1)]["gen:obo"]] == [*texts[:2], texts[0]]
    assert sets[(4, 1)]["mix:obo"][0] == manual[0] and len(sets[(4, 1)]["mix:obo"]) == 4
    assert quotas["n2_k4_s1_obo"]["per_relation"] == {RELATIONS[0]: 2, RELATIONS[1]: 1}
    assert quotas["n2_k4_s1_obo"]["short"] == {"obo": {RELATIONS[1]: 1}}
    # A second arm short on RELATIONS[0] does not cap the first: each curve is judged on its own samples.
    other = _arm({RELATIONS[0]: texts[:1], RELATIONS[1]: texts})
    both, _ = plateau_runs.prefix_sets({("obo", 4, 1): arm, ("aao", 4, 1): other}, {(4, 1): manual}, 2)
    assert [s.to_marked() for s in both[(4, 1)]["gen:obo"]] == [*texts[:2], texts[0]]
    assert [s.to_marked() for s in both[(4, 1)]["gen:aao"]] == [texts[0], *texts[:2]]


def _record(rel: str, attempt: int, valid: int) -> ResponseRecord:
    return ResponseRecord(rel, attempt, attempt, 1, "k", False, 1, "", ["x"] * valid, [])


def test_yield_counts_calls_until_n_valid_samples() -> None:
    records = [_record("r1", 0, 1), _record("r1", 1, 0), _record("r1", 2, 1), _record("r1", 3, 1),
               _record("r2", 0, 0), _record("r2", 1, 1)]
    assert plateau.calls_to_reach(records, 2) == {"r1": 3, "r2": None}
    frame = plateau.yield_curve({("obo", 8, 1): _arm({}, records)}, [1, 2])
    row1, row2 = frame.to_dict(orient="records")
    assert row1["valid_per_call"] == pytest.approx((1 / 1 + 1 / 2) / 2) and row1["reached_share"] == 1.0
    assert row2["valid_per_call"] == pytest.approx(2 / 3) and row2["reached_share"] == 0.5


def test_plateau_profile_scales_both_call_budgets_and_maps_arms() -> None:
    prof = load_profile("cpu", {"plateau.n_values": [4, 8, 16, 32]})
    big = plateau_generate.plateau_profile(prof)
    assert big.generation.n_per_relation == 32 and big.generation.max_attempts == 24 * 4
    assert big.generation.aao_max_calls == prof.generation.aao_max_calls * 4 and big.encoder == prof.encoder
    # cpu's own N values stop at generation.n_per_relation: the plateau run is notebook 02's, from the cache
    assert plateau_generate.plateau_profile(load_profile("cpu")).generation == load_profile("cpu").generation
    full = load_profile("cpu-full")
    assert plateau_generate.plateau_splits(full) == [(8, 1), (8, 2), (8, 3)]
    more = load_profile("cpu-full", {"generation.kshot_seeds": [1, 2, 3, 4, 5]})  # splits added for the F1 claims
    assert plateau_generate.plateau_splits(more) == [(8, 1), (8, 2), (8, 3)]  # ... do not extend the plateau
    assert len(plateau_generate.plateau_splits(load_profile("cpu-full", {"generation.kshot_seeds": [1, 2, 3, 4, 5],
                                                                      "plateau.splits": None}))) == 5
    assert split_dpo_name("obo_dpo") == ("obo", True) and split_dpo_name("aao") == ("aao", False)
    with pytest.raises(ValueError, match=r"unknown arm 'nope'"):
        split_dpo_name("nope")
    with pytest.raises(ValueError, match=r"unknown arm 'baseline_dpo'"):
        split_dpo_name("baseline_dpo")


def test_the_plateau_may_train_fewer_classifier_seeds_under_the_same_run_keys() -> None:
    from redpo.extraction.run_store import run_fingerprint
    from redpo.extraction.training_sets import grid_cells

    full = load_profile("cpu-full", {"plateau.seeds_per_split": 1})
    plateau = plateau_runs.plateau_grid_profile(full)
    assert full.encoder.seeds_per_split == 2 and plateau.encoder.seeds_per_split == 1
    assert grid_cells(plateau) == [c for c in grid_cells(full) if c.seed_index == 0]
    cell = grid_cells(plateau)[0]
    key = lambda prof: run_fingerprint(prof, "gen:obo", cell, [], "dev", "test")  # noqa: E731
    assert key(plateau) == key(full)
    unset = load_profile("cpu-full", {"plateau.seeds_per_split": None})
    assert plateau_runs.plateau_grid_profile(unset) is unset


def test_the_plateau_describes_its_own_cells_not_notebook_04s() -> None:
    full = load_profile("cpu-full", {"plateau.splits": 3, "plateau.seeds_per_split": 1})
    assert describe_grid(full).startswith("10 cells per K: K-shot split seed(s) [1, 2, 3, 4, 5] x 2 ")
    described = plateau_runs.describe_plateau_grid(full)
    assert described.startswith("3 cells per K: K-shot split seed(s) [1, 2, 3] x 1 classifier seed(s)")
    unset = load_profile("cpu-full", {"plateau.splits": None, "plateau.seeds_per_split": None})
    assert plateau_runs.describe_plateau_grid(unset) == describe_grid(unset)


def test_dpo_arm_without_adapters_is_skipped_with_a_note(tmp_path: Path) -> None:
    from redpo.core.io import ResultsDir

    results = ResultsDir("smoke", root=tmp_path)
    assert plateau_generate.missing_prerequisite("obo", results) is None
    assert "run notebook 03 first" in plateau_generate.missing_prerequisite("obo_dpo", results)


# ---- one generation up to max N: OBO prefixes are the shorter run, from the cache --------------------------
class PromptEcho:
    """A valid sample whose words depend only on the prompt: same prompt, same answer, as a real cached call."""

    batch_size = 16

    def __init__(self) -> None:
        self.calls = 0

    def render(self, messages: list[dict[str, str]]) -> str:
        return "\n".join(m["content"] for m in messages)

    def generate(self, prompts: list[str], sampling: SamplingConfig, seed: int) -> list[GenerationOutput]:
        self.calls += len(prompts)
        tags = [hashlib.sha256(p.encode()).hexdigest()[:8] for p in prompts]
        return [GenerationOutput(f"the <e1>a{t}</e1> met the <e2>b{t}</e2> today .", 5) for t in tags]


def _generate(prof: Profile, backend: PromptEcho, cache: Path) -> Any:
    gen = CachedGenerator(backend, LLMCache(cache), ModelKey("fake", "0" * 64))
    pools = {r: [RESample.from_marked(t, r) for t in GOLD] for r in RELATIONS}
    return generate_arm("obo", prof, get_schema("semeval"), pools, gen, progress=False)


def test_longer_obo_run_starts_with_the_shorter_run_from_the_cache(tmp_path: Path) -> None:
    prof = load_profile("smoke", {"dataset.relations": RELATIONS, "generation.n_per_relation": 2,
                                  "plateau.n_values": [1, 2, 4]})
    backend = PromptEcho()
    short = _generate(prof, backend, tmp_path / "calls.jsonl")
    calls_short = backend.calls
    long = _generate(plateau_generate.plateau_profile(prof), backend, tmp_path / "calls.jsonl")
    for rel in RELATIONS:
        assert long.samples[rel][:2] == short.samples[rel] and len(long.samples[rel]) == 4
    assert long.info["cached_responses"] == calls_short  # the shared first calls cost nothing
    assert backend.calls == calls_short + 2 * len(RELATIONS)
