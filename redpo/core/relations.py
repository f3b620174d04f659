"""Relation schemas: labels, the negative label, a one-line explanation per label, entity types, direction.

Prompts need a plain-language meaning for every label (including the negative one, which can be generated
like any other), the parser needs the label set and entity types to validate LLM output, and the scorer needs
the negative label. All of that comes from one kind of file, ``relations.yaml`` (:class:`SchemaFile`): the
built-in datasets ship theirs in ``redpo/schemas/``, and a dataset of your own (``dataset.name: custom``) keeps
its own beside its data. One code path for every dataset, and no stage hard-codes a label list. FewRel is the
exception that proves the rule: its explanations come from Wikidata's names in ``pid2name.json``, a data file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from redpo.config import DEFAULT_PATHS, data_dir, yaml_problem
from redpo.core.io import DataError

DATASETS = ("semeval", "tacred", "tacrev", "retacred", "fewrel", "custom")
BUILT_IN_SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
"""``<name>.yaml`` for every built-in dataset but FewRel, in the format a custom dataset's ``relations.yaml`` uses."""
SCHEMA_FILE = "relations.yaml"
PLACEHOLDER = "TODO"
"""What ``data --draft-relations`` writes for every explanation; a run refuses to start while one remains."""
_ALIASES = {
    "re-tacred": "retacred",
    "re_tacred": "retacred",
    "semeval2010_task8": "semeval",
    "semeval2010": "semeval",
}


class UnknownLabelError(KeyError):
    """A label is not in a dataset's schema; ``str()`` names the label, the dataset and the known labels."""

    def __str__(self) -> str:  # KeyError's default repr-quotes the message; show it as written.
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class RelationSchema:
    """The label inventory of one dataset. ``labels`` are in a stable order (KnowPrompt's ``rel2id`` ids)."""

    dataset: str
    labels: tuple[str, ...]
    negative_label: str | None
    explanations: Mapping[str, str] = field(hash=False)
    entity_types: tuple[str, ...] | None = None
    lowercase: bool = False
    verbalizations: Mapping[str, str] = field(default_factory=dict, hash=False)
    """Label -> a short statement with ``{e1}`` and ``{e2}`` for the entity names, for closed-set scoring
    (``'{e1}' causes '{e2}'``). Labels without one get :data:`GENERIC_VERBALIZATION`."""
    roles: str = ""
    """How the explanations name the two marked entities, stated once in the task description. SemEval's
    explanations name the marked entity of each role themselves; TACRED's and FewRel's speak of a head and a
    tail, which this sentence binds to the markers."""
    semeval_macro_f1: bool = False
    """Whether SemEval's official (9+1)-way macro-F1 applies (scored beside micro-F1): SemEval-like data only."""

    def __post_init__(self) -> None:
        missing = [lab for lab in self.labels if lab not in self.explanations]
        if missing:
            raise ValueError(f"schema {self.dataset!r}: no explanation for {missing}")
        if self.negative_label is not None and self.negative_label not in self.labels:
            raise ValueError(f"schema {self.dataset!r}: negative label {self.negative_label!r} not in labels")

    def __contains__(self, label: object) -> bool:
        return label in self.explanations

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def positive_labels(self) -> tuple[str, ...]:
        """Every label except the negative one (what micro-F1 is computed over)."""
        return tuple(lab for lab in self.labels if lab != self.negative_label)

    def check(self, label: str, where: str = "") -> str:
        """Return ``label`` if known, else raise :class:`UnknownLabelError` naming it and the dataset."""
        if label not in self.explanations:
            shown = ", ".join(self.labels[:12]) + (", ..." if len(self.labels) > 12 else "")
            prefix = f"{where}: " if where else ""
            raise UnknownLabelError(
                f"{prefix}unknown relation {label!r} for dataset {self.dataset!r} "
                f"({len(self.labels)} labels: {shown}); check the spelling or the dataset name"
            )
        return label

    def explain(self, label: str) -> str:
        """One-line meaning of ``label``, naming the role of each marked entity (see :attr:`roles`)."""
        return self.explanations[self.check(label)]

    def verbalize(self, label: str, e1: str, e2: str) -> str:
        """``label`` as a statement about the two entities: what the direct-LLM baseline scores."""
        template = self.verbalizations.get(self.check(label)) or GENERIC_VERBALIZATION.format(
            explanation=self.explanations[label].rstrip(".").replace("{", "{{").replace("}", "}}"))
        return template.format(e1=e1, e2=e2)

    def undirected(self, label: str) -> str:
        """``Cause-Effect(e1,e2)`` -> ``Cause-Effect``: the type SemEval's official macro-F1 scores."""
        return undirected(self.check(label))

    @property
    def has_direction_suffixes(self) -> bool:
        """Whether labels name their direction (``(e1,e2)``/``(e2,e1)``), so two labels can share one type."""
        return any(undirected(lab) != lab for lab in self.labels)


