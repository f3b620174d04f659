"""Wall time per notebook across interrupted runs: an append-only log of run segments.

A reference run such as ``cpu-full`` is killed and resumed many times (sessions end, machines reboot). The
manifest keeps only each notebook's last execution, and a resumed notebook's last execution is short because it
answers from its caches. So the runner appends to ``logs/run_segments.jsonl`` a ``start`` line when a notebook
starts, an ``alive`` line every ``HEARTBEAT_SECONDS`` while it runs, and an ``end`` line with its status. A killed
segment ends at its last line, so the total per notebook is exact to within one heartbeat per interruption.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from redpo.core.io import ResultsDir

SEGMENTS_FILE = "run_segments.jsonl"
HEARTBEAT_SECONDS = 60.0


def segments_path(results: ResultsDir) -> Path:
    return results.logs / SEGMENTS_FILE


def _append(path: Path, record: dict[str, object]) -> None:
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")
        fh.flush()


@contextmanager
def recorded_segment(results: ResultsDir, notebook: str, *, heartbeat: float = HEARTBEAT_SECONDS) -> Iterator[dict]:
    """Log one notebook execution as a segment; the caller sets ``status`` in the yielded dict."""
    path = segments_path(results)
    segment = f"{notebook}@{time.time():.3f}"
    state: dict[str, str] = {"status": "failed"}
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(heartbeat):
            _append(path, {"segment": segment, "notebook": notebook, "event": "alive", "time": time.time()})

    _append(path, {"segment": segment, "notebook": notebook, "event": "start", "time": time.time()})
    thread = threading.Thread(target=beat, name="redpo-heartbeat", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        stop.set()
        thread.join()
        _append(path, {"segment": segment, "notebook": notebook, "event": "end", "time": time.time(),
                       "status": state["status"]})


def _events(path: Path) -> Iterator[dict]:
    """The log's lines; a line torn by a kill (the last one) is skipped, as it holds no complete time."""
    with path.open(encoding="utf-8") as fh:
        for raw in fh:
            try:
                line = json.loads(raw)
            except json.JSONDecodeError:
                continue
            if isinstance(line, dict) and isinstance(line.get("segment"), str) and isinstance(
                line.get("time"), (int, float)
            ):
                yield line


def wall_times(results: ResultsDir) -> dict[str, dict[str, float]]:
    """Per notebook: summed ``seconds`` over all its segments, and how many ``segments`` (interrupted included)."""
    path = segments_path(results)
    times: dict[str, list[float]] = {}
    notebooks: dict[str, str] = {}
    for line in _events(path) if path.is_file() else ():
        times.setdefault(line["segment"], []).append(float(line["time"]))
        notebooks[line["segment"]] = str(line.get("notebook"))
    out: dict[str, dict[str, float]] = {}
    for segment, stamps in times.items():
        entry = out.setdefault(notebooks[segment], {"seconds": 0.0, "segments": 0})
        entry["seconds"] += max(stamps) - min(stamps)
        entry["segments"] += 1
    return {nb: {"seconds": round(v["seconds"], 1), "segments": v["segments"]} for nb, v in sorted(out.items())}
