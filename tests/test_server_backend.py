"""The inference-server client and the server lifecycle, against a stand-in ``llama-server`` (no build needed).

The stand-in (tests/fixtures/fake_llama_server.py) speaks the same command line and HTTP shapes; the real
binary is exercised by tests/test_llama_cpp.py, which is marked slow.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from redpo.config import SamplingConfig
from redpo.generation.backends import llama_server
from redpo.generation.backends.llama_server import LlamaServer, ServerError, process_start, stop_stale
from redpo.generation.backends.server import TRANSFORMERS_SAMPLER_ORDER, ServerBackend, request_seed
from redpo.generation.cache import CachedGenerator, LLMCache, ModelKey, Request

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


def _backend(server: LlamaServer, slots: int, **options: object) -> ServerBackend:
    return ServerBackend(server.url, EchoTokenizer(), slots=slots, api_key=server.api_key, **options)


def _pid_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "logs").glob("llama-server*.pid"))


def _wait_gone(pid: int, seconds: float = 15) -> bool:
    """True once ``pid`` has exited (bounded: a process told to stop may take a moment)."""
    deadline = time.monotonic() + seconds
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(pid)


def _owner_script(binary: Path, tmp_path: Path) -> str:
    """A process (a notebook kernel, say) that starts a server in ``tmp_path/logs``, prints its pid, and waits."""
    return (
        "import time\n"
        "from pathlib import Path\n"
        "from redpo.generation.backends.llama_server import LlamaServer\n"
        f"s = LlamaServer(Path({str(binary)!r}), Path('m.gguf'), log_dir=Path({str(tmp_path / 'logs')!r}),\n"
        "                threads=1, parallel=1, ctx_per_slot=512, startup_timeout=30).start()\n"
        "print(s.process.pid, flush=True)\n"
        "time.sleep(600)\n"
    )


def _start_owner(binary: Path, tmp_path: Path) -> tuple[subprocess.Popen[str], int]:
    owner = subprocess.Popen([sys.executable, "-c", _owner_script(binary, tmp_path)], stdout=subprocess.PIPE,
                             text=True)
    assert owner.stdout is not None
    return owner, int(owner.stdout.readline())


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
        backend = _backend(server, slots=4)
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
        backend = _backend(server, slots=2, context=512)
        assert backend.generate(["x" * 512], SAMPLING, seed=1)[0].n_new_tokens == 4
        with pytest.raises(ServerError, match=r"exceeds the available context.*raise generator\.server\.ctx_per_slot "
                                              r"\(now 512 tokens per slot\)"):
            backend.generate(["x" * 513], SAMPLING, seed=1)


# ---- lifecycle -----------------------------------------------------------------------------------------------
def test_start_writes_a_pid_file_and_stop_removes_server_and_file(fake_binary: Path, tmp_path: Path) -> None:
    server = _server(fake_binary, tmp_path).start()
    assert server.pid_file is not None
    assert server.pid_file.name == f"llama-server-{os.getpid()}-{server.process.pid}.pid"  # one per owner and server
    record = json.loads(server.pid_file.read_text())
    pid = record["pid"]
    assert _alive(pid) and server.url.startswith("http://127.0.0.1:")
    assert record["start"] == process_start(pid) and record["argv"] == server.command(server.port)
    assert (record["owner"], record["owner_start"]) == (os.getpid(), process_start(os.getpid()))
    assert "--no-webui" in server.command(1) and "--lora-init-without-apply" not in server.command(1)
    server.stop()
    assert not _alive(pid) and _pid_files(tmp_path) == []
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


def _stray(binary: Path) -> subprocess.Popen[bytes]:
    """A server process no pid file of this test owns, listening on a port of its own."""
    stray = subprocess.Popen([str(binary), "--port", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while "--port" not in Path(f"/proc/{stray.pid}/cmdline").read_bytes().decode() and time.monotonic() < deadline:
        time.sleep(0.05)
    return stray


def _record(process: subprocess.Popen[bytes], argv: list[str], owner: int = 0, **changes: object) -> str:
    return json.dumps({"pid": process.pid, "start": process_start(process.pid), "argv": argv, "port": 0,
                       "owner": owner, "owner_start": process_start(owner) if owner else 0, **changes})


def test_a_stale_server_named_by_its_pid_file_is_stopped(fake_binary: Path, tmp_path: Path) -> None:
    stale = _stray(fake_binary)
    try:
        pid_file = tmp_path / "llama-server-1-2.pid"
        pid_file.write_text(_record(stale, [str(fake_binary), "--port", "0"]))
        assert stop_stale(pid_file) == stale.pid
        assert stale.wait(timeout=10) == -signal.SIGTERM and not pid_file.exists()
    finally:
        stale.kill()
        stale.wait()


def test_a_reused_pid_never_gets_a_signal(fake_binary: Path, tmp_path: Path) -> None:
    """A pid file outlives its server, and the pid is given to another process, even another llama-server: a pid
    file whose start time or command line (model, port) differs from the live process's signals nothing."""
    other = _stray(fake_binary)
    try:
        pid_file = tmp_path / "llama-server.pid"
        argv = [str(fake_binary), "--port", "0"]
        for record in (_record(other, argv, start=process_start(other.pid) - 1),  # the pid was reused
                       _record(other, [str(fake_binary), "--port", "4242"]),  # another server's port
                       _record(other, argv, start=None),  # an older pid file: nothing proves identity
                       json.dumps({"pid": other.pid, "port": 0})):
            pid_file.write_text(record)
            assert stop_stale(pid_file) is None and not pid_file.exists()
            assert other.poll() is None, f"a process that is not the recorded server got a signal: {record}"
        pid_file.write_text(_record(other, argv, pid=os.getpid()))  # a live process that is no server at all
        assert stop_stale(pid_file) is None
    finally:
        other.kill()
        other.wait()


