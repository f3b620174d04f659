"""The LLM call cache: an append-only, content-addressed JSONL file, and the generator that answers through it.

A killed run resumes without losing work: cached keys are answered from the file, misses go to the backend in
chunks of ``batch_size``, and each chunk is one cache line whose sampling RNG is seeded from its keys.

Why this shape:

- **Content-addressed.** A call's key is the sha256 of everything that determines its output: model name,
  model content hash, adapter hash, rendered prompt, sampling parameters, seed and attempt index. Changing
  any of them is a different call; nothing is ever looked up by position.
- **One line per batch.** A model call is a batch. All its entries go into one JSONL line that is written,
  flushed and fsync'd at once, so ``kill -9`` loses either the whole batch or nothing. A torn last line is
  skipped on load and cut away by the next append (the results-folder lock makes this run the only writer).
- **Typed.** Every entry is validated as strictly as a profile; a line that fails is skipped with a warning that
  names the file and line, and never used.
- **One answer per key.** A second, different entry for a key the cache holds (an edited file, a forged archive
  merged by older code) is refused: the first is kept, and the refusal is reported on the terminal, not only
  in the notebook (:mod:`redpo.core.conflicts`). A repeated identical entry is not written again.
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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from redpo.config import SamplingConfig, identity
from redpo.core.conflicts import report_conflict
from redpo.generation import prompts
from redpo.generation.backends import Backend

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


class _EntryRecord(BaseModel):
    """What a cache line's entry must hold, checked as strictly as a profile: a line from a foreign or edited
    file (``"text": 12345``, ``"seconds": "x"``) is skipped with a warning naming its line, never used."""

    model_config = ConfigDict(strict=True, extra="forbid")
    key: str = Field(min_length=1)
    text: str
    n_new_tokens: int = Field(ge=0)
    seconds: float = Field(ge=0)


class _CacheLine(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")  # batch metadata (time, model, seeds) is free-form
    format: int
    entries: list[_EntryRecord]


class LLMCache:
    """Key -> :class:`CacheEntry`, backed by an append-only JSONL file (or memory only when ``path`` is None)."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self._entries: dict[str, CacheEntry] = {}
        self.hits = 0
        self.misses = 0
        self.batches_written = 0
        self.skipped_lines = 0
        """Lines ignored on load: torn writes from a killed run, foreign formats, entries of the wrong types."""
        self.refused_entries = 0
        """Second, different entries for a key already held: never used, never written (the first is kept)."""
        self._torn: tuple[int, int] | None = None
        """(byte offset, line number) of a torn last line, cut away by the next write."""
        if self.path is not None and self.path.is_file():
            self._load(self.path)

    # ---- reading -----------------------------------------------------------------------------------
    def _load(self, path: Path) -> None:
        data = path.read_bytes()
        lines = data.split(b"\n")
        offset = 0
        for lineno, raw in enumerate(lines, 1):
            start, offset = offset, offset + len(raw) + 1
            if not raw.strip():
                continue
            try:
                row = _CacheLine.model_validate(json.loads(raw))
                if row.format != CACHE_FORMAT:
                    raise ValueError(f"format {row.format!r} != {CACHE_FORMAT}")
            except (ValueError, ValidationError) as err:
                self.skipped_lines += 1
                if lineno == len(lines):  # no trailing newline: a write cut short by a killed run
                    self._torn = (start, lineno)
                    continue
                reason = err.errors()[0] if isinstance(err, ValidationError) else err
                warnings.warn(
                    f"{path}:{lineno}: skipped an unreadable cache line ({reason}); its calls will be re-run. "
                    "Delete the line (or the file) to silence this.",
                    stacklevel=3,
                )
                continue
            for e in self._fresh([CacheEntry(**r.model_dump()) for r in row.entries], f"{path}:{lineno}"):
                self._entries[e.key] = e

    def _fresh(self, entries: Sequence[CacheEntry], where: str) -> list[CacheEntry]:
        """The entries whose key is new. One that contradicts a held entry (or an earlier one of ``entries``) is
        refused and reported; a repeated identical entry is just left out."""
        fresh: dict[str, CacheEntry] = {}
        for e in entries:
            held = self._entries.get(e.key) or fresh.get(e.key)
            if held is None:
                fresh[e.key] = e
            elif held != e:
                self.refused_entries += 1
                report_conflict(self.path, (
                    f"{where}: refused a second, different answer for key {e.key} (text {e.text[:60]!r}); the cache "
                    f"keeps its first ({held.text[:60]!r}). Restore the committed replay archive, or delete that "
                    "entry"))
        return list(fresh.values())

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
        """Persist one batch as one fsync'd line (all or nothing), visible to lookups at once; entries whose key
        is held already are left out (:meth:`_fresh`)."""
        entries = self._fresh(entries, str(self.path or "the in-memory cache"))
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
                if self._torn is not None:  # cut a killed run's half-written line away, once, before appending
                    f.truncate(self._torn[0])
                    warnings.warn(f"{self.path}:{self._torn[1]}: removed a torn cache line (a killed run's last "
                                  "write); its calls were re-run", stacklevel=2)
                    self._torn = None
                f.seek(0, os.SEEK_END)
                if f.tell() > 0:
                    f.seek(-1, os.SEEK_END)
                    if f.read(1) != b"\n":
                        line = b"\n" + line  # a complete last line without its newline: keep both separate
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
        self._entries.update((e.key, e) for e in entries)
        self.batches_written += 1

    def stats(self) -> dict[str, int]:
        return {
            "entries": len(self._entries),
            "hits": self.hits,
            "misses": self.misses,
            "batches_written": self.batches_written,
            "skipped_lines": self.skipped_lines,
            "refused_entries": self.refused_entries,
        }


