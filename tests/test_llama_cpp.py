"""The real llama.cpp engine: the pinned build, the smoke generator exported to GGUF, and the server against
transformers on the same weights (tokens, greedy decoding) and through the resumable call cache."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import torch

from redpo.config import Profile, SamplingConfig, load_profile
from redpo.core.io import ResultsDir
from redpo.data.splits import load_split, profile_schema
from redpo.generation import engines, prompts
from redpo.generation.backends import GenerationOutput
from redpo.generation.backends.server import ServerBackend
from redpo.generation.cache import CachedGenerator, LLMCache, ModelKey
from redpo.generation.loops import generate_arm
from redpo.generation.smoke_fit import fitted_tiny_llama
from redpo.models import llama_cpp

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke(data_root: Path) -> Profile:
    import os

    os.environ["REDPO_DATA_DIR"] = str(data_root)
    return load_profile("smoke", {"generator.backend": "llama_cpp", "generator.server.weights": "f32",
                                  "generator.server.parallel": 4, "generator.server.threads": 1})


@pytest.fixture(scope="module")
def server(smoke: Profile, tmp_path_factory: pytest.TempPathFactory) -> Any:
    results = ResultsDir(smoke, root=tmp_path_factory.mktemp("llama"))
    srv = engines.local_server(smoke, results, Path(engines.gguf_weights(smoke).path))
    yield srv
    engines.stop_servers()


def _post(url: str, path: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(url + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.loads(response.read())


def _prompts(smoke: Profile, n: int = 3) -> list[str]:
    schema = profile_schema(smoke)
    train = load_split(smoke, "train")
    tokenizer = fitted_tiny_llama(smoke).tokenizer
    out = []
    for rel in smoke.dataset.relations[:n]:
        demos = [s for s in train if s.relation == rel][:3]
        out.append(prompts.render(prompts.icl_prompt(schema, rel, demos, mode="obo", n=1, dissimilar=True), tokenizer))
    return out


def test_the_build_is_pinned_recorded_and_not_redone(monkeypatch: pytest.MonkeyPatch) -> None:
    build = llama_cpp.require_build()
    assert build.info["sdist_sha256"] == llama_cpp.SDIST_SHA256 and build.info["cmake_flags"] == list(
        llama_cpp.CMAKE_FLAGS)
    assert build.version and build.server.is_file() and (build.source / "convert_lora_to_gguf.py").is_file()
    monkeypatch.setattr(llama_cpp, "_run", lambda *a, **k: pytest.fail("a finished build was rebuilt"))
    assert llama_cpp.build_llama_server().root == build.root


def test_the_server_tokenizes_the_smoke_prompts_as_transformers_does(smoke: Profile, server: Any) -> None:
    tokenizer = fitted_tiny_llama(smoke).tokenizer
    for prompt in _prompts(smoke):
        served = _post(server.url, "/tokenize", {"content": prompt, "add_special": False, "parse_special": True})
        assert served["tokens"] == tokenizer(prompt, add_special_tokens=False)["input_ids"]


def test_greedy_decoding_agrees_with_transformers_on_the_same_weights(smoke: Profile, server: Any) -> None:
    loaded = fitted_tiny_llama(smoke)
    greedy = SamplingConfig(temperature=0.0, repetition_penalty=1.0, max_new_tokens=32)
    backend = ServerBackend(server.url, loaded.tokenizer, slots=4)
    agree = total = 0
    for prompt, served in zip(_prompts(smoke), backend.generate(_prompts(smoke), greedy, seed=0), strict=True):
        ids = loaded.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            out = loaded.model.generate(**ids, max_new_tokens=32, do_sample=False, temperature=None, top_p=None,
                                        top_k=None, pad_token_id=loaded.tokenizer.pad_token_id)
        reference = out[0, ids["input_ids"].shape[1]:].tolist()
        mine = loaded.tokenizer(served.text, add_special_tokens=False)["input_ids"]
        total += len(reference)
        agree += sum(a == b for a, b in zip(reference, mine, strict=False))
    assert agree / total >= 0.9, f"{agree}/{total} greedy tokens agree"


class Crash(RuntimeError):
    pass


class CrashAfter:
    """Delegates to the server backend and raises after ``limit`` batches: a run killed mid-generation."""

    def __init__(self, inner: ServerBackend, limit: int | None) -> None:
        self.inner, self.limit, self.calls, self.batch_size = inner, limit, 0, inner.batch_size

    def render(self, messages: prompts.Messages) -> str:
        return self.inner.render(messages)

    def generate(self, batch: list[str], sampling: SamplingConfig, seed: int) -> list[GenerationOutput]:
        if self.limit is not None and self.calls >= self.limit:
            raise Crash("killed")
        self.calls += 1
        return self.inner.generate(batch, sampling, seed)


def test_a_killed_run_resumes_through_llama_cpp_losing_and_repeating_nothing(
    smoke: Profile, server: Any, tmp_path: Path
) -> None:
    schema = profile_schema(smoke)
    train = load_split(smoke, "train")
    pools = {rel: [s for s in train if s.relation == rel][:4] for rel in smoke.dataset.relations}
    prof = smoke.model_copy(update={"generation": smoke.generation.model_copy(update={"max_attempts": 3})})
    tokenizer = fitted_tiny_llama(smoke).tokenizer
    key = ModelKey("smoke@llama.cpp", "test")

    def attempt(cache: Path, limit: int | None) -> tuple[Any, CachedGenerator]:
        backend = CrashAfter(ServerBackend(server.url, tokenizer, slots=4), limit)
        gen = CachedGenerator(backend, LLMCache(cache), key)
        return generate_arm("obo", prof, schema, pools, gen, progress=False), gen

    reference, _ = attempt(tmp_path / "reference.jsonl", None)
    with pytest.raises(Crash):
        attempt(tmp_path / "run.jsonl", 1)
    resumed, gen = attempt(tmp_path / "run.jsonl", None)
    assert gen.cache.hits >= 4  # the first step was saved and is not asked again
    lines = (tmp_path / "run.jsonl").read_text().splitlines()
    keys = [e["key"] for line in lines for e in json.loads(line)["entries"]]
    assert len(keys) == len(set(keys)) == len(resumed.records)  # nothing lost, nothing asked twice
    # Same seeds, same slots, one thread: the server reproduces the uninterrupted run's samples exactly.
    assert [r.text for r in resumed.records] == [r.text for r in reference.records]
