"""Dataset file formats -> ``list[RESample]``: KnowPrompt JSONL, the official SemEval file, FewRel JSON.

This module is the only place that knows file formats; everything downstream consumes ``RESample``. Files are
parsed (``json.loads``), never executed, and every problem raises :class:`DataError` naming the file, the line
and the fix, because a silently skipped row would change the K-shot splits.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from collections.abc import Iterable, Iterator
from typing import Any

from redpo.core.io import DataError, iter_jsonl, require_file
from redpo.core.relations import RelationSchema, UnknownLabelError
from redpo.core.sample import MarkedTextError, RESample

__all__ = ["DataError", "load_fewrel", "load_knowprompt_jsonl", "load_semeval_official", "load_tacred_json",
           "row_problems", "samples_from_rows", "split_rows"]


def _check_label(label: str, schema: RelationSchema | None, where: str) -> None:
    if schema is None:
        return
    try:
        schema.check(label, where)
    except UnknownLabelError as err:
        raise DataError(
            f"{err}; fix the label in the file or load it with the right dataset schema"
        ) from None


# ---- one rule for a row, shared by the loaders and `data --check` ------------------------------------------------
ROW_SHAPE = '"token": [...], "h": {"name", "pos": [start, end)}, "t": {...} and "relation"'
ENTITY_TYPE_KEYS = {"h": "subj_type", "t": "obj_type"}
"""Where a KnowPrompt row may give an entity's type besides ``h.type`` / ``t.type`` (TACRED's conversion)."""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _span_problem(row: dict[str, Any], role: str, n_tokens: int | None, types: set[str] | None) -> str | None:
    entity = row.get(role)
    if entity is None:
        return f"missing key {role!r}; a KnowPrompt row needs {ROW_SHAPE}; fix the row"
    if not isinstance(entity, dict):
        return f'"{role}" is a {type(entity).__name__}, not an object {{"name", "pos": [start, end)}}; fix the row'
    pos = entity.get("pos")
    if pos is None:
        return f'"{role}" has no "pos" (missing key \'pos\'); give the entity\'s [start, end) token span'
    if not isinstance(pos, list) or len(pos) != 2 or not all(_is_int(i) for i in pos):
        return (f'"{role}" span {json.dumps(pos)} is not two integers [start, end); spans are token indices, end '
                "exclusive: fix the span")
    start, end = pos
    if n_tokens is not None and not 0 <= start < end <= n_tokens:
        return (f'"{role}" span {pos} is out of range or empty for {n_tokens} tokens; spans are [start, end) token '
                "indices: fix the span")
    kind = entity.get("type") or row.get(ENTITY_TYPE_KEYS[role])
    if kind is not None and not isinstance(kind, str):
        return f'"{role}" has entity type {kind!r}, not a string; fix the type'
    if types is not None and kind is not None and kind not in types:
        return f'"{role}" has entity type {kind!r}, which relations.yaml\'s entity_types does not list; fix the type'
    return None


def row_problems(row: dict[str, Any], schema: RelationSchema | None) -> list[str]:
    """Every problem of one KnowPrompt-shaped row, each with its fix.

    The one rule: the loaders raise the first problem and build nothing from a row with one; ``data --check`` lists
    them all. Nothing is coerced: a ``token`` string is not split into characters, a span ``[0.0, 1.5]`` is not
    truncated, so a row is used as written or refused."""
    problems: list[str] = []
    tokens = row.get("token")
    n_tokens: int | None = None
    if not isinstance(tokens, list) or not tokens:
        shown = f"a {type(tokens).__name__}" if tokens is not None else "missing"
        problems.append(f'"token" is {shown}, not a non-empty list of token strings; write ["w1", "w2", ...]')
    else:
        bad = next((i for i, tok in enumerate(tokens) if not isinstance(tok, str) or not tok.strip()), None)
        if bad is None:
            n_tokens = len(tokens)
        else:
            problems.append(f'"token" item {bad} is {tokens[bad]!r}, not a word; every token is a non-blank string: '
                            "fix the tokens (and shift the spans)")
    relation = row.get("relation")
    if not isinstance(relation, str):
        problems.append(f'"relation" is {"missing" if relation is None else repr(relation)}, not a label string; '
                        f"a KnowPrompt row needs {ROW_SHAPE}: fix the row")
    elif schema is not None and relation not in schema:
        shown = ", ".join(schema.labels[:12]) + (", ..." if len(schema.labels) > 12 else "")
        problems.append(f"unknown relation {relation!r} for dataset {schema.dataset!r} ({len(schema.labels)} labels: "
                        f"{shown}); fix the label" + (", or add it to rel2id.json and relations.yaml"
                                                       if schema.dataset == "custom" else ""))
    types = set(schema.entity_types) if schema is not None and schema.entity_types else None
    spans_ok = True
    for role in ("h", "t"):
        problem = _span_problem(row, role, n_tokens, types)
        if problem:
            problems.append(problem)
            spans_ok = False
    if spans_ok and n_tokens is not None:
        (hs, he), (ts, te) = row["h"]["pos"], row["t"]["pos"]
        if hs < te and ts < he:
            problems.append(f'"h" span [{hs}, {he}) and "t" span [{ts}, {te}) overlap; the head and the tail are '
                            "two different token spans: fix one")
    return problems


def row_id(row: dict[str, Any]) -> str | None:
    """A row's ``id`` as a string (what duplicates are found by), or None when it has none."""
    return None if row.get("id") is None else str(row["id"])


