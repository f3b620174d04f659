"""The one record every stage passes around: a relation-extraction sample.

Kept separate from the loaders so that prompts, parsing, generation and the RE model share a single,
dependency-free definition, and so that marked text (``<e1>..</e1>``, ``<e2>..</e2>``) — the format the LLM
reads and writes — converts to and from token spans without loss.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

HEAD_OPEN, HEAD_CLOSE, TAIL_OPEN, TAIL_CLOSE = "<e1>", "</e1>", "<e2>", "</e2>"
MARKERS = (HEAD_OPEN, HEAD_CLOSE, TAIL_OPEN, TAIL_CLOSE)
MARKER_RE = re.compile(r"(</?e[12]>)")


class MarkedTextError(ValueError):
    """Marked text is malformed; ``reason`` is a short machine-readable cause used as a reject reason."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class RESample:
    """Tokens plus head/tail ``[start, end)`` token spans and the relation label.

    ``head`` is always the entity marked e1 (TACRED's subject) and ``tail`` the one marked e2, as in the KnowPrompt
    files. Which of them is the relation's first argument is the label's to say: SemEval's ``(e2,e1)`` labels have
    the tail first.
    """

    tokens: tuple[str, ...]
    head: tuple[int, int]
    tail: tuple[int, int]
    relation: str
    head_type: str | None = None
    tail_type: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tokens", tuple(self.tokens))
        object.__setattr__(self, "head", (int(self.head[0]), int(self.head[1])))
        object.__setattr__(self, "tail", (int(self.tail[0]), int(self.tail[1])))
        n = len(self.tokens)
        for role, (s, e) in (("head", self.head), ("tail", self.tail)):
            if not 0 <= s < e <= n:
                raise ValueError(f"{role} span [{s}, {e}) is out of range for {n} tokens")
        (hs, he), (ts, te) = self.head, self.tail
        if hs < te and ts < he:
            raise ValueError(f"head span {self.head} and tail span {self.tail} overlap")

    # ---- derived views -----------------------------------------------------------------------------
    @property
    def head_name(self) -> str:
        return " ".join(self.tokens[self.head[0] : self.head[1]])

    @property
    def tail_name(self) -> str:
        return " ".join(self.tokens[self.tail[0] : self.tail[1]])

    @property
    def text(self) -> str:
        return " ".join(self.tokens)

    def with_relation(self, relation: str) -> RESample:
        return replace(self, relation=relation)

    def masked_text(self, head_placeholder: str = "HEAD", tail_placeholder: str = "TAIL") -> str:
        """The sentence with each entity replaced by a placeholder: what is left is the sample's *structure*."""
        out: list[str] = []
        i = 0
        while i < len(self.tokens):
            if i == self.head[0]:
                out.append(head_placeholder)
                i = self.head[1]
            elif i == self.tail[0]:
                out.append(tail_placeholder)
                i = self.tail[1]
            else:
                out.append(self.tokens[i])
                i += 1
        return " ".join(out)

    # ---- marked text -------------------------------------------------------------------------------
    def to_marked(self) -> str:
        """``the <e1>play</e1> was full of <e2>humor</e2> .`` (tokens joined by single spaces)."""
        out: list[str] = []
        for i, tok in enumerate(self.tokens):
            piece = tok
            if i == self.head[0]:
                piece = HEAD_OPEN + piece
            if i == self.tail[0]:
                piece = TAIL_OPEN + piece
            if i == self.head[1] - 1:
                piece += HEAD_CLOSE
            if i == self.tail[1] - 1:
                piece += TAIL_CLOSE
            out.append(piece)
        return " ".join(out)

    @classmethod
    def from_marked(
        cls,
        text: str,
        relation: str,
        *,
        head_type: str | None = None,
        tail_type: str | None = None,
        tokenize: Any = None,
    ) -> RESample:
        """Parse marked text; raises :class:`MarkedTextError` with a reason when the markers are unusable.

        ``tokenize`` splits the text between markers into tokens (default: whitespace, which makes
        ``from_marked(s.to_marked())`` lossless); the LLM parser passes a word tokenizer instead.
        """
        split = tokenize or str.split
        pieces = MARKER_RE.split(text)
        counts = {m: pieces.count(m) for m in MARKERS}
        if not any(counts.values()):
            raise MarkedTextError("no_markers")
        if any(c != 1 for c in counts.values()):
            raise MarkedTextError("malformed_markers", f"marker counts {counts}")
        tokens: list[str] = []
        starts: dict[str, int] = {}
        spans: dict[str, tuple[int, int]] = {}
        open_entity: str | None = None
        for piece in pieces:
            if piece in (HEAD_OPEN, TAIL_OPEN):
                if open_entity is not None:
                    raise MarkedTextError("malformed_markers", "nested or overlapping entity markers")
                open_entity = piece[1:3]
                starts[open_entity] = len(tokens)
            elif piece in (HEAD_CLOSE, TAIL_CLOSE):
                name = piece[2:4]
                if open_entity != name:
                    raise MarkedTextError("malformed_markers", f"{piece} closes nothing")
                open_entity = None
                spans[name] = (starts[name], len(tokens))
            else:
                tokens.extend(split(piece))
        if open_entity is not None:
            raise MarkedTextError("malformed_markers", f"<{open_entity}> is never closed")
        for name, (s, e) in spans.items():
            if s == e:
                raise MarkedTextError("empty_entity", f"{name} has no tokens")
        return cls(tuple(tokens), spans["e1"], spans["e2"], relation, head_type, tail_type)

    # ---- serialisation -----------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """KnowPrompt JSONL shape (``token``, ``h``, ``t``, ``relation``), plus types and meta when present."""
        row: dict[str, Any] = {
            "token": list(self.tokens),
            "h": {"name": self.head_name, "pos": list(self.head)},
            "t": {"name": self.tail_name, "pos": list(self.tail)},
            "relation": self.relation,
        }
        if self.head_type is not None:
            row["h"]["type"] = self.head_type
        if self.tail_type is not None:
            row["t"]["type"] = self.tail_type
        if self.meta:
            row["meta"] = self.meta
        return row

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> RESample:
        h, t = row["h"], row["t"]
        return cls(
            tuple(row["token"]),
            tuple(h["pos"]),
            tuple(t["pos"]),
            row["relation"],
            h.get("type"),
            t.get("type"),
            dict(row.get("meta") or {}),
        )


def is_manual_copy(sample: RESample) -> bool:
    """A manual sample an arm copies instead of generating (``meta.source == "manual"``: the negative label's
    K-shot samples under ``generation.negative_label: manual``). They are the same in every arm, so a measure of
    what the model wrote must leave them out, or they add a relation whose difference between arms is zero by
    construction and pull every comparison toward zero."""
    return (sample.meta or {}).get("source") == "manual"


def generated_only(samples: Iterable[RESample]) -> list[RESample]:
    """The samples the model wrote (:func:`is_manual_copy` ones left out)."""
    return [s for s in samples if not is_manual_copy(s)]
