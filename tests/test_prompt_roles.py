"""Every built-in schema's prompts state roles, not positions, and read as English.

The first reference run's prompts said "the head is the relation's first argument", which is false for every
SemEval ``(e2,e1)`` label, and rendered "part of the whole the head entity (e1)"; generated samples copied both.
These tests render the explanation and both prompts for every label of every built-in schema.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from redpo.core.relations import RelationSchema, get_schema, undirected
from redpo.core.sample import RESample
from redpo.generation import prompts

SCHEMAS = ("semeval", "tacred", "tacrev", "retacred", "fewrel")
ARTEFACTS = {
    "doubled article": re.compile(r"\b(?:the|a|an)\s+(?:the|a|an)\b", re.IGNORECASE),
    "article, noun, article (the whole the entity)": re.compile(r"\b(?:the|a|an)\s+\w+\s+(?:the|a|an)\b",
                                                               re.IGNORECASE),
    "doubled word": re.compile(r"\b(\w+)\s+\1\b", re.IGNORECASE),
    "unfilled placeholder": re.compile(r"\{\w*\}"),
    "old positional wording": re.compile(r"first argument\.?$|head entity \(e1\)|tail entity \(e2\)"),
}
DEMO = RESample(("the", "storm", "caused", "the", "flood"), (1, 2), (4, 5), "x")


@pytest.fixture(scope="module", params=SCHEMAS)
def schema(request: pytest.FixtureRequest, data_root: Path) -> RelationSchema:
    root = data_root / "fewrel" if request.param == "fewrel" else None
    return get_schema(request.param, root)


def _rendered(schema: RelationSchema, label: str) -> dict[str, str]:
    demo = RESample(DEMO.tokens, DEMO.head, DEMO.tail, label, "PERSON" if schema.entity_types else None,
                    "CITY" if schema.entity_types else None)
    icl = prompts.icl_prompt(schema, label, [demo], mode="obo", n=1, dissimilar=True)
    base = prompts.baseline_prompt(schema, label, [demo], n=3)
    return {"explanation": schema.explain(label), "icl": icl[1]["content"], "baseline": base[0]["content"]
            + base[1]["content"]}


def _first_role(explanation: str) -> str | None:
    """Which marked entity the explanation names first: ``e1``, ``e2`` or None when it names neither."""
    hit = re.search(r"marked (e[12])\b", explanation)
    return hit.group(1) if hit else None


def test_every_explanation_names_the_marked_entities_in_the_labels_direction(schema: RelationSchema) -> None:
    for label in schema.labels:
        explanation = schema.explain(label)
        if schema.has_direction_suffixes and label != schema.negative_label:
            first = "e1" if label.endswith("(e1,e2)") else "e2"
            second = "e2" if first == "e1" else "e1"
            assert _first_role(explanation) == first, f"{label}: {explanation!r}"
            assert f"marked {second}" in explanation.split(f"marked {first}", 1)[1], f"{label}: {explanation!r}"
        elif schema.has_direction_suffixes:  # the negative label names both and orders neither
            assert "e1" in explanation and "e2" in explanation
        else:  # head/tail wording, bound to the markers once, in the task description
            assert "marked e1 is the head" in schema.roles and "marked e2 the tail" in schema.roles


def test_both_directions_of_a_type_read_as_mirror_images(schema: RelationSchema) -> None:
    for label in schema.labels:
        if label.endswith("(e1,e2)"):
            mirror = label.replace("(e1,e2)", "(e2,e1)")
            swapped = schema.explain(label).replace("e1", "@").replace("e2", "e1").replace("@", "e2")
            assert swapped == schema.explain(mirror), label
            assert undirected(label) == undirected(mirror)


def test_no_prompt_calls_the_head_the_first_argument_or_carries_template_artefacts(schema: RelationSchema) -> None:
    for label in schema.labels:
        for where, text in _rendered(schema, label).items():
            for name, pattern in ARTEFACTS.items():
                hit = pattern.search(text)
                assert hit is None, f"{schema.dataset} {label} {where}: {name} at {hit.group(0)!r} in {text!r}"


def test_the_task_description_binds_markers_to_roles(schema: RelationSchema) -> None:
    text = _rendered(schema, schema.labels[0])["icl"]
    assert prompts.MARKING_SENTENCE in text and schema.roles in text
    assert "head is the relation's first argument" not in text
    baseline = _rendered(schema, schema.labels[0])["baseline"]
    assert (prompts.SUFFIX_SENTENCE in baseline) == schema.has_direction_suffixes
