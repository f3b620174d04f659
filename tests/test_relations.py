"""Relation schemas: label inventories, negative labels, explanations, direction handling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from redpo.core.io import DataError
from redpo.core.relations import BUILT_IN_SCHEMAS, UnknownLabelError, get_schema, load_schema_file, undirected


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
    assert schema.entity_types is not None and len(schema.entity_types) == 17
    assert {"PERSON", "ORGANIZATION", "CITY", "DATE"} <= set(schema.entity_types)
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
    with pytest.raises(DataError, match=r"pid2name\.json"):
        get_schema("fewrel", tmp_path)


def test_unknown_label_and_dataset_errors_name_both() -> None:
    schema = get_schema("tacred")
    with pytest.raises(KeyError) as err:
        schema.explain("per:favourite_colour")
    assert isinstance(err.value, UnknownLabelError)
    assert "per:favourite_colour" in str(err.value) and "'tacred'" in str(err.value)
    with pytest.raises(ValueError, match="unknown dataset 'wiki80'"):
        get_schema("wiki80")


def test_built_in_schemas_are_files_read_by_the_custom_path(tmp_path: Path) -> None:
    """One code path: a built-in schema copied into a custom dataset folder loads to the same schema."""
    assert sorted(p.stem for p in BUILT_IN_SCHEMAS.glob("*.yaml")) == ["retacred", "semeval", "tacred", "tacrev"]
    (tmp_path / "relations.yaml").write_bytes((BUILT_IN_SCHEMAS / "semeval.yaml").read_bytes())
    custom = get_schema("custom", tmp_path)
    semeval = get_schema("semeval")
    for attr in ("labels", "negative_label", "explanations", "verbalizations", "roles", "lowercase",
                 "semeval_macro_f1", "entity_types"):
        assert getattr(custom, attr) == getattr(semeval, attr), attr
    assert semeval.semeval_macro_f1 and not get_schema("tacred").semeval_macro_f1


def _schema_file(folder: Path, body: str, rel2id: dict[str, int] | None = None) -> Path:
    (folder / "relations.yaml").write_text(body)
    if rel2id is not None:
        (folder / "rel2id.json").write_text(json.dumps(rel2id))
    return folder


GOOD = """negative_label: none
entity_types: [PER, ORG]
labels:
  none: {explanation: no relation between the head and the tail}
  works_for: {explanation: the head person works for the tail organization, verbalization: "'{e1}' works for '{e2}'."}
"""


def test_a_custom_schema_takes_rel2id_order_and_refuses_what_cannot_work(tmp_path: Path) -> None:
    schema = get_schema("custom", _schema_file(tmp_path, GOOD, {"works_for": 0, "none": 1}))
    assert schema.labels == ("works_for", "none") and schema.negative_label == "none"
    assert schema.verbalize("works_for", "ann", "acme") == "'ann' works for 'acme'."
    assert schema.entity_types == ("PER", "ORG") and not schema.has_direction_suffixes
    with pytest.raises(ValueError, match=r"rel2id.json \(only in rel2id.json: \['born_in'\]"):
        get_schema("custom", _schema_file(tmp_path, GOOD, {"works_for": 0, "none": 1, "born_in": 2}))
    with pytest.raises(ValueError, match=r"relations.yaml: .*negative_label 'nil' is not one of the labels"):
        get_schema("custom", _schema_file(tmp_path, GOOD.replace("negative_label: none", "negative_label: nil"),
                                          {"works_for": 0, "none": 1}))
    with pytest.raises(ValueError, match=r"the explanation of 'works_for' is still the draft placeholder"):
        get_schema("custom", _schema_file(tmp_path, GOOD.replace("the head person works for", "TODO"),
                                          {"works_for": 0, "none": 1}))
    with pytest.raises(ValueError, match=r"relations.yaml: labels.works_for.colour: Extra inputs"):
        load_schema_file(_schema_file(tmp_path, GOOD.replace("verbalization:", "colour: red, verbalization:"))
                         / "relations.yaml", "custom")
    with pytest.raises(ValueError, match="directions: suffix, but"):
        load_schema_file(_schema_file(tmp_path, "directions: suffix\n" + GOOD) / "relations.yaml", "custom")
    with pytest.raises(DataError, match="--draft-relations"):
        get_schema("custom", tmp_path / "empty")
