"""The two halves of the relation types, and the leakage check that keeps each adapter off what it generates for.

**Why halves.** An adapter DPO-trained on gold samples of a relation would, when it generates for that relation,
be rewarded for reproducing training data. So the profile's relation *types* (SemEval's ``Cause-Effect`` holds
both ``Cause-Effect(e1,e2)`` and ``(e2,e1)``; a dataset without direction suffixes has one label per type) are
shuffled with ``dpo.split_seed`` and dealt to the half with fewer labels so far. Both directions of a type share a
half: an adapter that trained on gold ``Cause-Effect(e1,e2)`` would otherwise generate ``Cause-Effect(e2,e1)``, the
same entities and wording with the roles swapped. The negative label is a type of its own and lands in one half.
Adapter ``A`` trains on half ``A`` and generates for half ``B``; adapter ``B`` the reverse.

**Why a check as well.** :func:`leakage_report` verifies the built pairs instead of trusting the split: no gold
sample (by ``exact_key``) of a *type* an adapter generates for, in either direction, may appear anywhere in its
pairs, as demonstration, chosen or rejected.
"""

from __future__ import annotations

import functools
import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from datasets import Dataset

from redpo.config import DPO_HALVES, Profile
from redpo.core.io import ResultsDir
from redpo.core.relations import RelationSchema
from redpo.core.sample import RESample
from redpo.generation.parse import exact_key

HALVES = DPO_HALVES
HALVES_FILE = "halves.json"
"""``dpo/halves.json``: the split the pairs were built on, which generation with the adapters must respect."""


class PairError(ValueError):
    """The profile or data cannot give the requested pairs; the message names the key and the fix."""


@dataclass(frozen=True)
class RelationHalves:
    """Half ``A``/``B`` relations. Adapter ``X`` trains on ``halves[X]`` and generates for the other half."""

    halves: Mapping[str, tuple[str, ...]]
    seed: int
    negative_label: str | None = None
    types: Mapping[str, str] = field(default_factory=dict, hash=False)
    """Label -> relation type; a label missing here is its own type."""

    def type_of(self, relation: str) -> str:
        return self.types.get(relation, relation)

    def generate_types(self, adapter: str) -> set[str]:
        """The relation types adapter ``adapter`` generates for: no gold sample of these may reach it."""
        return {self.type_of(r) for r in self.generate_relations(adapter)}

    def train_relations(self, adapter: str) -> tuple[str, ...]:
        return self.halves[check_half(adapter)]

    def generate_relations(self, adapter: str) -> tuple[str, ...]:
        return self.halves[other_half(adapter)]

    def half_of(self, relation: str) -> str:
        return next(h for h, rels in self.halves.items() if relation in rels)

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "negative_label": self.negative_label,
            "negative_label_half": self.half_of(self.negative_label) if self.negative_label in self else None,
            "negative_label_rule": "a type of its own, generated like the other labels: one adapter trains on it and "
            "the other generates it",
            "split_by": "relation type: both directions of a type share a half",
            "halves": {h: list(r) for h, r in self.halves.items()},
            "label_types": {r: self.type_of(r) for rels in self.halves.values() for r in rels},
            "adapters": {h: {"trains_on": h, "generates_for": other_half(h)} for h in HALVES},
        }

    def __contains__(self, relation: object) -> bool:
        return any(relation in rels for rels in self.halves.values())


def check_half(half: str) -> str:
    if half not in HALVES:
        raise PairError(f"unknown half/adapter {half!r}; use one of {', '.join(HALVES)}")
    return half


def other_half(half: str) -> str:
    return HALVES[1 - HALVES.index(check_half(half))]


