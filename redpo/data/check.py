"""A dataset folder checked before any model is loaded, and a draft ``relations.yaml`` for a new one.

``python -m redpo data --check [PATH]`` reads every split of a KnowPrompt-JSONL folder once and lists every problem
it finds, not just the first, each on one line naming the file (and line, or label) and the fix: labels missing
from ``rel2id.json`` or from the data, spans out of range, empty entities, entity types the schema does not
list, duplicate ids, a declared negative label with no sample. A split with no sample of some label is a warning
with the counts. ``--draft-relations PATH`` writes the skeleton of a ``relations.yaml`` from ``rel2id.json`` and the
data, each explanation a marked placeholder that stops any run until it is written.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from redpo.core.io import DataError, iter_jsonl
from redpo.core.relations import PLACEHOLDER, SCHEMA_FILE, RelationSchema, load_schema_file, rel2id_order, undirected

SPLIT_FILES = {"train": ("train.txt",), "val": ("val.txt", "dev.txt"), "test": ("test.txt",)}
NEGATIVE_NAMES = ("no_relation", "other", "na", "none", "no relation", "nota")
"""Label names taken for "no relation" when drafting (case-insensitive)."""


@dataclass
class Report:
    """What :func:`check_dataset` found: errors stop a run, warnings do not."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    counts: dict[str, Counter[str]] = field(default_factory=dict)
    """split -> label -> samples."""

    @property
    def ok(self) -> bool:
        return not self.errors


def split_files(folder: Path) -> dict[str, Path]:
    """The split files present in ``folder`` (``val.txt`` or ``dev.txt`` for the dev split)."""
    found = {}
    for split, names in SPLIT_FILES.items():
        for name in names:
            if (folder / name).is_file():
                found[split] = folder / name
                break
    return found


def _entity_problem(row: dict[str, Any], role: str, n_tokens: int, types: set[str] | None) -> str | None:
    entity = row.get(role)
    if not isinstance(entity, dict) or not isinstance(entity.get("pos"), list) or len(entity["pos"]) != 2:
        return f'"{role}" must be an object with a "pos": [start, end) list'
    start, end = entity["pos"]
    if not (isinstance(start, int) and isinstance(end, int)) or not 0 <= start < end <= n_tokens:
        return (f'"{role}" span {entity["pos"]} is out of range or empty for {n_tokens} tokens; spans are '
                "[start, end) token indices")
    kind = entity.get("type") or row.get("subj_type" if role == "h" else "obj_type")
    if types is not None and kind is not None and kind not in types:
        return f'"{role}" has entity type {kind!r}, which relations.yaml\'s entity_types does not list'
    return None


def _check_rows(path: Path, split: str, labels: set[str], types: set[str] | None, report: Report,
                ids: dict[str, str]) -> None:
    counts: Counter[str] = Counter()
    for lineno, row in iter_jsonl(path):
        where = f"{path}:{lineno}"
        tokens, relation = row.get("token"), row.get("relation")
        if not isinstance(tokens, list) or not tokens or not isinstance(relation, str):
            report.errors.append(f'{where}: a row needs a non-empty "token" list and a "relation" string')
            continue
        if relation not in labels:
            report.errors.append(f"{where}: label {relation!r} is not in rel2id.json; add it there (and to "
                                 f"{SCHEMA_FILE}) or fix the label")
        for role in ("h", "t"):
            problem = _entity_problem(row, role, len(tokens), types)
            if problem:
                report.errors.append(f"{where}: {problem}")
        if "id" in row:
            key = str(row["id"])
            if key in ids:
                report.errors.append(f"{where}: duplicate id {key!r} (first at {ids[key]}); ids must be unique")
            else:
                ids[key] = where
        counts[relation] += 1
    report.counts[split] = counts