def samples_from_rows(rows: Iterable[tuple[str, dict[str, Any]]], schema: RelationSchema | None, *,
                      keep_id: bool = False) -> list[RESample]:
    """``(where, row)`` pairs -> samples; the first problem of any row (:func:`row_problems`), or an id seen twice
    in this file, is a :class:`DataError` naming ``where``. ``keep_id`` puts the row's id in ``meta``."""
    out: list[RESample] = []
    seen: dict[str, str] = {}
    for where, row in rows:
        problems = row_problems(row, schema)
        if problems:
            raise DataError(f"{where}: {problems[0]}")
        key = row_id(row)
        if key is not None:
            if key in seen:
                raise DataError(f"{where}: duplicate id {key!r} (first at {seen[key]}); ids must be unique: fix or "
                                "drop one of the rows")
            seen[key] = where
        h, t = row["h"], row["t"]
        out.append(RESample(
            tuple(row["token"]), tuple(h["pos"]), tuple(t["pos"]), row["relation"],
            h.get("type") or row.get(ENTITY_TYPE_KEYS["h"]), t.get("type") or row.get(ENTITY_TYPE_KEYS["t"]),
            meta={"id": key} if keep_id and key is not None else {},
        ))
    return out


def knowprompt_rows(path: Path | str) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(file:line, row)`` for every row of a KnowPrompt JSONL file."""
    path = Path(path)
    for lineno, row in iter_jsonl(path):
        yield f"{path}:{lineno}", row


def split_rows(path: Path | str) -> Iterator[tuple[str, dict[str, Any]]]:
    """The KnowPrompt-shaped rows of a split file in either format redpo reads it in: TACRED's official ``.json``
    or KnowPrompt JSONL (anything else)."""
    return tacred_rows(path) if Path(path).suffix == ".json" else knowprompt_rows(path)


def load_knowprompt_jsonl(path: Path | str, schema: RelationSchema | None = None) -> list[RESample]:
    """KnowPrompt's ``train/val/test.txt`` (SemEval and the TACRED family); ``schema`` validates labels and entity
    types."""
    return samples_from_rows(knowprompt_rows(path), schema)


def read_text_checked(path: Path) -> str:
    """The file as text (a UTF-8 byte-order mark is accepted); a byte that is not UTF-8 is a :class:`DataError`
    naming the file, the line and the byte offset."""
    blob = Path(path).read_bytes()
    try:
        return blob.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        offset = err.start + (3 if blob.startswith(b"\xef\xbb\xbf") else 0)
        line = blob[:offset].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 (byte 0x{blob[offset]:02x} at byte offset {offset} of the "
                        "file); re-save the file as UTF-8") from None


def read_json_file(path: Path, what: str, fix: str, kind: type, shape: str) -> Any:
    """A whole-file JSON dataset of type ``kind``; a missing file, a bad byte, bad JSON or another shape is a
    :class:`DataError` naming the file (and line) and the fix."""
    require_file(path, what, fix)
    try:
        data = json.loads(read_text_checked(path))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: not valid JSON ({err.msg}); re-copy the file") from None
    if not isinstance(data, kind):
        raise DataError(f"{path}: expected {shape}; re-copy the file")
    return data


# ---- TACRED's official JSON release ------------------------------------------------------------------------
TACRED_KEYS = ("id", "token", "relation", "subj_start", "subj_end", "obj_start", "obj_end", "subj_type", "obj_type")


def _exclusive_end(end: Any) -> Any:
    """TACRED's inclusive end as KnowPrompt's exclusive one; a non-integer is passed on for the row check to name."""
    return end + 1 if _is_int(end) else end


def tacred_rows(path: Path | str) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(where, row)`` for every example of TACRED's official JSON, converted to a KnowPrompt row: the subject is
    the head (e1) and the object the tail (e2), as in KnowPrompt's conversion; spans become ``[start, end + 1)``.
    An example that is not an object or lacks a key is a :class:`DataError`."""
    path = Path(path)
    items = read_json_file(path, "TACRED JSON file", "copy it from your LDC release (see docs/data.md, 'TACRED-family data')", list,
                           "a JSON list of examples (TACRED's official format)")
    for i, item in enumerate(items):
        where = f"{path}: item {i}" + (f" (id {item.get('id')!r})" if isinstance(item, dict) else "")
        missing = [k for k in TACRED_KEYS if not isinstance(item, dict) or k not in item]
        if missing:
            raise DataError(f"{where}: missing {missing}; every example needs {', '.join(TACRED_KEYS)}")
        yield where, {
            "id": item["id"], "token": item["token"], "relation": item["relation"],
            "h": {"pos": [item["subj_start"], _exclusive_end(item["subj_end"])], "type": item["subj_type"]},
            "t": {"pos": [item["obj_start"], _exclusive_end(item["obj_end"])], "type": item["obj_type"]},
        }


