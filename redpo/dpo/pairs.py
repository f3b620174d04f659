"""DPO preference pairs for the generator (paper §4): simulated OBO chains, three rejected kinds, two halves.

Why each rule exists:

- **Prompt** = the three-module OBO prompt *with* the dissimilarity instruction, rendered with the generator's
  chat template: exactly the string the OBO loop sends, so the adapter learns on the prompts it will see.
- **OBO chains.** Per relation, chains of ``dpo.chain_length`` steps start from ``dpo.num_demos`` gold
  demonstrations; each step's *chosen* joins the next step's demonstrations, as valid samples do in OBO.
- **Chosen** = a gold TRAIN sample of the target relation that is not in the prompt. Every K-shot sample (all
  ``fewshot.k`` x ``fewshot.seeds`` splits) is excluded from the gold pool, because the K-shot samples are the
  demonstrations and the duplicate filter of generation: rewarding them would reward copying.
- **Rejected**, kinds allotted per relation by largest remainder over ``dpo.kind_mix`` (exact proportions):
  ``wrong_relation`` (a gold sample of another relation *of the same half*, shown as the target: the output
  text has no relation field, so it is the same format), ``near_copy`` (a prompt demonstration whose head and
  tail are replaced by head / tail strings of other train samples of the same relation, plus one rule-based
  context edit; its entity-masked :func:`~redpo.parse.near_copy_score` must reach the near-copy threshold while
  its :func:`~redpo.parse.exact_key` differs) and ``exact_copy`` (a demonstration unchanged).
- **Two halves, split by relation type.** The profile's relation *types* (SemEval's ``Cause-Effect`` holds both
  ``Cause-Effect(e1,e2)`` and ``(e2,e1)``; a dataset without direction suffixes has one label per type) are
  shuffled with ``dpo.split_seed`` and dealt to the half with fewer labels so far. Both directions of a type
  therefore share a half: an adapter that trained on gold ``Cause-Effect(e1,e2)`` would otherwise generate
  ``Cause-Effect(e2,e1)``, the same entities and wording with the roles swapped. The negative label is a type of
  its own (it is generated like the others) and lands in one half. Adapter ``A`` trains on half ``A`` and
  generates for half ``B``; adapter ``B`` the reverse. :func:`leakage_report` checks that no gold sample (by
  ``exact_key``) of a *type* the adapter generates for, in either direction, appears anywhere in its pairs.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
from datasets import Dataset

from redpo.config import Profile
from redpo.core.io import ResultsDir, iter_jsonl, write_json
from redpo.core.relations import RelationSchema
from redpo.core.sample import RESample
from redpo.data.splits import load_profile_kshot
from redpo.generation import prompts
from redpo.generation.parse import NEAR_COPY_THRESHOLD, exact_key, near_copy_score

KINDS = ("wrong_relation", "near_copy", "exact_copy")
HALVES = ("A", "B")
PAIR_COLUMNS = ("prompt", "chosen", "rejected", "kind", "relation", "half")
"""What TRL reads (the first three) and what the notebook groups by; every row also keeps its provenance."""
DETERMINER_SWAPS = {"the": "a", "a": "the", "an": "the", "this": "the", "these": "those", "those": "these"}
ADJECTIVE_SUFFIXES = ("ous", "ful", "ive", "able", "ible", "less", "ical", "ish", "ant", "ent")
NEAR_COPY_TRIES = 20

Render = Callable[[prompts.Messages], str]


class PairError(ValueError):
    """The profile or data cannot give the requested pairs; the message names the key and the fix."""


# ---- the two halves ---------------------------------------------------------------------------------------
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
        return self.halves[_check_half(adapter)]

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


def _check_half(half: str) -> str:
    if half not in HALVES:
        raise PairError(f"unknown half/adapter {half!r}; use one of {', '.join(HALVES)}")
    return half


def other_half(half: str) -> str:
    return HALVES[1 - HALVES.index(_check_half(half))]


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


# ---- gold pools -------------------------------------------------------------------------------------------
def all_kshot_samples(profile: Profile, results: ResultsDir) -> list[RESample]:
    """Every K-shot sample of every ``fewshot.k`` x ``fewshot.seeds`` split (written by notebook 00)."""
    return [
        s
        for k in profile.fewshot.k
        for seed in profile.fewshot.seeds
        for s in load_profile_kshot(profile, results.kshot, k, seed)
    ]


def gold_pools(
    train: Sequence[RESample], kshot: Sequence[RESample], halves: RelationHalves
) -> dict[str, list[RESample]]:
    """Train samples per relation, deduplicated by ``exact_key``, minus every K-shot sample and minus any sample
    whose ``exact_key`` also occurs under a relation of the *other* half (label noise would otherwise leak)."""
    excluded = {_key(s) for s in kshot}
    keys_by_half: dict[str, set[tuple[str, ...]]] = {h: set() for h in HALVES}
    for s in train:
        if s.relation in halves:
            keys_by_half[halves.half_of(s.relation)].add(_key(s))
    pools: dict[str, list[RESample]] = {r: [] for rels in halves.halves.values() for r in rels}
    seen: set[tuple[str, ...]] = set()
    for s in train:
        if s.relation not in halves:
            continue
        key = _key(s)
        if key in excluded or key in seen or key in keys_by_half[other_half(halves.half_of(s.relation))]:
            continue
        seen.add(key)
        pools[s.relation].append(s)
    return pools


# ---- kinds ------------------------------------------------------------------------------------------------
def allocate_kinds(n: int, mix: Mapping[str, float]) -> dict[str, int]:
    """Counts per kind summing to ``n``: floors of the exact shares, then the largest remainders (ties in
    ``KINDS`` order), so equal weights and n=3 give exactly one of each."""
    total = sum(mix.get(k, 0.0) for k in KINDS)
    shares = {k: n * mix.get(k, 0.0) / total for k in KINDS}
    counts = {k: math.floor(v) for k, v in shares.items()}
    order = sorted(KINDS, key=lambda k: (-(shares[k] - counts[k]), KINDS.index(k)))
    for k in order[: n - sum(counts.values())]:
        counts[k] += 1
    return counts


# ---- near copies ------------------------------------------------------------------------------------------
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
    demo: RESample, entity_pool: Sequence[RESample], rng: random.Random, forbidden: set[tuple[str, ...]]
) -> tuple[RESample, str] | None:
    """A near copy of ``demo``: head/tail strings taken from other samples of the same relation (same slot and,
    on typed datasets, same type), then :func:`edit_context`. ``None`` if no candidate passes the checks."""
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
        if exact_key(edited) in forbidden or near_copy_score(edited, [demo]) < NEAR_COPY_THRESHOLD:
            continue
        return edited, how
    return None


def _fold(tokens: Sequence[str]) -> str:
    return " ".join(tokens).casefold()


# ---- building ---------------------------------------------------------------------------------------------
@dataclass
class DPOPairs:
    """Pairs per adapter (``datasets.Dataset`` each), the halves they came from, and relations left out."""

    halves: RelationHalves
    datasets: dict[str, Dataset]
    skipped: dict[str, str] = field(default_factory=dict)
    """Relation -> why it has no pairs (too few gold train samples)."""

    def frame(self) -> pd.DataFrame:
        """All pairs of both adapters as one DataFrame (for statistics and examples)."""
        return pd.concat([ds.to_pandas() for ds in self.datasets.values()], ignore_index=True)


def build_pairs(
    profile: Profile,
    schema: RelationSchema,
    train: Sequence[RESample],
    kshot: Sequence[RESample],
    render: Render,
    *,
    halves: RelationHalves | None = None,
) -> DPOPairs:
    """Preference pairs for both adapters, checked for leakage (raises :class:`PairError` on any leak)."""
    halves = halves or profile_halves(profile, schema)
    pools = gold_pools(train, kshot, halves)
    rng_root = f"dpo-pairs:{profile.dpo.split_seed}:{profile.seed}"
    rows: dict[str, list[dict[str, Any]]] = {h: [] for h in HALVES}
    skipped: dict[str, str] = {}
    for half in HALVES:
        usable = {r: pools[r] for r in halves.train_relations(half) if len(pools[r]) >= 2}
        for rel in halves.train_relations(half):
            if rel not in usable:
                skipped[rel] = f"{len(pools[rel])} gold train sample(s) outside the K-shot splits; need >= 2"
                continue
            rng = random.Random(_stable_int(f"{rng_root}:{rel}"))
            rows[half].extend(_relation_pairs(rel, half, usable, profile, schema, render, rng))
    datasets = {h: Dataset.from_list(rows[h]) for h in HALVES}
    pairs = DPOPairs(halves, datasets, skipped)
    report = leakage_report(pairs, train, kshot)
    if not report["ok"]:
        raise PairError(f"leakage across halves: {json.dumps(report['adapters'])[:2000]}")
    return pairs


def _relation_pairs(
    rel: str,
    half: str,
    pools: Mapping[str, Sequence[RESample]],
    profile: Profile,
    schema: RelationSchema,
    render: Render,
    rng: random.Random,
) -> list[dict[str, Any]]:
    """``dpo.pairs_per_relation`` pairs of one relation, in chains whose demonstrations grow by one per step."""
    dpo, pool = profile.dpo, list(pools[rel])
    counts = allocate_kinds(dpo.pairs_per_relation, dpo.kind_mix)
    kinds = [k for k in KINDS for _ in range(counts[k])]
    rng.shuffle(kinds)
    others = [r for r in pools if r != rel]
    if counts["wrong_relation"] and not others:
        raise PairError(
            f"relation {rel!r}: dpo.kind_mix asks for wrong_relation pairs but half {half} has no other relation "
            "with gold samples; set dpo.kind_mix.wrong_relation: 0 or add relations to dataset.relations"
        )
    n_start = min(dpo.num_demos or profile.generation.num_demos, len(pool) - 1)
    out: list[dict[str, Any]] = []
    chain = 0
    while len(out) < len(kinds):
        length = min(dpo.chain_length, len(kinds) - len(out), len(pool) - n_start)
        drawn = rng.sample(pool, n_start + length)
        demos = drawn[:n_start]
        for step, chosen in enumerate(drawn[n_start:]):
            kind = kinds[len(out)]
            rejected, source, note = _rejected(kind, rel, chosen, demos, pools, others, rng)
            messages = prompts.icl_prompt(schema, rel, demos, mode="obo", n=1, dissimilar=True)
            out.append({
                "prompt": render(messages),
                "chosen": prompts.demo_text(chosen, schema),
                "rejected": prompts.demo_text(rejected, schema),
                "kind": kind,
                "relation": rel,
                "half": half,
                "chain": chain,
                "step": step,
                "n_demos": len(demos),
                "demos": [d.to_marked() for d in demos],
                "chosen_marked": chosen.to_marked(),
                "rejected_marked": rejected.to_marked(),
                "rejected_source_relation": source,
                "near_copy_score": near_copy_score(rejected, demos),
                "note": note,
            })
            demos = [*demos, chosen]  # OBO: the chosen output joins the next call's demonstrations
        chain += 1
    return out


def _rejected(
    kind: str,
    rel: str,
    chosen: RESample,
    demos: Sequence[RESample],
    pools: Mapping[str, Sequence[RESample]],
    others: Sequence[str],
    rng: random.Random,
) -> tuple[RESample, str, str]:
    """The rejected sample of one step, the relation it really belongs to, and a note on how it was made."""
    if kind == "exact_copy":
        return rng.choice(list(demos)), rel, "demonstration copied"
    if kind == "wrong_relation":
        source = rng.choice(list(others))
        sample = rng.choice(list(pools[source]))
        return sample.with_relation(rel), source, f"gold {source} shown as {rel}"
    forbidden = {exact_key(s) for s in (*demos, chosen)}
    for demo in rng.sample(list(demos), len(demos)):
        made = make_near_copy(demo, pools[rel], rng, forbidden)
        if made is not None:
            return made[0], rel, f"near copy of demo: entities replaced, {made[1]}"
    raise PairError(
        f"relation {rel!r}: could not make a near copy of any demonstration (too few distinct entity strings in "
        "its train samples); lower dpo.kind_mix.near_copy for this dataset"
    )


@functools.lru_cache(maxsize=200_000)
def _key(sample: RESample) -> tuple[str, ...]:
    """``exact_key`` memoised: the pool and leakage checks key every train sample, some more than once."""
    return exact_key(sample)


def _stable_int(text: str) -> int:
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:15], 16)


# ---- checks -----------------------------------------------------------------------------------------------
def pair_samples(row: Mapping[str, Any]) -> list[RESample]:
    """Every sample a pair shows the model: its demonstrations, chosen and rejected (relation = the target)."""
    texts = [*row["demos"], row["chosen_marked"], row["rejected_marked"]]
    return [RESample.from_marked(t, row["relation"]) for t in texts]


def leakage_report(pairs: DPOPairs, train: Sequence[RESample], kshot: Sequence[RESample]) -> dict[str, Any]:
    """Per adapter: pairs whose prompt/chosen/rejected holds a gold sample (train or K-shot, by ``exact_key``)
    of a relation *type* the adapter generates for, in either direction, and pairs labelled with a relation of
    such a type. Checking types, not labels, is what catches a split that separates two directions."""
    halves = pairs.halves
    out: dict[str, Any] = {"ok": True, "level": "relation type", "adapters": {}}
    for adapter, ds in pairs.datasets.items():
        generates = halves.generate_types(adapter)
        forbidden = {_key(s) for s in (*train, *kshot) if halves.type_of(s.relation) in generates}
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


def hold_out(pairs: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """``(train, held_out)``: whole chains ``(relation, chain)``, seeded, until ``fraction`` of the pairs are out.

    Chains, not single pairs, because a chain's prompts extend each other: holding out step 2 of a chain whose
    step 1 is trained on would measure memory, not generalisation. Empty when ``fraction`` is 0 or the pairs
    form a single chain.
    """
    chained = {"relation", "chain"} <= set(pairs.column_names)
    keys: list[Any] = (list(zip(pairs["relation"], pairs["chain"], strict=True)) if chained
                       else list(range(len(pairs))))  # pairs from elsewhere: each its own chain
    sizes = Counter(keys)
    groups = list(sizes)
    random.Random(seed).shuffle(groups)
    out: set[Any] = set()
    for group in groups[:-1]:  # always keep one chain to train on
        if sum(sizes[g] for g in out) >= fraction * len(keys):
            break
        out.add(group)
    held = [i for i, key in enumerate(keys) if key in out]
    kept = [i for i, key in enumerate(keys) if key not in out]
    return pairs.select(kept), pairs.select(held)


# ---- files ------------------------------------------------------------------------------------------------
def pairs_path(results: ResultsDir, half: str) -> Path:
    return results.dpo / f"pairs_{_check_half(half)}.jsonl"


def save_pairs(pairs: DPOPairs, results: ResultsDir, leakage: Mapping[str, Any] | None = None) -> dict[str, Path]:
    """``dpo/pairs_<A|B>.jsonl`` (one pair per line), ``dpo/halves.json`` and, if given, ``dpo/leakage.json``."""
    paths: dict[str, Path] = {}
    for half, ds in pairs.datasets.items():
        path = pairs_path(results, half)
        tmp = path.with_suffix(".jsonl.tmp")
        with tmp.open("w") as f:
            for row in ds:
                f.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
        tmp.replace(path)
        paths[half] = path
    paths["halves"] = write_json(results.dpo / "halves.json", {**pairs.halves.to_json(), "skipped": pairs.skipped})
    if leakage is not None:
        paths["leakage"] = write_json(results.dpo / "leakage.json", leakage)
    return paths


def load_halves(results: ResultsDir) -> RelationHalves:
    """The halves :func:`save_pairs` wrote (what the generation step must respect)."""
    path = results.dpo / "halves.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; build the pairs first (notebook 03 or --build-pairs)")
    raw = json.loads(path.read_text())
    return RelationHalves({h: tuple(raw["halves"][h]) for h in HALVES}, raw["seed"], raw["negative_label"],
                          raw.get("label_types", {}))


def load_pairs(results: ResultsDir, half: str) -> Dataset:
    """One adapter's pairs as a ``datasets.Dataset``."""
    path = pairs_path(results, half)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist; build the pairs first: run notebook 03 or "
            "`python -m redpo.dpo_train --profile <p> --build-pairs`"
        )
    return Dataset.from_list([row for _, row in iter_jsonl(path)])