def split_relations(
    relations: Sequence[str], seed: int, negative_label: str | None = None, type_of: Callable[[str], str] = str
) -> RelationHalves:
    """Seeded halves of ``relations`` that never split a relation type (``type_of``, identity by default).

    Types are shuffled with ``seed`` and each goes to the half with fewer labels so far (A on ties), so the halves
    differ in size by at most one type. The negative label is a type like any other: it is generated like the
    others, so one adapter learns it and the other generates it, with the same no-leakage guarantee.
    """
    rels = list(dict.fromkeys(relations))
    types = {r: type_of(r) for r in rels}
    order = list(dict.fromkeys(types.values()))
    if len(order) < 2:
        raise PairError(f"the two-half split needs at least 2 relation types, got {order}; widen dataset.relations")
    random.Random(seed).shuffle(order)
    halves: dict[str, list[str]] = {h: [] for h in HALVES}
    for kind in order:
        half = min(HALVES, key=lambda h: (len(halves[h]), HALVES.index(h)))
        halves[half] += [r for r in rels if types[r] == kind]
    return RelationHalves({h: tuple(r) for h, r in halves.items()}, seed, negative_label, types)


def profile_halves(profile: Profile, schema: RelationSchema) -> RelationHalves:
    """The profile's relations (``dataset.relations`` or every label) split by type with ``dpo.split_seed``."""
    return split_relations(profile.dataset.relations or schema.labels, profile.dpo.split_seed, schema.negative_label,
                           schema.undirected)



@functools.lru_cache(maxsize=200_000)
def sample_key(sample: RESample) -> tuple[str, ...]:
    """``exact_key`` memoised: the pool and leakage checks key every train sample, some more than once."""
    return exact_key(sample)


# ---- the check ----------------------------------------------------------------------------------------------
def pair_samples(row: Mapping[str, Any]) -> list[RESample]:
    """Every sample a pair shows the model: its demonstrations, chosen and rejected (relation = the target)."""
    texts = [*row["demos"], row["chosen_marked"], row["rejected_marked"]]
    return [RESample.from_marked(t, row["relation"]) for t in texts]


def leakage_report(halves: RelationHalves, datasets: Mapping[str, Dataset], train: Sequence[RESample],
                   kshot: Sequence[RESample]) -> dict[str, Any]:
    """Per adapter: pairs whose prompt/chosen/rejected holds a gold sample (train or K-shot, by ``exact_key``)
    of a relation *type* the adapter generates for, in either direction, and pairs labelled with a relation of
    such a type. Checking types, not labels, is what catches a split that separates two directions."""
    out: dict[str, Any] = {"ok": True, "level": "relation type", "adapters": {}}
    for adapter, ds in datasets.items():
        generates = halves.generate_types(adapter)
        forbidden = {sample_key(s) for s in (*train, *kshot) if halves.type_of(s.relation) in generates}
        leaks, foreign = [], []
        for i, row in enumerate(ds):
            if {halves.type_of(row["relation"]), halves.type_of(row["rejected_source_relation"])} & generates:
                foreign.append(i)
            hits = [s.to_marked() for s in pair_samples(row) if exact_key(s) in forbidden]
            if hits:
                leaks.append({"row": i, "samples": hits})
        out["adapters"][adapter] = {
            "pairs": len(ds),
            "trains_on": list(halves.train_relations(adapter)),
            "generates_for": sorted(halves.generate_relations(adapter)),
            "generates_for_types": sorted(generates),
            "forbidden_gold_samples": len(forbidden),
            "leaks": leaks,
            "foreign_relation_rows": foreign,
        }
        out["ok"] = out["ok"] and not leaks and not foreign
    return out



def load_halves(results: ResultsDir) -> RelationHalves:
    """The halves the pairs were built on (``dpo/halves.json``, written with the pairs)."""
    path = results.dpo / HALVES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; build the pairs first (notebook 03, or "
                                "`python -m redpo dpo --profile <p> --build-pairs`)")
    raw = json.loads(path.read_text())
    return RelationHalves({h: tuple(raw["halves"][h]) for h in HALVES}, raw["seed"], raw["negative_label"],
                          raw.get("label_types", {}))
