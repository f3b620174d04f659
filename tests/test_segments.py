"""Wall time per notebook across interrupted runs (``redpo/run/segments.py``)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from redpo.core.io import ResultsDir
from redpo.run.segments import recorded_segment, segments_path, wall_times


def test_a_segment_logs_start_heartbeats_and_end(tmp_path: Path) -> None:
    results = ResultsDir("demo", root=tmp_path)
    with recorded_segment(results, "02_x.ipynb", heartbeat=0.05) as segment:
        time.sleep(0.3)
        segment["status"] = "succeeded"
    events = [json.loads(line) for line in segments_path(results).read_text().splitlines()]
    assert events[0]["event"] == "start" and events[-1] == {**events[-1], "event": "end", "status": "succeeded"}
    assert sum(e["event"] == "alive" for e in events) >= 2
    assert 0.3 <= wall_times(results)["02_x.ipynb"]["seconds"] < 5


def test_killed_segments_count_up_to_their_last_line_and_torn_lines_are_skipped(tmp_path: Path) -> None:
    results = ResultsDir("demo", root=tmp_path)
    lines = [
        {"segment": "a", "notebook": "01.ipynb", "event": "start", "time": 100.0},
        {"segment": "a", "notebook": "01.ipynb", "event": "alive", "time": 160.0},  # killed here
        {"segment": "b", "notebook": "01.ipynb", "event": "start", "time": 500.0},
        {"segment": "b", "notebook": "01.ipynb", "event": "end", "time": 530.0, "status": "succeeded"},
        {"segment": "c", "notebook": "02.ipynb", "event": "start", "time": 530.0},
    ]
    text = "".join(json.dumps(line) + "\n" for line in lines) + '{"segment": "c", "notebook": "02.ipynb", "ev'
    segments_path(results).write_text(text)
    assert wall_times(results) == {"01.ipynb": {"seconds": 90.0, "segments": 2},
                                   "02.ipynb": {"seconds": 0.0, "segments": 1}}
