"""Parsing LLM replies: decorations stripped, each validity rule fires with its reason, never raises."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redpo.core.relations import RelationSchema, get_schema
from redpo.core.sample import RESample
from redpo.generation import parse
from redpo.generation.prompts import demo_text

REL = "Cause-Effect(e1,e2)"
SEMEVAL = get_schema("semeval")
TYPED = RelationSchema(
    dataset="toy",
    labels=("per:city_of_birth", "no_relation"),
    negative_label="no_relation",
    explanations={"per:city_of_birth": "born in", "no_relation": "none"},
    entity_types=("PERSON", "CITY"),
)
GOOD = "the <e1>storm</e1> caused severe <e2>flooding</e2> in the valley ."
DEMO = RESample.from_marked("the <e1>virus</e1> triggered a massive <e2>outbreak</e2> last year .", REL)


def _parse(text: str, **kw) -> parse.ParseResult:
    return parse.parse_response(text, REL, SEMEVAL, **kw)


def _reasons(result: parse.ParseResult) -> list[str]:
    return [r.reason for r in result.rejects]


def test_plain_marked_line_parses_to_spans_and_relation() -> None:
    (sample,) = _parse(GOOD).valid
    assert sample.relation == REL
    assert sample.head_name == "storm" and sample.tail_name == "flooding"
    assert sample.tokens[-1] == "."


@pytest.mark.parametrize(
    "line",
    [
        f"1. {GOOD}",
        f"2) {GOOD}",
        f"(3) {GOOD}",
        f"- {GOOD}",
        f"* {GOOD}",
        f"Sample 3: {GOOD}",
        f"**Example 2:** {GOOD}",
        f'"{GOOD}"',
        f'4. "{GOOD}"',
        f"Relation: {REL} | {GOOD}",
        f"Relation: Cause-Effect(e1, e2) | Context: {GOOD}",
        GOOD.replace("<e1>", "<E1>").replace("</e2>", "</ e2 >"),
    ],
)
def test_decorations_are_stripped(line: str) -> None:
    result = _parse(line)
    assert [s.to_marked() for s in result.valid] == [GOOD], result.rejects


def test_tokenizes_punctuation_and_lowercases_for_semeval() -> None:
    (sample,) = _parse("The <e1>Storm's</e1> winds caused <e2>damage</e2>, sadly.").valid
    assert sample.tokens == ("the", "storm", "'s", "winds", "caused", "damage", ",", "sadly", ".")
    assert sample.head == (1, 3)
    (cased,) = parse.parse_response(
        "Head type: person | Tail type: CITY | <e1>Ann</e1> was born in <e2>Rome</e2>.",
        "per:city_of_birth",
        TYPED,
    ).valid
    assert cased.tokens[0] == "Ann" and (cased.head_type, cased.tail_type) == ("PERSON", "CITY")


def test_demo_text_round_trips_through_the_parser() -> None:
    """What the prompt shows is what the parser reads back: same tokens, same spans."""
    (back,) = _parse(demo_text(DEMO, SEMEVAL)).valid
    assert back == DEMO
    quoted = RESample.from_marked("ovens with a `` fail safe '' <e1>lock</e1> and a <e2>timer</e2> .", REL)
    assert _parse(demo_text(quoted, SEMEVAL)).valid == [quoted]


def test_real_semeval_demonstrations_round_trip(data_root: Path) -> None:
    """Gold rows shown as demonstrations parse back to themselves (bar gold rows with head == tail text)."""
    path = data_root / "semeval2010_task8" / "knowprompt_split" / "train.txt"
    with path.open() as f:
        rows = [RESample.from_json(json.loads(line)) for line, _ in zip(f, range(600), strict=False)]
    kept = [r for r in rows if r.head_name != r.tail_name]
    back = [
        parse.parse_response(demo_text(r, SEMEVAL), r.relation, SEMEVAL, max_tokens=200).valid for r in kept
    ]
    assert sum(b == [r] for b, r in zip(back, kept, strict=True)) >= 0.99 * len(kept)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("1. the storm caused severe flooding in the valley .", "no_markers"),
        ("the <e1>storm caused severe <e2>flooding</e2> .", "malformed_markers"),
        ("the <e1>storm</e1> caused <e1>rain</e1> and <e2>flooding</e2> .", "malformed_markers"),
        ("the <e1><e2>storm</e2></e1> caused floods .", "malformed_markers"),
        ("the <e1> </e1> caused severe <e2>flooding</e2> .", "empty_entity"),
        ("the <e1>storm</e1> caused another <e2>Storm</e2> .", "same_entity"),
        ("<e1>storm</e1> <e2>flood</e2>", "too_short"),
        ("the <e1>storm</e1> caused <e2>flooding</e2> " + "and more " * 40, "too_long"),
        (f"Relation: Cause-Effect(e2,e1) | {GOOD}", "wrong_relation"),
        (f"Relation: Other | {GOOD}", "wrong_relation"),
    ],
)
def test_each_rule_rejects_with_its_reason(line: str, reason: str) -> None:
    result = _parse(line)
    assert result.valid == []
    assert _reasons(result) == [reason]
    assert result.rejects[0].text == line


def test_bad_or_missing_types_on_typed_dataset() -> None:
    def reasons(line: str) -> list[str]:
        return _reasons(parse.parse_response(line, "per:city_of_birth", TYPED))

    assert reasons("Head type: PERSON | Tail type: PLANET | <e1>ann</e1> was born on <e2>mars</e2> .") == [
        "bad_type"
    ]
    assert reasons("<e1>ann</e1> was born in <e2>rome</e2> .") == ["bad_type"]
    assert _reasons(_parse(GOOD)) == []  # untyped SemEval never checks types


def test_copies_and_duplicates() -> None:
    text = "\n".join(
        [
            f"1. {DEMO.to_marked().replace('the ', 'The ')}",  # a demo modulo case -> copy_of_demo
            f"2. {GOOD}",
            f"3. {GOOD.replace(' .', '')}",  # same modulo punctuation -> duplicate
            f"4. {GOOD.replace('storm', 'hurricane')}",  # other entity -> not an exact copy
        ]
    )
    result = _parse(text, demos=[DEMO])
    assert _reasons(result) == ["copy_of_demo", "duplicate"]
    assert [s.head_name for s in result.valid] == ["storm", "hurricane"]
    previous = _parse(GOOD).valid
    assert _reasons(_parse(GOOD, previous=previous)) == ["duplicate"]


def test_chatter_is_ignored_but_a_reply_without_samples_is_one_reject() -> None:
    result = _parse(f"Here are 2 new samples:\n\n1. {GOOD}\nI hope these help!")
    assert len(result.valid) == 1 and result.rejects == []
    assert result.chatter == ["Here are 2 new samples:", "I hope these help!"]
    nothing = _parse("Sorry, I cannot do that.")
    assert nothing.valid == [] and _reasons(nothing) == ["no_markers"]
    assert _reasons(_parse("")) == ["no_markers"]


def test_expect_one_takes_the_first_marked_line_only() -> None:
    other = GOOD.replace("storm", "drought").replace("flooding", "famine")
    result = _parse(f"Sure! Here is one:\n{GOOD}\n{other}", expect="one")
    assert [s.head_name for s in result.valid] == ["storm"] and result.rejects == []
    assert _reasons(_parse("the storm caused floods .", expect="one")) == ["no_markers"]


def test_reject_reasons_are_from_the_declared_list() -> None:
    assert _parse(f"1. {GOOD}\n2. <e1>a</e1> <e2>b</e2>").reason_counts() == {"too_short": 1}


def test_near_copy_score_ignores_entities_and_sees_rewrites() -> None:
    swapped = RESample.from_marked(
        "the <e1>fire</e1> triggered a massive <e2>evacuation</e2> last year .", REL
    )
    different = RESample.from_marked("heavy <e1>rain</e1> over the weekend led to <e2>landslides</e2> .", REL)
    assert parse.near_copy_score(swapped, [DEMO]) == 1.0
    assert parse.is_near_copy(swapped, [different, DEMO], 0.8)
    assert parse.near_copy_score(different, [DEMO]) < 0.5
    assert not parse.is_near_copy(different, [DEMO], 0.8)
    assert parse.is_near_copy(different, [DEMO], parse.near_copy_score(different, [DEMO]))  # at the bar counts
    assert parse.near_copy_score(different, []) == 0.0
    # 9 masked tokens vs 8 (one word dropped): ratio = 2*8/17
    shorter = RESample.from_marked("the <e1>fire</e1> triggered a <e2>evacuation</e2> last year .", REL)
    assert parse.near_copy_score(shorter, [DEMO]) == pytest.approx(16 / 17)


_PIECES = [*"ab |:.\"'-*1()\n<>/e2", "<e1>", "</e1>", "<e2>", "</e2>", "Relation: ", "Sample 2: ", " | "]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from(_PIECES), max_size=40).map("".join) | st.text(max_size=60),
    st.sampled_from(["one", "many"]),
)
def test_never_raises(text: str, expect: str) -> None:
    result = parse.parse_response(text, REL, SEMEVAL, demos=[DEMO], expect=expect)  # type: ignore[arg-type]
    assert result.valid or result.rejects
    assert all(r.reason in parse.REASONS for r in result.rejects)
    typed = parse.parse_response(text, "per:city_of_birth", TYPED, expect=expect)  # type: ignore[arg-type]
    assert typed.valid or typed.rejects


STRICT = parse.Strictness(0.8, "The entity marked e2 causes or produces the entity marked e1 (an event, effect)")


@pytest.mark.parametrize(("reply", "reason"), [
    ("the <e1>storm</e1> caused <e2>flooding</e2> and <e3>more</e3> damage .", parse.STRAY_MARKERS),
    ("the <e1>storm</e1> caused the <e2>...</e2> in the valley .", parse.PUNCT_ENTITY),
    ("an <e1>event</e1> always produces an <e2>effect</e2> as a rule .", parse.EXPLANATION_ECHO),
    ("the entity marked <e1>storm</e1> caused the <e2>flooding</e2> of the valley .", parse.EXPLANATION_ECHO),
    ("in this case e2 , the <e1>storm</e1> , caused the <e2>flooding</e2> of the valley .", parse.EXPLANATION_ECHO),
    ("the <e1>virus</e1> caused severe <e2>illness</e2> in the valley .", parse.NEAR_COPY),  # DEMO, other names
])
def test_the_strict_filter_names_each_reason(reply: str, reason: str) -> None:
    demo = RESample.from_marked("the <e1>storm</e1> caused severe <e2>flooding</e2> in the valley .", REL)
    assert parse.parse_response(reply, REL, SEMEVAL, demos=[demo], expect="one").valid  # the paper's rules keep it
    strict = parse.parse_response(reply, REL, SEMEVAL, demos=[demo], expect="one", strict=STRICT)
    assert not strict.valid and strict.reason_counts() == {reason: 1}


def test_only_the_wording_the_explanation_itself_uses_counts_as_its_echo() -> None:
    marked = RESample.from_marked("the e1 model of the <e1>storm</e1> caused the <e2>flooding</e2> here .", REL)
    assert STRICT.echoed_wording(marked) == "e1"
    plain = parse.Strictness(0.8, "Something causes or produces an event, effect or condition")
    assert plain.echoed_wording(marked) is None  # an explanation that never says "e1" has no such wording
    assert STRICT.echoed_wording(RESample.from_marked("the <e1>storm</e1> marked the <e2>end</e2> .", REL)) is None
    identity = RESample.from_marked("an identity marked the <e1>storm</e1> and the <e2>flood</e2> .", REL)
    assert STRICT.echoed_wording(identity) is None  # a word that only ends in "entity" is not the phrase


def test_a_near_copy_of_an_earlier_sample_or_of_the_same_reply_is_rejected_too() -> None:
    first = "the <e1>fire</e1> made thick black <e2>smoke</e2> over the whole town ."
    second = "the <e1>blaze</e1> made thick black <e2>fumes</e2> over the whole town ."
    earlier = RESample.from_marked(first, REL)
    assert parse.parse_response(second, REL, SEMEVAL, previous=[earlier], expect="one",
                          strict=STRICT).reason_counts() == {parse.NEAR_COPY: 1}
    both = parse.parse_response(f"1. {first}\n2. {second}", REL, SEMEVAL, strict=STRICT)
    assert len(both.valid) == 1 and both.reason_counts() == {parse.NEAR_COPY: 1}
    fresh = "a dropped <e1>match</e1> started the <e2>fire</e2> that closed the old mill for good ."
    assert parse.parse_response(fresh, REL, SEMEVAL, previous=[earlier], expect="one", strict=STRICT).valid
