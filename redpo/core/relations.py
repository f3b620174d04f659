"""Per-dataset relation schemas: labels, the negative label, a one-line explanation per label, entity types.

Prompts need a plain-language meaning for every label (including the negative one, which can be generated
like any other), the parser needs the label set and entity types to validate LLM output, and the scorer needs
the negative label. Keeping all of that here, in one frozen object per dataset, means no stage hard-codes a
label list.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from redpo.config import DEFAULT_PATHS, data_dir

DATASETS = ("semeval", "tacred", "tacrev", "retacred", "fewrel")
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


# ---- SemEval-2010 Task 8 ----------------------------------------------------------------------------
# Order = KnowPrompt's dataset/semeval/rel2id.json ids (Other = 0).
SEMEVAL_LABELS = (
    "Other",
    "Component-Whole(e2,e1)",
    "Instrument-Agency(e2,e1)",
    "Member-Collection(e1,e2)",
    "Cause-Effect(e2,e1)",
    "Entity-Destination(e1,e2)",
    "Content-Container(e1,e2)",
    "Message-Topic(e1,e2)",
    "Product-Producer(e2,e1)",
    "Member-Collection(e2,e1)",
    "Entity-Origin(e1,e2)",
    "Cause-Effect(e1,e2)",
    "Component-Whole(e1,e2)",
    "Message-Topic(e2,e1)",
    "Product-Producer(e1,e2)",
    "Entity-Origin(e2,e1)",
    "Content-Container(e2,e1)",
    "Instrument-Agency(e1,e2)",
    "Entity-Destination(e2,e1)",
)

# One template per relation type, written from the SemEval-2010 Task 8 guidelines. {x} and {y} are the type's two
# roles in the order its name gives them (Cause-Effect(X, Y): X is the cause, Y the effect), each filled with a
# plain noun phrase naming a *marked* entity ("the entity marked e2"), so a direction reads as roles, not positions.
# Every role noun ("the whole", "a container") follows its placeholder in apposition, never precedes it: a
# template "... of the whole {y}" would read "of the whole the entity marked e1".
_SEMEVAL_TYPES = {
    "Cause-Effect": "{x} causes or produces {y} (an event, effect or condition)",
    "Instrument-Agency": "{x} is an instrument or tool used by {y}, the agent",
    "Product-Producer": "{x} is a product made, built or produced by {y}",
    "Content-Container": "{x} is (or was) physically held inside {y}, a container",
    "Entity-Origin": "{x} comes or is derived from {y}, its origin or source",
    "Entity-Destination": "{x} moves towards or into {y}, its destination",
    "Component-Whole": "{x} is a component or functional part of {y}, the whole",
    "Member-Collection": "{x} is a member of {y}, a collection or group",
    "Message-Topic": "{x} is a message (text, talk, film, ...) about {y}, its topic",
}
# The same relations as statements about two named entities, for closed-set scoring: short, so that the
# length-normalised likelihood compares meanings rather than wordings.
_SEMEVAL_STATEMENTS = {
    "Cause-Effect": "{x} causes {y}",
    "Instrument-Agency": "{x} is used by {y}",
    "Product-Producer": "{x} is made by {y}",
    "Content-Container": "{x} is inside {y}",
    "Entity-Origin": "{x} comes from {y}",
    "Entity-Destination": "{x} goes into {y}",
    "Component-Whole": "{x} is part of {y}",
    "Member-Collection": "{x} is a member of {y}",
    "Message-Topic": "{x} is about {y}",
}
SEMEVAL_NEGATIVE_STATEMENT = "'{e1}' and '{e2}' are not related in any of these ways."


def _semeval_verbalizations() -> dict[str, str]:
    out = {"Other": SEMEVAL_NEGATIVE_STATEMENT}
    for label in SEMEVAL_LABELS[1:]:
        x, y = ("'{e1}'", "'{e2}'") if label.endswith("(e1,e2)") else ("'{e2}'", "'{e1}'")
        out[label] = _SEMEVAL_STATEMENTS[undirected(label)].format(x=x, y=y) + "."
    return out


_E1, _E2 = "the entity marked e1", "the entity marked e2"
_SEMEVAL_ROLES = "The relation's explanation says which marked entity plays which role."
_HEAD_TAIL_ROLES = (
    "The entity marked e1 is the head (the subject) and the entity marked e2 the tail (the object); the "
    "relation's explanation is stated from the head to the tail."
)


def _semeval_explanations() -> dict[str, str]:
    out = {"Other": "The entities marked e1 and e2 are in none of the nine SemEval relations "
                    "(no relation, or one the task does not cover)"}
    for label in SEMEVAL_LABELS[1:]:
        template = _SEMEVAL_TYPES[undirected(label)]
        x, y = (_E1, _E2) if label.endswith("(e1,e2)") else (_E2, _E1)
        text = template.format(x=x, y=y)
        out[label] = text[0].upper() + text[1:]
    return out


# ---- TACRED family -------------------------------------------------------------------------------------
# Order = KnowPrompt's dataset/tacrev/rel2id.json ids (verified: zjunlp/KnowPrompt); TACRED uses the same set.
TACRED_LABELS = (
    "org:founded", "org:subsidiaries", "per:date_of_birth", "per:cause_of_death", "per:age",
    "per:stateorprovince_of_birth", "per:countries_of_residence", "per:country_of_birth",
    "per:stateorprovinces_of_residence", "org:website", "per:cities_of_residence", "per:parents",
    "per:employee_of", "no_relation", "per:city_of_birth", "org:parents",
    "org:political/religious_affiliation", "per:schools_attended", "per:country_of_death", "per:children",
    "org:top_members/employees", "per:date_of_death", "org:members", "org:alternate_names", "per:religion",
    "org:member_of", "org:city_of_headquarters", "per:origin", "org:shareholders", "per:charges",
    "per:title", "org:number_of_employees/members", "org:dissolved", "org:country_of_headquarters",
    "per:alternate_names", "per:siblings", "org:stateorprovince_of_headquarters", "per:spouse",
    "per:other_family", "per:city_of_death", "per:stateorprovince_of_death", "org:founded_by",
)  # fmt: skip

_TACRED_EXPLANATIONS = {
    "no_relation": "none of the TACRED relations holds between the subject (head) and the object (tail)",
    "org:alternate_names": "the tail is another name (acronym, former or short name) of the head org",
    "org:city_of_headquarters": "the head organization has its headquarters in the tail city",
    "org:country_of_headquarters": "the head organization has its headquarters in the tail country",
    "org:stateorprovince_of_headquarters": "the head organization has its headquarters in the tail state or "
    "province",
    "org:dissolved": "the head organization was dissolved or ceased to exist on the tail date",
    "org:founded": "the head organization was founded on the tail date",
    "org:founded_by": "the head organization was founded by the tail person or organization",
    "org:member_of": "the head organization is a member of the tail organization",
    "org:members": "the tail organization or country is a member of the head organization",
    "org:number_of_employees/members": "the tail number is how many employees or members the head "
    "organization has",
    "org:parents": "the tail organization owns or controls the head organization (its parent)",
    "org:subsidiaries": "the tail organization is a subsidiary owned or controlled by the head organization",
    "org:political/religious_affiliation": "the head organization is affiliated with the tail political or "
    "religious group or ideology",
    "org:shareholders": "the tail person or organization holds shares in the head organization",
    "org:top_members/employees": "the tail person is a top member or leader of the head organization",
    "org:website": "the tail URL is the website of the head organization",
    "per:age": "the tail number or duration is the age of the head person",
    "per:alternate_names": "the tail is another name (nickname, alias, birth name) of the head person",
    "per:cause_of_death": "the tail is what caused the death of the head person",
    "per:charges": "the head person was charged with or convicted of the tail crime",
    "per:children": "the tail person is a child of the head person",
    "per:cities_of_residence": "the head person lives or has lived in the tail city",
    "per:city_of_birth": "the head person was born in the tail city",
    "per:city_of_death": "the head person died in the tail city",
    "per:countries_of_residence": "the head person lives or has lived in the tail country",
    "per:country_of_birth": "the head person was born in the tail country",
    "per:country_of_death": "the head person died in the tail country",
    "per:date_of_birth": "the head person was born on the tail date",
    "per:date_of_death": "the head person died on the tail date",
    "per:employee_of": "the head person works or worked for the tail organization (or government)",
    "per:origin": "the tail nationality, country or ethnic group is where the head person comes from",
    "per:other_family": "the tail person is a relative of the head person other than parent, child, sibling "
    "or spouse",
    "per:parents": "the tail person is a parent of the head person",
    "per:religion": "the head person follows the tail religion",
    "per:schools_attended": "the head person attended the tail school, college or university",
    "per:siblings": "the tail person is a brother or sister of the head person",
    "per:spouse": "the tail person is the husband or wife of the head person",
    "per:stateorprovince_of_birth": "the head person was born in the tail state or province",
    "per:stateorprovince_of_death": "the head person died in the tail state or province",
    "per:stateorprovinces_of_residence": "the head person lives or has lived in the tail state or province",
    "per:title": "the tail is a job title or position held by the head person",
}

# TACRED's entity types: subjects are PERSON / ORGANIZATION; objects use these 17 Stanford CoreNLP NER
# types. (EMAIL, MONEY, PERCENT, ORDINAL, TIME, SET exist in CoreNLP but never label a TACRED argument.)
TACRED_ENTITY_TYPES = (
    "PERSON", "ORGANIZATION", "LOCATION", "CITY", "STATE_OR_PROVINCE", "COUNTRY", "NATIONALITY",
    "RELIGION", "TITLE", "DATE", "NUMBER", "DURATION", "CAUSE_OF_DEATH", "CRIMINAL_CHARGE", "IDEOLOGY",
    "URL", "MISC",
)  # fmt: skip

# Re-TACRED (Stoica et al., 2021) has 40 labels: TACRED minus per:alternate_names, org:parents and
# org:subsidiaries, plus per:identity, with org:*_of_headquarters renamed org:*_of_branch. Verified against
# two public label lists in the code index (a Re-TACRED dataset class and a classifier's LABELS constant).
# KnowPrompt's retacred rel2id.json was not available to check its id order, so the order here is:
# no_relation first, then the rest alphabetically.
_RETACRED_RENAMES = {
    "org:city_of_headquarters": "org:city_of_branch",
    "org:country_of_headquarters": "org:country_of_branch",
    "org:stateorprovince_of_headquarters": "org:stateorprovince_of_branch",
}
_RETACRED_DROPPED = ("per:alternate_names", "org:parents", "org:subsidiaries")


def _retacred_explanations() -> dict[str, str]:
    out = {
        _RETACRED_RENAMES.get(lab, lab): text.replace("has its headquarters", "has a branch or headquarters")
        for lab, text in _TACRED_EXPLANATIONS.items()
        if lab not in _RETACRED_DROPPED
    }
    out["per:identity"] = (
        "the tail is the same person as the head person (another name or a reference to them)"
    )
    return out


def _retacred_labels() -> tuple[str, ...]:
    rest = sorted(lab for lab in _retacred_explanations() if lab != "no_relation")
    return ("no_relation", *rest)


# ---- FewRel ------------------------------------------------------------------------------------------
def _fewrel_schema(root: Path) -> RelationSchema:
    path = root / "pid2name.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found; FewRel's schema needs pid2name.json from thunlp/FewRel data/ — "
            "run `make data` (or copy it there) and retry"
        )
    try:
        pid2name = json.loads(path.read_text())
        explanations = {pid: _fewrel_line(name, desc) for pid, (name, desc) in pid2name.items()}
    except (json.JSONDecodeError, ValueError, TypeError) as err:
        raise ValueError(
            f"{path}: expected {{pid: [name, description]}} JSON ({err}); re-copy the file"
        ) from None
    labels = tuple(sorted(explanations, key=lambda p: (len(p), p)))  # P17 < P131 < P1001
    return RelationSchema("fewrel", labels, None, explanations, None, False, roles=_HEAD_TAIL_ROLES)


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


def get_schema(dataset_name: str, data_root: Path | None = None) -> RelationSchema:
    """The relation schema of a dataset. ``data_root`` is only read for FewRel (``<root>/pid2name.json``;
    default ``$REDPO_DATA_DIR/fewrel``); the other schemas are fixed and need no files."""
    name = canonical_name(dataset_name)
    if name == "fewrel":
        return _fewrel_schema(Path(data_root) if data_root else data_dir() / DEFAULT_PATHS["fewrel"])
    return _static_schema(name)


@cache
def _static_schema(name: str) -> RelationSchema:
    if name == "semeval":
        return RelationSchema("semeval", SEMEVAL_LABELS, "Other", _semeval_explanations(), None, True,
                              verbalizations=_semeval_verbalizations(), roles=_SEMEVAL_ROLES)
    if name == "retacred":
        return RelationSchema("retacred", _retacred_labels(), "no_relation", _retacred_explanations(),
                              TACRED_ENTITY_TYPES, roles=_HEAD_TAIL_ROLES)
    return RelationSchema(name, TACRED_LABELS, "no_relation", dict(_TACRED_EXPLANATIONS), TACRED_ENTITY_TYPES,
                          roles=_HEAD_TAIL_ROLES)
