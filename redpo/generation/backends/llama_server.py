"""The lifecycle of a local ``llama-server``: start it on a free loopback port, make sure what answers is it, and
never orphan it nor signal anything else.

A run that starts a server must stop it on every way out: a normal exit, an error, KeyboardInterrupt, or a
notebook kernel that is shut down or killed. The guards:

- :meth:`LlamaServer.stop` runs from ``with``, from ``atexit``, from a weakref finalizer and on SIGTERM (Jupyter
  shuts a kernel down with SIGTERM when it has not exited within 2.5 s of the shutdown request, which a kernel that
  loaded torch rarely has, and SIGTERM's default skips ``atexit``);
- the child asks the kernel to SIGTERM it when its parent dies (``PR_SET_PDEATHSIG``, Linux), which covers a
  parent killed with SIGKILL, where no Python code runs;
- each server has its own pid file under ``results/<profile>/logs/``, named after the process that owns it and
  recording the server's command line and start time. The next start in that folder clears the files whose owner
  is dead, and stops a server only when it is still the very process recorded: a reused pid never gets a signal,
  and the server of another live process (a run beside a bench) is left alone.

Every start gets a fresh random API key (in the server's environment, which only this user can read; a command
line is readable by every local user), so the server answers this process only, and the health wait accepts the
port only when a request with the key is served and one without it is refused: a foreign listener that took the
port first is refused, never cached as this model's answers.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import json
import os
import secrets
import select
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from redpo.core.io import atomic_write
from redpo.models.registry import ModelError

PID_PREFIX = "llama-server"
"""Pid files are ``llama-server-<owner pid>-<server pid>.pid``; ``llama-server*.pid`` also matches the one shared
``llama-server.pid`` of older versions, which the next start removes (it records no start time: never signalled)."""
LOG_FILE = "llama-server.log"
API_KEY_ENV = "LLAMA_API_KEY"
"""The variable llama-server reads its API key from when ``--api-key`` is not given."""
PROBE_TIMEOUT = 5.0
"""Seconds one health probe waits on loopback; the wait as a whole is bounded by ``startup_timeout``."""
STOP_GRACE = 10.0
"""Seconds between SIGTERM and SIGKILL when stopping a server (llama-server exits in milliseconds)."""
_PR_SET_PDEATHSIG = 1
_RUNNING: weakref.WeakSet[LlamaServer] = weakref.WeakSet()
"""Servers this process has started and not stopped: what the SIGTERM handler stops."""
_sigterm_installed_by: int | None = None
"""The pid that installed the SIGTERM handler (a forked child inherits the handler, not the servers)."""


class ServerError(ModelError):
    """The server did not start, died, or answered with an error; the message names its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_cores() -> int:
    """The cores this process may run on (its CPU affinity), which a server must not exceed."""
    return len(os.sched_getaffinity(0))


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to SIGTERM this child when the process that started it dies (even by SIGKILL)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


# ---- which process is which ----------------------------------------------------------------------------------
def process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, ``/proc/<pid>/stat`` field 22), or None if it is gone
    (or a zombie): a pid alone is reused by the kernel, a pid and its start time name one process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name in parentheses may hold spaces
    return None if fields[0] in ("Z", "X") else int(fields[19])


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def is_recorded_process(pid: int, start: int, argv: Sequence[str]) -> bool:
    """True only for the very process a pid file recorded: the same start time, and a command line ending with the
    recorded one (model path and port included; a script's interpreter comes before it)."""
    return bool(argv) and process_start(pid) == start and _cmdline(pid)[-len(argv) :] == list(argv)


