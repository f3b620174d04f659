"""Prompt builders: the Xu et al. (2023) baseline and the paper's three-module ICL prompt.

All wording lives in the module-level constants below so that the docs can quote them verbatim and a
wording change is one diff. Prompts are chat messages; :func:`render` turns them into the model's own chat
format, because instruct models follow instructions far better inside their trained template.

Output format (both prompts): **one sample per line**, each a *marked sentence* — the context with the head
entity wrapped in ``<e1>..</e1>`` and the tail entity in ``<e2>..</e2>``, tokens separated by spaces exactly
as the demonstrations show them. Fields that a line may carry before the sentence are ``key: value``
segments separated by ``" | "``:

* the baseline (Xu et al. carry the relation on every line) prefixes ``Relation: <r> | ``;
* datasets with an entity-type schema prefix ``Head type: <T> | Tail type: <T> | `` in both prompts.

:mod:`redpo.generation.parse` accepts exactly this, plus common LLM decorations (numbering, bullets, quotes,
"Sample 3:").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from redpo.core.relations import RelationSchema
from redpo.core.sample import RESample

Messages = list[dict[str, str]]
Mode = Literal["aao", "obo"]


# ---- shared pieces ---------------------------------------------------------------------------------
FIELD_SEP = " | "
"""Separates the ``key: value`` fields of one output line from each other and from the marked sentence."""
RELATION_FIELD = "Relation"
HEAD_TYPE_FIELD = "Head type"
TAIL_TYPE_FIELD = "Tail type"

SYSTEM_PROMPT = "You write training data for relation extraction. Reply with samples only, one per line."

MARKING_SENTENCE = "The two entities are marked <e1>...</e1> and <e2>...</e2> in the context."
"""Positions only: which marked entity plays which role is the schema's to say (``RelationSchema.roles`` and the
explanations), because e1 is a SemEval label's first argument only when the label ends in ``(e1,e2)``."""
SUFFIX_SENTENCE = (
    "A relation whose name ends in (e1,e2) has the entity marked e1 as its first argument; one ending in "
    "(e2,e1) has the entity marked e2 as its first argument."
)
"""The baseline shows label names without explanations; for labels that carry a direction this says how to read
it."""
TYPES_SENTENCE = "Entity types are one of: {types}."
"""Only for datasets with an entity-type schema; omitted for SemEval."""

# ---- baseline (Xu et al. 2023, adapted to marked sentences) -------------------------------------------
BASELINE_INTRO_TYPED = (
    "One sample in relation extraction datasets consists of a relation, a context, a pair of entities in the "
    "context that have the relation, and their entity types. Entities are pre-categorized as the following "
    "types: {types}."
)
BASELINE_INTRO_UNTYPED = (
    "One sample in relation extraction datasets consists of a relation, a context and a pair of entities in "
    "the context that have the relation."
)
BASELINE_DEMO_HEADER = "Here are some samples for relation '{relation}':"
BASELINE_INSTRUCTION = "Generate {n} more samples like above for the relation '{relation}', one per line."

# ---- three-module ICL prompt (paper §3) ----------------------------------------------------------------
TASK_DESCRIPTION = (
    "Task: a relation extraction sample is a sentence (the context) that expresses a relation between two "
    "entities in it. " + MARKING_SENTENCE
)
"""Followed by the schema's ``roles`` sentence (and, for typed datasets, :data:`TYPES_SENTENCE`)."""
RELATION_EXPLANATION = "Relation '{relation}': {explanation}"
DEMO_HEADER = "Samples of relation '{relation}':"
AAO_INSTRUCTION = "Generate {n} new samples of relation '{relation}' in the same format, one per line."
OBO_INSTRUCTION = "Generate one new sample of relation '{relation}' in the same format, on one line."
DISSIMILARITY_INSTRUCTION_AAO = (
    "The new samples must be as different as possible from the samples above and from each other: "
    "use different entities, wording and sentence structure."
)
DISSIMILARITY_INSTRUCTION_OBO = (
    "The new sample must be as different as possible from all samples above: "
    "use different entities, wording and sentence structure."
)
DISSIMILARITY_INSTRUCTION: dict[str, str] = {
    "aao": DISSIMILARITY_INSTRUCTION_AAO,
    "obo": DISSIMILARITY_INSTRUCTION_OBO,
}
"""The one sentence the "w/o diversity instruction" ablation removes, per generation mode."""


