"""The RE run store: finished runs, appended to ``cache/re_runs.jsonl`` under a fingerprint of their inputs.

A run's fingerprint hashes everything that determines its result (arm, cell, encoder settings, and the
train/dev/test contents), so a re-run skips what is there and a killed notebook loses at most the run in progress;
notebook 05 finds notebook 04's runs here when it asks for the same training set.

One record per fingerprint: a second, different record for a fingerprint the store holds (an edited file, a
forged archive merged by older code, two notebooks finishing the same run differently) is refused, the first is
kept, and the refusal is reported on the terminal (:mod:`redpo.core.conflicts`). The closed-set score cache is a
run store too.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from redpo.config import Profile, identity
from redpo.core.conflicts import report_conflict
from redpo.core.hashing import json_sha256
from redpo.core.pins import record_hash
from redpo.core.sample import RESample
from redpo.extraction.training_sets import GridCell


def samples_digest(samples: Sequence[RESample]) -> str:
    return json_sha256([s.to_json() for s in samples])


def run_fingerprint(
    profile: Profile, arm: str, cell: GridCell, train: Sequence[RESample], dev_digest: str, test_digest: str,
    epoch_size: int | None = None,
) -> str:
    """Hash of everything that determines a run's result; the resume cache's key.

    ``epoch_size`` (a step-matched run's schedule) joins the hash only when set: the committed ``cpu-full`` run's
    other 248 runs were keyed before it existed, and its replay archive answers them under those keys
    (``tests/test_identity.py`` recomputes some from the committed files)."""
    return json_sha256(
        {
            **({"epoch_size": epoch_size} if epoch_size is not None else {}),
            "arm": arm,
            "cell": [cell.k, cell.split_seed, cell.classifier_seed],
            "encoder": identity(profile.encoder),
            "dataset": profile.dataset.name,
            "train": samples_digest(train),
            "dev": dev_digest,
            "test": test_digest,
        }
    )


class _Predictions(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    ids: list[str]
    gold: list[str]
    pred: list[str]

    @model_validator(mode="after")
    def _aligned(self) -> _Predictions:
        if not len(self.ids) == len(self.gold) == len(self.pred):
            raise ValueError(f"ids, gold and pred differ in length ({len(self.ids)}, {len(self.gold)}, "
                             f"{len(self.pred)})")
        return self


class StoredRecord(BaseModel):
    """Any stored record: keyed by its fingerprint; subclasses add the fields their readers need."""

    model_config = ConfigDict(strict=True, extra="allow")
    fingerprint: str = Field(min_length=1)


class RunRecord(StoredRecord):
    """An RE run: the fields every consumer reads, checked as strictly as a profile (the rest is free)."""

    arm: str = Field(min_length=1)
    micro_f1: float = Field(ge=0, le=1)
    predictions: _Predictions | None = None


class RunStore:
    """Append-only JSONL of finished runs keyed by fingerprint.

    A line that is not a valid run record is skipped with a warning naming the file and line, and never used; a
    torn last line (a killed run) is left alone while reading and cut away by the next :meth:`add` (the results
    folder's lock makes this process the only writer)."""

    def __init__(self, path: Path, schema: type[StoredRecord] = StoredRecord) -> None:
        self.path = Path(path)
        self.schema = schema
        self.runs: dict[str, dict[str, Any]] = {}
        self._read_upto = 0  # bytes of complete lines already read
        self._lines_read = 0
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
            self._lines_read += 1
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                self.schema.model_validate(row)
            except (ValueError, ValidationError) as err:
                reason = err.errors()[0] if isinstance(err, ValidationError) else err
                warnings.warn(f"{self.path}:{self._lines_read}: skipped an unreadable run record ({reason}); "
                              "that run will be trained again. Delete the line to silence this.", stacklevel=3)
                continue
            if self._refused(row, f"{self.path}:{self._lines_read}") is None:
                self.runs[row["fingerprint"]] = row

    def _refused(self, record: dict[str, Any], where: str) -> dict[str, Any] | None:
        """The record already held under ``record``'s fingerprint (``None``: a new fingerprint). A held record with
        other content refuses ``record``, which is reported; an identical one just makes it a repeat."""
        held = self.runs.get(record["fingerprint"])
        if held is not None and record_hash(held) != record_hash(record):
            report_conflict(self.path, f"{where}: refused a second, different record for fingerprint "
                            f"{record['fingerprint']}; the store keeps its first. Restore the committed replay "
                            "archive, or delete that line")
        return held

    def get(self, fingerprint: str) -> dict[str, Any] | None:
        """The finished run, re-reading the file on a miss: another notebook (e.g. 05 beside 04) may have
        finished it since this store was opened."""
        if fingerprint not in self.runs:
            self._read_new_lines()
        return self.runs.get(fingerprint)

    def add(self, record: dict[str, Any]) -> dict[str, Any]:
        """Append ``record`` unless its fingerprint is held already; returns the record the store keeps."""
        self.schema.model_validate(record)  # never write what could not be read back
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._read_new_lines()  # complete lines another store object appended since: keep them
        held = self._refused(record, str(self.path))
        if held is not None:
            return held
        with self.path.open("ab+") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() > self._read_upto:  # what is left is a killed run's half-written line: cut it away, once
                f.truncate(self._read_upto)
                warnings.warn(f"{self.path}:{self._lines_read + 1}: removed a torn run record (a killed run's last "
                              "write)", stacklevel=2)
            f.write((json.dumps(record, sort_keys=True) + "\n").encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
            self._read_upto = f.tell()
            self._lines_read += 1
        self.runs[record["fingerprint"]] = record
        return record
