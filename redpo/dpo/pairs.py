"""DPO preference pairs for the generator (paper §4): simulated OBO chains and the three rejected kinds.

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
  text has no relation field, so it is the same format), ``near_copy`` (:mod:`redpo.dpo.perturb`) and
  ``exact_copy`` (a demonstration unchanged).
- Pairs are built per half (:mod:`redpo.dpo.halves`) and refused if the leakage check finds any leak.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
from datasets import Dataset

from redpo.config import Profile
from redpo.core.io import ResultsDir, iter_jsonl, write_json
from redpo.core.relations import RelationSchema
from redpo.core.sample import RESample
from redpo.data.splits import load_profile_kshot, load_split, profile_schema
from redpo.dpo.halves import (
    HALVES,
    HALVES_FILE,
    PairError,
    RelationHalves,
    check_half,
    leakage_report,
    other_half,
    profile_halves,
    sample_key,
)
from redpo.dpo.perturb import make_near_copy
from redpo.generation import prompts
from redpo.generation.engines import profile_tokenizer
from redpo.generation.parse import exact_key, near_copy_score

KINDS = ("wrong_relation", "near_copy", "exact_copy", "mirror_direction")
PAIR_COLUMNS = ("prompt", "chosen", "rejected", "kind", "relation", "half")
"""What TRL reads (the first three) and what the notebook groups by; every row also keeps its provenance."""

Render = Callable[[prompts.Messages], str]


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
    excluded = {sample_key(s) for s in kshot}
    keys_by_half: dict[str, set[tuple[str, ...]]] = {h: set() for h in HALVES}
    for s in train:
        if s.relation in halves:
            keys_by_half[halves.half_of(s.relation)].add(sample_key(s))
    pools: dict[str, list[RESample]] = {r: [] for rels in halves.halves.values() for r in rels}
    seen: set[tuple[str, ...]] = set()
    for s in train:
        if s.relation not in halves:
            continue
        key = sample_key(s)
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
    report = leakage_report(halves, datasets, train, kshot)
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
        for step, chosen in enumerate(_chosen(drawn[n_start:], demos, pool, dpo.chosen, dpo.chosen_candidates, rng)):
            kind = _kind_for(kinds[len(out)], rel, schema, others)
            rejected, source, note = _rejected(kind, rel, chosen, demos, pools, others, rng,
                                               profile.generation.near_copy_threshold, schema)
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


def _chosen(drawn: Sequence[RESample], demos: Sequence[RESample], pool: Sequence[RESample], how: str,
            candidates: int, rng: random.Random) -> Iterator[RESample]:
    """The chosen sample of each step of a chain: the drawn ones in turn (``random``, the paper's), or
    (``distinct``) at each step the candidate least similar to the demonstrations so far, each chosen one joining
    them as in OBO, none used twice and none a demonstration."""
    if how == "random":
        yield from drawn
        return
    used = {exact_key(s) for s in demos}
    shown = list(demos)
    for _ in drawn:
        free = [s for s in pool if exact_key(s) not in used]
        picked = min(rng.sample(free, min(candidates, len(free))), key=lambda s: near_copy_score(s, shown))
        used.add(exact_key(picked))
        shown.append(picked)
        yield picked


def _reverse(rel: str, schema: RelationSchema) -> str | None:
    """The label of the same relation type in the other direction, if the schema has one."""
    return next((lab for lab in schema.labels
                 if lab != rel and lab != schema.negative_label and schema.undirected(lab) == schema.undirected(rel)),
                None)


def _kind_for(kind: str, rel: str, schema: RelationSchema, others: Sequence[str]) -> str:
    """``kind``, unless it is ``mirror_direction`` for a relation with no reverse label (the negative label, an
    undirected type): then the nearest lesson there is, a wrong relation (or an exact copy in a one-relation half);
    the pair records the kind it got."""
    if kind != "mirror_direction" or _reverse(rel, schema) is not None:
        return kind
    return "wrong_relation" if others else "exact_copy"


def _rejected(
    kind: str,
    rel: str,
    chosen: RESample,
    demos: Sequence[RESample],
    pools: Mapping[str, Sequence[RESample]],
    others: Sequence[str],
    rng: random.Random,
    threshold: float,
    schema: RelationSchema,
) -> tuple[RESample, str, str]:
    """The rejected sample of one step, the relation it really belongs to, and a note on how it was made."""
    if kind == "mirror_direction":  # the chosen sample with the roles swapped: a sample of the reverse relation
        reverse = _reverse(rel, schema) or rel
        mirrored = replace(chosen, head=chosen.tail, tail=chosen.head, head_type=chosen.tail_type,
                           tail_type=chosen.head_type, meta={})
        return mirrored, reverse, f"chosen with its entities' roles swapped (a {reverse} sample)"
    if kind == "exact_copy":
        return rng.choice(list(demos)), rel, "demonstration copied"
    if kind == "wrong_relation":
        source = rng.choice(list(others))
        sample = rng.choice(list(pools[source]))
        return sample.with_relation(rel), source, f"gold {source} shown as {rel}"
    forbidden = {exact_key(s) for s in (*demos, chosen)}
    for demo in rng.sample(list(demos), len(demos)):
        made = make_near_copy(demo, pools[rel], rng, forbidden, threshold)
        if made is not None:
            return made[0], rel, f"near copy of demo: entities replaced, {made[1]}"
    raise PairError(
        f"relation {rel!r}: could not make a near copy of any demonstration (too few distinct entity strings in "
        "its train samples); lower dpo.kind_mix.near_copy for this dataset"
    )



def _stable_int(text: str) -> int:
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:15], 16)



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
    return results.dpo / f"pairs_{check_half(half)}.jsonl"


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
    paths["halves"] = write_json(results.dpo / HALVES_FILE, {**pairs.halves.to_json(), "skipped": pairs.skipped})
    if leakage is not None:
        paths["leakage"] = write_json(results.dpo / "leakage.json", leakage)
    return paths



def load_pairs(results: ResultsDir, half: str) -> Dataset:
    """One adapter's pairs as a ``datasets.Dataset``."""
    path = pairs_path(results, half)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist; build the pairs first: run notebook 03 or "
            "`python -m redpo dpo --profile <p> --build-pairs`"
        )
    return Dataset.from_list([row for _, row in iter_jsonl(path)])


# ---- building and saving both halves' pairs ------------------------------------------------------------------
def render_with(profile: Profile) -> Render:
    """The chat-template renderer of the profile's generator (pairs are built on exactly the OBO prompt); its
    tokenizer alone, so building pairs loads no weights."""
    tokenizer = profile_tokenizer(profile)
    return lambda messages: prompts.render(messages, tokenizer)


def build_and_save_pairs(profile: Profile, results: ResultsDir) -> tuple[DPOPairs, dict[str, Any]]:
    """Build both adapters' pairs from the train split, check leakage, write them under ``dpo/``."""
    schema = profile_schema(profile)
    train, kshot = load_split(profile, "train"), all_kshot_samples(profile, results)
    pairs = build_pairs(profile, schema, train, kshot, render_with(profile))
    leakage = leakage_report(pairs.halves, pairs.datasets, train, kshot)
    save_pairs(pairs, results, leakage)
    return pairs, leakage
