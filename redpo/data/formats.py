"""Dataset file formats -> ``list[RESample]``: KnowPrompt JSONL, the official SemEval file, FewRel JSON.

This module is the only place that knows file formats; everything downstream consumes ``RESample``. Files are
parsed (``json.loads``), never executed, and every problem raises :class:`DataError` naming the file, the line
and the fix, because a silently skipped row would change the K-shot splits.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from redpo.core.io import DataError, iter_jsonl, require_file
from redpo.core.relations import RelationSchema, UnknownLabelError
from redpo.core.sample import MarkedTextError, RESample

__all__ = ["DataError", "load_fewrel", "load_knowprompt_jsonl", "load_semeval_official", "load_tacred_json"]


def _check_label(label: str, schema: RelationSchema | None, where: str) -> None:
    if schema is None:
        return
    try:
        schema.check(label, where)
    except UnknownLabelError as err:
        raise DataError(
            f"{err}; fix the label in the file or load it with the right dataset schema"
        ) from None


def _sample_from_row(row: dict[str, Any], where: str, schema: RelationSchema | None) -> RESample:
    """One KnowPrompt row -> RESample. Types come from ``h.type``/``t.type`` or ``subj_type``/``obj_type``."""
    try:
        tokens, h, t, relation = row["token"], row["h"], row["t"], row["relation"]
        head, tail = h["pos"], t["pos"]
    except KeyError as err:
        raise DataError(
            f"{where}: missing key {err.args[0]!r}; a KnowPrompt row needs "
            '"token", "h": {"name", "pos"}, "t": {"name", "pos"} and "relation"'
        ) from None
    except TypeError:
        raise DataError(
            f'{where}: "h" and "t" must be objects with a "pos" [start, end) list; fix the row'
        ) from None
    _check_label(relation, schema, where)
    try:
        return RESample(
            tuple(tokens),
            tuple(head),
            tuple(tail),
            relation,
            h.get("type") or row.get("subj_type"),
            t.get("type") or row.get("obj_type"),
        )
    except (ValueError, TypeError, IndexError) as err:
        raise DataError(f"{where}: bad entity span ({err}); spans are [start, end) token indices") from None


def load_knowprompt_jsonl(path: Path | str, schema: RelationSchema | None = None) -> list[RESample]:
    """KnowPrompt's ``train/val/test.txt`` (SemEval and the TACRED family); ``schema`` validates labels."""
    path = Path(path)
    return [_sample_from_row(row, f"{path}:{lineno}", schema) for lineno, row in iter_jsonl(path)]


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


def load_tacred_json(path: Path | str, schema: RelationSchema | None = None) -> list[RESample]:
    """TACRED's official ``train/dev/test.json`` (LDC2018T24; TACREV's ``dev_rev.json``/``test_rev.json`` and
    Re-TACRED's files have the same layout): one JSON list of objects with ``token``, inclusive
    ``subj_start``/``subj_end``/``obj_start``/``obj_end``, ``subj_type``/``obj_type``, ``relation`` and ``id``.

    The subject is the head (e1) and the object the tail (e2), as in KnowPrompt's conversion; spans become
    ``[start, end + 1)``. Tokens are kept as released (``-LRB-`` stays ``-LRB-``)."""
    path = Path(path)
    items = read_json_file(path, "TACRED JSON file", "copy it from your LDC release (see README 'TACRED')", list,
                           "a JSON list of examples (TACRED's official format)")
    out = []
    for i, item in enumerate(items):
        where = f"{path}: item {i}" + (f" (id {item.get('id')!r})" if isinstance(item, dict) else "")
        missing = [k for k in TACRED_KEYS if not isinstance(item, dict) or k not in item]
        if missing:
            raise DataError(f"{where}: missing {missing}; every example needs {', '.join(TACRED_KEYS)}")
        _check_label(item["relation"], schema, where)
        try:
            out.append(RESample(
                tuple(item["token"]), (item["subj_start"], item["subj_end"] + 1),
                (item["obj_start"], item["obj_end"] + 1), item["relation"], item["subj_type"], item["obj_type"],
                meta={"id": str(item["id"])},
            ))
        except (ValueError, TypeError) as err:
            raise DataError(f"{where}: bad entity span ({err}); spans are inclusive token indices") from None
    return out


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
    keep = [i for i, tok in enumerate(tokens) if tok.strip()]
    new_index = {old: new for new, old in enumerate(keep)}
    new_tokens = tuple(tokens[i] for i in keep)

    def spans(mentions: Any, role: str) -> list[tuple[int, int]]:
        out = []
        for mention in mentions:
            bad = not mention or any(not isinstance(i, int) or not 0 <= i < len(tokens) for i in mention)
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
