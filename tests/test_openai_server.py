"""The GPU client path (``generator.server.kind: openai``, what vLLM and SGLang speak) against a real server.

``llama-server`` also serves the OpenAI-compatible ``/v1/completions``, so the test starts one on the smoke GGUF,
as a user starts ``vllm serve`` on a GPU machine, and points notebook 01 at it by URL with ``kind: openai``, its
key in an environment variable and grammar-constrained decoding on (the body fields it sends are listed in
docs/engines-openai.md). Then it checks what a user relies on: the samples, the cache keys naming the server
(not the local model), that the body's grammar binds the server, and a rerun answered wholly from the cache with
the server gone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from redpo.config import SamplingConfig, load_profile
from redpo.core.io import ResultsDir
from redpo.generation import engines

pytestmark = pytest.mark.slow

KEY_ENV = "REDPO_TEST_OPENAI_KEY"


def _run_01(env: dict[str, str], url: str) -> subprocess.CompletedProcess[str]:
    overrides = {"generator.server.url": url, "generator.server.kind": "openai",
                 "generator.server.api_key_env": KEY_ENV, "generation.constrained": "true"}
    cmd = [sys.executable, "-m", "redpo", "run", "--profile", "smoke", "--only", "00,01", "--no-progress",
           *(arg for key, value in overrides.items() for arg in ("-p", f"{key}={value}"))]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)


def test_notebook_01_through_an_openai_compatible_server_keys_by_the_server_and_resumes_without_it(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDPO_DATA_DIR", str(data_root))
    smoke = load_profile("smoke")
    server = engines.local_server(smoke, ResultsDir(smoke, root=tmp_path / "server"),
                                  Path(engines.gguf_weights(smoke).path))
    url = server.url
    env = {**os.environ, "REDPO_RESULTS_DIR": str(tmp_path / "results"), KEY_ENV: server.api_key or ""}
    try:
        first = _run_01(env, url)
        # The top-level `grammar` of the openai body binds the server: a one-word grammar gets that word back.
        client = engines.server_backend(smoke, url, engines.profile_tokenizer(smoke), api_key=server.api_key,
                                        kind="openai", served_model=smoke.generator.model)
        bound = client.generate(["Say something."], SamplingConfig(grammar='root ::= "yes"', max_new_tokens=8), 1)
    finally:
        engines.stop_servers()  # the rerun below must not need it
    assert [r.text for r in bound] == ["yes"]
    assert first.returncode == 0, first.stderr[-3000:]
    run = tmp_path / "results" / "smoke"
    served = f"{smoke.generator.model}@openai:{url}"
    stats = {p.name: json.loads(p.read_text()) for p in sorted((run / "generations").glob("baseline_*.stats.json"))}
    assert len(stats) == len(smoke.fewshot.k) * len(smoke.fewshot.seeds), sorted(stats)
    for name, arm in stats.items():
        model = arm["info"]["model"]
        assert (model["name"], model["sha256"]) == (served, f"served:{smoke.generator.model}"), name
        assert arm["info"]["backend_calls"] > 0 and arm["info"]["cached_responses"] == 0, name
        assert sum(st["valid"] for st in arm["stats"].values() if not st["manual"]) > 0, name  # samples came back
        samples = (run / "generations" / name.replace(".stats.json", ".jsonl")).read_text().splitlines()
        assert {json.loads(line)["relation"] for line in samples} <= set(smoke.dataset.relations)
    manifest = json.loads((run / "manifest.json").read_text())
    assert {manifest["arms"][a]["name"] for a in manifest["arms"]} == {served}
    assert not any("@llama.cpp:" in name for name in manifest["models"])  # nothing was served locally
    cache = run / "cache" / "llm_calls.jsonl"
    lines = [json.loads(line) for line in cache.read_text().splitlines()]
    assert lines and {line["model"] for line in lines} == {served}  # every cached call names the remote server
    responses = [r for p in (run / "generations").glob("baseline_*.responses.json") for r in json.loads(p.read_text())]

    before = cache.read_bytes()
    again = _run_01(env, url)  # the server is gone: only the cache can answer
    assert again.returncode == 0, again.stderr[-3000:]
    assert cache.read_bytes() == before
    for name in stats:
        info = json.loads((run / "generations" / name).read_text())["info"]
        assert info["backend_calls"] == 0 and info["cached_responses"] == info["responses"] > 0, name
    rerun = [r for p in (run / "generations").glob("baseline_*.responses.json") for r in json.loads(p.read_text())]
    assert sorted(r["text"] for r in rerun) == sorted(r["text"] for r in responses)
