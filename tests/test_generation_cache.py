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
    """A cache written before ``SamplingConfig.stop`` existed must still answer the same calls."""
    sampling = SamplingConfig()
    gen = CachedGenerator(object(), LLMCache(None), ModelKey("m", "0" * 64), batch_size=1)  # type: ignore[arg-type]
    before = cache_key(model="m", model_sha256="0" * 64, adapter_sha256=None, prompt="p",
                       sampling=sampling.model_dump(mode="json", exclude={"stop"}), seed=1, attempt=0)
    assert gen.key(Request("p", sampling, 1, 0)) == before
    with_stop = Request("p", sampling.model_copy(update={"stop": ["\n"]}), 1, 0)
    assert gen.key(with_stop) != before
