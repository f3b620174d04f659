"""The real llama.cpp engine: the pinned build, the smoke generator exported to GGUF, and the server against
transformers on the same weights (tokens, greedy decoding) and through the resumable call cache."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from fakes import Fault, FaultyBackend

from redpo.config import Profile, load_profile
from redpo.core.hashing import sha256_file
from redpo.core.io import ResultsDir
from redpo.data.splits import load_split, profile_schema
from redpo.dpo.lora_check import top1_agreement
from redpo.generation import engines, prompts
from redpo.generation.backends.llama_server import ServerError
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
def server_results(smoke: Profile, tmp_path_factory: pytest.TempPathFactory) -> Any:
    yield ResultsDir(smoke, root=tmp_path_factory.mktemp("llama"))
    engines.stop_servers()


@pytest.fixture()
def server(smoke: Profile, server_results: ResultsDir) -> Any:
    """The smoke GGUF's server: started once, reused by every test (started again if a test stopped it)."""
    return engines.local_server(smoke, server_results, Path(engines.gguf_weights(smoke).path))


def _client(smoke: Profile, server: Any) -> ServerBackend:
    """A client of the local server, with this start's key."""
    return engines.local_backend(smoke, server, fitted_tiny_llama(smoke).tokenizer)


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
        served = _client(smoke, server).post("/tokenize", {"content": prompt, "add_special": False,
                                                            "parse_special": True})
        assert served["tokens"] == tokenizer(prompt, add_special_tokens=False)["input_ids"]


def test_top1_tokens_agree_with_transformers_on_the_same_weights(smoke: Profile, server: Any) -> None:
    loaded = fitted_tiny_llama(smoke)
    agreement = top1_agreement(loaded.model, loaded.tokenizer, _client(smoke, server), _prompts(smoke))["agreement"]
    print(f"base: teacher-forced top-1 agreement {agreement:.3f}")
    assert agreement >= 0.9, agreement


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
        backend = FaultyBackend(ServerBackend(server.url, tokenizer, slots=4, api_key=server.api_key), limit)
        gen = CachedGenerator(backend, LLMCache(cache), key)
        return generate_arm("obo", prof, schema, pools, gen, progress=False), gen

    reference, _ = attempt(tmp_path / "reference.jsonl", None)
    with pytest.raises(Fault):
        attempt(tmp_path / "run.jsonl", 1)
    resumed, gen = attempt(tmp_path / "run.jsonl", None)
    generated = sum(not st.manual for st in reference.stats.values())  # the negative label is copied, not asked
    assert gen.cache.hits >= generated  # the first step was saved and is not asked again
    lines = (tmp_path / "run.jsonl").read_text().splitlines()
    keys = [e["key"] for line in lines for e in json.loads(line)["entries"]]
    assert len(keys) == len(set(keys)) == len(resumed.records)  # nothing lost, nothing asked twice
    # Same seeds, same slots, one thread: the server reproduces the uninterrupted run's samples exactly.
    assert [r.text for r in resumed.records] == [r.text for r in reference.records]


def test_a_gguf_lora_adapter_decodes_like_transformers_with_peft(smoke: Profile, tmp_path: Path) -> None:
    from datasets import Dataset

    from redpo.dpo.train import train_adapter
    from redpo.models.load import clear_model_cache, load_causal_lm
    from redpo.models.packaged import hash_model_dir

    batch = _prompts(smoke)
    prof = smoke.model_copy(update={"dpo": smoke.dpo.model_copy(update={
        "max_steps": 8, "batch_size": 4, "learning_rate": 5e-3, "max_length": 448})})
    pairs = Dataset.from_list([{"prompt": p, "chosen": "the <e1>storm</e1> caused <e2>damage</e2> .",
                                "rejected": "no no no"} for p in batch * 4])
    adapter = tmp_path / "adapter"
    train_adapter(prof, pairs, adapter, progress=False)
    base = engines.base_hf_dir(smoke)
    clear_model_cache()
    with_peft = load_causal_lm(str(base), adapter=str(adapter))
    results = ResultsDir(smoke, root=tmp_path / "results")
    generator = engines.server_generator(smoke, results, LLMCache(None),
                                         adapters=[(adapter, hash_model_dir(adapter))], active=0)
    try:
        assert generator.model_key.adapter_sha256 == hash_model_dir(adapter)
        assert generator.backend.lora == [{"id": 0, "scale": 1.0}]
        agreement = top1_agreement(with_peft.model, with_peft.tokenizer, generator.backend, batch,
                                   lora=generator.backend.lora)["agreement"]
        print(f"LoRA: teacher-forced top-1 agreement {agreement:.3f}")
        assert agreement >= 0.9, agreement
    finally:
        engines.stop_servers()
        clear_model_cache()


