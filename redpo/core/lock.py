"""One writer per results folder: an advisory lock held for a run's whole lifetime.

Two runs on one folder would both generate and train what the other is generating and training (the caches are
append-only, so nothing is lost, but every call is paid twice and the manifest tells the story of neither). So a
run takes ``<results>/.redpo-lock`` (``filelock``: ``fcntl`` on POSIX, released by the kernel when the process
dies, so a killed run never leaves a stale lock) and a second run stops at once, naming the folder and the
process that holds it (from ``.redpo-lock.owner``, written after the lock is taken).

The kernels a run starts inherit ``REDPO_RESULTS_LOCK``, the folder their parent holds, and do not lock again; a
notebook opened by hand in Jupyter takes the lock for its kernel's lifetime (:func:`hold_for_process`).
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from redpo.core.manifest import now

LOCK_NAME = ".redpo-lock"
OWNER_NAME = ".redpo-lock.owner"
HELD_ENV = "REDPO_RESULTS_LOCK"
_HELD: dict[str, FileLock] = {}
"""Locks this process holds until it exits (notebooks opened by hand)."""


class ResultsInUse(RuntimeError):
    """The results folder cannot be taken: another process holds it, or it cannot be written. The message names
    the folder (and the holder) and says what to do."""


def _key(root: Path) -> str:
    return str(Path(root).resolve())


def owner(root: Path) -> str:
    """Who holds ``root``, as recorded when the lock was taken (``unknown`` if the record is gone)."""
    try:
        info = json.loads((Path(root) / OWNER_NAME).read_text())
    except (OSError, ValueError):
        return "an unknown process"
    return f"pid {info.get('pid')} on {info.get('host')} since {info.get('started')} ({info.get('command')})"


def _acquire(root: Path) -> FileLock:
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".redpo-write-test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ResultsInUse(f"{root}: cannot write there ({err.strerror or err}); choose a writable results root "
                           "(--results-dir or REDPO_RESULTS_DIR)") from None
    lock = FileLock(root / LOCK_NAME, timeout=0, thread_local=False)
    try:
        lock.acquire()
    except Timeout:
        holder = owner(root)
        fix = "wait for that run to finish, or give this one its own folder (-p name=<new name> or --results-dir)"
        if "ipykernel" in holder:  # another notebook open by hand: its kernel holds the folder while it lives
            fix = ("that is another notebook's Jupyter kernel: shut it down (in JupyterLab, that notebook's Kernel "
                   "> Shut Down Kernel), then run this notebook again")
        raise ResultsInUse(f"{root} is in use by {holder}; {fix}") from None
    (root / OWNER_NAME).write_text(json.dumps({
        "pid": os.getpid(), "host": socket.gethostname(), "started": now(), "command": " ".join(sys.argv[:4]),
    }) + "\n")
    return lock


def _release(root: Path, lock: FileLock) -> None:
    (Path(root) / OWNER_NAME).unlink(missing_ok=True)
    lock.release()


def held_by_parent(root: Path) -> bool:
    """True inside a kernel started by a run that holds ``root``."""
    return os.environ.get(HELD_ENV) == _key(root)


@contextmanager
def hold_results(root: Path) -> Iterator[None]:
    """Hold ``root`` for the ``with`` block (a ``run`` or a ``figures`` command); kernels started inside inherit it."""
    if held_by_parent(root) or _key(root) in _HELD:
        yield
        return
    lock = _acquire(root)
    before = os.environ.get(HELD_ENV)
    os.environ[HELD_ENV] = _key(root)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(HELD_ENV, None)
        else:
            os.environ[HELD_ENV] = before
        _release(root, lock)


def hold_for_process(root: Path) -> None:
    """Hold ``root`` until this process exits (a notebook run by hand); nothing if a parent run holds it."""
    if held_by_parent(root) or _key(root) in _HELD:
        return
    lock = _acquire(root)
    _HELD[_key(root)] = lock
    atexit.register(_release, Path(root), lock)