# ---- the generator in front of a backend --------------------------------------------------------------
@dataclass(frozen=True)
class ModelKey:
    """What identifies the weights in a cache key: name, content hash, and the LoRA adapter's hash if any."""

    name: str
    sha256: str
    adapter_sha256: str | None = None

    @classmethod
    def from_info(cls, info: Any, adapter_sha256: str | None = None) -> ModelKey:
        adapter = (getattr(info, "details", None) or {}).get("adapter") or {}
        return cls(info.name, info.sha256, adapter_sha256 or adapter.get("sha256"))


@dataclass(frozen=True)
class Request:
    """One model call. ``seed`` and ``attempt`` are key fields: the same prompt retried is a new call."""

    prompt: str
    sampling: SamplingConfig
    seed: int
    attempt: int


@dataclass(frozen=True)
class Response:
    key: str
    text: str
    n_new_tokens: int
    seconds: float
    """Wall time of the batch that produced it, divided by the batch size."""
    cached: bool


class CachedGenerator:
    """Answers :class:`Request` lists from the cache, sending only the misses to the backend, in chunks."""

    def __init__(
        self, backend: Backend, cache: LLMCache, model_key: ModelKey, *, batch_size: int | None = None
    ) -> None:
        self.backend = backend
        self.cache = cache
        self.model_key = model_key
        self.batch_size = batch_size or backend.batch_size
        self.backend_calls = 0

    def render(self, messages: prompts.Messages) -> str:
        return self.backend.render(messages)

    def key(self, request: Request) -> str:
        return cache_key(
            model=self.model_key.name,
            model_sha256=self.model_key.sha256,
            adapter_sha256=self.model_key.adapter_sha256,
            prompt=request.prompt,
            sampling=identity(request.sampling),
            seed=request.seed,
            attempt=request.attempt,
        )

    def generate(
        self, requests: Sequence[Request], *, on_answered: Callable[[int], object] | None = None
    ) -> list[Response]:
        """Responses in request order. Misses are grouped by sampling config, then chunked, in request order,
        so a run resumed after a crash forms exactly the chunks the lost ones were (same keys, same seeds).

        ``on_answered(n)`` hears how many requests were answered: the cache hits at once, then each chunk as the
        backend returns it, so one long call (the direct-LLM baseline's whole test set) can drive a progress bar
        without being cut into chunks of its own, which would change which misses share a batch."""
        keys = [self.key(r) for r in requests]
        found = {k: (e, True) for k, e in self.cache.lookup(keys).items()}
        if on_answered is not None:
            on_answered(sum(k in found for k in keys))
        groups: dict[str, list[tuple[str, Request]]] = {}
        queued: set[str] = set()
        for k, r in zip(keys, requests, strict=True):
            if k not in found and k not in queued:
                queued.add(k)
                groups.setdefault(r.sampling.model_dump_json(), []).append((k, r))
        for group in groups.values():
            for start in range(0, len(group), self.batch_size):
                chunk = group[start : start + self.batch_size]
                for entry in self._call_backend(chunk):
                    found[entry.key] = (entry, False)
                if on_answered is not None:
                    on_answered(sum(keys.count(key) for key, _ in chunk))
        return [
            Response(k, found[k][0].text, found[k][0].n_new_tokens, found[k][0].seconds, found[k][1])
            for k in keys
        ]

    def _call_backend(self, chunk: list[tuple[str, Request]]) -> list[CacheEntry]:
        chunk_keys = [k for k, _ in chunk]
        seed = batch_seed(chunk_keys)
        t0 = time.perf_counter()
        outputs = self.backend.generate([r.prompt for _, r in chunk], chunk[0][1].sampling, seed)
        seconds = time.perf_counter() - t0
        self.backend_calls += 1
        if len(outputs) != len(chunk):
            raise RuntimeError(f"backend returned {len(outputs)} outputs for {len(chunk)} prompts")
        entries = [
            CacheEntry(k, o.text, int(o.n_new_tokens), seconds / len(chunk))
            for k, o in zip(chunk_keys, outputs, strict=True)
        ]
        self.cache.append_batch(entries, model=self.model_key.name, batch_seed=seed, batch_seconds=seconds)
        return entries

    def stats(self) -> dict[str, int]:
        return {**self.cache.stats(), "backend_calls": self.backend_calls}