def _running(pid: int) -> bool:
    """The process exists and has not exited (an exited child waiting to be reaped is a zombie, ``Z``)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (OSError, IndexError):
        return False


def test_notebooks_generate_through_the_server_and_leave_no_server_behind(data_root: Path, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "REDPO_RESULTS_DIR": str(tmp_path), "REDPO_DATA_DIR": str(data_root)}
    cmd = [sys.executable, "-m", "redpo", "run", "--profile", "smoke", "--only", "00,01,02", "--no-progress",
           "-p", "generator.backend=llama_cpp", "-p", "generator.server.weights=f32",
           "-p", "generator.server.threads=1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((tmp_path / "smoke" / "manifest.json").read_text())
    assert any("@llama.cpp:" in name for name in manifest["models"]), manifest["models"]
    stats = json.loads((tmp_path / "smoke" / "generations" / "obo_k4_s1.stats.json").read_text())
    assert "@llama.cpp:" in stats["info"]["model"]["name"]  # the arm names the engine that produced it
    assert "@llama.cpp:" in manifest["arms"]["obo_k4_s1"]["name"]  # and so does the manifest
    log_dir = tmp_path / "smoke" / "logs"
    pids = [int(line.split()[2]) for line in (log_dir / "llama-server.log").read_text().splitlines()
            if line.startswith("# pid ")]
    deadline = time.monotonic() + 30  # a server told to stop as its kernel died may take a moment to exit
    while any(_running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert pids and not any(_running(pid) for pid in pids), "a server of this run is still alive"
    # Each kernel stops its server as it ends, even when Jupyter ends it with SIGTERM, and removes its pid file.
    assert sorted(log_dir.glob("llama-server*.pid")) == []
    served = next(entry for name, entry in manifest["models"].items() if "@llama.cpp:" in name)
    assert served["server_sha256"] == sha256_file(llama_cpp.require_build().server)  # the binary that ran


def test_the_server_answers_only_requests_with_its_key_and_reports_its_model(smoke: Profile, server: Any) -> None:
    """What ``start`` relies on to know the port is its own server: 401 without the key, ``model_path`` with it."""
    def get(path: str, key: str | None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        try:
            with urllib.request.urlopen(urllib.request.Request(server.url + path, headers=headers), timeout=60) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as err:
            return err.code, None

    assert get("/props", None)[0] == get("/props", "not-the-key")[0] == 401
    status, props = get("/props", server.api_key)
    assert status == 200 and props["model_path"] == str(server.model)
    assert get("/health", None)[0] == 200  # public, so it proves nothing
    with pytest.raises(ServerError, match="answered 401"):
        ServerBackend(server.url, fitted_tiny_llama(smoke).tokenizer).post("/tokenize", {"content": "x"})


def test_grammar_constrained_replies_all_parse(smoke: Profile, server: Any) -> None:
    """The smoke generator, sampled hot, through the real server: free replies lose samples to format (no
    markers, broken markers), constrained ones never do unless the token budget cut them off mid-sentence."""
    from redpo.config import ARMS, derive
    from redpo.generation.loops import arm_sampling
    from redpo.generation.parse import MALFORMED_MARKERS, NO_MARKERS, parse_response

    schema, rels = profile_schema(smoke), smoke.dataset.relations[:3]
    hot = derive(smoke.generator.sampling, {"temperature": 1.0})
    lost = {}
    for constrained in (False, True):
        sampling = arm_sampling(hot, derive(smoke.generation, {"constrained": constrained}), ARMS["obo"], schema)
        replies = _client(smoke, server).generate(_prompts(smoke) * 8, sampling, seed=11)
        whole = [(r, rel) for r, rel in zip(replies, rels * 8, strict=True) if r.n_new_tokens < sampling.max_new_tokens]
        parsed = [parse_response(r.text, rel, schema, expect="one").reason_counts() for r, rel in whole]
        lost[constrained] = sum(p.get(NO_MARKERS, 0) + p.get(MALFORMED_MARKERS, 0) for p in parsed)
    assert lost[False] > 0 and lost[True] == 0, lost  # among the replies that ended within the budget


class _LosesServer:
    """Delegates to a fleet's client and SIGKILLs one of its servers before batch ``after`` + 1: a server that goes
    down mid-run, after it has answered its share of the earlier batches."""

    def __init__(self, fleet: ServerBackend, victim: Any, after: int) -> None:
        self.fleet, self.victim, self.after, self.calls = fleet, victim, after, 0
        self.batch_size = fleet.batch_size
        self.answered_before: list[int] = []

    def render(self, messages: Any) -> str:
        return self.fleet.render(messages)

    def generate(self, prompts: list[str], sampling: Any, seed: int) -> Any:
        if self.calls == self.after:
            self.answered_before = list(self.fleet.answered)
            self.victim.process.kill()
            self.victim.process.wait()
        self.calls += 1
        return self.fleet.generate(prompts, sampling, seed)


def test_two_servers_one_killed_mid_run_lose_nothing_and_ask_nothing_twice(smoke: Profile, tmp_path: Path) -> None:
    """Two real llama-servers on the smoke model, each with its own key, serve one OBO arm; one is SIGKILLed after
    the first step: the other answers the rest, every call is in the cache once, and every record came back."""
    from redpo.generation.backends.llama_server import LlamaServer

    schema = profile_schema(smoke)
    train = load_split(smoke, "train")
    pools = {rel: [s for s in train if s.relation == rel][:4] for rel in smoke.dataset.relations}
    prof = smoke.model_copy(update={"generation": smoke.generation.model_copy(update={"max_attempts": 3})})
    binary = engines.verified_server_binary(llama_cpp.require_build())
    weights = Path(engines.gguf_weights(smoke).path)
    servers = [LlamaServer(binary, weights, log_dir=tmp_path / name, threads=1, parallel=2, ctx_per_slot=1024)
               for name in ("a", "b")]
    try:
        for server in servers:
            server.start()
        fleet = ServerBackend([s.url for s in servers], fitted_tiny_llama(smoke).tokenizer, slots=2,
                              api_key=[s.api_key for s in servers])
        backend = _LosesServer(fleet, servers[1], after=1)
        generator = CachedGenerator(backend, LLMCache(tmp_path / "calls.jsonl"), ModelKey("smoke@fleet", "test"))
        with pytest.warns(UserWarning, match="go to the other 1 server"):
            result = generate_arm("obo", prof, schema, pools, generator, progress=False)
    finally:
        for server in servers:
            server.stop()
    assert backend.calls > 1 and backend.answered_before[1] > 0  # b served the run before it was killed
    assert fleet.down == {1} and fleet.answered[1] == backend.answered_before[1]
    keys = [e["key"] for line in (tmp_path / "calls.jsonl").read_text().splitlines()
            for e in json.loads(line)["entries"]]
    assert len(keys) == len(set(keys)) == len(result.records) == sum(fleet.answered)  # nothing lost or asked twice
