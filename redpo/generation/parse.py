"""Raw LLM text -> validated :class:`RESample` s, with a reason for every output that was dropped.

It never raises on any string: generation runs for hours, and one odd reply must cost one sample, not the run.

Rules (the docs' generation page, ``docs/method/generation.md``, states them):

* **Candidates.** The reply is split into lines. Each line loses its decorations — numbering (``1.``,
  ``(2)``, ``3)``), bullets (``-``, ``*``, ``•``), ``Sample 3:``/``Example:`` labels, markdown ``**`` and
  surrounding quotes — and its ``key: value`` fields separated by ``|`` (``Relation``, ``Head type``,
  ``Tail type``, ``Context``/``Sentence``). What remains is the sentence.
* **Attempt or chatter.** A line whose sentence contains an entity marker is a candidate. A line without
  markers is an *attempted sample* (reject ``no_markers``) only if it was formatted like one: it carried
  a list decoration or a field, and some sentence text. Other marker-less lines ("Here are 5 samples:")
  are chatter and are kept in ``ParseResult.chatter``. A reply that yields neither a valid sample nor a
  reject becomes one ``no_markers`` reject, so every failed call is accounted for.
* ``expect="one"`` (OBO): the first line with a marker is the only candidate (else the whole reply).
* **Checks, in order:** ``wrong_relation`` (a ``Relation:`` field naming another label), marker errors
  (``no_markers``/``malformed_markers``/``empty_entity`` from :meth:`RESample.from_marked`),
  ``same_entity``, ``too_short``/``too_long`` (token count), ``bad_type`` (typed datasets only: both types
  must be given and in the schema), ``copy_of_demo``, ``duplicate`` (of ``previous`` or of an earlier
  candidate of the same reply); with ``generation.filter: strict`` then ``stray_markers``, ``punct_entity``,
  ``explanation_echo`` and ``near_copy`` (:class:`Strictness`).
* **Exact copy** compares :func:`exact_key`: the lower-cased token sequence *with* entity markers, ignoring
  punctuation-only tokens — so a copy with other entities is not an exact copy (it is a near copy).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from nltk.tokenize import TreebankWordTokenizer

from redpo.core.relations import RelationSchema
from redpo.core.sample import MARKER_RE, MARKERS, MarkedTextError, RESample
from redpo.generation.prompts import HEAD_TYPE_FIELD, RELATION_FIELD, TAIL_TYPE_FIELD

# ---- reject reasons ------------------------------------------------------------------------------------
NO_MARKERS = "no_markers"
MALFORMED_MARKERS = "malformed_markers"
EMPTY_ENTITY = "empty_entity"
SAME_ENTITY = "same_entity"
COPY_OF_DEMO = "copy_of_demo"
DUPLICATE = "duplicate"
WRONG_RELATION = "wrong_relation"
TOO_SHORT = "too_short"
TOO_LONG = "too_long"
BAD_TYPE = "bad_type"
NEAR_COPY = "near_copy"
STRAY_MARKERS = "stray_markers"
PUNCT_ENTITY = "punct_entity"
EXPLANATION_ECHO = "explanation_echo"
STRICT_REASONS = (NEAR_COPY, STRAY_MARKERS, PUNCT_ENTITY, EXPLANATION_ECHO)
"""What ``generation.filter: strict`` adds to the paper's rules (:class:`Strictness`)."""
REASONS = (
    NO_MARKERS,
    MALFORMED_MARKERS,
    EMPTY_ENTITY,
    SAME_ENTITY,
    COPY_OF_DEMO,
    DUPLICATE,
    WRONG_RELATION,
    TOO_SHORT,
    TOO_LONG,
    BAD_TYPE,
    *STRICT_REASONS,
)
_TAG_RE = re.compile(r"<\s*/?\s*[A-Za-z][A-Za-z0-9_]*\s*/?\s*>")
"""Anything shaped like a markup tag; in a sample only the four entity markers may be one."""
_ECHO_STOPWORDS = frozenset({"a", "an", "the", "of", "or", "and", "in", "into", "to", "by", "its", "is", "was",
                             "are", "entity", "marked", "e1", "e2", "one"})
"""Words of an explanation that say how it is phrased, not what the relation is about."""


