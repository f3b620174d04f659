"""The direct-LLM baseline's prompt, shared by both of its rows: free generation and closed-set scoring.

One gold demonstration per label keeps the prompt compact: each label's shortest K-shot sample, shown after its
one-line explanation; the test sentence comes last, so every prompt of a run shares everything before it (the
backends prefill that head once).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from redpo.config import Profile
from redpo.core.relations import RelationSchema
from redpo.core.sample import RESample
from redpo.generation import prompts

SYSTEM_PROMPT = "You classify the relation between two marked entities in a sentence. Reply with one label only."
"""Free generation: the LLM writes a label name."""
SCORING_SYSTEM_PROMPT = "You state how two marked entities in a sentence are related."
"""Closed-set scoring: the LLM reads one statement per label, so it is not told to write a label."""
TASK = (
    "In each sentence two entities are marked <e1>...</e1> and <e2>...</e2>. Choose the one label below that "
    "describes how they are related; each label's explanation says which marked entity plays which role."
)
LABEL_LINE = "- {label}: {explanation}"
EXAMPLE_LINE = "  Example: {sentence}"
QUESTION = "Sentence: {sentence}\nAnswer with the label name only."

SCORING_QUESTION = "Sentence: {sentence}\nState how the two marked entities are related."


def demonstrations(kshot: Sequence[RESample], labels: Sequence[str]) -> dict[str, RESample]:
    """One gold demonstration per label: its shortest sample in the K-shot split (the first among equals),
    which keeps the prompt compact; labels without a sample in the split are absent."""
    out: dict[str, RESample] = {}
    for s in kshot:
        if s.relation in labels and (s.relation not in out or len(s.tokens) < len(out[s.relation].tokens)):
            out[s.relation] = s
    return out


def llm_re_messages(
    sample: RESample, schema: RelationSchema, labels: Sequence[str], demos: Mapping[str, RESample],
    question: str = QUESTION,
    system: str = SYSTEM_PROMPT,
) -> prompts.Messages:
    """The chat messages that ask the LLM about ``sample`` (labels in ``labels`` order); ``question`` ends them
    (closed-set scoring asks for a statement instead of a label name)."""
    lines = [TASK, ""]
    for label in labels:
        lines.append(LABEL_LINE.format(label=label, explanation=schema.explain(label)))
        if label in demos:
            lines.append(EXAMPLE_LINE.format(sentence=prompts.demo_text(demos[label], schema)))
    lines += ["", question.format(sentence=prompts.demo_text(sample, schema))]
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n".join(lines)}]


def candidate_labels(profile: Profile, schema: RelationSchema) -> list[str]:
    """The labels the LLM may answer: the profile's relations (``dataset.relations``) or the whole schema."""
    wanted = profile.dataset.relations
    return [lab for lab in schema.labels if wanted is None or lab in wanted]
