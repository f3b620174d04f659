"""The one validation of a dataset, run by ``python -m redpo data --check`` and by ``run`` before any notebook.

It reads every split once and lists every problem it finds, not just the first, each on one line naming the file
(and line, or label) and the fix: rows that break :func:`redpo.data.formats.row_problems` (the rule the loaders
apply too), labels missing from ``rel2id.json`` or from the data, duplicate ids within and across splits, a
declared negative label with no sample, both ``val.txt`` and ``dev.txt``, and labels of the profile's
``dataset.relations`` that no split can serve. A split with no sample of some label is a warning with the counts.
``run`` and ``data --check`` call the same :func:`check_profile`, so they refuse the same data with the same first
line. ``--draft-relations PATH`` writes the skeleton of a ``relations.yaml`` from ``rel2id.json`` and the data,
each explanation a marked placeholder that stops any run until it is written.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from redpo.config import Profile
from redpo.core.io import DataError, iter_jsonl
from redpo.core.relations import PLACEHOLDER, SCHEMA_FILE, RelationSchema, load_schema_file, rel2id_order, undirected
from redpo.data.formats import row_id, row_problems, split_rows
from redpo.data.splits import SPLITS, find_split_file, load_split, profile_schema, unknown_relations

NEGATIVE_NAMES = ("no_relation", "other", "na", "none", "no relation", "nota")
"""Label names taken for "no relation" when drafting (case-insensitive)."""


@dataclass
class Report:
    """What :func:`check_dataset` found: errors stop a run, warnings do not."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    counts: dict[str, Counter[str]] = field(default_factory=dict)
    """split -> label -> samples."""
    files: dict[str, Path] = field(default_factory=dict)
    """split -> the file read for it."""
    schema: RelationSchema | None = None
    """The schema the rows were checked against (None when it could not be read)."""

    @property
    def ok(self) -> bool:
        return not self.errors

    def error(self, line: str) -> None:
        """Record ``line`` once: a folder-level problem found for each split is one problem."""
        if line not in self.errors:
            self.errors.append(line)


