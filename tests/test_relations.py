"""Relation schemas: label inventories, negative labels, explanations, direction handling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from redpo.core.relations import TACRED_ENTITY_TYPES, UnknownLabelError, get_schema, undirected


def test_semeval_schema_matches_rel2id_and_explains_every_label(data_root: Path) -> None:
    schema = get_schema("semeval")
    rel2id = json.loads((data_root / "semeval2010_task8/knowprompt_split/rel2id.json").read_text())
    assert list(schema.labels) == sorted(rel2id, key=rel2id.get)  # same labels, KnowPrompt's id order
    assert len(schema) == 19 and schema.negative_label == "Other" and schema.lowercase
    assert schema.entity_types is None
    assert all(schema.explain(lab).strip() for lab in schema.labels)
    assert len(set(schema.explanations.values())) == 19  # every direction reads differently
    assert len(schema.positive_labels) == 18


def test_semeval_explanations_are_direction_aware() -> None:
    schema = get_schema("SemEval")
    forward, backward = schema.explain("Cause-Effect(e1,e2)"), schema.explain("Cause-Effect(e2,e1)")
    assert forward.startswith("The entity marked e1 causes") and "produces the entity marked e2" in forward
    assert backward.startswith("The entity marked e2 causes") and "produces the entity marked e1" in backward
    assert schema.explain("Component-Whole(e2,e1)") == (
        "The entity marked e2 is a component or functional part of the entity marked e1, the whole")
    assert schema.undirected("Component-Whole(e2,e1)") == "Component-Whole"
    assert undirected("Other") == "Other" and undirected("per:title") == "per:title"


@pytest.mark.parametrize("name", ["tacred", "tacrev"])
def test_tacred_schema(name: str) -> None:
    schema = get_schema(name)
    assert len(schema.labels) == len(set(schema.labels)) == 42
    assert schema.negative_label == "no_relation" and not schema.lowercase
    assert schema.entity_types == TACRED_ENTITY_TYPES
    assert {"per:alternate_names", "org:subsidiaries", "org:city_of_headquarters"} <= set(schema.labels)
    assert all(schema.explain(lab) for lab in schema.labels)


def test_retacred_schema_drops_and_renames() -> None:
    schema = get_schema("Re-TACRED")
    assert len(schema.labels) == 40 and schema.labels[0] == schema.negative_label == "no_relation"
    assert "per:identity" in schema and "org:city_of_branch" in schema
    for gone in ("per:alternate_names", "org:parents", "org:subsidiaries", "org:city_of_headquarters"):
        assert gone not in schema
    assert "branch" in schema.explain("org:country_of_branch")


def test_fewrel_schema_from_pid2name(fixtures_dir: Path, tmp_path: Path) -> None:
    schema = get_schema("fewrel", fixtures_dir / "data")
    assert schema.labels == ("P17", "P177", "P9999") and schema.negative_label is None
    assert schema.explain("P177").startswith("crosses: obstacle")
    assert schema.explain("P9999") == "made up"  # "No description defined" is not a description
    with pytest.raises(FileNotFoundError, match=r"pid2name\.json"):
        get_schema("fewrel", tmp_path)


def test_unknown_label_and_dataset_errors_name_both() -> None:
    schema = get_schema("tacred")
    with pytest.raises(KeyError) as err:
        schema.explain("per:favourite_colour")
    assert isinstance(err.value, UnknownLabelError)
    assert "per:favourite_colour" in str(err.value) and "'tacred'" in str(err.value)
    with pytest.raises(ValueError, match="unknown dataset 'wiki80'"):
        get_schema("wiki80")
