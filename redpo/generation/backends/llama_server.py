"""The lifecycle of a local ``llama-server``: start it on a free loopback port, wait for it, and never orphan it.

A run that starts a server must stop it on every way out: a normal exit, an error, KeyboardInterrupt, or a
notebook kernel that is shut down or killed. Three guards cover that:

- :meth:`LlamaServer.stop` runs from ``with``, from ``atexit`` and from a weakref finalizer;
- the child asks the kernel to SIGTERM it when its parent dies (``PR_SET_PDEATHSIG``, Linux), which covers a
  parent killed with SIGKILL, where no Python code runs;
- a pid file under ``results/<profile>/logs/`` names the server, so the next start finds a stale one (left by a
  machine crash) and stops it before starting another.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Sequence
from pathlib import Path

from redpo.models.registry import ModelError

PID_FILE = "llama-server.pid"
LOG_FILE = "llama-server.log"
_PR_SET_PDEATHSIG = 1


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


def _is_llama_server(pid: int) -> bool:
    try:
        return "llama-server" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def stop_stale(pid_file: Path) -> int | None:
    """Stop the server a killed run left behind (named by its pid file); returns its pid, or None."""
    try:
        pid = int(json.loads(pid_file.read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        pid_file.unlink(missing_ok=True)
        return None
    if _is_llama_server(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            if not _is_llama_server(pid):
                break
            time.sleep(0.1)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    return pid


class LlamaServer:
    """One ``llama-server`` process serving one GGUF (plus LoRA adapters) to this process only.

    Use it as a context manager, or call :meth:`start` and rely on :meth:`stop` being called at exit.
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
        self.process: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise ServerError("the server is not running")
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.log_dir / PID_FILE

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
        stop_stale(self.pid_file)
        port = free_port()
        cmd = self.command(port)
        with self.log_file.open("ab") as log:
            log.write(f"\n$ {' '.join(cmd)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
            )
            log.write(f"# pid {self.process.pid}\n".encode())
        self.port = port
        self.pid_file.write_text(json.dumps({"pid": self.process.pid, "port": port, "model": str(self.model)}))
        self._finalizer = weakref.finalize(self, _terminate, self.process, self.pid_file)
        atexit.register(self.stop)
        self._wait_healthy()
        return self

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            code = self.process.poll()
            if code is not None:
                self.stop()
                raise ServerError(f"llama-server exited with code {code} while starting; see {self.log_file}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass  # still loading (503) or not listening yet
            time.sleep(0.2)
        self.stop()
        raise ServerError(f"llama-server did not become healthy within {self.startup_timeout:.0f} s; "
                          f"see {self.log_file}")

    def stop(self) -> None:
        if self._finalizer is not None:
            self._finalizer()  # idempotent: terminates once, then does nothing
        self.process, self.port = None, None
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
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    pid_file.unlink(missing_ok=True)