@dataclass(frozen=True)
class Strictness:
    """The strict filter's checks beyond the paper's (``generation.filter: strict``), each its own reason:

    - ``near_copy``: the entity-masked tokens match a demonstration's or an earlier valid sample's with a
      ``difflib`` ratio of at least ``near_copy_threshold`` (the same sentence with other names; these made up
      45% of a run's OBO samples and swap entities into nonsense);
    - ``stray_markers``: a tag other than the four entity markers (``<e3>``);
    - ``punct_entity``: an entity that is punctuation only;
    - ``explanation_echo``: both entity names are words of the relation's explanation ("the <e1>cause</e1> makes
      the <e2>effect</e2>"), a restatement of the definition rather than an instance of it; or the sentence
      borrows the explanation's way of naming the entities ("the entity marked <e1>laptop</e1> ...", a bare ``e1``
      or ``e2``): the prompt's wording copied into what should read as a real sentence (one in six of a 1.5B
      generator's samples in one run).
    """

    near_copy_threshold: float
    explanation: str = ""

    def reject(self, sample: RESample, line: str, sentence: str, earlier: Sequence[RESample]) -> Reject | None:
        """The first strict reason ``sample`` fails (``line`` as written, ``sentence`` with its markers
        normalised), or None."""
        stray = [t for t in _TAG_RE.findall(sentence) if MARKER_RE.fullmatch(t) is None]
        if stray:
            return Reject(STRAY_MARKERS, line, ", ".join(stray[:3]))
        for role, name in (("head", sample.head_name), ("tail", sample.tail_name)):
            if all(_is_punct(t) for t in name.split()):
                return Reject(PUNCT_ENTITY, line, f"{role} {name!r}")
        words = {w.strip(".,;:()").casefold() for w in self.explanation.split()} - _ECHO_STOPWORDS
        if words and all(name.casefold() in words for name in (sample.head_name, sample.tail_name)):
            return Reject(EXPLANATION_ECHO, line, f"{sample.head_name!r} and {sample.tail_name!r}")
        wording = self.echoed_wording(sample)
        if wording:
            return Reject(EXPLANATION_ECHO, line, f"the explanation's wording {wording!r}")
        score = near_copy_score(sample, earlier)
        if score >= self.near_copy_threshold:
            return Reject(NEAR_COPY, line, f"masked similarity {score:.2f}")
        return None

    def echoed_wording(self, sample: RESample) -> str | None:
        """The explanation's way of naming an entity, where the sample's words (markers aside) repeat it: a marker
        name (``e1``, ``e2``) the explanation uses, or its phrase "entity marked"."""
        said = " ".join(self.explanation.split()).casefold()
        text = " ".join(sample.tokens).casefold()
        names = [m for m in ("e1", "e2") if re.search(rf"\b{m}\b", said) and re.search(rf"\b{m}\b", text)]
        if names:
            return names[0]
        phrase = re.compile(rf"\b{_ENTITY_MARKED}\b")
        return _ENTITY_MARKED if phrase.search(said) and phrase.search(text) else None


_ENTITY_MARKED = "entity marked"


@dataclass(frozen=True)
class Reject:
    """One dropped output: the machine-readable ``reason``, the line as the model wrote it, and a detail."""

    reason: str
    text: str
    detail: str = ""


@dataclass
class ParseResult:
    valid: list[RESample] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    chatter: list[str] = field(default_factory=list)
    """Marker-less lines that did not look like samples (intros, comments); neither valid nor rejected."""

    def reason_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.rejects:
            counts[r.reason] = counts.get(r.reason, 0) + 1
        return counts


# ---- tokenization and normalization --------------------------------------------------------------------
_TREEBANK = TreebankWordTokenizer()


_PTB_QUOTE_RE = re.compile(r"(?<!\S)(''|``)(?!\S)")


def word_tokenize(text: str) -> list[str]:
    """PTB-style word tokens (``factory 's``, ``do n't``), as in the KnowPrompt SemEval files.

    Already-tokenized PTB quotes (`` `` `` / ``''`` standing alone) are kept as they are: Treebank would
    turn a closing ``''`` after a space into an opening quote, and demonstrations show gold tokens verbatim.
    """
    out: list[str] = []
    for i, part in enumerate(_PTB_QUOTE_RE.split(text)):
        if i % 2:
            out.append(part)
        else:
            out.extend(_TREEBANK.tokenize(part))
    return out


