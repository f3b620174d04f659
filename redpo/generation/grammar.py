"""Grammar-constrained output: a GBNF grammar that lets the server sample only lines the parser accepts.

Why: most lost replies of a small generator are format failures, not bad samples. A 0.5B model writes a correct
sentence and forgets the markers ("Robert F. Kennedy was fatally shot by ..."), nests them, or adds a third one.
With ``generation.constrained`` the inference server (llama.cpp's ``grammar``; vLLM's structured outputs through
the same client) masks every token that would leave this grammar, so each reply is a sample line in the format
of :mod:`redpo.generation.prompts`: the fields the prompt asks for, then a sentence with exactly one
``<e1>..</e1>`` and one ``<e2>..</e2>``, in either order, neither empty. What the grammar cannot see (a wrong
relation, a copy, a wrong direction) is still the parser's and the filters' to judge.

The grammar depends on the schema and the arm's prompt, never on the relation: the baseline's ``Relation:``
field may name any label (a wrong one is still rejected as ``wrong_relation``), so every relation of one loop
step shares one sampling config and the step stays one batch.
"""

from __future__ import annotations

import json

from redpo.core.relations import RelationSchema
from redpo.generation.prompts import FIELD_SEP, HEAD_TYPE_FIELD, RELATION_FIELD, TAIL_TYPE_FIELD

TEXT = r"[^<>|\n]"
"""Characters of the context and of an entity: no marker brackets, no field separator, no line break."""


def _literal(text: str) -> str:
    """A GBNF string literal (JSON's escaping is GBNF's for these characters)."""
    return json.dumps(text, ensure_ascii=False)


def _choice(options: list[str]) -> str:
    return " | ".join(_literal(o) for o in options)


def output_grammar(schema: RelationSchema, *, many: bool, with_relation: bool) -> str:
    """The GBNF grammar of a reply: one sample line (OBO), or lines separated by newlines, each optionally
    numbered as the demonstrations are (AAO and the baseline). ``with_relation`` adds the baseline's
    ``Relation:`` field; a schema with entity types adds both type fields, spelled as the schema spells them."""
    fields = []
    if with_relation:
        fields.append(f"{_literal(RELATION_FIELD + ': ')} label {_literal(FIELD_SEP)}")
    if schema.entity_types is not None:
        fields.append(f"{_literal(HEAD_TYPE_FIELD + ': ')} etype {_literal(FIELD_SEP)}")
        fields.append(f"{_literal(TAIL_TYPE_FIELD + ': ')} etype {_literal(FIELD_SEP)}")
    line = " ".join([*(["number?"] if many else []), *fields, "sentence"])
    rules = {
        "root": 'line ("\\n" line)*' if many else "line",
        "line": line,
        "sentence": "text e1 text e2 text | text e2 text e1 text",
        "e1": '"<e1>" entity "</e1>"',
        "e2": '"<e2>" entity "</e2>"',
        "entity": f"{TEXT}+",
        "text": f"{TEXT}*",
    }
    if many:
        rules["number"] = '[0-9]+ ". "'
    if with_relation:
        rules["label"] = _choice(list(schema.labels))
    if schema.entity_types is not None:
        rules["etype"] = _choice(list(schema.entity_types))
    return "\n".join(f"{name} ::= {body}" for name, body in rules.items()) + "\n"