class DataInvalid(DataError):
    """A dataset ``data --check`` refuses: ``lines`` holds every problem, one ``error:`` line each."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__(lines[0])
        self.lines = list(lines)


def split_files(folder: Path, dataset: str = "custom", report: Report | None = None) -> dict[str, Path]:
    """The split files present in ``folder`` (:func:`redpo.data.splits.find_split_file`); what is missing or
    ambiguous goes to ``report`` when one is given."""
    found = {}
    for split in SPLITS:
        try:
            found[split] = find_split_file(folder, dataset, split)
        except DataError as err:
            if report is not None:
                report.error(str(err))
    return found


def _check_rows(path: Path, split: str, schema: RelationSchema | None, report: Report, ids: dict[str, str]) -> None:
    counts: Counter[str] = Counter()
    for where, row in split_rows(path):
        report.errors.extend(f"{where}: {problem}" for problem in row_problems(row, schema))
        key = row_id(row)
        if key is not None:
            if key in ids:
                report.errors.append(f"{where}: duplicate id {key!r} (first at {ids[key]}); ids must be unique "
                                     "across all splits: fix or drop one of the rows")
            else:
                ids[key] = where
        if isinstance(row.get("relation"), str):
            counts[row["relation"]] += 1
    report.counts[split] = counts


def _labels_only(order: list[str]) -> RelationSchema:
    """A stand-in schema from ``rel2id.json`` alone, so rows are still checked when ``relations.yaml`` is broken."""
    return RelationSchema("custom", tuple(order), None, dict.fromkeys(order, ""))


def check_dataset(folder: Path, schema: RelationSchema | None = None, dataset: str = "custom",
                  relations: list[str] | None = None) -> Report:
    """Every problem of a dataset folder (see the module docstring). ``schema`` is a built-in dataset's (named by
    ``dataset``); without it the folder's ``relations.yaml`` is read, and ``rel2id.json`` is required. Warnings
    about labels a split lacks name only ``relations`` (a profile's ``dataset.relations``) when given."""
    folder = Path(folder)
    report = Report()
    report.files = split_files(folder, dataset, report)
    if not folder.is_dir():
        return report
    order: list[str] | None = None
    try:
        order = rel2id_order(folder)
        if schema is None:
            schema = load_schema_file(folder / SCHEMA_FILE, "custom", order)
        elif order is not None and sorted(order) != sorted(schema.labels):
            report.error(f"{folder / 'rel2id.json'}: labels differ from the {schema.dataset} schema's")
    except DataError as err:
        report.error(str(err))
    if dataset == "custom" and not (folder / "rel2id.json").is_file():
        report.error(f"{folder / 'rel2id.json'}: not found; write {{label: id}} for every label")
    report.schema = schema
    rules = schema or (_labels_only(order) if order else None)
    ids: dict[str, str] = {}
    for split, path in report.files.items():
        try:
            _check_rows(path, split, rules, report, ids)
        except DataError as err:
            report.error(str(err))
    seen: Counter[str] = Counter()
    for counts in report.counts.values():
        seen.update(counts)
    labels = set(rules.labels) if rules else set()
    unused = sorted(labels - set(seen)) if schema is not None else []  # else the schema's own error says it
    wanted = labels if relations is None else labels & set(relations)
    if unused and report.counts and dataset == "custom":  # a label the data never shows cannot be learned
        report.error(f"{folder / 'rel2id.json'}: label(s) {unused[:8]} occur in no split; drop them from "
                     f"rel2id.json and {SCHEMA_FILE}")
    elif report.counts and (quiet := sorted(wanted & set(unused))):  # a built-in schema is fixed: a warning
        report.warnings.append(f"{folder}: label(s) {quiet[:8]} of the {dataset} schema occur in no split")
    for split, counts in report.counts.items():
        if not counts:
            report.error(f"{report.files[split]}: the {split} split holds no sample")
            continue
        absent = sorted(lab for lab in wanted if counts[lab] == 0 and seen[lab] > 0)
        if absent:
            report.warnings.append(f"{report.files[split]}: no {split} sample of {absent[:8]} (samples per label "
                                   f"here: min {min(counts.values())}, max {max(counts.values())})")
    if schema is not None and schema.negative_label is not None and report.counts and not seen[schema.negative_label]:
        fix = ("set negative_label: null if the data has none" if dataset == "custom" else
               f"the {dataset} data always has some: re-copy it (`make data`)")
        where = folder / SCHEMA_FILE if dataset == "custom" else folder
        report.error(f"{where}: negative label {schema.negative_label!r} has no sample in any split; {fix}")
    return report


def _check_loaded(profile: Profile) -> Report:
    """FewRel's JSON (no KnowPrompt rows, no test split): what its loader refuses."""
    report = Report()
    for split in SPLITS:
        try:
            report.counts[split] = Counter(s.relation for s in load_split(profile, split))
        except DataError as err:
            report.error(str(err))
    return report


def _check_relations(profile: Profile, report: Report) -> None:
    """The profile's ``dataset.relations``: every label known, a training sample of each, a sample in each split."""
    wanted = profile.dataset.relations
    if wanted is None or report.schema is None or not report.counts:
        return
    try:
        unknown_relations(profile, report.schema)
    except DataError as err:
        report.error(str(err))
        return
    for split, counts in report.counts.items():
        if counts and not any(counts[r] for r in wanted):
            report.error(f"{report.files[split]}: no samples of the profile's dataset.relations; re-copy the file "
                         "(`make data`) or fix dataset.relations")
    missing = [r for r in wanted if not report.counts.get("train", Counter())[r]]
    if "train" in report.counts and missing:
        report.error(f"{report.files['train']}: no training sample of {missing}; K-shot sampling needs at least one "
                     "per label: re-copy the file or drop them from dataset.relations")


def check_profile(profile: Profile) -> Report:
    """The data of ``profile`` as ``run`` and ``data --check`` both see it: the folder's every problem, then the
    profile's own (``dataset.relations``)."""
    name = profile.dataset.name
    try:
        schema = None if name == "custom" else profile_schema(profile)
    except DataError as err:
        return Report(errors=[str(err)])
    if name == "fewrel":
        report = _check_loaded(profile)
        report.schema = schema
    else:
        report = check_dataset(profile.dataset_dir, schema, name, profile.dataset.relations)
    _check_relations(profile, report)
    return report


def require_valid(profile: Profile) -> list[str]:
    """:func:`check_profile`, raising :class:`DataInvalid` with every error; returns the warnings."""
    report = check_profile(profile)
    if not report.ok:
        raise DataInvalid(report.errors)
    return report.warnings


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
        "# one is left. Check the guesses below. Format: see docs/data.md, 'Your own dataset'.",
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