def _tokenizer(lowercase: bool) -> Callable[[str], list[str]]:
    if lowercase:
        return lambda text: [t.lower() for t in word_tokenize(text)]
    return word_tokenize


def _is_punct(token: str) -> bool:
    return not any(ch.isalnum() for ch in token)


def exact_key(sample: RESample) -> tuple[str, ...]:
    """Identity for exact-copy checks: lower-cased tokens with markers, punctuation-only tokens dropped.

    Re-tokenizes the marked text so that gold demonstrations and parsed outputs compare alike.
    """
    out: list[str] = []
    for piece in MARKER_RE.split(sample.to_marked()):
        if piece in MARKERS:
            out.append(piece)
        else:
            out.extend(t.casefold() for t in word_tokenize(piece) if not _is_punct(t))
    return tuple(out)


def near_copy_score(sample: RESample, demos: Sequence[RESample]) -> float:
    """Max ``difflib.SequenceMatcher`` ratio between the entity-masked token sequences of sample and any demo.

    Masking makes "same sentence, other entities" score 1.0, which is what a near copy is (paper §4).
    0.0 when there are no demos.
    """
    mine = _masked_tokens(sample)
    best = 0.0
    for demo in demos:
        matcher = difflib.SequenceMatcher(None, mine, _masked_tokens(demo), autojunk=False)
        best = max(best, matcher.ratio())
    return best


def is_near_copy(sample: RESample, demos: Sequence[RESample], threshold: float) -> bool:
    """Whether ``sample`` nearly copies a demonstration: :func:`near_copy_score` at least ``threshold``
    (``generation.near_copy_threshold``)."""
    return near_copy_score(sample, demos) >= threshold


def _masked_tokens(sample: RESample) -> list[str]:
    return sample.masked_text().casefold().split()


# ---- line decoding -------------------------------------------------------------------------------------
_MARKER_VARIANT_RE = re.compile(r"<\s*(/?)\s*[eE]\s*([12])\s*>")
_DECORATION_RE = re.compile(
    r"""^\s*(?:
        [-*•·>]+\s*                                               # bullets, quote marks of markdown
      | \(?\#?\d{1,3}\s*[.):\]]\s*                                # 1.  (2)  3)  #4:
      | (?:new\s+)?(?:sample|example|output|answer)\s*\#?\d*\s*[:.)\]-]\s*   # Sample 3:
    )""",
    re.IGNORECASE | re.VERBOSE,
)
_FIELD_RE = re.compile(
    r"^\s*(relation|head(?:\s+entity)?\s+type|tail(?:\s+entity)?\s+type|context|sentence|text)\s*:\s*(.*)$",
    re.IGNORECASE | re.DOTALL,
)
_QUOTE_PAIRS = {'"': '"', "'": "'", "`": "`", "“": "”", "‘": "’", "«": "»"}


@dataclass
class _Line:
    raw: str
    sentence: str
    fields: dict[str, str]
    decorated: bool

    @property
    def has_marker(self) -> bool:
        return bool(MARKER_RE.search(self.sentence))

    @property
    def attempted(self) -> bool:
        return self.has_marker or ((self.decorated or bool(self.fields)) and bool(self.sentence.strip()))


def _strip_quotes(text: str) -> str:
    text = text.strip()
    while len(text) >= 2 and _QUOTE_PAIRS.get(text[0]) == text[-1]:
        text = text[1:-1].strip()
    return text


def _decode_line(raw: str) -> _Line:
    text = _MARKER_VARIANT_RE.sub(r"<\1e\2>", raw).replace("**", "").replace("__", "")
    decorated = False
    while True:
        m = _DECORATION_RE.match(text)
        if not m or not m.group(0).strip():
            break
        decorated = True
        text = text[m.end() :]
    fields: dict[str, str] = {}
    rest: list[str] = []
    for segment in text.split("|"):
        m = _FIELD_RE.match(segment)
        if m is None:
            rest.append(segment)
            continue
        key = " ".join(m.group(1).lower().replace("entity", "").split())
        if key in {"context", "sentence", "text"}:
            rest.append(m.group(2))
        else:
            fields[key] = _strip_quotes(m.group(2))
    return _Line(raw, _strip_quotes("|".join(rest)), fields, decorated)