# ---- builders ----------------------------------------------------------------------------------------
def demo_text(sample: RESample, schema: RelationSchema, *, with_relation: bool = False) -> str:
    """One demonstration line: optional fields, then the marked sentence with tokens joined by spaces.

    Tokens are shown as stored (SemEval's KnowPrompt files are lower-cased, PTB-tokenized), so a model that
    copies the style produces text the parser tokenizes back to the same tokens.
    """
    fields: list[str] = []
    if with_relation:
        fields.append(f"{RELATION_FIELD}: {sample.relation}")
    if schema.entity_types is not None:
        fields.append(f"{HEAD_TYPE_FIELD}: {sample.head_type or ''}".rstrip())
        fields.append(f"{TAIL_TYPE_FIELD}: {sample.tail_type or ''}".rstrip())
    return FIELD_SEP.join([*fields, sample.to_marked()])


def _types_list(schema: RelationSchema) -> str:
    return ", ".join(schema.entity_types or ())


def _join(*sentences: str) -> str:
    return " ".join(s for s in sentences if s)


def _messages(user_parts: Sequence[str]) -> Messages:
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": "\n\n".join(p for p in user_parts if p)},
    ]


def baseline_prompt(schema: RelationSchema, relation: str, demos: Sequence[RESample], n: int) -> Messages:
    """Xu et al. 2023: task sentence (+ types), k demonstrations carrying their relation, "generate more"."""
    intro = (
        BASELINE_INTRO_TYPED.format(types=_types_list(schema))
        if schema.entity_types is not None
        else BASELINE_INTRO_UNTYPED
    )
    demo_block = "\n".join(
        [BASELINE_DEMO_HEADER.format(relation=relation)]
        + [demo_text(d, schema, with_relation=True) for d in demos]
    )
    roles = SUFFIX_SENTENCE if schema.has_direction_suffixes else schema.roles
    return _messages([_join(intro, MARKING_SENTENCE, roles), demo_block,
                      BASELINE_INSTRUCTION.format(n=n, relation=relation)])


def icl_prompt(
    schema: RelationSchema,
    relation: str,
    demos: Sequence[RESample],
    *,
    mode: Mode,
    n: int,
    dissimilar: bool,
) -> Messages:
    """Task Description + Relation Explanation + Sample Demonstration + instruction (paper §3).

    ``dissimilar=False`` drops exactly the one dissimilarity sentence, nothing else (the ablation).
    OBO callers pass the growing demonstration list (gold + earlier valid samples); ``n`` is ignored in OBO.
    """
    if mode not in DISSIMILARITY_INSTRUCTION:
        raise ValueError(f"mode must be 'aao' or 'obo', got {mode!r}")
    types = TYPES_SENTENCE.format(types=_types_list(schema)) if schema.entity_types is not None else ""
    task = _join(TASK_DESCRIPTION, schema.roles, types)
    meaning = schema.explanations.get(relation, "").strip()
    if meaning and meaning[-1] not in ".!?":
        meaning += "."
    explanation = RELATION_EXPLANATION.format(relation=relation, explanation=meaning)
    demo_block = "\n".join(
        [DEMO_HEADER.format(relation=relation)]
        + [f"{i}. {demo_text(d, schema)}" for i, d in enumerate(demos, start=1)]
    )
    instruction = (AAO_INSTRUCTION if mode == "aao" else OBO_INSTRUCTION).format(n=n, relation=relation)
    if dissimilar:
        instruction += " " + DISSIMILARITY_INSTRUCTION[mode]
    return _messages([task, explanation, demo_block, instruction])


def render(messages: Messages, tokenizer: Any) -> str:
    """The prompt string the model sees: its chat template when it has one, else a plain role transcript."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n".join([*lines, "Assistant:"])
