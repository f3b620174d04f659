"""Entity-marked model inputs for the RE classifier: markers inserted, subwords cropped around the pair.

* **Markers.** Untyped: ``<e1> head </e1>`` and ``<e2> tail </e2>``, added to the tokenizer as special tokens
  (new embedding rows). Typed, when the schema has entity types and ``EncoderConfig.typed_markers`` is set: Zhou
  & Chen's "typed entity marker (punct)", ``@ * person * head @`` and ``# ^ city ^ tail #``, which reuses
  existing vocabulary so that the type words keep their pretrained meaning and no embedding is learned from
  scratch.
* **Truncation** never loses an entity: see :func:`keep_words`.
* Training and prediction encode through one :class:`Inputs`, so both see identical inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain, zip_longest
from typing import Any

from datasets import Dataset

from redpo.core.sample import HEAD_CLOSE, HEAD_OPEN, TAIL_CLOSE, TAIL_OPEN, RESample

# Zhou & Chen's typed-marker punctuation: (open/close, around-type) for head and tail.
TYPED_HEAD = ("@", "*")
TYPED_TAIL = ("#", "^")


@dataclass(frozen=True)
class MarkedWords:
    """Words with markers inserted; ``head``/``tail`` are the word ranges from start marker to end marker."""

    words: list[str]
    head: range
    tail: range


def _type_words(entity_type: str | None, role: str, sample: RESample) -> list[str]:
    if not entity_type:
        raise ValueError(
            f"typed markers need a {role} type, but the sample {sample.to_marked()!r} has none; "
            "set encoder.typed_markers=false or give every sample head_type/tail_type"
        )
    return entity_type.lower().replace("_", " ").split()


def mark(sample: RESample, typed: bool) -> MarkedWords:
    """Insert the entity markers into the sample's words (see the module docstring for both styles)."""
    if typed:
        (ho, ht), (to, tt) = TYPED_HEAD, TYPED_TAIL
        head_open = [ho, ht, *_type_words(sample.head_type, "head", sample), ht]
        tail_open = [to, tt, *_type_words(sample.tail_type, "tail", sample), tt]
        head_close, tail_close = [ho], [to]
    else:
        head_open, head_close, tail_open, tail_close = [HEAD_OPEN], [HEAD_CLOSE], [TAIL_OPEN], [TAIL_CLOSE]
    words: list[str] = []
    spans: dict[str, range] = {}
    for i, token in enumerate(sample.tokens):
        for role, (start, _), opener in (("head", sample.head, head_open), ("tail", sample.tail, tail_open)):
            if i == start:
                spans[role] = range(len(words), len(words))  # the start marker's index, completed below
                words.extend(opener)
        words.append(token)
        for role, (_, end), closer in (("head", sample.head, head_close), ("tail", sample.tail, tail_close)):
            if i == end - 1:
                words.extend(closer)
                spans[role] = range(spans[role].start, len(words))
    return MarkedWords(words, spans["head"], spans["tail"])


def keep_words(costs: Sequence[int], head: range, tail: range, budget: int) -> list[int]:
    """Which words to keep so that their subword count fits ``budget``, never losing an entity.

    Priority: the two start markers (the classifier reads their states), then the rest of both marked
    entities (interleaved, from the start), then context. If the stretch from the first entity to the end of
    the second fits, the words between the entities come first, so the result is one window around the
    pair; otherwise context is taken by distance from the nearest entity, giving one window around each.
    An entity longer than what is left keeps its first words (so its end marker can be lost, never its start).
    """
    n = len(costs)
    if sum(costs) <= budget:
        return list(range(n))
    first, second = sorted((head, tail), key=lambda r: r.start)
    entity = [first.start, second.start]
    entity += [i for i in chain(*zip_longest(first[1:], second[1:])) if i is not None]
    between = range(first.stop, second.start)
    pair_fits = sum(costs[first.start : second.stop]) <= budget

    def distance(i: int) -> int:
        return min(r.start - i if i < r.start else i - r.stop + 1 for r in (first, second))

    context = sorted(
        (i for i in range(n) if i not in first and i not in second),
        key=lambda i: (not (pair_fits and i in between), distance(i), i),
    )
    kept, used = [], 0
    for rank, i in enumerate(entity + context):
        if used + costs[i] <= budget:
            kept.append(i)
            used += costs[i]
        elif rank >= len(entity):
            break  # context stops at the first word that does not fit: no holes inside a window
    return sorted(kept)


def encode(sample: RESample, tokenizer: Any, max_length: int, typed: bool) -> dict[str, Any]:
    """Token ids of the marked sample (cropped by :func:`keep_words`) and the two start-marker positions."""
    marked = mark(sample, typed)
    plain = tokenizer(marked.words, is_split_into_words=True, add_special_tokens=False)
    costs = [0] * len(marked.words)
    for w in plain.word_ids():
        costs[w] += 1
    kept = keep_words(costs, marked.head, marked.tail, max_length - tokenizer.num_special_tokens_to_add())
    enc = tokenizer([marked.words[i] for i in kept], is_split_into_words=True, add_special_tokens=True)
    word_ids = enc.word_ids()
    new_index = {old: new for new, old in enumerate(kept)}
    head_pos = word_ids.index(new_index[marked.head.start])
    tail_pos = word_ids.index(new_index[marked.tail.start])
    out = {k: list(v) for k, v in enc.items()}
    return {**out, "head_pos": head_pos, "tail_pos": tail_pos}



def label_ids(samples: Sequence[RESample], labels: Sequence[str]) -> list[int]:
    """Each sample's label index in ``labels``; a relation outside them is an error naming it."""
    index = {lab: i for i, lab in enumerate(labels)}
    unknown = sorted({s.relation for s in samples} - set(index))
    if unknown:
        raise ValueError(
            f"samples have relations {unknown} outside the label set {list(labels)}; "
            "filter them out or pass labels= including them"
        )
    return [index[s.relation] for s in samples]


@dataclass(frozen=True)
class Inputs:
    """How samples become model inputs; shared by training and prediction so both encode identically."""

    tokenizer: Any
    max_length: int
    typed: bool

    def dataset(self, samples: Sequence[RESample], labels: Sequence[str] | None = None) -> Dataset:
        """Tokenized samples as a ``datasets.Dataset``, with ``labels`` ids when a label list is given."""
        rows = [encode(s, self.tokenizer, self.max_length, self.typed) for s in samples]
        if labels is not None:
            for row, y in zip(rows, label_ids(samples, labels), strict=True):
                row["labels"] = y
        return Dataset.from_list(rows)
