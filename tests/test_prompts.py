"""Prompt wording: the modules are present, the ablation removes exactly one sentence, rendering works."""

from __future__ import annotations

import difflib

import pytest

from redpo.core.relations import RelationSchema, get_schema
from redpo.core.sample import RESample
from redpo.generation import prompts

REL = "Component-Whole(e2,e1)"
SEMEVAL = get_schema("semeval")
TYPED = RelationSchema(
    dataset="toy",
    labels=("per:city_of_birth", "no_relation"),
    negative_label="no_relation",
    explanations={"per:city_of_birth": "the head person was born in the tail city", "no_relation": "none"},
    entity_types=("PERSON", "CITY"),
)


def _demo(text: str, relation: str = REL, **types: str) -> RESample:
    return RESample.from_marked(text, relation, **types)


DEMOS = [
    _demo(
        "the <e1>crane</e1> <e2>arm</e2> raises , swivels , and extends to a maximum length of 11 inches ."
    ),
    _demo("the <e1>factory</e1> 's <e2>workshop</e2> functioned inside an extension ."),
    _demo("the <e1>dolphin</e1> uses its <e2>flukes</e2> for swimming and its flippers for steering ."),
    _demo("the <e1>treatment</e1> includes an aromatherapy <e2>mask</e2> and moisturizer ."),
    _demo("the <e1>kitchen</e1> has a large <e2>window</e2> facing the old garden behind the house ."),
]


def _user(messages: prompts.Messages) -> str:
    assert [m["role"] for m in messages] == ["system", "user"]
    return messages[1]["content"]


def test_baseline_untyped_has_xu_wording_and_relation_per_line() -> None:
    text = _user(prompts.baseline_prompt(SEMEVAL, REL, DEMOS[:2], n=5))
    assert text.startswith(prompts.BASELINE_INTRO_UNTYPED)
    assert "types" not in text
    assert f"Relation: {REL} | the <e1>crane</e1> <e2>arm</e2> raises" in text
    assert text.endswith(f"Generate 5 more samples like above for the relation '{REL}', one per line.")


def test_baseline_typed_lists_types_and_shows_them_on_demos() -> None:
    demo = _demo(
        "<e1>john</e1> was born in <e2>paris</e2> .",
        "per:city_of_birth",
        head_type="PERSON",
        tail_type="CITY",
    )
    text = _user(prompts.baseline_prompt(TYPED, "per:city_of_birth", [demo], n=3))
    assert "pre-categorized as the following types: PERSON, CITY." in text
    assert "Relation: per:city_of_birth | Head type: PERSON | Tail type: CITY | <e1>john</e1>" in text


@pytest.mark.parametrize("mode", ["aao", "obo"])
def test_icl_has_three_modules_and_numbered_demos(mode: str) -> None:
    text = _user(prompts.icl_prompt(SEMEVAL, REL, DEMOS[:3], mode=mode, n=4, dissimilar=True))
    assert text.startswith(prompts.TASK_DESCRIPTION)
    assert f"Relation '{REL}': {SEMEVAL.explanations[REL]}." in text
    for i, demo in enumerate(DEMOS[:3], start=1):
        assert f"\n{i}. {demo.to_marked()}" in text
    assert "4." not in text.split(prompts.DEMO_HEADER.format(relation=REL))[1].split("\n\n")[0]
    wanted = "Generate 4 new samples" if mode == "aao" else "Generate one new sample"
    assert wanted in text
    assert text.endswith(prompts.DISSIMILARITY_INSTRUCTION[mode])


@pytest.mark.parametrize("mode", ["aao", "obo"])
def test_nodiv_ablation_removes_exactly_the_dissimilarity_sentence(mode: str) -> None:
    with_div = prompts.icl_prompt(SEMEVAL, REL, DEMOS, mode=mode, n=5, dissimilar=True)
    without = prompts.icl_prompt(SEMEVAL, REL, DEMOS, mode=mode, n=5, dissimilar=False)
    assert with_div[0] == without[0]
    a, b = _user(without), _user(with_div)
    ops = [op for op in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes() if op[0] != "equal"]
    assert len(ops) == 1
    tag, _, _, j1, j2 = ops[0]
    assert tag == "insert"
    assert b[j1:j2].strip() == prompts.DISSIMILARITY_INSTRUCTION[mode]
    assert prompts.DISSIMILARITY_INSTRUCTION[mode] not in a


def test_icl_typed_mentions_types_and_unknown_mode_fails() -> None:
    text = _user(prompts.icl_prompt(TYPED, "per:city_of_birth", [], mode="obo", n=1, dissimilar=False))
    assert prompts.TYPES_SENTENCE.format(types="PERSON, CITY") in text
    with pytest.raises(ValueError, match="mode"):
        prompts.icl_prompt(TYPED, "per:city_of_birth", [], mode="all", n=1, dissimilar=False)  # type: ignore[arg-type]


def test_demo_text_is_the_marked_sentence_with_optional_fields() -> None:
    assert prompts.demo_text(DEMOS[1], SEMEVAL) == DEMOS[1].to_marked()
    typed = _demo(
        "<e1>ann</e1> was born in <e2>rome</e2> .", "per:city_of_birth", head_type="PERSON", tail_type="CITY"
    )
    assert prompts.demo_text(typed, TYPED) == "Head type: PERSON | Tail type: CITY | " + typed.to_marked()


def test_prompt_stays_compact_with_five_demos() -> None:
    """A 0.5B model follows short prompts better; ~4 characters per BPE token keeps it near 300 tokens."""
    for mode in ("aao", "obo"):
        messages = prompts.icl_prompt(SEMEVAL, REL, DEMOS, mode=mode, n=5, dissimilar=True)
        chars = sum(len(m["content"]) for m in messages)
        assert chars < 1500, chars


class _NoTemplate:
    chat_template = None


def test_render_without_chat_template_is_a_role_transcript() -> None:
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    assert prompts.render(messages, _NoTemplate()) == "System: S\nUser: U\nAssistant:"


def test_render_uses_the_tokenizers_chat_template() -> None:
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    template = (
        "{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}"
        "{% if add_generation_prompt %}[assistant]{% endif %}"
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]")), chat_template=template
    )
    messages = prompts.icl_prompt(SEMEVAL, REL, DEMOS[:2], mode="obo", n=1, dissimilar=True)
    assert prompts.render(messages, tokenizer) == (
        f"[system]{prompts.SYSTEM_PROMPT}[user]{_user(messages)}[assistant]"
    )