def test_a_server_of_another_live_process_in_the_same_logs_folder_is_left_alone(
    fake_binary: Path, tmp_path: Path
) -> None:
    """A bench (or a second kernel) starting a server where a run's server lives must not stop the run's server."""
    owner, theirs = _start_owner(fake_binary, tmp_path)
    try:
        with _server(fake_binary, tmp_path) as ours:
            assert _alive(theirs) and _alive(ours.process.pid) and len(_pid_files(tmp_path)) == 2
        assert _alive(theirs) and [p.name for p in _pid_files(tmp_path)] == [f"llama-server-{owner.pid}-{theirs}.pid"]
    finally:
        owner.kill()
        owner.wait()


def test_the_next_start_clears_pid_files_whose_owner_died(fake_binary: Path, tmp_path: Path) -> None:
    """A kernel killed outright leaves its pid file; the next start in that folder removes it, and stops its
    server if that somehow outlived its owner (here a server whose record names an owner that has exited)."""
    owner, theirs = _start_owner(fake_binary, tmp_path)
    owner.kill()
    owner.wait()
    assert _wait_gone(theirs)  # PR_SET_PDEATHSIG
    orphan = _stray(fake_binary)
    try:
        dead = subprocess.Popen(["true"])  # an owner that has exited
        dead.wait()
        (tmp_path / "logs" / f"llama-server-{dead.pid}-{orphan.pid}.pid").write_text(
            _record(orphan, [str(fake_binary), "--port", "0"], owner=dead.pid, owner_start=1))
        assert len(_pid_files(tmp_path)) == 2
        with _server(fake_binary, tmp_path) as ours:
            assert orphan.wait(timeout=15) == -signal.SIGTERM
            assert [p.name for p in _pid_files(tmp_path)] == [ours.pid_file.name]
    finally:
        orphan.kill()
        orphan.wait()


def test_sigterm_stops_the_server_and_removes_its_pid_file(fake_binary: Path, tmp_path: Path) -> None:
    """Jupyter ends a kernel that has not exited 2.5 s after its shutdown request with SIGTERM, whose default
    skips atexit: the server stops and its pid file goes all the same, and the process still dies of SIGTERM."""
    owner, server_pid = _start_owner(fake_binary, tmp_path)
    assert _alive(server_pid) and len(_pid_files(tmp_path)) == 1
    owner.send_signal(signal.SIGTERM)
    assert owner.wait(timeout=30) == -signal.SIGTERM
    assert not _alive(server_pid) and _pid_files(tmp_path) == []


def test_killing_the_process_that_started_the_server_leaves_no_server(fake_binary: Path, tmp_path: Path) -> None:
    """A notebook kernel killed with SIGKILL runs no Python at all: the kernel's death must take the server."""
    kernel, server_pid = _start_owner(fake_binary, tmp_path)
    assert _alive(server_pid)
    kernel.send_signal(signal.SIGKILL)
    kernel.wait(timeout=10)
    assert _wait_gone(server_pid)


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


# ---- a server is ours or nothing -------------------------------------------------------------------------------
class _AnythingGoes(BaseHTTPRequestHandler):
    """A foreign listener that answers 200 to any request."""

    def log_message(self, *a: object) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")


