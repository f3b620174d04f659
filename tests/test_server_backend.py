"""The inference-server client and the server lifecycle, against a stand-in ``llama-server`` (no build needed).

The stand-in (tests/fixtures/fake_llama_server.py) speaks the same command line and HTTP shapes; the real
binary is exercised by tests/test_llama_cpp.py, which is marked slow.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from redpo.config import SamplingConfig
from redpo.generation.backends.llama_server import PID_FILE, LlamaServer, ServerError, stop_stale
from redpo.generation.backends.server import TRANSFORMERS_SAMPLER_ORDER, ServerBackend, request_seed

FAKE = Path(__file__).parent / "fixtures" / "fake_llama_server.py"
SAMPLING = SamplingConfig(temperature=0.4, top_p=0.9, top_k=20, repetition_penalty=1.15, max_new_tokens=32)


class EchoTokenizer:
    """Renders chat messages without a chat template (the client only needs ``render``)."""

    chat_template = None


@pytest.fixture()
def fake_binary(tmp_path: Path) -> Path:
    """An executable named ``llama-server`` (stale-server detection goes by that name) that runs the stand-in."""
    binary = tmp_path / "bin" / "llama-server"
    binary.parent.mkdir()
    binary.write_text(f"#!{sys.executable}\nimport runpy\nrunpy.run_path({str(FAKE)!r}, run_name='__main__')\n")
    binary.chmod(0o755)
    return binary


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().split()[2] if Path(f"/proc/{pid}/stat").exists() else "X"
    return state != "Z"  # a zombie has exited; only its parent's wait() is missing


def _server(binary: Path, tmp_path: Path, parallel: int = 4) -> LlamaServer:
    return LlamaServer(binary, tmp_path / "model.gguf", log_dir=tmp_path / "logs", threads=1, parallel=parallel,
                       ctx_per_slot=512, startup_timeout=30)


# ---- requests ------------------------------------------------------------------------------------------------
def test_llama_cpp_request_sets_the_transformers_sampler_chain() -> None:
    body = ServerBackend("http://x", EchoTokenizer(), slots=2).body("p", SAMPLING, seed=7, slot=1)
    assert body["samplers"] == ["penalties", "top_k", "temperature", "top_p"] == list(TRANSFORMERS_SAMPLER_ORDER)
    assert (body["min_p"], body["typical_p"]) == (0.0, 1.0)  # not llama.cpp's defaults
    assert body["repeat_last_n"] == 4096  # the whole slot context, not a 64-token window
    assert (body["temperature"], body["top_k"], body["top_p"], body["repeat_penalty"]) == (0.4, 20, 0.9, 1.15)
    assert (body["n_predict"], body["seed"], body["id_slot"], body["cache_prompt"]) == (32, 7, 1, True)
    assert "lora" not in body and body["stop"] == []
    stop = ServerBackend("http://x", EchoTokenizer()).body("p", SAMPLING.model_copy(update={"stop": ["\n"]}), 1, 0)
    assert stop["stop"] == ["\n"]  # an OBO reply ends after its one sample line


def test_openai_request_names_the_served_model_and_greedy_turns_sampling_off() -> None:
    backend = ServerBackend("http://x", EchoTokenizer(), kind="openai", served_model="adapter-A")
    body = backend.body("p", SAMPLING, seed=3, slot=0)
    assert (body["model"], body["max_tokens"], body["top_k"], body["repetition_penalty"]) == ("adapter-A", 32, 20, 1.15)
    greedy = backend.body("p", SAMPLING.model_copy(update={"temperature": 0.0}), seed=3, slot=0)
    assert (greedy["temperature"], greedy["top_p"], greedy["top_k"]) == (0.0, 1.0, -1)


def test_request_seeds_are_32_bit_and_depend_on_batch_and_position() -> None:
    seeds = {request_seed(2**59 + 1, i) for i in range(50)}
    assert len(seeds) == 50 and all(0 <= s < 2**32 for s in seeds)
    assert request_seed(5, 0) == request_seed(5, 0) != request_seed(6, 0)


def test_each_prompt_goes_to_the_slot_holding_its_longest_prefix() -> None:
    backend = ServerBackend("http://x", EchoTokenizer(), slots=3)
    backend._slot_prompts = ["relation A demos 1 2", "relation B demos 1", ""]
    assert backend.assign_slots(["relation B demos 1 2", "relation A demos 1 2 3"]) == [1, 0]
    assert sorted(backend.assign_slots(["x", "y", "z"])) == [0, 1, 2]  # one distinct slot each
    with pytest.raises(ValueError, match="4 prompts for 3 slots"):
        backend.assign_slots(["a", "b", "c", "d"])


# ---- against the stand-in server -------------------------------------------------------------------------------
def test_a_step_goes_out_concurrently_and_an_obo_chain_keeps_its_slot(fake_binary: Path, tmp_path: Path) -> None:
    with _server(fake_binary, tmp_path, parallel=4) as server:
        backend = ServerBackend(server.url, EchoTokenizer(), slots=4)
        chains = [f"relation {r}: demo" for r in "ABCD"]
        first = backend.generate(chains, SAMPLING, seed=11)
        assert [o.n_new_tokens for o in first] == [4] * 4
        assert all("samplers=penalties,top_k,temperature,top_p" in o.text for o in first)
        slots = [int(o.text.split()[0].removeprefix("slot=")) for o in first]
        step2 = backend.generate([c + " +1 sample" for c in reversed(chains)], SAMPLING, seed=12)
        assert [int(o.text.split()[0].removeprefix("slot=")) for o in step2] == slots[::-1]  # same slot per chain
        assert backend.stats.prompt_tokens == sum(map(len, chains)) + 4 * len(" +1 sample")  # prefixes reused
        with urllib.request.urlopen(f"{server.url}/peak") as response:
            assert json.loads(response.read())["peak"] > 1  # requests overlapped


def test_server_errors_name_the_endpoint(fake_binary: Path, tmp_path: Path) -> None:
    backend = ServerBackend("http://127.0.0.1:9", EchoTokenizer())  # nothing listens on the discard port
    with pytest.raises(ServerError, match=r"127\.0\.0\.1:9/completion unreachable"):
        backend.generate(["p"], SAMPLING, seed=0)


def test_a_prompt_longer_than_a_slot_names_the_setting_to_raise(fake_binary: Path, tmp_path: Path) -> None:
    with _server(fake_binary, tmp_path, parallel=2) as server:  # 512 tokens per slot
        backend = ServerBackend(server.url, EchoTokenizer(), slots=2, context=512)
        assert backend.generate(["x" * 512], SAMPLING, seed=1)[0].n_new_tokens == 4
        with pytest.raises(ServerError, match=r"exceeds the available context.*raise generator\.server\.ctx_per_slot "
                                              r"\(now 512 tokens per slot\)"):
            backend.generate(["x" * 513], SAMPLING, seed=1)


# ---- lifecycle -----------------------------------------------------------------------------------------------
def test_start_writes_a_pid_file_and_stop_removes_server_and_file(fake_binary: Path, tmp_path: Path) -> None:
    server = _server(fake_binary, tmp_path).start()
    pid = json.loads(server.pid_file.read_text())["pid"]
    assert _alive(pid) and server.url.startswith("http://127.0.0.1:")
    assert "--no-webui" in server.command(1) and "--lora-init-without-apply" not in server.command(1)
    server.stop()
    assert not _alive(pid) and not server.pid_file.exists()
    server.stop()  # idempotent


def test_a_server_that_dies_while_starting_is_an_error_naming_its_log(tmp_path: Path) -> None:
    binary = tmp_path / "llama-server"
    binary.write_text("#!/bin/sh\necho 'error: model not found' >&2\nexit 3\n")
    binary.chmod(0o755)
    with pytest.raises(ServerError, match=r"exited with code 3 while starting; see .*llama-server\.log"):
        _server(binary, tmp_path).start()
    assert "model not found" in (tmp_path / "logs" / "llama-server.log").read_text()


def test_more_threads_than_free_cores_is_refused(fake_binary: Path, tmp_path: Path) -> None:
    with pytest.raises(ServerError, match=r"exceeds the \d+ free core"):
        LlamaServer(fake_binary, tmp_path / "m.gguf", log_dir=tmp_path, threads=len(os.sched_getaffinity(0)) + 1,
                    parallel=1, ctx_per_slot=512)


def test_a_stale_server_named_by_its_pid_file_is_stopped(fake_binary: Path, tmp_path: Path) -> None:
    stale = subprocess.Popen([str(fake_binary), "--port", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pid_file = tmp_path / PID_FILE
    pid_file.write_text(json.dumps({"pid": stale.pid, "port": 0}))
    time.sleep(0.5)
    assert stop_stale(pid_file) == stale.pid
    assert stale.wait(timeout=10) is not None and not pid_file.exists()
    pid_file.write_text(json.dumps({"pid": os.getpid()}))  # a live process that is not a server: left alone
    assert stop_stale(pid_file) == os.getpid() and not pid_file.exists()


def test_killing_the_process_that_started_the_server_leaves_no_server(fake_binary: Path, tmp_path: Path) -> None:
    """A notebook kernel killed with SIGKILL runs no Python at all: the kernel's death must take the server."""
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from redpo.generation.backends.llama_server import LlamaServer\n"
        f"s = LlamaServer(Path({str(fake_binary)!r}), Path('m.gguf'), log_dir=Path({str(tmp_path / 'logs')!r}),\n"
        "                threads=1, parallel=1, ctx_per_slot=512, startup_timeout=30).start()\n"
        "print(s.process.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    kernel = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    server_pid = int(kernel.stdout.readline())
    assert _alive(server_pid)
    kernel.send_signal(signal.SIGKILL)
    kernel.wait(timeout=10)
    deadline = time.monotonic() + 10
    while _alive(server_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(server_pid)


def test_a_server_someone_else_runs_gets_each_adapter_by_its_served_name_or_index(tmp_path: Path) -> None:
    """vLLM/SGLang serve the adapters under their folder names; a user's llama-server loads them in order A, B."""
    from redpo.config import load_profile
    from redpo.core.io import ResultsDir
    from redpo.generation import engines
    from redpo.generation.cache import LLMCache

    adapters = [(tmp_path / "A", "sha-a"), (tmp_path / "B", "sha-b")]
    bodies, keys = {}, {}
    for kind in ("openai", "llama_cpp"):
        prof = load_profile("smoke", {"generator.server.url": "http://127.0.0.1:9", "generator.server.kind": kind})
        for active in (None, 1):
            gen = engines.server_generator(prof, ResultsDir(prof, root=tmp_path), LLMCache(None),
                                           adapters=adapters if active is not None else (), active=active)
            bodies[kind, active] = gen.backend.body("p", SAMPLING, 1, 0)
            keys[kind, active] = gen.model_key
    assert bodies["openai", 1]["model"] == "B" and bodies["openai", None]["model"] == "tiny-random-llama"
    assert bodies["llama_cpp", 1]["lora"] == [{"id": 0, "scale": 0.0}, {"id": 1, "scale": 1.0}]
    assert "lora" not in bodies["llama_cpp", None]
    assert keys["openai", 1].adapter_sha256 == "sha-b" and keys["openai", None].adapter_sha256 is None
