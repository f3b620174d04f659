"""Pins of a replay archive: the sha256 of each archive file and of each record in it, and the record-level merge.

A gzip that is valid can still hold a changed answer: one entry's ``text`` rewritten under the same key replays as
if the committed run had produced it, and a merge into the live cache keeps it there. ``replay/pins.json``
therefore records, next to the archives it pins (:mod:`redpo.core.replay` writes and checks it):

- the sha256 of every archive file: the check made before every restore (one hash of a few MB);
- the sha256 of every *record* in it, by key, so that a mismatch names the key that changed.

A record is what a cache answers for one key, and its content is everything stored for that key, hashed as
canonical JSON (:func:`record_hash`): for the call cache one entry (``key``, ``text``, ``n_new_tokens``,
``seconds``); for the closed-set scores and the RE run store one line (``fingerprint`` and every field beside
it). A batch line's free-form metadata (its time, model, seeds) answers nothing; the file hash covers it.

Why a file of its own rather than fields of ``models.json``: a snapshot (a run in progress) has no
``models.json`` but is restored into the live caches all the same, so it needs the same pins; and the record
hashes (some 14,000 for ``cpu-full``) would bury the model identities that ``models.json`` is read for.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from redpo.core.io import CALLS_CACHE

PINS_FILE = "pins.json"
SHA256 = r"^[0-9a-f]{64}$"


class ArchivePin(BaseModel):
    """One archive: the sha256 of its gzip file and of each record's content, by key (in archive order)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    sha256: str = Field(pattern=SHA256)
    records: dict[str, str]


class Pins(BaseModel):
    """``replay/pins.json``: archive file name -> its pin."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    archives: dict[str, ArchivePin]


def record_hash(record: dict[str, Any]) -> str:
    """sha256 of a record's canonical JSON: key order and whitespace never matter, any changed value does."""
    blob = json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def line_records(cache: str, line: bytes) -> list[tuple[str, dict[str, Any]]] | None:
    """``(key, record)`` for each record of one line of ``cache``; ``None`` for a line that holds no record (not
    JSON, or not of the cache's shape), which the caches skip on load and only the file hash pins."""
    try:
        row = json.loads(line)
    except ValueError:
        return None
    if not isinstance(row, dict):
        return None
    if cache == CALLS_CACHE:  # one line per batch: {"format", ..., "entries": [{"key", "text", ...}, ...]}
        entries = row.get("entries")
        if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("key"), str)
                                                    for e in entries):
            return None
        return [(e["key"], e) for e in entries]
    return [(row["fingerprint"], row)] if isinstance(row.get("fingerprint"), str) else None


def records_of(cache: str, lines: list[bytes]) -> tuple[dict[str, str], str | None]:
    """key -> record hash over ``lines``, and the first problem that makes them unpinnable (a key held twice)."""
    records: dict[str, str] = {}
    for line in lines:
        for key, record in line_records(cache, line) or []:
            if key in records:
                return records, f"key {key} is held by two records"
            records[key] = record_hash(record)
    return records, None


def first_mismatch(cache: str, lines: list[bytes], sha256: str, pin: ArchivePin) -> str | None:
    """What differs between an archive (its lines and file hash) and its pin, naming the first key; ``None``
    when it matches."""
    records, problem = records_of(cache, lines)
    if problem:
        return problem
    for key, digest in records.items():
        if key not in pin.records:
            return f"record {key} is not pinned"
        if pin.records[key] != digest:
            return f"record {key} was changed (its sha256 is not the pinned one)"
    missing = next((key for key in pin.records if key not in records), None)
    if missing:
        return f"pinned record {missing} is missing"
    if sha256 != pin.sha256:
        return f"the file's sha256 {sha256[:12]}... is not the pinned {pin.sha256[:12]}... (every record matches)"
    return None


@dataclass
class Merged:
    """A cache merged with a pinned archive: its lines, key -> record hash of every record in them, and the keys
    whose second, different record was left out (``contradicted``: it contradicted a pin, the pinned one is kept;
    ``conflicting``: another record came first)."""

    lines: list[bytes]
    records: dict[str, str]
    contradicted: list[str] = field(default_factory=list)
    conflicting: list[str] = field(default_factory=list)


def merge(cache: str, first: list[bytes], then: list[bytes], pinned: dict[str, str]) -> Merged:
    """``first`` (a live cache, or its lines), then the lines of the archive ``then`` that it lacks, with exactly
    one record per key: the pinned record wherever ``first`` holds another, else the first one seen.

    ``then`` must be an archive verified against ``pinned`` (each key once, every record pinned). A line of
    ``first`` that is also a line of ``then`` is therefore pinned as it is and is not parsed: a live cache that
    already holds its archive costs one set lookup per line. Other lines of ``first`` lose the records whose key is
    pinned (the archive's copy is kept) or already held; a batch line losing some of its entries is rewritten with
    the rest, one losing all is dropped. A line that holds no record is kept once.
    """
    archived = set(then)
    out: list[bytes] = []
    placed: set[bytes] = set()
    merged = Merged(out, dict(pinned))
    for line in first:
        if line in placed:
            continue
        placed.add(line)
        parsed = None if line in archived else line_records(cache, line)
        if parsed is None:
            out.append(line)
            continue
        kept = []
        for key, record in parsed:
            digest, held = record_hash(record), merged.records.get(key)
            if held is None:
                merged.records[key] = digest
                kept.append(record)
            elif held != digest:
                (merged.contradicted if key in pinned else merged.conflicting).append(key)
        if len(kept) == len(parsed):
            out.append(line)
        elif kept:
            out.append(_rewritten(line, kept))
    out += [line for line in then if line not in placed]
    return merged


def _rewritten(line: bytes, entries: list[dict[str, Any]]) -> bytes:
    """A call-cache batch line with only ``entries`` left (only batch lines hold more than one record)."""
    row = {**json.loads(line), "entries": entries}
    return json.dumps(row, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"
