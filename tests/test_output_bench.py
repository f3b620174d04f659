"""``python -m redpo bench output``: free against grammar-constrained decoding, measured per arm.

The fast tests assemble the report on a scripted backend (free replies lose samples to format, constrained ones do
not; some replies copy a demonstration) and a stand-in oracle, so every number is known in advance. The slow test
runs the whole bench on the smoke generator through the real llama-server, its grammar and the smoke oracle.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import pytest

from redpo import __main__ as cli
from redpo.config import REPO_ROOT, ConfigError, Profile, SamplingConfig, load_profile
from redpo.core.io import CALLS_CACHE, DataError, ResultsDir
from redpo.core.relations import get_schema
from redpo.core.replay import MODELS_FILE, ReplayError, replay_dir, snapshot
from redpo.core.sample import RESample
from redpo.data.fewrel import fewrel_as_custom
from redpo.data.splits import load_split
from redpo.extraction import output_bench
from redpo.extraction.output_bench import ARMS, MODES, TABLE_COLUMNS, arm_report, bench_output, measure_output
from redpo.generation.arms import call_cache_path, run_arms
from redpo.generation.backends import GenerationOutput
from redpo.generation.cache import CachedGenerator, LLMCache, ModelKey
from redpo.generation.store import ArmResult, RelationStats

SCHEMA = get_schema("semeval")
RELATIONS = ["Cause-Effect(e1,e2)", "Component-Whole(e2,e1)"]
_GOLD = [
    "the <e1>storm</e1> caused heavy <e2>damage</e2> in the town .",
    "a <e1>spark</e1> started the <e2>fire</e2> last night .",
    "the <e1>virus</e1> produced a high <e2>fever</e2> in the patient .",
]
WRONG = "Other"
"""What the stand-in oracle says of a sample whose head is ``wrong<n>``."""


def pools() -> dict[str, list[RESample]]:
    return {r: [RESample.from_marked(t, r) for t in _GOLD] for r in RELATIONS}


def profile() -> Profile:
    return load_profile("smoke", {"dataset.relations": ["Other", *RELATIONS], "generation.n_per_relation": 2,
                                  "generation.max_attempts": 4, "generation.aao_max_calls": 2})


class ScriptedBackend:
    """One line per call, by the call's number ``n`` among the free or the constrained calls:

    - free: ``n % 4 == 0`` no markers, ``n % 4 == 1`` a demonstration copied exactly, else a fresh sample;
    - constrained (the request carries a grammar): the same, except that the no-marker reply comes back marked;
    - a fresh sample's head is ``wrong<n>`` on every third call (the oracle disagrees), and every fifth is the
      first demonstration with other entities (a near copy)."""

    batch_size = 64

    def __init__(self) -> None:
        self.calls = {False: 0, True: 0}

    def render(self, messages: list[dict[str, str]]) -> str:
        return "\n".join(m["content"] for m in messages)

    def generate(self, prompts: list[str], sampling: SamplingConfig, seed: int) -> list[GenerationOutput]:
        constrained = sampling.grammar is not None
        out = []
        for _ in prompts:
            n = self.calls[constrained]
            self.calls[constrained] += 1
            head = f"wrong{n}" if n % 3 == 0 else f"alpha{n}"
            fresh = (f"the <e1>{head}</e1> caused heavy <e2>beta{n}</e2> in the town ." if n % 5 == 0
                     else f"the <e1>{head}</e1> met the <e2>beta{n}</e2> on day {n} .")
            text = (fresh if constrained else "a sentence without its markers .") if n % 4 == 0 else (
                _GOLD[0] if n % 4 == 1 else fresh)
            out.append(GenerationOutput(text, 7))
        return out


class StandInOracle:
    summary: ClassVar[dict[str, Any]] = {"fingerprint": "f" * 64, "n_train": 10, "test_micro_f1": 0.5, "test_n": 4,
                                         "unused": 1}

    def label(self, samples: list[RESample]) -> list[str]:
        return [WRONG if s.head_name.startswith("wrong") else s.relation for s in samples]


def measured() -> dict[str, Any]:
    gen = CachedGenerator(ScriptedBackend(), LLMCache(None), ModelKey("scripted", "0" * 64))
    return measure_output(profile(), gen, StandInOracle(), pools(), k=3, seed=1, progress=False)


def test_the_report_counts_each_arm_in_each_mode_from_the_replies() -> None:
    report = measured()
    assert list(report["modes"]) == list(MODES) and all(list(arms) == list(ARMS) for arms in report["modes"].values())
    for mode, arms in report["modes"].items():
        for arm, row in arms.items():
            total_rejects = sum(row["rejects"].values())
            assert row["candidates"] == row["valid"] + total_rejects, (mode, arm)
            assert row["valid_per_call"] == round(row["valid"] / row["calls"], 4)
            assert row["valid_share"] == round(row["valid"] / row["candidates"], 4)
            assert row["exact_copies"] == row["rejects"].get("copy_of_demo", 0) > 0
            assert row["exact_copy_rate"] == round(row["exact_copies"] / row["candidates"], 4)
    free, constrained = report["modes"]["free"]["obo"], report["modes"]["constrained"]["obo"]
    assert free["format_rejects"]["no_markers"] > 0 and free["format_reject_share"] > 0
    assert constrained["format_rejects"] == {"no_markers": 0, "malformed_markers": 0}
    assert constrained["valid_per_call"] > free["valid_per_call"]
    assert [(r["mode"], r["arm"]) for r in report["table"]] == [(m, a) for m in MODES for a in ARMS]
    assert (report["dataset"], report["dataset_path"], report["split"]) == ("semeval", None, "k3_s1")
    assert all(set(TABLE_COLUMNS) <= set(r) for r in report["table"])


def test_oracle_agreement_and_near_copies_are_shares_of_the_valid_samples() -> None:
    """Recomputed here from the script: which calls were valid, which of them carry a ``wrong`` head or copy the
    first demonstration's context."""
    report = measured()
    row = report["modes"]["constrained"]["obo"]
    # constrained OBO: 2 relations x up to 4 calls; calls 1 and 5 (n % 4 == 1) copy a demonstration exactly
    valid_calls = [n for n in range(row["calls"]) if n % 4 != 1]
    assert row["valid"] == len(valid_calls)
    wrong = sum(n % 3 == 0 for n in valid_calls)
    near = sum(n % 5 == 0 for n in valid_calls)
    assert row["oracle_agreement"] == round(1 - wrong / len(valid_calls), 4)
    assert row["near_copies"] == near > 0 and row["near_copy_share"] == round(near / len(valid_calls), 4)
    assert report["gold_oracle_agreement"] == 1.0  # the stand-in agrees with every K-shot sample
    assert report["oracle"] == {k: StandInOracle.summary[k] for k in ("fingerprint", "n_train", "test_micro_f1",
                                                                       "test_n")}


