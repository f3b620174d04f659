"""FewRel as a dataset folder every stage can run on: train, dev and test carved from one released FewRel file.

Why: FewRel's released files cannot feed a K-shot run as they are. Its test set was never released, and the mirror
holds only ``val_wiki.json`` (16 relations x 700 sentences; ``train_wiki.json``'s 64 relations are not copied), while
every stage needs a train split (the K-shot samples and the oracle), a dev split (early stopping) and a test split
(the oracle's and the RE model's score). :func:`fewrel_as_custom` splits each chosen relation's sentences, seeded,
into the three and writes them as a ``custom`` dataset (KnowPrompt JSONL, ``rel2id.json`` and a ``relations.yaml``
with FewRel's own explanations, its head/tail roles and no negative label), so the run reads it as any dataset of
one's own: ``-p dataset.name=custom -p dataset.path=<dest> -p dataset.relations=null``.
``python -m redpo data --fewrel DEST --relations P177,... --sizes TRAIN,VAL,TEST`` is the command (docs/data.md).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

import yaml

from redpo.config import DEFAULT_PATHS, data_dir
from redpo.core.io import DataError, atomic_write, write_samples
from redpo.core.relations import SCHEMA_FILE, get_schema
from redpo.core.sample import RESample
from redpo.data.formats import load_fewrel

SOURCE_FILE = "val_wiki.json"
"""The released FewRel file the mirror holds (``REDPO_DATA_DIR/fewrel/``)."""
SPLIT_FILES = ("train.txt", "val.txt", "test.txt")


def fewrel_as_custom(source: Path | str, dest: Path | str, relations: Sequence[str], sizes: Sequence[int],
                     seed: int) -> Path:
    """Write ``dest`` from the FewRel file ``source`` (``pid2name.json`` beside it): for each of ``relations``
    (Wikidata PIDs), its sentences shuffled with ``seed`` and cut into ``sizes`` = (train, dev, test) counts.

    Every relation gets the same counts, so the splits are balanced as FewRel is. A PID the file lacks, a PID listed
    twice, or a relation with fewer sentences than ``sum(sizes)`` is a :class:`DataError` naming it, raised before
    anything is written."""
    source, dest = Path(source), Path(dest)
    if len(sizes) != len(SPLIT_FILES) or min(sizes) < 1:
        raise DataError(f"sizes must be three positive counts (train, dev, test), got {list(sizes)}")
    twice = sorted({rel for rel in relations if list(relations).count(rel) > 1})
    if not relations or twice:
        raise DataError(f"relations must name each Wikidata PID once, got {list(relations)}")
    schema = get_schema("fewrel", source.parent)
    held: dict[str, list[RESample]] = {}
    for sample in load_fewrel(source, schema):
        held.setdefault(sample.relation, []).append(sample)
    unknown = [rel for rel in relations if rel not in held]
    if unknown:
        raise DataError(f"{source}: no sentence of {', '.join(unknown)}; the file holds {', '.join(held)}")
    short = {rel: len(held[rel]) for rel in relations if len(held[rel]) < sum(sizes)}
    if short:
        raise DataError(f"{source}: fewer than {sum(sizes)} sentences of {short} (count per relation); pick "
                        "relations the file holds more of, or smaller sizes")
    splits: list[list[RESample]] = [[] for _ in SPLIT_FILES]
    for rel in relations:
        rows = list(held[rel])
        random.Random(f"{seed}:{rel}").shuffle(rows)  # seeded per relation: adding one changes no other's rows
        start = 0
        for split, size in zip(splits, sizes, strict=True):
            split.extend(rows[start : start + size])
            start += size
    dest.mkdir(parents=True, exist_ok=True)
    for name, samples in zip(SPLIT_FILES, splits, strict=True):
        write_samples(dest / name, samples)
    atomic_write(dest / "rel2id.json", json.dumps({rel: i for i, rel in enumerate(relations)}, indent=1))
    spec = {"negative_label": None, "lowercase": False, "directions": "none", "roles": schema.roles,
            "entity_types": None, "labels": {rel: {"explanation": schema.explain(rel)} for rel in relations}}
    atomic_write(dest / SCHEMA_FILE, yaml.safe_dump(spec, sort_keys=False, allow_unicode=True, width=120))
    return dest


def carve_fewrel(dest: Path | str, relations: str | None, sizes: str | None, seed: int) -> Path:
    """``python -m redpo data --fewrel DEST --relations P177,P364 --sizes 400,100,200``: :func:`fewrel_as_custom` on
    ``REDPO_DATA_DIR/fewrel/val_wiki.json``, its comma-separated options read here (a bad one is a
    :class:`DataError` saying what it takes)."""
    if not relations:
        raise DataError("--fewrel needs --relations: the Wikidata PIDs to keep, comma-separated (e.g. P177,P364)")
    try:
        counts = [int(n) for n in (sizes or "").split(",")]
    except ValueError:
        counts = []
    if len(counts) != len(SPLIT_FILES):
        raise DataError(f"--fewrel needs --sizes: three counts per relation, train,val,test (e.g. 400,100,200); got "
                        f"{sizes!r}")
    pids = [pid.strip() for pid in relations.split(",") if pid.strip()]
    return fewrel_as_custom(data_dir() / DEFAULT_PATHS["fewrel"] / SOURCE_FILE, dest, pids, counts, seed)