def _norm_label(label: str) -> str:
    return "".join(_strip_quotes(label).split()).casefold()


# ---- parsing --------------------------------------------------------------------------------------------
def parse_response(
    text: str,
    relation: str,
    schema: RelationSchema,
    *,
    demos: Sequence[RESample] = (),
    previous: Sequence[RESample] = (),
    expect: Literal["one", "many"] = "many",
    min_tokens: int = 4,
    max_tokens: int = 80,
    strict: Strictness | None = None,
) -> ParseResult:
    """Every sample a reply holds for ``relation``, validated; see the module docstring for the rules, and
    :class:`Strictness` for what ``strict`` adds (checked after the copy checks, against the demonstrations, the
    earlier valid samples and this reply's samples before it)."""
    result = ParseResult()
    lines = [_decode_line(raw) for raw in str(text).splitlines() if raw.strip()]
    if expect == "one":
        first = next((line for line in lines if line.has_marker), None)
        lines = [first or _decode_line(str(text).strip())]
    demo_keys = {exact_key(d) for d in demos}
    seen = {exact_key(p) for p in previous}
    tokenize = _tokenizer(schema.lowercase)
    for line in lines:
        if not line.attempted and expect == "many":
            result.chatter.append(line.raw)
            continue
        outcome = _validate(line, relation, schema, tokenize, min_tokens, max_tokens)
        if isinstance(outcome, Reject):
            result.rejects.append(outcome)
            continue
        key = exact_key(outcome)
        if key in demo_keys:
            result.rejects.append(Reject(COPY_OF_DEMO, line.raw))
        elif key in seen:
            result.rejects.append(Reject(DUPLICATE, line.raw))
        elif strict is not None and (why := strict.reject(outcome, line.raw, line.sentence,
                                                          [*demos, *previous, *result.valid])):
            result.rejects.append(why)
        else:
            seen.add(key)
            result.valid.append(outcome)
    if not result.valid and not result.rejects:
        result.rejects.append(Reject(NO_MARKERS, str(text), "no sample-like line in the reply"))
    return result


def _validate(
    line: _Line,
    relation: str,
    schema: RelationSchema,
    tokenize: Callable[[str], list[str]],
    min_tokens: int,
    max_tokens: int,
) -> RESample | Reject:
    """Checks that need only the line itself; copies are checked by the caller, which sees the others."""
    claimed = line.fields.get(RELATION_FIELD.lower())
    if claimed is not None and _norm_label(claimed) != _norm_label(relation):
        return Reject(WRONG_RELATION, line.raw, f"line says {claimed!r}")
    try:
        sample = RESample.from_marked(line.sentence, relation, tokenize=tokenize)
    except MarkedTextError as err:
        return Reject(err.reason, line.raw, str(err))
    except ValueError as err:  # defensive: span checks in RESample
        return Reject(MALFORMED_MARKERS, line.raw, str(err))
    if sample.head_name.casefold() == sample.tail_name.casefold():
        return Reject(SAME_ENTITY, line.raw, sample.head_name)
    n = len(sample.tokens)
    if n < min_tokens:
        return Reject(TOO_SHORT, line.raw, f"{n} < {min_tokens} tokens")
    if n > max_tokens:
        return Reject(TOO_LONG, line.raw, f"{n} > {max_tokens} tokens")
    if schema.entity_types is not None:
        types = _schema_types(line, schema)
        if isinstance(types, Reject):
            return types
        sample = RESample(sample.tokens, sample.head, sample.tail, relation, *types)
    return sample


def _schema_types(line: _Line, schema: RelationSchema) -> tuple[str, str] | Reject:
    """Both entity types, spelled as in the schema; a ``bad_type`` reject when one is missing or unknown."""
    canonical = {t.casefold(): t for t in schema.entity_types or ()}
    found: list[str] = []
    for name in (HEAD_TYPE_FIELD, TAIL_TYPE_FIELD):
        given = line.fields.get(name.lower(), "")
        if given.casefold() not in canonical:
            return Reject(BAD_TYPE, line.raw, f"{name} {given!r} is not one of {sorted(canonical.values())}")
        found.append(canonical[given.casefold()])
    return found[0], found[1]
