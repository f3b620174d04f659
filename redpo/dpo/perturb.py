"""Near copies: a demonstration with its entities replaced and its context lightly edited (DPO's second rejected kind).

The paper's near copy is the failure it wants the adapter to unlearn: the same sentence with other names. It is
made here by rule, not by a model, so that it is a near copy by construction: head and tail strings come from other
gold samples of the same relation (so the entities are plausible for it), and one light edit outside the entities
(a determiner swap, else a dropped adjective-like token) keeps it from being an exact copy.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace

from redpo.core.sample import RESample
from redpo.generation.parse import exact_key, near_copy_score

DETERMINER_SWAPS = {"the": "a", "a": "the", "an": "the", "this": "the", "these": "those", "those": "these"}
ADJECTIVE_SUFFIXES = ("ous", "ful", "ive", "able", "ible", "less", "ical", "ish", "ant", "ent")
NEAR_COPY_TRIES = 20
"""Entity draws per demonstration before giving up on it (a relation with few distinct entity strings)."""


def replace_entities(sample: RESample, head: Sequence[str], tail: Sequence[str]) -> RESample:
    """``sample`` with its head and tail token spans replaced (spans recomputed, meta dropped)."""
    spans = sorted([("head", sample.head), ("tail", sample.tail)], key=lambda x: x[1][0])
    out: list[str] = []
    new: dict[str, tuple[int, int]] = {}
    pos = 0
    for role, (start, end) in spans:
        out.extend(sample.tokens[pos:start])
        first = len(out)
        out.extend(head if role == "head" else tail)
        new[role] = (first, len(out))
        pos = end
    out.extend(sample.tokens[pos:])
    return replace(sample, tokens=tuple(out), head=new["head"], tail=new["tail"], meta={})


def edit_context(sample: RESample, rng: random.Random) -> tuple[RESample, str]:
    """One light, rule-based edit outside the entities: swap a determiner, else drop an adjective-like token.

    Returns the sample and a short description (``"none"`` when neither rule applies: the entity swap alone
    still makes a near copy).
    """
    inside = set(range(*sample.head)) | set(range(*sample.tail))
    outside = [i for i in range(len(sample.tokens)) if i not in inside]
    dets = [i for i in outside if sample.tokens[i].casefold() in DETERMINER_SWAPS]
    if dets:
        i = rng.choice(dets)
        old = sample.tokens[i]
        new = DETERMINER_SWAPS[old.casefold()]
        if new == "a" and i + 1 < len(sample.tokens) and sample.tokens[i + 1][:1].casefold() in "aeiou":
            new = "an"
        new = new.capitalize() if old[:1].isupper() else new
        tokens = (*sample.tokens[:i], new, *sample.tokens[i + 1 :])
        return replace(sample, tokens=tokens), f"determiner {old!r}->{new!r}"
    adjectives = [
        i for i in outside if len(sample.tokens[i]) > 4 and sample.tokens[i].casefold().endswith(ADJECTIVE_SUFFIXES)
    ]
    if adjectives:
        i = rng.choice(adjectives)

        def shift(span: tuple[int, int]) -> tuple[int, int]:
            return (span[0] - 1, span[1] - 1) if span[0] > i else span

        tokens = sample.tokens[:i] + sample.tokens[i + 1 :]
        return (
            replace(sample, tokens=tokens, head=shift(sample.head), tail=shift(sample.tail)),
            f"dropped {sample.tokens[i]!r}",
        )
    return sample, "none"


def make_near_copy(
    demo: RESample, entity_pool: Sequence[RESample], rng: random.Random, forbidden: set[tuple[str, ...]],
    threshold: float,
) -> tuple[RESample, str] | None:
    """A near copy of ``demo``: head/tail strings taken from other samples of the same relation (same slot and,
    on typed datasets, same type), then :func:`edit_context`. Its entity-masked :func:`near_copy_score` against
    ``demo`` must reach ``threshold`` (``generation.near_copy_threshold``, the bar the diversity tables count near
    copies by) while its ``exact_key`` is none of ``forbidden``. ``None`` if no candidate passes."""
    heads = sorted({s.tokens[slice(*s.head)] for s in entity_pool if s.head_type == demo.head_type})
    tails = sorted({s.tokens[slice(*s.tail)] for s in entity_pool if s.tail_type == demo.tail_type})
    old_head, old_tail = demo.tokens[slice(*demo.head)], demo.tokens[slice(*demo.tail)]
    heads = [h for h in heads if _fold(h) != _fold(old_head)]
    tails = [t for t in tails if _fold(t) != _fold(old_tail)]
    if not heads or not tails:
        return None
    for _ in range(NEAR_COPY_TRIES):
        head, tail = rng.choice(heads), rng.choice(tails)
        if _fold(head) == _fold(tail):
            continue
        edited, how = edit_context(replace_entities(demo, head, tail), rng)
        if exact_key(edited) in forbidden or near_copy_score(edited, [demo]) < threshold:
            continue
        return edited, how
    return None


def _fold(tokens: Sequence[str]) -> str:
    return " ".join(tokens).casefold()

