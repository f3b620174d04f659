"""Refused cache entries, reported on the terminal and not only inside a notebook.

A cache refuses a second, different entry for a key it already holds and keeps the first (the call cache, the
closed-set scores and the RE run store alike; a restore keeps the pinned archive's). The refusal is a warning
where it happens, but inside a papermill kernel a warning lands only in the executed notebook, which nobody opens
after a run that succeeded. So every refusal is also appended to ``cache/conflicts.log`` beside the cache that
refused it, and the runner prints the lines each notebook added as soon as that notebook ends
(:class:`ConflictLog`): the kernel needs no channel to the terminal, and a killed kernel loses no report.
"""

from __future__ import annotations

import warnings
from pathlib import Path

CONFLICTS_LOG = "conflicts.log"


def report_conflict(cache_file: Path | None, message: str) -> None:
    """Warn (in a notebook: in its output) and append ``message`` to the log beside ``cache_file`` (``None``: a
    cache in memory, which has no log)."""
    warnings.warn(message, stacklevel=3)
    if cache_file is None:
        return
    log = Path(cache_file).parent / CONFLICTS_LOG
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a", encoding="utf-8") as f:
        f.write(" ".join(message.split()) + "\n")


class ConflictLog:
    """The lines added to ``<cache_dir>/conflicts.log`` since this object was made, or since the last :meth:`new`."""

    def __init__(self, cache_dir: Path) -> None:
        self.path = Path(cache_dir) / CONFLICTS_LOG
        self.offset = self.path.stat().st_size if self.path.is_file() else 0

    def new(self) -> list[str]:
        if not self.path.is_file():
            return []
        with self.path.open("rb") as f:
            f.seek(self.offset)
            added = f.read()
        complete = added[: added.rfind(b"\n") + 1]
        self.offset += len(complete)
        return complete.decode("utf-8", errors="replace").splitlines()
