"""The LLM-call cache: keys cover every output-determining field, torn writes are survived, hits cost nothing."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from redpo.config import SamplingConfig
from redpo.generation.backends import GenerationOutput
from redpo.generation.cache import CachedGenerator, CacheEntry, LLMCache, ModelKey, Request, batch_seed, cache_key

BASE = {
    "model": "m",
    "model_sha256": "a" * 64,
    "adapter_sha256": None,
    "prompt": "p",
    "sampling": SamplingConfig().model_dump(),
    "seed": 0,
    "attempt": 0,
}
CHANGED = {
    "model": "m2",
    "model_sha256": "b" * 64,
    "adapter_sha256": "c" * 64,
    "prompt": "p ",
    "sampling": SamplingConfig(temperature=0.5).model_dump(),
    "seed": 1,
    "attempt": 1,
}


@pytest.mark.parametrize("field", sorted(CHANGED))
def test_key_changes_with_every_field(field: str) -> None:
    assert cache_key(**BASE) != cache_key(**{**BASE, field: CHANGED[field]})


def test_key_is_stable_and_batch_seed_ignores_order() -> None:
    assert cache_key(**BASE) == cache_key(**dict(reversed(list(BASE.items()))))
    assert batch_seed(["x", "y"]) == batch_seed(["y", "x"]) != batch_seed(["x"])


def test_a_torn_last_line_is_ignored_then_cut_away_once(tmp_path: Path) -> None:
    path = tmp_path / "calls.jsonl"
    cache = LLMCache(path)
    cache.append_batch([CacheEntry("k1", "one", 3, 0.1), CacheEntry("k2", "two", 4, 0.1)])
    clean = path.read_bytes()
    with path.open("ab") as f:  # what kill -9 in the middle of a write leaves behind
        f.write(b'{"format": 1, "entries": [{"key": "k3", "te')
    reloaded = LLMCache(path)
    assert len(reloaded) == 2 and "k3" not in reloaded and reloaded.skipped_lines == 1
    with pytest.warns(UserWarning, match=r"calls.jsonl:2: removed a torn cache line"):
        reloaded.append_batch([CacheEntry("k3", "three", 5, 0.1)])
    assert path.read_bytes().startswith(clean) and len(path.read_bytes().splitlines()) == 2  # the torn bytes are gone
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # reported once: the next run loads a clean file, silently
        final = LLMCache(path)
    assert {k: final.lookup([k])[k].text for k in ("k1", "k2", "k3")} == {"k1": "one", "k2": "two", "k3": "three"}


@pytest.mark.parametrize(("entry", "field"), [
    ({"key": "k9", "text": 12345, "n_new_tokens": 1, "seconds": 0.1}, "text"),
    ({"key": "k9", "text": "x", "n_new_tokens": 1, "seconds": "x"}, "seconds"),
    ({"key": "k9", "text": "x", "n_new_tokens": -1, "seconds": 0.1}, "n_new_tokens"),
])
def test_an_entry_of_the_wrong_type_is_skipped_with_its_line_never_used(tmp_path: Path, entry: dict,
                                                                        field: str) -> None:
    path = tmp_path / "calls.jsonl"
    LLMCache(path).append_batch([CacheEntry("k1", "one", 3, 0.1)])
    with path.open("a") as f:
        f.write(json.dumps({"format": 1, "entries": [entry]}) + "\n")
    with pytest.warns(UserWarning, match=rf"calls.jsonl:2: skipped an unreadable cache line .*{field}"):
        cache = LLMCache(path)
    assert "k9" not in cache and "k1" in cache and cache.skipped_lines == 1


def test_a_second_different_answer_for_a_key_is_refused_and_the_first_kept(tmp_path: Path) -> None:
    path = tmp_path / "calls.jsonl"
    cache = LLMCache(path)
    cache.append_batch([CacheEntry("k1", "genuine", 3, 0.1), CacheEntry("k2", "two", 4, 0.1)])
    written = path.read_bytes()
    cache.append_batch([CacheEntry("k1", "genuine", 3, 0.1)])  # a repeat: nothing written, nothing reported
    with pytest.warns(UserWarning, match=r"calls.jsonl: refused a second, different answer for key k1 .*'forged'"):
        cache.append_batch([CacheEntry("k1", "forged", 3, 0.1)])
    assert path.read_bytes() == written and cache.lookup(["k1"])["k1"].text == "genuine"
    assert cache.refused_entries == 1 and cache.batches_written == 1

    with path.open("a") as f:  # a forged line appended behind the genuine one (what main's restore merged in)
        f.write(json.dumps({"format": 1, "entries": [{"key": "k1", "text": "forged", "n_new_tokens": 3,
                                                      "seconds": 0.1}]}) + "\n")
    with pytest.warns(UserWarning, match=r"calls.jsonl:2: refused a second, different answer for key k1"):
        reloaded = LLMCache(path)
    assert len(reloaded) == 2 and reloaded.lookup(["k1"])["k1"].text == "genuine"
    assert reloaded.stats()["refused_entries"] == 1
    assert (tmp_path / "conflicts.log").read_text().count("refused a second") == 2  # for the runner to print


@pytest.mark.slow  # runs a notebook
def test_the_runner_prints_what_a_cache_refused_inside_a_notebook(data_root: Path, results_tmp: Path,
                                                                  tmp_path: Path) -> None:
    """Inside a papermill kernel a warning lands only in the executed notebook; the runner prints it too."""
    from test_runner import redpo_cli, write_notebook

    nbdir = tmp_path / "nbs"
    nbdir.mkdir()
    write_notebook(nbdir / "00_refuse.ipynb", "\n".join([
        "from redpo.core.io import ResultsDir",
        "from redpo.generation.cache import CacheEntry, LLMCache",
        "cache = LLMCache(ResultsDir(profile, root=results_dir).cache / 'llm_calls.jsonl')",
        "cache.append_batch([CacheEntry('k1', 'genuine', 1, 0.1)])",
        "cache.append_batch([CacheEntry('k1', 'forged', 1, 0.1)])",
    ]))
    proc = redpo_cli("run", "--profile", "smoke", "--notebooks-dir", str(nbdir), "--no-progress",
                     data_root=data_root, results=results_tmp)
    assert proc.returncode == 0, proc.stderr[-2000:]
    refused = [line for line in proc.stderr.splitlines() if "refused a second, different answer" in line]
    assert len(refused) == 1 and refused[0].startswith("warning: ") and "key k1" in refused[0]


class CountingBackend:
    batch_size = 2

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def render(self, messages: list[dict[str, str]]) -> str:
        return "\n".join(m["content"] for m in messages)

    def generate(self, prompts: list[str], sampling: SamplingConfig, seed: int) -> list[GenerationOutput]:
        self.prompts.extend(prompts)
        return [GenerationOutput(f"out:{p}:{seed}", 2) for p in prompts]


def test_hits_make_no_backend_call(tmp_path: Path) -> None:
    requests = [Request(f"prompt {i}", SamplingConfig(), 0, 0) for i in range(3)]
    backend = CountingBackend()
    first = CachedGenerator(backend, LLMCache(tmp_path / "c.jsonl"), ModelKey("m", "a" * 64))
    out1 = first.generate(requests)
    assert len(backend.prompts) == 3 and first.backend_calls == 2  # chunks of batch_size
    again = CachedGenerator(backend, LLMCache(tmp_path / "c.jsonl"), ModelKey("m", "a" * 64))
    out2 = again.generate([*requests, requests[0]])
    assert len(backend.prompts) == 3 and again.backend_calls == 0
    assert [r.text for r in out2] == [r.text for r in out1] + [out1[0].text]
    assert all(r.cached for r in out2) and again.cache.hits == 3 and again.cache.misses == 0


def test_no_stop_strings_keep_the_keys_of_runs_made_before_they_existed() -> None:
    """A cache written before ``SamplingConfig.stop`` and ``.grammar`` existed must still answer the same calls."""
    sampling = SamplingConfig()
    gen = CachedGenerator(object(), LLMCache(None), ModelKey("m", "0" * 64), batch_size=1)  # type: ignore[arg-type]
    before = cache_key(model="m", model_sha256="0" * 64, adapter_sha256=None, prompt="p",
                       sampling=sampling.model_dump(mode="json", exclude={"stop", "grammar"}), seed=1, attempt=0)
    assert gen.key(Request("p", sampling, 1, 0)) == before
    with_stop = Request("p", sampling.model_copy(update={"stop": ["\n"]}), 1, 0)
    assert gen.key(with_stop) != before
    assert gen.key(Request("p", sampling.model_copy(update={"grammar": "root ::= [a-z]+"}), 1, 0)) != before


def test_on_answered_counts_every_request_hits_first_then_each_chunk(tmp_path: Path) -> None:
    """What drives the direct-LLM baseline's bar: every request is counted once, a repeated one too."""
    requests = [Request(f"prompt {i}", SamplingConfig(), 0, 0) for i in range(5)]
    gen = CachedGenerator(CountingBackend(), LLMCache(tmp_path / "c.jsonl"), ModelKey("m", "a" * 64))
    gen.generate(requests[:2])
    heard: list[int] = []
    gen.generate([*requests, requests[4]], on_answered=heard.append)
    assert heard == [2, 2, 2]  # 2 hits at once, then chunks of 2 misses (the repeated prompt 4 counts twice)
