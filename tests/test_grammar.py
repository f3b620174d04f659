"""Grammar-constrained output: the GBNF grammar accepts exactly the lines the parser takes as samples.

GBNF is not parsed here; the grammar is checked by compiling its rules to a regular expression (every rule is
regular: no rule refers to itself), so each test line is matched against what the server would allow. The slow
test samples from the real llama-server with the smoke model and finds every reply parseable.
"""

from __future__ import annotations

import re

import pytest

from redpo.config import ConfigError, GenerationConfig, SamplingConfig, load_profile
from redpo.core.relations import get_schema
from redpo.generation.backends.server import ServerBackend
from redpo.generation.grammar import output_grammar
from redpo.generation.loops import arm_sampling
from redpo.generation.parse import parse_response
from redpo.generation.specs import ARMS

SEMEVAL = get_schema("semeval")
REL = "Cause-Effect(e1,e2)"


def as_regex(grammar: str) -> re.Pattern[str]:
    """The grammar's ``root`` as a regular expression (literals escaped, rules inlined, GBNF operators kept)."""
    rules = dict(line.split(" ::= ", 1) for line in grammar.strip().splitlines())

    def expand(body: str) -> str:
        out, i = [], 0
        for m in re.finditer(r'"((?:[^"\\]|\\.)*)"|(\[[^\]]*\])|([a-z][a-z0-9]*)|([()|*+?])|\s+', body):
            literal, klass, name, op = m.groups()
            if literal is not None:
                out.append(re.escape(literal.encode().decode("unicode_escape")))
            elif klass is not None:
                out.append(klass.replace("\\n", "\n"))
            elif name is not None:
                out.append(f"(?:{expand(rules[name])})")
            elif op is not None:
                out.append(op)
            i = m.end()
        assert i == len(body), body[i:]
        return "".join(out)

    return re.compile(expand(rules["root"]))


@pytest.mark.parametrize("line", [
    "the <e1>storm</e1> caused severe <e2>flooding</e2> .",
    "<e2>smoke</e2> came from the <e1>fire</e1>",
])
def test_an_obo_line_is_allowed_and_parses(line: str) -> None:
    grammar = as_regex(output_grammar(SEMEVAL, many=False, with_relation=False))
    assert grammar.fullmatch(line)
    assert parse_response(line, REL, SEMEVAL, expect="one").valid


@pytest.mark.parametrize("line", [
    "Robert F. Kennedy was fatally shot by a gunman .",  # a correct sentence without markers
    "the <e1>storm</e1> caused severe flooding .",  # one marker pair only
    "the <e1></e1> caused <e2>flooding</e2> .",  # an empty entity
    "the <e1>storm <e2>x</e2></e1> caused it .",  # nested
    "the <e1>storm</e1> caused <e2>flooding</e2> and <e3>more</e3> .",  # a third marker
    "1. the <e1>storm</e1> caused <e2>flooding</e2> .\n2. the <e1>fire</e1> made <e2>smoke</e2> .",  # two lines
])
def test_what_the_obo_grammar_refuses(line: str) -> None:
    assert not as_regex(output_grammar(SEMEVAL, many=False, with_relation=False)).fullmatch(line)


def test_many_lines_numbering_and_the_baseline_and_type_fields() -> None:
    many = as_regex(output_grammar(SEMEVAL, many=True, with_relation=False))
    reply = "1. the <e1>storm</e1> caused <e2>flooding</e2> .\n2. the <e1>fire</e1> made <e2>smoke</e2> ."
    assert many.fullmatch(reply) and len(parse_response(reply, REL, SEMEVAL).valid) == 2
    baseline = as_regex(output_grammar(SEMEVAL, many=True, with_relation=True))
    assert baseline.fullmatch(f"Relation: {REL} | the <e1>storm</e1> caused <e2>flooding</e2> .")
    assert baseline.fullmatch("Relation: Other | the <e1>storm</e1> caused <e2>flooding</e2> .")  # any label
    assert not baseline.fullmatch("Relation: Cause | the <e1>storm</e1> caused <e2>flooding</e2> .")
    tacred = get_schema("tacred")
    typed = as_regex(output_grammar(tacred, many=False, with_relation=False))
    person, city = tacred.entity_types[0], tacred.entity_types[-1]
    line = f"Head type: {person} | Tail type: {city} | <e1>Ann</e1> lives in <e2>Oslo</e2> ."
    assert typed.fullmatch(line)
    assert not typed.fullmatch(line.replace(f"Tail type: {city}", "Tail type: PLANET"))


def test_constrained_arms_carry_one_grammar_for_every_relation_and_the_server_sends_it() -> None:
    gen = GenerationConfig(constrained=True)
    obo = arm_sampling(SamplingConfig(), gen, ARMS["obo"], SEMEVAL)
    assert obo.grammar == output_grammar(SEMEVAL, many=False, with_relation=False) and obo.stop == ["\n"]
    assert arm_sampling(SamplingConfig(), GenerationConfig(), ARMS["obo"], SEMEVAL).grammar is None
    native = ServerBackend("http://127.0.0.1:1", None).body("p", obo, 1, 0)
    assert native["grammar"] == obo.grammar
    openai = ServerBackend("http://127.0.0.1:1", None, kind="openai").body("p", obo, 1, 0)
    assert openai["structured_outputs"] == {"grammar": obo.grammar}


def test_constrained_output_needs_an_inference_server() -> None:
    with pytest.raises(ConfigError, match=r"generation\.constrained needs an inference server"):
        load_profile("smoke", {"generator.backend": "transformers", "generation.constrained": True})