def test_seconds_per_call_is_the_model_time_behind_the_replies_over_the_calls() -> None:
    """The cache keeps each call's share of its batch's wall time, so cached replies still count what they cost."""
    stats = {r: RelationStats(r, attempts=3, valid=1, new_tokens=30, rejects=Counter(no_markers=2)) for r in RELATIONS}
    samples = {r: [RESample.from_marked("the <e1>kiln</e1> made the <e2>bricks</e2> hard .", r)] for r in RELATIONS}
    result = ArmResult("obo", "obo", samples, stats, [], {"model_seconds": 9.0, "cached_responses": 6})
    row = arm_report(result, pools(), list(RELATIONS), SCHEMA, 0.8)  # per relation: 1 valid, 2 no_markers
    assert (row["calls"], row["seconds_per_call"], row["new_tokens_per_call"]) == (6, 1.5, 10.0)
    assert (row["valid_share"], row["format_reject_share"], row["oracle_agreement"]) == (0.3333, 0.6667, 1.0)


def test_the_bench_refuses_a_profile_without_an_inference_server(tmp_path: Path) -> None:
    prof = load_profile("smoke", {"generator.backend": "transformers"})
    with pytest.raises(ConfigError, match=r"generator\.backend: llama_cpp"):
        bench_output(prof, ResultsDir(prof, root=tmp_path))
    with pytest.raises(ConfigError, match="llama_cpp only"):
        bench_output(profile(), ResultsDir(profile(), root=tmp_path), backends=["transformers"])


def test_the_bench_refuses_a_folder_that_replays_before_touching_it(tmp_path: Path) -> None:
    """A replaying folder (``replay/models.json``) answers from its archive alone, which holds no constrained call:
    the bench says how to measure on a copy instead of failing on the first constrained call."""
    results = ResultsDir(profile(), root=tmp_path)
    replay_dir(results).mkdir(parents=True)
    shutil.copy(REPO_ROOT / "results" / "cpu-full" / "replay" / MODELS_FILE, replay_dir(results) / MODELS_FILE)
    with pytest.raises(ReplayError, match=r"holds no constrained call; measure on a copy without that file: cp -r"):
        bench_output(profile(), results)
    assert not any(results.cache.rglob("*")) and not any(results.kshot.rglob("*"))  # nothing restored or written