def _read_record(pid_file: Path) -> dict[str, Any] | None:
    """A pid file's record, or None when it is unreadable or lacks what proves identity (an older version's)."""
    try:
        record = json.loads(pid_file.read_text())
        ints = all(isinstance(record[k], int) for k in ("pid", "start", "owner", "owner_start"))
        return record if ints and isinstance(record["argv"], list) and record["argv"] else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _stop_verified(pid: int, start: int, argv: Sequence[str]) -> bool:
    """SIGTERM, then SIGKILL after :data:`STOP_GRACE`, the process ``pid`` if it is the recorded one. The identity
    is checked through a pidfd, which keeps naming that process even if it exits and the pid is reused meanwhile."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:  # gone, or no pidfd on this kernel: nothing provable to stop
        return False
    try:
        if not is_recorded_process(pid, start, argv):
            return False
        signal.pidfd_send_signal(fd, signal.SIGTERM)
        if not select.select([fd], [], [], STOP_GRACE)[0]:  # readable once the process has exited
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        return True
    except ProcessLookupError:
        return True
    finally:
        os.close(fd)


def stop_stale(pid_file: Path) -> int | None:
    """Stop the server a pid file names if it is still the process recorded there, and remove the file; returns the
    stopped pid, or None (a file naming a dead, reused or unprovable pid is removed and nothing is signalled)."""
    record = _read_record(pid_file)
    stopped = None
    if record is not None and _stop_verified(record["pid"], record["start"], record["argv"]):
        stopped = record["pid"]
    pid_file.unlink(missing_ok=True)
    return stopped


def stop_stale_servers(log_dir: Path) -> list[int]:
    """Clear the pid files in ``log_dir`` whose owner is dead (a killed kernel's, a crashed machine's), stopping
    each server still alive as recorded; the files of a live owner (this process, a run beside a bench) stay."""
    stopped = []
    for pid_file in sorted(Path(log_dir).glob(f"{PID_PREFIX}*.pid")):
        record = _read_record(pid_file)
        if record is not None and process_start(record["owner"]) == record["owner_start"]:
            continue
        pid = stop_stale(pid_file)
        if pid is not None:
            stopped.append(pid)
    return stopped


# ---- stopping on SIGTERM ----------------------------------------------------------------------------------------
def _on_sigterm(previous: Callable[..., Any] | int | None, signum: int, frame: Any) -> None:
    """Stop this process's servers, then let SIGTERM do what it did before (by default: end the process)."""
    if os.getpid() == _sigterm_installed_by:
        for server in list(_RUNNING):
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                server.stop()
    if callable(previous):
        previous(signum, frame)
    elif previous != signal.SIG_IGN:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def _stop_servers_on_sigterm() -> None:
    """Install :func:`_on_sigterm` once per process; outside the main thread Python cannot, and PDEATHSIG and the
    next start's cleanup remain."""
    global _sigterm_installed_by
    if _sigterm_installed_by == os.getpid():
        return
    try:
        previous = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, functools.partial(_on_sigterm, previous))
    except ValueError:
        return
    _sigterm_installed_by = os.getpid()