GENERIC_VERBALIZATION = "'{{e1}}' and '{{e2}}': {explanation}."
"""For labels without a verbalisation of their own: the entity names, then the label's explanation."""

_DIRECTION_RE = re.compile(r"\((e1,e2|e2,e1)\)$")


def undirected(label: str) -> str:
    """Strip a SemEval direction suffix; labels without one are returned unchanged."""
    return _DIRECTION_RE.sub("", label)


HEAD_TAIL_ROLES = (
    "The entity marked e1 is the head (the subject) and the entity marked e2 the tail (the object); the "
    "relation's explanation is stated from the head to the tail."
)
"""The default ``roles``: explanations written from the head (e1) to the tail (e2)."""


# ---- the schema file ----------------------------------------------------------------------------------------
class LabelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    explanation: str = Field(min_length=1)
    """One line: what the label means, naming the role of each marked entity."""
    verbalization: str | None = None
    """A short statement with ``{e1}`` and ``{e2}`` for the direct-LLM baseline (optional)."""


class SchemaFile(BaseModel):
    """``relations.yaml``: everything redpo needs to know about a dataset's labels (README, "Your own dataset")."""

    model_config = ConfigDict(extra="forbid", strict=True)
    negative_label: str | None
    """The label for "no relation" (excluded from micro-F1), or null if the data has none."""
    lowercase: bool = False
    """Whether the text is lower-cased (generated samples are lower-cased to match)."""
    directions: Literal["suffix", "none"] = "none"
    """``suffix``: labels end in ``(e1,e2)`` / ``(e2,e1)`` and both directions of a type share a DPO half."""
    semeval_macro_f1: bool = False
    roles: str = HEAD_TAIL_ROLES
    entity_types: list[str] | None = None
    """The entity types of typed data (``type`` fields), or null."""
    labels: dict[str, LabelEntry] = Field(min_length=1)
    """Label -> explanation (and verbalisation); the order is the label order unless rel2id.json gives one."""

    @model_validator(mode="after")
    def _consistent(self) -> SchemaFile:
        if self.negative_label is not None and self.negative_label not in self.labels:
            raise ValueError(f"negative_label {self.negative_label!r} is not one of the labels")
        if self.directions == "suffix":
            bare = [lab for lab in self.labels if lab != self.negative_label and undirected(lab) == lab]
            if bare:
                raise ValueError(f"directions: suffix, but {bare[:5]} end in no (e1,e2)/(e2,e1) suffix")
        verbalized = [lab for lab, e in self.labels.items() if e.verbalization is not None
                      and not ("{e1}" in e.verbalization and "{e2}" in e.verbalization)]
        if verbalized:
            raise ValueError(f"the verbalization of {verbalized[:5]} must contain both {{e1}} and {{e2}}")
        return self