@pytest.fixture()
def foreign_port() -> Iterator[int]:
    listener = ThreadingHTTPServer(("127.0.0.1", 0), _AnythingGoes)
    thread = threading.Thread(target=listener.serve_forever, daemon=True)
    thread.start()
    yield int(listener.server_address[1])
    listener.shutdown()
    listener.server_close()


def _refused_start(binary: Path, tmp_path: Path, port: int, monkeypatch: pytest.MonkeyPatch) -> str:
    """Start a server that loses ``port`` to whatever listens there; the one-line error."""
    monkeypatch.setattr(llama_server, "free_port", lambda: port)
    server = _server(binary, tmp_path)
    with pytest.raises(ServerError) as err:
        server.start()
    assert server.process is None and _pid_files(tmp_path) == []
    message = str(err.value)
    assert "\n" not in message and f"http://127.0.0.1:{port} is not the llama-server this process started" in message
    return message


def test_a_foreign_listener_on_the_chosen_port_is_refused(
    fake_binary: Path, tmp_path: Path, foreign_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process took the port between choosing it and binding it: whatever answers there is not ours."""
    message = _refused_start(fake_binary, tmp_path, foreign_port, monkeypatch)
    assert "a request without this start's API key got HTTP 200" in message


def test_another_llama_server_with_its_own_key_is_refused(
    fake_binary: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = llama_server.free_port()
    other = subprocess.Popen([str(fake_binary), "--port", str(port)], env={**os.environ, "LLAMA_API_KEY": "theirs"},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        message = _refused_start(fake_binary, tmp_path, port, monkeypatch)
        assert "this start's API key was refused (HTTP 401)" in message and other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_each_start_has_its_own_key_which_requests_need_and_no_command_line_shows(
    fake_binary: Path, tmp_path: Path
) -> None:
    keys = []
    for _ in range(2):
        with _server(fake_binary, tmp_path, parallel=1) as server:
            assert server.api_key and server.api_key not in Path(f"/proc/{server.process.pid}/cmdline").read_text()
            keys.append(server.api_key)
            assert _backend(server, slots=1).generate(["p"], SAMPLING, seed=1)[0].n_new_tokens == 4
            with pytest.raises(ServerError, match=r"/completion answered 401: .*Invalid API Key.*api_key_env"):
                ServerBackend(server.url, EchoTokenizer()).generate(["p"], SAMPLING, seed=1)
    assert keys[0] != keys[1]


# ---- time-outs -------------------------------------------------------------------------------------------------
def test_a_server_that_accepts_and_never_answers_fails_after_the_read_timeout(tmp_path: Path) -> None:
    with socket.socket() as silent:  # listens, so the kernel accepts connections; nothing ever reads or answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        backend = ServerBackend(url, EchoTokenizer(), read_timeout=0.5)
        with pytest.raises(ServerError) as err:
            backend.generate(["p"], SAMPLING, seed=0)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{url}/completion sent no reply within 0.5 s "
                                                      "(generator.server.read_timeout)")


def test_a_server_that_accepts_no_connection_fails_after_the_connect_timeout() -> None:
    with socket.socket() as full, socket.socket() as first:
        full.bind(("127.0.0.1", 0))
        full.listen(0)  # one pending connection fills the queue: the next connect is never completed
        first.connect(full.getsockname())
        url = f"http://127.0.0.1:{full.getsockname()[1]}"
        with pytest.raises(ServerError, match=r"no connection within 0\.5 s \(generator\.server\.connect_timeout\)"):
            ServerBackend(url, EchoTokenizer(), connect_timeout=0.5).generate(["p"], SAMPLING, seed=0)


def test_a_silent_server_fails_the_step_and_the_rerun_answers_finished_steps_from_the_cache(
    fake_binary: Path, tmp_path: Path
) -> None:
    requests = [Request(f"prompt {i}", SAMPLING, seed=3, attempt=0) for i in range(6)]
    cache_file, key = tmp_path / "calls.jsonl", ModelKey("fake@llama.cpp", "sha")
    hanging = LlamaServer(fake_binary, tmp_path / "model.gguf", log_dir=tmp_path / "logs", threads=1, parallel=2,
                          ctx_per_slot=512, startup_timeout=30)
    command = hanging.command
    hanging.command = lambda port: [*command(port), "--hang-after", "4"]  # type: ignore[method-assign]
    with hanging:
        generator = CachedGenerator(_backend(hanging, slots=2, read_timeout=1), LLMCache(cache_file), key)
        with pytest.raises(ServerError, match=r"sent no reply within 1 s \(generator\.server\.read_timeout\)"):
            generator.generate(requests)  # three batches of two: the third never gets a reply
    first = [json.loads(line) for line in cache_file.read_text().splitlines()]
    assert [len(line["entries"]) for line in first] == [2, 2]
    with _server(fake_binary, tmp_path, parallel=2) as server:
        generator = CachedGenerator(_backend(server, slots=2), LLMCache(cache_file), key)
        replies = generator.generate(requests)
    assert [r.cached for r in replies] == [True] * 4 + [False] * 2 and generator.backend_calls == 1
    assert [r.text for r in replies[:4]] == [e["text"] for line in first for e in line["entries"]]
    keys = [e["key"] for line in cache_file.read_text().splitlines() for e in json.loads(line)["entries"]]
    assert len(keys) == len(set(keys)) == 6  # nothing asked twice


def test_timeouts_and_the_key_variable_change_no_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from redpo.config import identity, load_profile
    from redpo.core.io import ResultsDir
    from redpo.generation import engines
    from redpo.generation.cache import LLMCache

    base = {"generator.server.url": "http://127.0.0.1:9"}
    changed = {**base, "generator.server.connect_timeout": 1, "generator.server.read_timeout": 5,
               "generator.server.api_key_env": "REDPO_TEST_KEY"}
    default, other = load_profile("smoke", base), load_profile("smoke", changed)
    assert identity(default.generator) == identity(other.generator)
    assert engines.identity_settings(default.generator) == engines.identity_settings(other.generator)
    monkeypatch.setenv("REDPO_TEST_KEY", "k")
    keys = [engines.server_generator(p, ResultsDir(p, root=tmp_path), LLMCache(None)).model_key
            for p in (default, other)]
    assert keys[0] == keys[1]


def test_a_server_someone_else_runs_gets_its_key_from_the_variable_the_profile_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from redpo.config import ConfigError, load_profile
    from redpo.core.io import ResultsDir
    from redpo.generation import engines
    from redpo.generation.cache import LLMCache

    prof = load_profile("smoke", {"generator.server.url": "http://127.0.0.1:9", "generator.server.read_timeout": 7,
                                  "generator.server.api_key_env": "REDPO_TEST_KEY"})
    results = ResultsDir(prof, root=tmp_path)
    monkeypatch.delenv("REDPO_TEST_KEY", raising=False)
    with pytest.raises(engines.EngineError, match=r"api_key_env is 'REDPO_TEST_KEY'.*export REDPO_TEST_KEY="):
        engines.server_generator(prof, results, LLMCache(None))
    monkeypatch.setenv("REDPO_TEST_KEY", "s3cret")
    backend = engines.server_generator(prof, results, LLMCache(None)).backend
    assert (backend.api_keys, backend.read_timeout) == (["s3cret"], 7)
    with pytest.raises(ConfigError, match="api_key_env"):
        load_profile("smoke", {"generator.server.api_key_env": "not a name"})


def test_a_replaced_server_binary_is_refused_and_the_manifest_names_the_one_that_ran(tmp_path: Path) -> None:
    from redpo.config import load_profile
    from redpo.core.hashing import sha256_file
    from redpo.core.io import ResultsDir
    from redpo.core.manifest import load_manifest, record_model
    from redpo.generation import engines
    from redpo.models.llama_cpp import LlamaCppBuild
    from redpo.models.registry import ModelInfo

    (tmp_path / "bin").mkdir()
    binary = tmp_path / "bin" / "llama-server"
    binary.write_bytes(b"the binary that was built")
    build = LlamaCppBuild(tmp_path, {"server_sha256": sha256_file(binary)})
    assert engines.verified_server_binary(build) == binary
    binary.write_bytes(b"a binary put there later")
    with pytest.raises(engines.EngineError, match=r"the binary changed after it was built.*engine --build"):
        engines.verified_server_binary(build)
    results = ResultsDir(load_profile("smoke"), root=tmp_path / "results")
    record_model(results, ModelInfo("m@llama.cpp:x", "m.gguf", "gguf-sha", "local",
                                    {"engine": "llama.cpp:x", "server_sha256": build.info["server_sha256"]}))
    assert load_manifest(results)["models"]["m@llama.cpp:x"]["server_sha256"] == build.info["server_sha256"]


# ---- a fleet of servers ----------------------------------------------------------------------------------------
def _fleet_member(binary: Path, folder: Path, *extra: str) -> LlamaServer:
    """A stand-in server with its own logs folder (and key), started with ``extra`` arguments."""
    server = LlamaServer(binary, folder / "model.gguf", log_dir=folder / "logs", threads=1, parallel=2,
                         ctx_per_slot=512, startup_timeout=30)
    command = server.command
    server.command = lambda port: [*command(port), *extra]  # type: ignore[method-assign]
    return server


def _completions(server: LlamaServer) -> int:
    with urllib.request.urlopen(f"{server.url}/peak") as response:
        return json.loads(response.read())["completions"]


def _fleet_client(servers: list[LlamaServer], **options: object) -> ServerBackend:
    return ServerBackend([s.url for s in servers], EchoTokenizer(), slots=2, api_key=[s.api_key for s in servers],
                         **options)


def test_a_fleet_spreads_a_step_over_its_servers_and_keeps_each_obo_chain_on_one(
    fake_binary: Path, tmp_path: Path
) -> None:
    with _fleet_member(fake_binary, tmp_path / "a") as a, _fleet_member(fake_binary, tmp_path / "b") as b:
        backend = _fleet_client([a, b])
        assert backend.batch_size == 4  # every slot of the fleet
        chains = [f"relation {r}: demo" for r in "ABCD"]
        backend.generate(chains, SAMPLING, seed=11)
        assert [_completions(a), _completions(b)] == [2, 2] == backend.answered  # spread over both
        backend.generate([c + " +1 sample" for c in reversed(chains)], SAMPLING, seed=12)
        # Each next step reached the server (and slot) that holds its chain's prefix: only the new text is computed.
        assert backend.stats.prompt_tokens == sum(map(len, chains)) + 4 * len(" +1 sample")


@pytest.mark.parametrize("fault", ["--die-after", "--hang-after"])
def test_a_server_lost_mid_run_costs_only_its_requests_in_flight(fake_binary: Path, tmp_path: Path,
                                                                 fault: str) -> None:
    """Server b dies (or stops answering) with two requests in flight: they go to server a with the same seeds, and
    the cache holds every call once."""
    requests = [Request(f"relation {i}: demo", SAMPLING, seed=3, attempt=0) for i in range(8)]
    key = ModelKey("fake@llama.cpp", "sha")
    with _fleet_member(fake_binary, tmp_path / "a") as a, _fleet_member(fake_binary, tmp_path / "b") as b:
        healthy = CachedGenerator(_fleet_client([a, b]), LLMCache(None), key).generate(requests)
    cache_file = tmp_path / "calls.jsonl"
    with _fleet_member(fake_binary, tmp_path / "a2") as a, _fleet_member(fake_binary, tmp_path / "b2", fault,
                                                                         "2") as b:
        backend = _fleet_client([a, b], read_timeout=1)
        with pytest.warns(UserWarning, match=rf"{re.escape(b.url)}/completion .*go to the other 1 server"):
            replies = CachedGenerator(backend, LLMCache(cache_file), key).generate(requests)
        assert backend.down == {1} and backend.answered == [6, 2] and _completions(a) == 6
    seeds = [r.text.split()[1] for r in replies]
    assert seeds == [r.text.split()[1] for r in healthy]  # a request sent again asks the same question
    keys = [e["key"] for line in cache_file.read_text().splitlines() for e in json.loads(line)["entries"]]
    assert len(keys) == len(set(keys)) == len(requests)  # nothing lost, nothing asked twice


def test_a_fleet_with_every_server_down_is_one_error_naming_the_setting() -> None:
    ports = [llama_server.free_port(), llama_server.free_port()]
    backend = ServerBackend([f"http://127.0.0.1:{p}" for p in ports], EchoTokenizer(), slots=1)
    with pytest.warns(UserWarning), pytest.raises(ServerError, match=r"every server of generator\.server\.url is down"):
        backend.generate(["p", "q"], SAMPLING, seed=0)


def test_a_fleet_names_the_model_by_its_servers_in_any_order(tmp_path: Path) -> None:
    """The cache keys of a fleet do not depend on the order of its list; one server keys as it always did."""
    from redpo.config import load_profile
    from redpo.core.io import ResultsDir
    from redpo.generation import engines

    names = {}
    for label, url in {"ba": ["http://b:2", "http://a:1"], "ab": ["http://a:1", "http://b:2"], "a": "http://a:1",
                       "[a]": ["http://a:1"]}.items():
        prof = load_profile("smoke", {"generator.server.url": url})
        generator = engines.server_generator(prof, ResultsDir(prof, root=tmp_path), LLMCache(None))
        assert generator.backend.urls == ([url] if isinstance(url, str) else url)
        names[label] = generator.model_key.name
    assert names["ab"] == names["ba"] != names["a"] == names["[a]"] == "tiny-random-llama@llama_cpp:http://a:1"