class LlamaServer:
    """One ``llama-server`` process serving one GGUF (plus LoRA adapters) to this process only.

    Use it as a context manager, or call :meth:`start` and rely on :meth:`stop` being called at exit. Requests
    must carry ``Authorization: Bearer <api_key>``; the key changes at every start.
    """

    def __init__(
        self,
        binary: Path,
        model: Path,
        *,
        log_dir: Path,
        threads: int,
        parallel: int,
        ctx_per_slot: int,
        loras: Sequence[Path] = (),
        startup_timeout: float = 300.0,
    ) -> None:
        if threads > free_cores():
            raise ServerError(
                f"generator.server.threads={threads} exceeds the {free_cores()} free core(s); oversubscribed, "
                "the engine slows down many times over. Lower it, or leave it unset to use the free cores"
            )
        self.binary, self.model, self.loras = Path(binary), Path(model), [Path(p) for p in loras]
        self.log_dir = Path(log_dir)
        self.threads, self.parallel, self.ctx_per_slot = threads, parallel, ctx_per_slot
        self.startup_timeout = startup_timeout
        self.port: int | None = None
        self.api_key: str | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.pid_file: Path | None = None
        self._finalizer: weakref.finalize | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise ServerError("the server is not running")
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.log_dir / LOG_FILE

    def command(self, port: int) -> list[str]:
        cmd = [
            str(self.binary), "--model", str(self.model), "--host", "127.0.0.1", "--port", str(port),
            "--threads", str(self.threads), "--threads-batch", str(self.threads),
            "--parallel", str(self.parallel), "--ctx-size", str(self.parallel * self.ctx_per_slot),
            "--cont-batching", "--no-webui", "--no-warmup",
        ]
        for lora in self.loras:
            cmd += ["--lora", str(lora)]
        if self.loras:
            cmd.append("--lora-init-without-apply")  # every request names its adapter and scale
        return cmd

    def start(self) -> LlamaServer:
        if self.process is not None:
            return self
        self.log_dir.mkdir(parents=True, exist_ok=True)
        stop_stale_servers(self.log_dir)
        port, api_key = free_port(), secrets.token_urlsafe(32)
        cmd = self.command(port)
        # The server is what its command line says: LLAMA_* variables of the caller (llama.cpp reads one per
        # option) do not reach it; the key does, where other users cannot read it.
        env = {k: v for k, v in os.environ.items() if not k.startswith("LLAMA_")} | {API_KEY_ENV: api_key}
        with self.log_file.open("ab") as log:
            log.write(f"\n$ {' '.join(cmd)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                preexec_fn=_die_with_parent,
            )
            log.write(f"# pid {self.process.pid}\n".encode())
        self.port, self.api_key = port, api_key
        owner = os.getpid()
        self.pid_file = self.log_dir / f"{PID_PREFIX}-{owner}-{self.process.pid}.pid"
        atomic_write(self.pid_file, json.dumps({
            "pid": self.process.pid, "start": process_start(self.process.pid), "argv": cmd, "port": port,
            "model": str(self.model), "owner": owner, "owner_start": process_start(owner),
        }))
        self._finalizer = weakref.finalize(self, _terminate, self.process, self.pid_file)
        atexit.register(self.stop)
        _RUNNING.add(self)
        _stop_servers_on_sigterm()
        self._wait_healthy()
        return self

    def _probe(self, with_key: bool) -> tuple[int, dict[str, Any]]:
        """``GET /props`` with or without this start's key: the HTTP status (0: nothing answered) and the JSON."""
        headers = {"Authorization": f"Bearer {self.api_key}"} if with_key else {}
        try:
            with urllib.request.urlopen(urllib.request.Request(f"{self.url}/props", headers=headers),
                                        timeout=PROBE_TIMEOUT) as response:
                body = json.loads(response.read() or b"{}")
                return response.status, body if isinstance(body, dict) else {}
        except urllib.error.HTTPError as err:
            return err.code, {}
        except (urllib.error.URLError, OSError, ValueError):
            return 0, {}

    def _foreign(self) -> str | None:
        """Why what answers on the port is not this server, ``""`` when it is, None while it is still loading.

        llama-server refuses every request with 503 while it loads, and then any request to ``/props`` without
        the key with 401; with the key it reports the model path it was started with."""
        status, _ = self._probe(with_key=False)
        if status in (0, 503):
            return None
        if status != 401:
            return f"a request without this start's API key got HTTP {status}"
        status, props = self._probe(with_key=True)
        if status in (0, 503):
            return None
        if status != 200:
            return f"this start's API key was refused (HTTP {status})"
        if props.get("model_path") != str(self.model):
            return f"it serves {props.get('model_path')!r}, not {self.model}"
        return ""

    def _wait_healthy(self) -> None:
        """Wait until the port answers as this server; a foreign answer is refused at once, before a crash of ours
        (a server that lost the port to another process fails to bind and exits)."""
        assert self.process is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            foreign = self._foreign()
            if foreign == "":
                return
            if foreign is not None:
                url = self.url
                self.stop()
                raise ServerError(f"{url} is not the llama-server this process started ({foreign}): another "
                                  f"process listens on that port; start again (a new port is chosen), and see "
                                  f"{self.log_file}")
            code = self.process.poll()
            if code is not None:
                self.stop()
                raise ServerError(f"llama-server exited with code {code} while starting; see {self.log_file}")
            time.sleep(0.2)
        self.stop()
        raise ServerError(f"llama-server did not become healthy within {self.startup_timeout:.0f} s; "
                          f"see {self.log_file}")

    def stop(self) -> None:
        if self._finalizer is not None:
            self._finalizer()  # idempotent: terminates once, then does nothing
        if self.pid_file is not None:
            self.pid_file.unlink(missing_ok=True)
        self.process, self.port, self.api_key = None, None, None
        _RUNNING.discard(self)
        with contextlib.suppress(ValueError):
            atexit.unregister(self.stop)

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _terminate(process: subprocess.Popen[bytes], pid_file: Path) -> None:
    """SIGTERM, a grace period, then SIGKILL; the pid file goes with the process."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_GRACE)
    pid_file.unlink(missing_ok=True)
