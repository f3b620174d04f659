"""A small typed RE dataset with a negative label, written by the tests: what a user brings as "custom" data."""

from __future__ import annotations

import json
import random
from pathlib import Path

PEOPLE = ["anna berg", "omar haddad", "li wei", "maria lopez", "john carter", "sara kim", "tom fischer", "nina rossi"]
ORGS = ["acme corp", "globex", "initech", "umbrella labs", "stark industries", "wayne trust"]
PLACES = ["berlin", "lagos", "lima", "osaka", "toronto", "madrid", "cairo"]
TEMPLATES = {
    "works_for": ("PER", "ORG", ["{h} works as an engineer at {t} .", "{h} joined {t} last spring .",
                                  "since 2019 , {h} has been employed by {t} ."]),
    "born_in": ("PER", "LOC", ["{h} was born in {t} .", "{h} grew up in {t} , the city of birth .",
                                "born in {t} , {h} moved abroad early ."]),
    "located_in": ("ORG", "LOC", ["{h} has its offices in {t} .", "{h} is based in {t} .",
                                   "the headquarters of {h} are in {t} ."]),
    "founded_by": ("ORG", "PER", ["{h} was founded by {t} .", "{t} started {h} in a garage .",
                                   "{h} , set up by {t} , grew fast ."]),
    "no_relation": ("PER", "LOC", ["{h} read a novel about {t} .", "{h} never mentioned {t} .",
                                    "a report on {t} quoted {h} ."]),
}
POOLS = {"PER": PEOPLE, "ORG": ORGS, "LOC": PLACES}
RELATIONS_YAML = """negative_label: no_relation
lowercase: true
directions: none
entity_types: [PER, ORG, LOC]
labels:
  no_relation: {explanation: the head and the tail are in none of these relations}
  works_for: {explanation: "the head person works for the tail organization", verbalization: "'{e1}' works for '{e2}'."}
  born_in: {explanation: "the head person was born in the tail place", verbalization: "'{e1}' was born in '{e2}'."}
  located_in: {explanation: "the head organization is based in the tail place"}
  founded_by: {explanation: "the head organization was founded by the tail person"}
"""


def _row(rng: random.Random, relation: str, index: int) -> dict:
    head_type, tail_type, templates = TEMPLATES[relation]
    head, tail = rng.choice(POOLS[head_type]), rng.choice(POOLS[tail_type])
    text = rng.choice(templates)
    tokens: list[str] = []
    spans = {}
    for word in text.split():
        if word in ("{h}", "{t}"):
            name = (head if word == "{h}" else tail).split()
            spans[word] = [len(tokens), len(tokens) + len(name)]
            tokens += name
        else:
            tokens.append(word)
    return {"id": f"{relation}-{index}", "token": tokens, "relation": relation,
            "h": {"name": head, "pos": spans["{h}"], "type": head_type},
            "t": {"name": tail, "pos": spans["{t}"], "type": tail_type}}


def write_custom_dataset(folder: Path, per_label: tuple[int, int, int] = (40, 10, 16), seed: int = 7) -> Path:
    """train/val/test.txt (KnowPrompt JSONL with entity types), rel2id.json and relations.yaml in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    labels = list(TEMPLATES)
    for split, n in zip(("train", "val", "test"), per_label, strict=True):
        rows = [_row(rng, lab, f"{split}{i}") for lab in labels for i in range(n)]
        rng.shuffle(rows)
        (folder / f"{split}.txt").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "rel2id.json").write_text(json.dumps({lab: i for i, lab in enumerate(labels)}))
    (folder / "relations.yaml").write_text(RELATIONS_YAML)
    return folder


TACRED_TYPES = {"PER": "PERSON", "ORG": "ORGANIZATION", "LOC": "CITY"}
"""This dataset's entity types as the TACRED family's (its schemas list these types)."""


def as_tacred(row: dict, name: str) -> dict:
    """A row of this dataset relabelled with labels and types of ``name`` (tacred, tacrev or retacred)."""
    labels = {"works_for": "per:employee_of", "born_in": "per:city_of_birth", "no_relation": "no_relation",
              "located_in": "org:founded_by" if name == "tacred" else "per:title", "founded_by": "no_relation"}
    row = json.loads(json.dumps(row))
    row["relation"] = labels[row["relation"]]
    row["h"]["type"], row["t"]["type"] = TACRED_TYPES[row["h"]["type"]], TACRED_TYPES[row["t"]["type"]]
    return row


def official_tacred(row: dict, example_id: str) -> dict:
    """A KnowPrompt row in TACRED's official layout (inclusive ends, subj/obj fields)."""
    return {"id": example_id, "token": row["token"], "relation": row["relation"],
            "subj_start": row["h"]["pos"][0], "subj_end": row["h"]["pos"][1] - 1, "subj_type": row["h"]["type"],
            "obj_start": row["t"]["pos"][0], "obj_end": row["t"]["pos"][1] - 1, "obj_type": row["t"]["type"]}