def load_tacred_json(path: Path | str, schema: RelationSchema | None = None) -> list[RESample]:
    """TACRED's official ``train/dev/test.json`` (LDC2018T24; TACREV's ``dev_rev.json``/``test_rev.json`` and
    Re-TACRED's files have the same layout): one JSON list of objects with ``token``, inclusive
    ``subj_start``/``subj_end``/``obj_start``/``obj_end``, ``subj_type``/``obj_type``, ``relation`` and ``id``
    (kept as ``meta["id"]``). Tokens are kept as released (``-LRB-`` stays ``-LRB-``); rows are checked by
    :func:`row_problems` like KnowPrompt's."""
    return samples_from_rows(tacred_rows(path), schema, keep_id=True)


# ---- SemEval official format ---------------------------------------------------------------------------
_SEMEVAL_ID_LINE = re.compile(r'^(\d+)\t"(.*)"$')


def load_semeval_official(
    path: Path | str, *, lowercase: bool = True, schema: RelationSchema | None = None
) -> list[RESample]:
    """The official 4-line format (``TRAIN_FILE.TXT``, ``TEST_FILE_FULL.TXT``; CRLF).

    Text outside and inside the markers is tokenized with NLTK's Penn-Treebank word tokenizer (no model
    download needed), which reproduces the KnowPrompt split's tokens for 98.7% of the 8,000 training
    sentences; ``lowercase=True`` matches KnowPrompt's lower-cased files. ``meta["id"]`` keeps the
    sentence id for the official scorer.
    """
    from nltk.tokenize import TreebankWordTokenizer  # lazy: nltk takes ~2 s to import

    path = Path(path)
    require_file(path, "SemEval file", "point at TRAIN_FILE.TXT or TEST_FILE_FULL.TXT (run `make data`)")
    tokenize = TreebankWordTokenizer().tokenize
    lines = read_text_checked(path).splitlines()
    out: list[RESample] = []
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        where = f"{path}:{i + 1}"
        match = _SEMEVAL_ID_LINE.match(lines[i].strip())
        if not match:
            raise DataError(
                f'{where}: expected `<id><TAB>"sentence with <e1>..</e1> <e2>..</e2>"`; fix the line'
            )
        if i + 1 >= len(lines) or not lines[i + 1].strip():
            raise DataError(
                f"{where}: sentence {match[1]} has no label line; add it (or use TEST_FILE_FULL.TXT)"
            )
        label = lines[i + 1].strip()
        _check_label(label, schema, f"{path}:{i + 2}")
        text = match[2].lower() if lowercase else match[2]
        try:
            sample = RESample.from_marked(text, label, tokenize=tokenize)
        except (MarkedTextError, KeyError, ValueError) as err:
            raise DataError(
                f"{where}: unusable entity markers ({err}); fix the markers in the sentence"
            ) from None
        out.append(RESample(sample.tokens, sample.head, sample.tail, label, meta={"id": match[1]}))
        i += 2
        if i < len(lines) and lines[i].startswith("Comment"):
            i += 1
    return out