def test_a_snapshot_of_a_run_answers_the_free_mode_and_only_constrained_calls_are_new(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What makes the bench cheap on a copy of a committed run: notebook 02's calls (``run_arms``), archived by
    ``snapshot`` and restored by the bench into a folder whose live cache is gone (a fresh clone's), are exactly the
    free mode's calls; the backend sees only the constrained ones."""
    monkeypatch.setenv("REDPO_DATA_DIR", str(data_root))
    prof = one_split_profile()
    results = ResultsDir(prof, root=tmp_path)
    backends: list[ScriptedBackend] = []

    def scripted_generator(_profile: Profile, res: ResultsDir) -> CachedGenerator:
        backends.append(ScriptedBackend())
        return CachedGenerator(backends[-1], LLMCache(call_cache_path(res)), ModelKey("scripted", "0" * 64))

    monkeypatch.setattr(output_bench, "open_generator", scripted_generator)
    monkeypatch.setattr(output_bench, "ensure_oracle", lambda _profile, _results: StandInOracle())
    output_bench.write_profile_kshots(prof, results.kshot)
    run_arms(prof, results, list(ARMS), generator=scripted_generator(prof, results), progress=False)
    assert backends[0].calls[False] > 0 and backends[0].calls[True] == 0
    snapshot(results)
    (results.cache / CALLS_CACHE).unlink()
    report = bench_output(prof, results)
    assert backends[1].calls[False] == 0 and backends[1].calls[True] > 0
    free = report["modes"]["free"]
    assert all(free[arm]["cached_responses"] == free[arm]["calls"] > 0 for arm in ARMS)
    assert all(report["modes"]["constrained"][arm]["cached_responses"] == 0 for arm in ARMS)


def one_split_profile() -> Profile:
    """:func:`profile` on one generation split, so that notebook 02's run covers exactly the bench's split."""
    return load_profile("smoke", {"dataset.relations": ["Other", *RELATIONS], "generation.n_per_relation": 2,
                                  "generation.max_attempts": 4, "generation.aao_max_calls": 2,
                                  "generation.kshot_seeds": [1]})


# ---- FewRel as a dataset folder ---------------------------------------------------------------------------
def _fewrel_file(folder: Path, fixtures_dir: Path, per_relation: int) -> Path:
    """A FewRel JSON of ``per_relation`` sentences of P177 and P17, ``pid2name.json`` beside it."""
    folder.mkdir()
    (folder / "pid2name.json").write_bytes((fixtures_dir / "data" / "pid2name.json").read_bytes())
    row = lambda pid, i: {"tokens": ["the", f"bridge{pid}{i}", "spans", f"river{i}", "."],  # noqa: E731
                          "h": [f"bridge{pid}{i}", "Q1", [[1]]], "t": [f"river{i}", "Q2", [[3]]]}
    data = {pid: [row(pid, i) for i in range(per_relation)] for pid in ("P177", "P17")}
    (folder / "val_wiki.json").write_text(json.dumps(data))
    return folder / "val_wiki.json"


def test_fewrel_as_custom_splits_each_relation_seeded_into_a_custom_dataset(
    fixtures_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _fewrel_file(tmp_path / "src", fixtures_dir, per_relation=5)
    dest = fewrel_as_custom(src, tmp_path / "few", ["P177", "P17"], (2, 1, 1), seed=3)
    again = fewrel_as_custom(src, tmp_path / "again", ["P177", "P17"], (2, 1, 1), seed=3)
    assert all((dest / f).read_bytes() == (again / f).read_bytes() for f in ("train.txt", "val.txt", "test.txt"))
    monkeypatch.setenv("REDPO_DATA_DIR", str(tmp_path))
    prof = load_profile("smoke", {"dataset.name": "custom", "dataset.path": str(dest), "dataset.relations": None})
    splits = {split: load_split(prof, split) for split in ("train", "val", "test")}
    for split, per in (("train", 2), ("val", 1), ("test", 1)):
        assert sorted(s.relation for s in splits[split]) == sorted(["P177", "P17"] * per), split
    texts = [s.to_marked() for rows in splits.values() for s in rows]
    assert len(set(texts)) == len(texts) == 8  # disjoint; the fifth sentence of each relation is left over
    fewrel = get_schema("fewrel", src.parent)
    custom = get_schema("custom", dest)
    assert custom.labels == ("P177", "P17") and custom.negative_label is None
    assert {r: custom.explain(r) for r in custom.labels} == {r: fewrel.explain(r) for r in custom.labels}
    assert custom.roles == fewrel.roles


def test_fewrel_as_custom_refuses_unknown_pids_too_few_sentences_and_bad_sizes(fixtures_dir: Path,
                                                                              tmp_path: Path) -> None:
    src = _fewrel_file(tmp_path / "src", fixtures_dir, per_relation=2)
    with pytest.raises(DataError, match=r"no sentence of P31; the file holds P177, P17$"):
        fewrel_as_custom(src, tmp_path / "few", ["P177", "P31"], (1, 1, 1), seed=0)  # P31: in pid2name, not the file
    with pytest.raises(DataError, match=r"fewer than 3 sentences of \{'P177': 2, 'P17': 2\}"):
        fewrel_as_custom(src, tmp_path / "few", ["P177", "P17"], (1, 1, 1), seed=0)
    for sizes in ((1, 0, 1), (1, 1)):
        with pytest.raises(DataError, match="three positive counts"):
            fewrel_as_custom(src, tmp_path / "few", ["P177"], sizes, seed=0)
    with pytest.raises(DataError, match="each Wikidata PID once"):
        fewrel_as_custom(src, tmp_path / "few", ["P177", "P177"], (1, 1, 1), seed=0)
    assert not (tmp_path / "few").exists()  # nothing written before every check passed


def test_data_fewrel_writes_the_folder_from_redpo_data_dir(
    fixtures_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _fewrel_file(tmp_path / "fewrel", fixtures_dir, per_relation=5)
    monkeypatch.setenv("REDPO_DATA_DIR", str(tmp_path))
    argv = ["data", "--fewrel", str(tmp_path / "few"), "--relations", "P17,P177", "--sizes", "2,1,1", "--seed", "3"]
    assert cli.main(argv) == 0
    assert "-p dataset.name=custom" in capsys.readouterr().out
    assert json.loads((tmp_path / "few" / "rel2id.json").read_text()) == {"P17": 0, "P177": 1}
    direct = fewrel_as_custom(tmp_path / "fewrel" / "val_wiki.json", tmp_path / "direct", ["P17", "P177"], (2, 1, 1), 3)
    assert (tmp_path / "few" / "train.txt").read_bytes() == (direct / "train.txt").read_bytes()


@pytest.mark.parametrize(("options", "message"), [
    (["--relations", "P177,P9999", "--sizes", "1,1,1"], "no sentence of P9999; the file holds P177, P17"),
    (["--relations", "P177", "--sizes", "3,2,1"], "fewer than 6 sentences of {'P177': 5}"),
    (["--sizes", "1,1,1"], "--fewrel needs --relations"),
    (["--relations", "P177", "--sizes", "1,x,1"], "--fewrel needs --sizes: three counts"),
    (["--relations", "P177"], "--fewrel needs --sizes: three counts"),
])
def test_data_fewrel_refuses_bad_input_with_one_error_line_and_exit_2(
    options: list[str], message: str, fixtures_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str]
) -> None:
    _fewrel_file(tmp_path / "fewrel", fixtures_dir, per_relation=5)
    monkeypatch.setenv("REDPO_DATA_DIR", str(tmp_path))
    assert cli.main(["data", "--fewrel", str(tmp_path / "few"), *options]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not (tmp_path / "few").exists()


# ---- the real bench ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_bench_output_on_the_smoke_generator_measures_both_modes_and_a_rerun_costs_nothing(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI on the smoke profile: its oracle, its generator through llama-server with and without the grammar;
    then the same bench again, answered from the call cache alone, reports the same numbers."""
    monkeypatch.setenv("REDPO_DATA_DIR", str(data_root))
    argv = ["bench", "output", "--profile", "smoke", "--results-dir", str(tmp_path), "-p", "generator.server.threads=1"]
    assert cli.main(argv) == 0
    first = json.loads((tmp_path / "smoke" / "metrics" / "bench_output.json").read_text())
    assert first["split"] == "k4_s1" and first["oracle"]["test_micro_f1"] is not None
    for mode in MODES:
        for arm in ARMS:
            row = first["modes"][mode][arm]
            # seconds_per_call is not asserted: the tiny model's calls can round to 0.0 model seconds
            assert row["calls"] > 0 and row["new_tokens_per_call"] > 0 and row["cached_responses"] == 0, (mode, arm)
            assert row["valid"] == 0 or 0 <= row["oracle_agreement"] <= 1
    # the grammar admits no reply without markers (a reply cut off by the token budget can still break them)
    assert all(first["modes"]["constrained"][arm]["format_rejects"]["no_markers"] == 0 for arm in ARMS)
    assert cli.main(argv) == 0
    again = json.loads((tmp_path / "smoke" / "metrics" / "bench_output.json").read_text())
    assert all(again["modes"][m][a]["cached_responses"] == again["modes"][m][a]["calls"] for m in MODES for a in ARMS)
    assert again["table"] == first["table"]