def load_schema_file(path: Path, dataset: str, label_order: list[str] | None = None) -> RelationSchema:
    """A :class:`RelationSchema` from a ``relations.yaml``; ``label_order`` (rel2id ids) reorders the labels.

    Every problem is a :class:`DataError` (one line) naming the file and the fix; an explanation still holding the
    draft placeholder names its label."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: relation schema not found; write one (`python -m redpo data "
                        f"--draft-relations {path.parent}` drafts it from rel2id.json and the data)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
        spec = SchemaFile.model_validate(raw)
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 (byte offset {err.start}); re-save the file as UTF-8") from None
    except yaml.YAMLError as err:  # a tag such as !!python/object lands here too: safe_load builds no object
        raise DataError(f"{path}: not valid YAML ({yaml_problem(err)}); fix the file (plain YAML, no tags)") from None
    except ValidationError as err:
        where = "; ".join(f"{'.'.join(str(x) for x in e['loc']) or '<root>'}: {e['msg']}" for e in err.errors())
        raise DataError(f"{path}: {where}; see the README, 'Your own dataset'") from None
    todo = [lab for lab, e in spec.labels.items() if PLACEHOLDER in e.explanation]
    if todo:
        raise DataError(f"{path}: the explanation of {todo[0]!r} is still the draft placeholder {PLACEHOLDER!r} "
                         f"({len(todo)} label(s) left); write one line saying what the label means")
    labels = list(spec.labels)
    if label_order is not None:
        if sorted(label_order) != sorted(labels):
            only_ids = sorted(set(label_order) - set(labels))
            only_file = sorted(set(labels) - set(label_order))
            raise DataError(f"{path}: labels differ from rel2id.json (only in rel2id.json: {only_ids[:5]}; only "
                             f"here: {only_file[:5]}); make both name the same labels")
        labels = list(label_order)
    return RelationSchema(
        dataset, tuple(labels), spec.negative_label,
        {lab: e.explanation for lab, e in spec.labels.items()},
        tuple(spec.entity_types) if spec.entity_types else None, spec.lowercase,
        verbalizations={lab: e.verbalization for lab, e in spec.labels.items() if e.verbalization},
        roles=spec.roles, semeval_macro_f1=spec.semeval_macro_f1,
    )


# ---- FewRel ------------------------------------------------------------------------------------------
def _fewrel_schema(root: Path) -> RelationSchema:
    path = root / "pid2name.json"
    if not path.is_file():
        raise DataError(
            f"{path} not found; FewRel's schema needs pid2name.json from thunlp/FewRel data/ — "
            "run `make data` (or copy it there) and retry"
        )
    try:
        pid2name = json.loads(path.read_text())
        explanations = {pid: _fewrel_line(name, desc) for pid, (name, desc) in pid2name.items()}
    except (ValueError, TypeError, AttributeError) as err:
        raise DataError(
            f"{path}: expected {{pid: [name, description]}} JSON ({err}); re-copy the file"
        ) from None
    labels = tuple(sorted(explanations, key=lambda p: (len(p), p)))  # P17 < P131 < P1001
    return RelationSchema("fewrel", labels, None, explanations, None, False, roles=HEAD_TAIL_ROLES)


def _fewrel_line(name: str, description: str) -> str:
    """The Wikidata label and description, e.g. ``crosses: obstacle ... which this bridge crosses over``."""
    if not description or description == "No description defined":
        return name
    return f"{name}: {' '.join(description.split())}"


# ---- public entry point -----------------------------------------------------------------------------------
def canonical_name(dataset_name: str) -> str:
    """Normalise a dataset name (``Re-TACRED`` -> ``retacred``); raise ValueError for unknown ones."""
    key = dataset_name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {dataset_name!r}; known: {', '.join(DATASETS)}")
    return key


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """``json.loads`` hook: a label written twice is an error, where plain ``json`` keeps the last id silently."""
    seen: dict[str, object] = {}
    for key, value in pairs:
        if key in seen:
            raise DataError(f"label {key!r} is listed twice")
        seen[key] = value
    return seen


def rel2id_order(folder: Path) -> list[str] | None:
    """The labels of ``<folder>/rel2id.json`` in id order, or None when the file is absent.

    The ids order the labels (the RE model's output units), so a file that is not one JSON object of distinct
    labels to distinct integer ids is a :class:`DataError`: two labels under one id would have no order at all."""
    path = Path(folder) / "rel2id.json"
    if not path.is_file():
        return None
    fix = "write one JSON object {label: id} with a distinct integer id per label"
    try:
        ids = json.loads(path.read_text(encoding="utf-8-sig"), object_pairs_hook=_unique_keys)
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 (byte offset {err.start}); re-save the file as UTF-8") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: not valid JSON ({err.msg}); {fix}") from None
    except DataError as err:
        raise DataError(f"{path}: {err}; {fix}") from None
    if not isinstance(ids, dict) or not ids:
        raise DataError(f"{path}: expected a non-empty JSON object, got {type(ids).__name__}; {fix}")
    bad = [lab for lab, i in ids.items() if not isinstance(i, int) or isinstance(i, bool)]
    if bad:
        raise DataError(f"{path}: the id of {bad[0]!r} is {ids[bad[0]]!r}, not an integer; {fix}")
    by_id: dict[object, str] = {}
    for lab, i in ids.items():
        if i in by_id:
            raise DataError(f"{path}: labels {by_id[i]!r} and {lab!r} share id {i}; {fix}")
        by_id[i] = lab
    return sorted(ids, key=lambda lab: ids[lab])


def get_schema(dataset_name: str, data_root: Path | None = None) -> RelationSchema:
    """The relation schema of a dataset. ``data_root`` is the dataset folder: read for FewRel
    (``pid2name.json``; default ``$REDPO_DATA_DIR/fewrel``) and for ``custom`` (``relations.yaml`` and
    ``rel2id.json``); the built-in schemas ship with redpo and need no files."""
    name = canonical_name(dataset_name)
    if name == "fewrel":
        return _fewrel_schema(Path(data_root) if data_root else data_dir() / DEFAULT_PATHS["fewrel"])
    if name == "custom":
        if data_root is None:
            raise ValueError("dataset 'custom' needs its folder (dataset.path), which holds relations.yaml")
        return load_schema_file(Path(data_root) / SCHEMA_FILE, "custom", rel2id_order(Path(data_root)))
    return _built_in_schema(name)


@cache
def _built_in_schema(name: str) -> RelationSchema:
    return load_schema_file(BUILT_IN_SCHEMAS / f"{name}.yaml", name)