# ---- FewRel ----------------------------------------------------------------------------------------------
def load_fewrel(path: Path | str, schema: RelationSchema | None = None) -> list[RESample]:
    """FewRel 1.0 JSON (``{pid: [{"tokens", "h": [name, qid, [[idx, ...], ...]], "t": ...}]}``).

    Choices (state them when reporting FewRel numbers): whitespace-only tokens (e.g. ``"\\xa0"``) are
    dropped and spans shifted, so marked text round-trips; an entity with several mentions uses the first
    head/tail mention pair that does not overlap; a mention whose indices are not contiguous is widened to
    ``min..max+1``. The relation label is the Wikidata PID.
    """
    path = Path(path)
    data = read_json_file(path, "FewRel file", "copy val_wiki.json / train_wiki.json from thunlp/FewRel (run "
                          "`make data`)", dict, "a JSON object {pid: [instances]}")
    out: list[RESample] = []
    for pid, rows in data.items():
        _check_label(pid, schema, f"{path}: relation {pid}")
        for idx, row in enumerate(rows):
            out.append(_fewrel_sample(row, pid, f"{path}: {pid}[{idx}]"))
    return out


def _fewrel_sample(row: dict[str, Any], pid: str, where: str) -> RESample:
    try:
        tokens, heads, tails = row["tokens"], row["h"][2], row["t"][2]
    except KeyError as err:
        raise DataError(
            f'{where}: missing key {err.args[0]!r}; a FewRel row needs "tokens", "h", "t"'
        ) from None
    except (IndexError, TypeError):
        raise DataError(
            f"{where}: h/t must be [name, wikidata_id, [[token indices], ...]]; fix the row"
        ) from None
    if not isinstance(tokens, list) or not all(isinstance(tok, str) for tok in tokens):
        raise DataError(f'{where}: "tokens" must be a list of token strings, got {type(tokens).__name__}; fix the row')
    keep = [i for i, tok in enumerate(tokens) if tok.strip()]
    new_index = {old: new for new, old in enumerate(keep)}
    new_tokens = tuple(tokens[i] for i in keep)

    def spans(mentions: Any, role: str) -> list[tuple[int, int]]:
        out = []
        for mention in mentions:
            bad = not isinstance(mention, list) or not mention or any(
                not _is_int(i) or not 0 <= i < len(tokens) for i in mention)
            kept = [] if bad else [new_index[i] for i in mention if i in new_index]
            if not kept:
                raise DataError(
                    f"{where}: {role} mention {mention} is out of range or only whitespace tokens"
                )
            out.append((min(kept), max(kept) + 1))
        return out

    for hs in spans(heads, "head"):
        for ts in spans(tails, "tail"):
            if hs[1] <= ts[0] or ts[1] <= hs[0]:
                return RESample(new_tokens, hs, ts, pid)
    raise DataError(f"{where}: every head mention overlaps every tail mention; drop the row")
