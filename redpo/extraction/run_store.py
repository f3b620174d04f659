"""The RE run store: finished runs, appended to ``cache/re_runs.jsonl`` under a fingerprint of their inputs.

A run's fingerprint hashes everything that determines its result (arm, cell, encoder settings, and the
train/dev/test contents), so a re-run skips what is there and a killed notebook loses at most the run in progress;
notebook 05 finds notebook 04's runs here when it asks for the same training set.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from redpo.config import Profile
from redpo.core.sample import RESample
from redpo.extraction.training_sets import GridCell

RUNS_CACHE = "re_runs.jsonl"


def samples_digest(samples: Sequence[RESample]) -> str:
    blob = json.dumps([s.to_json() for s in samples], sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def run_fingerprint(
    profile: Profile, arm: str, cell: GridCell, train: Sequence[RESample], dev_digest: str, test_digest: str,
    epoch_size: int | None = None,
) -> str:
    """Hash of everything that determines a run's result; the resume cache's key. ``epoch_size`` (a step-matched
    run's schedule) joins the hash only when set, so the keys of every other run stay what they were."""
    encoder = profile.encoder.model_dump(mode="json", exclude={"threads", "seeds_per_split"})
    if not encoder.get("early_stopping_threshold"):
        encoder.pop("early_stopping_threshold", None)  # the default: keys of runs made before it existed hold
    blob = json.dumps(
        {
            **({"epoch_size": epoch_size} if epoch_size is not None else {}),
            "arm": arm,
            "cell": [cell.k, cell.split_seed, cell.classifier_seed],
            "encoder": encoder,
            "dataset": profile.dataset.name,
            "train": samples_digest(train),
            "dev": dev_digest,
            "test": test_digest,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class RunStore:
    """Append-only JSONL of finished runs keyed by fingerprint; a torn last line (a killed run) is ignored."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.runs: dict[str, dict[str, Any]] = {}
        self._read_upto = 0  # bytes of complete lines already read
        self._read_new_lines()

    def _read_new_lines(self) -> None:
        """Read the lines appended since the last read; a line without its newline yet is left for later."""
        if not self.path.is_file():
            return
        with self.path.open("rb") as f:
            f.seek(self._read_upto)
            tail = f.read()
        complete = tail[: tail.rfind(b"\n") + 1]
        self._read_upto += len(complete)
        for line in complete.decode("utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and "fingerprint" in row:
                self.runs[row["fingerprint"]] = row

    def get(self, fingerprint: str) -> dict[str, Any] | None:
        """The finished run, re-reading the file on a miss: another notebook (e.g. 05 beside 04) may have
        finished it since this store was opened."""
        if fingerprint not in self.runs:
            self._read_new_lines()
        return self.runs.get(fingerprint)

    def add(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.runs[record["fingerprint"]] = record

