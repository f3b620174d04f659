"""An append-only, content-addressed JSONL cache of LLM calls, so a killed run resumes without losing work.

Why this shape:

- **Content-addressed.** A call's key is the sha256 of everything that determines its output: model name,
  model content hash, adapter hash, rendered prompt, sampling parameters, seed and attempt index. Changing
  any of them is a different call; nothing is ever looked up by position.
- **One line per batch.** A model call is a batch. All its entries go into one JSONL line that is written,
  flushed and fsync'd at once, so ``kill -9`` loses either the whole batch or nothing. A torn last line is
  skipped on load, and the next append starts on a fresh line.
- **Replayable batches.** The sampling RNG of a batch is seeded from the hash of the batch's sorted keys
  (:func:`batch_seed`). Re-running a batch lost to a crash therefore yields exactly the outputs the
  uninterrupted run would have produced.
- **JSON only.** Never pickle: a cache file may come from someone else.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

CACHE_FORMAT = 1
"""Bump when the key recipe or the line layout changes; old lines are then ignored, never misread."""


def cache_key(
    *,
    model: str,
    model_sha256: str,
    adapter_sha256: str | None,
    prompt: str,
    sampling: Mapping[str, Any],
    seed: int,
    attempt: int,
) -> str:
    """sha256 over a canonical JSON of every field that determines a call's output."""
    payload = {
        "format": CACHE_FORMAT,
        "model": model,
        "model_sha256": model_sha256,
        "adapter_sha256": adapter_sha256,
        "prompt": prompt,
        "sampling": dict(sorted(sampling.items())),
        "seed": int(seed),
        "attempt": int(attempt),
    }
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def batch_seed(keys: Iterable[str]) -> int:
    """A torch seed that depends only on the *set* of keys in a batch, so a lost batch replays identically."""
    digest = hashlib.sha256("\n".join(sorted(keys)).encode("utf-8")).hexdigest()
    return int(digest[:15], 16)  # < 2**60: a valid seed for torch, numpy and random alike


@dataclass(frozen=True)
class CacheEntry:
    """One answered call: the raw response text and what it cost."""

    key: str
    text: str
    n_new_tokens: int
    seconds: float


class LLMCache:
    """Key -> :class:`CacheEntry`, backed by an append-only JSONL file (or memory only when ``path`` is None)."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self._entries: dict[str, CacheEntry] = {}
        self.hits = 0
        self.misses = 0
        self.batches_written = 0
        self.skipped_lines = 0
        """Lines ignored on load: torn writes from a killed run (or a foreign format)."""
        if self.path is not None and self.path.is_file():
            self._load(self.path)

    # ---- reading -----------------------------------------------------------------------------------
    def _load(self, path: Path) -> None:
        data = path.read_bytes()
        lines = data.split(b"\n")
        for lineno, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
                if row.get("format") != CACHE_FORMAT:
                    raise ValueError(f"format {row.get('format')!r} != {CACHE_FORMAT}")
                entries = [CacheEntry(**e) for e in row["entries"]]
            except (ValueError, KeyError, TypeError, AttributeError) as err:
                self.skipped_lines += 1
                torn = lineno == len(lines)  # no trailing newline: the write was cut short
                if not torn:
                    warnings.warn(
                        f"{path}:{lineno}: skipped an unreadable cache line ({err}); its calls will be re-run. "
                        "This is expected after a killed run; delete the file to start the cache afresh.",
                        stacklevel=3,
                    )
                continue
            for e in entries:
                self._entries.setdefault(e.key, e)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def lookup(self, keys: Sequence[str]) -> dict[str, CacheEntry]:
        """The cached subset of ``keys``; counts one hit or miss per *distinct* key asked for."""
        found: dict[str, CacheEntry] = {}
        for key in dict.fromkeys(keys):
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
            else:
                self.hits += 1
                found[key] = entry
        return found

    # ---- writing -----------------------------------------------------------------------------------
    def append_batch(self, entries: Sequence[CacheEntry], **meta: Any) -> None:
        """Persist one batch as one fsync'd line (all or nothing), then make it visible to lookups."""
        if not entries:
            return
        if self.path is not None:
            row = {
                "format": CACHE_FORMAT,
                "time": time.time(),
                **meta,
                "entries": [asdict(e) for e in entries],
            }
            line = json.dumps(row, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("ab+") as f:
                f.seek(0, os.SEEK_END)
                if f.tell() > 0:
                    f.seek(-1, os.SEEK_END)
                    if f.read(1) != b"\n":
                        line = b"\n" + line  # a torn line precedes us: start afresh so both stay separate
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
        for e in entries:
            self._entries.setdefault(e.key, e)
        self.batches_written += 1

    def stats(self) -> dict[str, int]:
        return {
            "entries": len(self._entries),
            "hits": self.hits,
            "misses": self.misses,
            "batches_written": self.batches_written,
            "skipped_lines": self.skipped_lines,
        }