def check_dataset(folder: Path, schema: RelationSchema | None = None) -> Report:
    """Every problem of a dataset folder (see the module docstring). ``schema`` is a built-in dataset's; without
    it the folder's ``relations.yaml`` is read."""
    folder = Path(folder)
    report = Report()
    if not folder.is_dir():
        report.errors.append(f"{folder}: no such folder; point dataset.path (or the PATH argument) at the dataset")
        return report
    files = split_files(folder)
    for split in SPLIT_FILES:
        if split not in files:
            report.errors.append(f"{folder / SPLIT_FILES[split][0]}: the {split} split is missing; add it in "
                                 "KnowPrompt JSONL (one sample per line)")
    order: list[str] | None = None
    try:
        order = rel2id_order(folder)
        if schema is None:
            schema = load_schema_file(folder / SCHEMA_FILE, "custom", order)
        elif order is not None and sorted(order) != sorted(schema.labels):
            report.errors.append(f"{folder / 'rel2id.json'}: labels differ from the {schema.dataset} schema's")
    except (ValueError, FileNotFoundError) as err:
        report.errors.append(str(err))
    if order is None:
        report.errors.append(f"{folder / 'rel2id.json'}: not found; write {{label: id}} for every label")
    labels = set(order or (schema.labels if schema else ()))
    types = set(schema.entity_types) if schema and schema.entity_types else None
    ids: dict[str, str] = {}
    for split, path in files.items():
        try:
            _check_rows(path, split, labels, types, report, ids)
        except DataError as err:
            report.errors.append(str(err))
    seen = Counter()
    for counts in report.counts.values():
        seen.update(counts)
    unused = sorted(labels - set(seen))
    if unused and report.counts:
        report.errors.append(f"{folder / 'rel2id.json'}: label(s) {unused[:8]} occur in no split; drop them from "
                             f"rel2id.json and {SCHEMA_FILE}")
    for split, counts in report.counts.items():
        if not counts:
            report.errors.append(f"{files[split]}: the {split} split holds no sample")
            continue
        absent = sorted(lab for lab in labels if counts[lab] == 0 and seen[lab] > 0)
        if absent:
            report.warnings.append(f"{files[split]}: no {split} sample of {absent[:8]} (samples per label here: "
                                   f"min {min(counts.values())}, max {max(counts.values())})")
    if schema is not None and schema.negative_label is not None and report.counts and not seen[schema.negative_label]:
        report.errors.append(f"{folder / SCHEMA_FILE}: negative label {schema.negative_label!r} has no sample in any "
                             "split; set negative_label: null if the data has none")
    return report


def draft_relations(folder: Path) -> Path:
    """Write ``<folder>/relations.yaml`` from ``rel2id.json`` and the splits found: labels in id order with
    their counts, the entity types seen, one example sentence per label, every explanation ``TODO``."""
    folder = Path(folder)
    target = folder / SCHEMA_FILE
    if target.exists():
        raise DataError(f"{target}: already exists; move it away to draft a new one")
    order = rel2id_order(folder)
    if order is None:
        raise DataError(f"{folder / 'rel2id.json'}: not found; write {{label: id}} for every label first")
    counts: dict[str, Counter[str]] = {}
    examples: dict[str, str] = {}
    types: set[str] = set()
    lowercase = True
    for split, path in split_files(folder).items():
        counts[split] = Counter()
        for _lineno, row in iter_jsonl(path):
            relation, tokens = row.get("relation"), row.get("token") or []
            counts[split][relation] += 1
            lowercase = lowercase and all(str(t) == str(t).lower() for t in tokens)
            for role, key in (("h", "subj_type"), ("t", "obj_type")):
                kind = (row.get(role) or {}).get("type") or row.get(key)
                if kind:
                    types.add(str(kind))
            if relation not in examples and isinstance(row.get("h"), dict) and isinstance(row.get("t"), dict):
                examples[relation] = (f"{' '.join(map(str, tokens))} (e1: {row['h'].get('name')!r}, e2: "
                                      f"{row['t'].get('name')!r})")
    negative = next((lab for lab in order if lab.lower() in NEGATIVE_NAMES), None)
    directed = all(undirected(lab) != lab for lab in order if lab != negative) and len(order) > 1
    lines = [
        f"# Draft written by `python -m redpo data --draft-relations {folder}`. Replace every {PLACEHOLDER} with one",
        "# line saying what the label means, naming the head (e1) and the tail (e2); a run refuses to start while",
        "# one is left. Check the guesses below. Format: see the README, 'Your own dataset'.",
        yaml.safe_dump({"negative_label": negative, "lowercase": lowercase,
                        "directions": "suffix" if directed else "none", "semeval_macro_f1": False,
                        "entity_types": sorted(types) or None}, sort_keys=False).rstrip(),
        "labels:",
    ]
    for lab in order:
        seen = ", ".join(f"{c[lab]} {split}" for split, c in counts.items())
        lines.append(f"  # {seen}" + (f"; e.g. {json.dumps(examples[lab])[:200]}" if lab in examples else ""))
        lines.append(f"  {json.dumps(lab)}:")
        lines.append(f"    explanation: {PLACEHOLDER}")
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return target
