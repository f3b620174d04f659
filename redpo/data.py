"""Dataset loaders, the KnowPrompt-compatible K-shot sampler, stratified subsets and ``make data``.

Everything downstream consumes ``list[RESample]``; this module is the only place that knows file formats.
Files are parsed (``json.loads``), never executed, and every problem raises :class:`DataError` naming the
file, the line and the fix, because a silently skipped row would change the K-shot splits.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np

from redpo.config import REPO_ROOT, Profile
from redpo.hashing import sha256_file
from redpo.relations import RelationSchema, UnknownLabelError, get_schema
from redpo.sample import MarkedTextError, RESample

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")
TACRED_FAMILY = ("tacred", "tacrev", "retacred")

# KnowPrompt's generate_k_shot.py defaults to ``--seed 1 2 3 4 5`` and shuffles ONE list in place per seed,
# so its split ``K-s`` is the list shuffled with seeds 1, 2, ..., s in turn (see kshot_sample).
KNOWPROMPT_SEEDS = (1, 2, 3, 4, 5)

KNOWPROMPT_COMMIT = "5f1ce468c33d9d8f4067a3edd70bbf810bc5fff4"
KNOWPROMPT_RAW = f"https://raw.githubusercontent.com/zjunlp/KnowPrompt/{KNOWPROMPT_COMMIT}/dataset/semeval"
# sha256 of the files at that commit (identical to the copies in the shared data mirror).
SEMEVAL_KNOWPROMPT_SHA256 = {
    "train.txt": "5a53be5e2dfbf865f77c287deec7b9e8a12be333ffb6157bfb5a692250a06220",
    "val.txt": "a91170e7c19354a895a58e582bf7fad43994467a0d27a8632319a70840b88e02",
    "test.txt": "1f33efe3db4dc6ff99f52416331682f3ec6759de526786d3629e6b43f8020795",
    "rel2id.json": "8f1ba2782e0df0d456ebc8f1a2d9d39de6c703f44a75e68e1588291919e25b64",
}
MIRROR_FOLDERS = ("semeval2010_task8", "fewrel")

T = TypeVar("T", RESample, dict)


class DataError(ValueError):
    """A data file is missing or malformed; the message names the file (and line) and how to fix it."""


# ---- KnowPrompt JSONL ----------------------------------------------------------------------------------
def _require_file(path: Path, what: str, fix: str) -> Path:
    if not path.is_file():
        raise DataError(f"{path}: {what} not found; {fix}")
    return path


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line_number, row)`` for every non-blank line (KnowPrompt skips blank lines too)."""
    _require_file(Path(path), "JSONL file", "check the path, or run `make data` for SemEval")
    with Path(path).open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(
                    f"{path}:{lineno}: not valid JSON ({err.msg} at column {err.colno}); "
                    "fix or delete the line (one JSON object per line)"
                ) from None
            if not isinstance(row, dict):
                raise DataError(
                    f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}; fix the line"
                )
            yield lineno, row


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
    _require_file(path, "SemEval file", "point at TRAIN_FILE.TXT or TEST_FILE_FULL.TXT (run `make data`)")
    tokenize = TreebankWordTokenizer().tokenize
    lines = path.read_text(encoding="utf-8", errors="strict").splitlines()
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
    _require_file(
        path, "FewRel file", "copy val_wiki.json / train_wiki.json from thunlp/FewRel (run `make data`)"
    )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: not valid JSON ({err.msg}); re-copy the file") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object {{pid: [instances]}}; re-copy the file")
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


# ---- splits ---------------------------------------------------------------------------------------------
def _tacred_missing(name: str, folder: Path) -> DataError:
    return DataError(
        f"{folder}: {name} data not found. TACRED, TACREV and Re-TACRED are LDC-licensed (LDC2018T24) and "
        "cannot be downloaded by redpo. With your licensed copy, convert each split to KnowPrompt JSONL "
        '(one {"token", "h": {"name", "pos"}, "t": {"name", "pos"}, "relation"} object per line, optionally '
        '"subj_type"/"obj_type") and put train.txt, val.txt, test.txt and rel2id.json in '
        f"$REDPO_DATA_DIR/{name}/ (KnowPrompt's dataset/{name}/ has this layout), or set dataset.path"
    )


def split_path(profile: Profile, split: Split) -> Path:
    """The file ``load_split`` reads for ``split`` (raises DataError when it is missing)."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    name, folder = profile.dataset.name, profile.dataset_dir
    if not folder.is_dir():
        if name in TACRED_FAMILY:
            raise _tacred_missing(name, folder)
        raise DataError(f"{folder}: {name} data folder not found; run `make data` (or set REDPO_DATA_DIR)")
    if name == "fewrel":
        if split == "test":
            raise DataError(f"{folder}: FewRel's test set was never released; use the train or val split")
        return _require_file(
            folder / f"{split}_wiki.json", "FewRel split", "copy it from thunlp/FewRel data/ into this folder"
        )
    candidates = [folder / f"{split}.txt"] + ([folder / "dev.txt"] if split == "val" else [])
    for path in candidates:
        if path.is_file():
            return path
    if name in TACRED_FAMILY:
        raise _tacred_missing(name, folder)
    raise DataError(
        f"{candidates[0]}: {split} split not found; run `make data` to restore the KnowPrompt files"
    )


def load_split(profile: Profile, split: Split) -> list[RESample]:
    """One split of the profile's dataset, restricted to ``dataset.relations`` when that is set."""
    name = profile.dataset.name
    schema = profile_schema(profile)
    path = split_path(profile, split)
    samples = load_fewrel(path, schema) if name == "fewrel" else load_knowprompt_jsonl(path, schema)
    wanted = profile.dataset.relations
    if wanted is None:
        return samples
    unknown = [r for r in wanted if r not in schema]
    if unknown:
        raise DataError(
            f"profile {profile.name!r}: dataset.relations has labels not in {name}: {unknown}; "
            "fix them in the profile YAML; quote labels that contain commas, since a YAML flow list "
            f"[a, b] splits `Cause-Effect(e1,e2)` at the comma (known: {', '.join(schema.labels)})"
        )
    keep = set(wanted)
    return [s for s in samples if s.relation in keep]


# ---- K-shot (KnowPrompt's generate_k_shot.py) -------------------------------------------------------------
def knowprompt_shuffle_seeds(seed: int, chained: bool = True) -> tuple[int, ...]:
    """The seeds KnowPrompt's shuffles use for split ``K-seed``.

    Its documented run (``generate_k_shot.py --k K``, default seeds 1-5) reseeds and shuffles the *same*
    list once per seed, so split ``K-3`` is the train file shuffled with seed 1, then 2, then 3.
    ``chained=False`` (or a seed outside 1-5) gives a single shuffle with ``seed``, i.e. ``--seed <seed>``.
    """
    if chained and seed in KNOWPROMPT_SEEDS:
        return KNOWPROMPT_SEEDS[: KNOWPROMPT_SEEDS.index(seed) + 1]
    return (seed,)


def _label(row: RESample | dict[str, Any]) -> str:
    return row.relation if isinstance(row, RESample) else row["relation"]


def kshot_sample(rows: Sequence[T], k: int, seed: int, *, chained: bool = True) -> list[T]:
    """K rows per relation, exactly as KnowPrompt: seeded in-place NumPy shuffle(s) of all train rows, then
    per relation (in first-appearance order after the shuffle) its first K rows. Works on raw JSON rows or
    RESamples; the input is not modified. Relations with fewer than K rows keep all of them."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    shuffled = list(rows)
    for s in knowprompt_shuffle_seeds(seed, chained):
        np.random.seed(s)  # KnowPrompt uses the legacy global RandomState; mirror it exactly
        np.random.shuffle(shuffled)
    by_label: dict[str, list[T]] = {}
    for row in shuffled:
        by_label.setdefault(_label(row), []).append(row)
    return [row for group in by_label.values() for row in group[:k]]


def kshot_dir(out_dir: Path | str, k: int, seed: int) -> Path:
    """``<out_dir>/k-shot/<K>-<seed>/``, KnowPrompt's layout."""
    return Path(out_dir) / "k-shot" / f"{k}-{seed}"


def write_kshot(
    train: Path | str | Sequence[RESample],
    out_dir: Path | str,
    k: int,
    seed: int,
    *,
    chained: bool = True,
    copy_siblings: bool = True,
) -> Path:
    """Write ``<out_dir>/k-shot/<K>-<seed>/train.txt`` byte-for-byte as KnowPrompt would, and copy
    ``val.txt``/``dev.txt``/``test.txt``/``rel2id.json``/``temp.txt`` beside it when ``train`` is a file and
    ``copy_siblings`` (KnowPrompt's README copies them by hand). Returns the split directory."""
    if isinstance(train, (str, Path)):
        train_path = Path(train)
        rows: list[Any] = [row for _, row in iter_jsonl(train_path)]
        names = ("val.txt", "dev.txt", "test.txt", "rel2id.json", "temp.txt") if copy_siblings else ()
        siblings = [train_path.parent / n for n in names]
    else:
        rows, siblings = [s.to_json() for s in train], []
    target = kshot_dir(out_dir, k, seed)
    target.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(row) + "\n" for row in kshot_sample(rows, k, seed, chained=chained))
    _atomic_write(target / "train.txt", text.encode("utf-8"))
    for src in siblings:
        if src.is_file():
            _copy_if_changed(src, target / src.name)
    return target


def load_kshot(
    out_dir: Path | str, k: int, seed: int, schema: RelationSchema | None = None
) -> list[RESample]:
    """Read back the split :func:`write_kshot` wrote."""
    path = kshot_dir(out_dir, k, seed) / "train.txt"
    _require_file(path, f"{k}-shot split (seed {seed})", "write it first with write_kshot (notebook 00_data)")
    return load_knowprompt_jsonl(path, schema)


def write_profile_kshots(profile: Profile, out_dir: Path | str) -> list[Path]:
    """KnowPrompt's exact K-shot files for every K and seed of the profile.

    They are drawn from the *full* train file, so a profile's relation filter never changes which rows a
    split holds (smoke's four relations get the same rows the cpu run gets); filtering happens on load.
    Only ``train.txt`` is written: redpo reads dev and test from the dataset itself.
    """
    train = split_path(profile, "train")
    return [
        write_kshot(train, out_dir, k, seed, chained=profile.fewshot.chained_shuffle, copy_siblings=False)
        for k in profile.fewshot.k
        for seed in profile.fewshot.seeds
    ]


def profile_schema(profile: Profile) -> RelationSchema:
    """The relation schema of the profile's dataset (FewRel's is read from its ``pid2name.json``)."""
    name = profile.dataset.name
    return get_schema(name, profile.dataset_dir if name == "fewrel" else None)


def load_profile_kshot(profile: Profile, out_dir: Path | str, k: int, seed: int) -> list[RESample]:
    """A K-shot split restricted to the profile's relations (``dataset.relations``), labels validated."""
    samples = load_kshot(out_dir, k, seed, profile_schema(profile))
    wanted = profile.dataset.relations
    return samples if wanted is None else [s for s in samples if s.relation in wanted]


# ---- subsets ----------------------------------------------------------------------------------------------
def stratified_subset(samples: Sequence[RESample], n: int, seed: int) -> list[RESample]:
    """A seeded subset of ``n`` samples with label proportions kept (largest-remainder quotas per label).

    Written out instead of sklearn's ``train_test_split(stratify=...)`` because that refuses labels with a
    single example and ``n`` below the number of labels; here such labels simply get a quota of 0 or 1.
    The result keeps the input order, so every arm sees the same subset in the same order.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if n >= len(samples):
        return list(samples)
    by_label: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        by_label.setdefault(s.relation, []).append(i)
    exact = {lab: n * len(idx) / len(samples) for lab, idx in by_label.items()}
    quota = {lab: int(q) for lab, q in exact.items()}
    by_remainder = sorted(by_label, key=lambda lab: (-(exact[lab] - quota[lab]), -len(by_label[lab]), lab))
    for lab in by_remainder[: n - sum(quota.values())]:
        quota[lab] += 1
    rng = np.random.RandomState(seed)
    chosen: list[int] = []
    for lab in sorted(by_label):
        chosen.extend(rng.choice(by_label[lab], size=quota[lab], replace=False).tolist())
    return [samples[i] for i in sorted(chosen)]


# ---- files: hashing, copying, fetching --------------------------------------------------------------------
def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def _copy_if_changed(src: Path, dst: Path) -> bool:
    """Copy unless ``dst`` already has the same size and sha256; returns whether it copied."""
    if dst.is_file() and dst.stat().st_size == src.stat().st_size and sha256_file(dst) == sha256_file(src):
        return False
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copyfile(src, tmp)
    tmp.replace(dst)
    return True


def default_mirror() -> Path | None:
    """``REDPO_DATA_MIRROR``, else ``../shared/data`` beside the repository, if it holds SemEval."""
    env = os.environ.get("REDPO_DATA_MIRROR")
    candidate = Path(env).expanduser() if env else REPO_ROOT.parent / "shared" / "data"
    return candidate if (candidate / "semeval2010_task8").is_dir() else None


def fetch_data(
    dest: Path | str,
    mirror: Path | str | None = None,
    *,
    opener: Callable[..., Any] = urllib.request.urlopen,
    timeout: float = 30.0,
) -> list[str]:
    """Fill ``dest`` (``REDPO_DATA_DIR``) for ``make data``; returns one line per file for the log.

    With a mirror: copy its ``semeval2010_task8/`` and ``fewrel/`` trees (idempotent: files with the same
    size and sha256 are skipped). Without: download SemEval's KnowPrompt split from GitHub at a pinned
    commit and check each file's sha256.
    """
    dest = Path(dest)
    if mirror is not None:
        return _copy_mirror(Path(mirror), dest)
    folder = dest / "semeval2010_task8" / "knowprompt_split"
    folder.mkdir(parents=True, exist_ok=True)
    log = []
    for name, sha in SEMEVAL_KNOWPROMPT_SHA256.items():
        target = folder / name
        if target.is_file() and sha256_file(target) == sha:
            log.append(f"unchanged {target}")
            continue
        url = f"{KNOWPROMPT_RAW}/{name}"
        try:
            with opener(url, timeout=timeout) as response:
                data = response.read()
        except (urllib.error.URLError, OSError) as err:
            raise DataError(
                f"{target}: cannot download {url} ({getattr(err, 'reason', err)}). If this machine is "
                "offline, pass a mirror (`make data MIRROR=/path/to/data` or REDPO_DATA_MIRROR), or fetch "
                "the file elsewhere and put it at this path"
            ) from None
        got = hashlib.sha256(data).hexdigest()
        if got != sha:
            raise DataError(
                f"{target}: downloaded {url} but its sha256 is {got}, expected {sha}; "
                "the download was corrupted or redirected — retry, or copy the file from a mirror"
            )
        _atomic_write(target, data)
        log.append(f"downloaded {target}")
    return log


def _copy_mirror(mirror: Path, dest: Path) -> list[str]:
    missing = [f for f in MIRROR_FOLDERS if not (mirror / f).is_dir()]
    if missing:
        raise DataError(
            f"{mirror}: mirror lacks {', '.join(missing)}/; point REDPO_DATA_MIRROR (or MIRROR=) at a folder "
            f"holding {' and '.join(MIRROR_FOLDERS)}/"
        )
    log = []
    for folder in MIRROR_FOLDERS:
        for src in sorted(p for p in (mirror / folder).rglob("*") if p.is_file()):
            dst = dest / src.relative_to(mirror)
            log.append(f"{'copied' if _copy_if_changed(src, dst) else 'unchanged'} {dst}")
    return log


def data_file_hashes(profile: Profile) -> dict[str, str]:
    """sha256 of every file in the dataset folder (not sub-folders), keyed by path under the data dir."""
    folder = profile.dataset_dir
    if not folder.is_dir():
        return {}
    return {
        p.relative_to(profile.data_dir).as_posix(): sha256_file(p)
        for p in sorted(folder.iterdir())
        if p.is_file()
    }


def describe_data(profile: Profile) -> dict[str, Any]:
    """Counts per split, label count and distribution, and file hashes: what ``python -m redpo data``
    prints and the manifest records. Splits that do not exist (FewRel test) are reported as missing."""
    name = profile.dataset.name
    schema = profile_schema(profile)
    labels = list(profile.dataset.relations or schema.labels)
    splits: dict[str, Any] = {}
    for split in SPLITS:
        try:
            samples = load_split(profile, split)
        except DataError as err:
            if name == "fewrel" and profile.dataset_dir.is_dir():
                splits[split] = {"missing": str(err)}
                continue
            raise
        counts = Counter(s.relation for s in samples)
        splits[split] = {"count": len(samples), "labels": {lab: counts.get(lab, 0) for lab in labels}}
    return {
        "dataset": name,
        "path": str(profile.dataset_dir),
        "num_labels": len(labels),
        "negative_label": schema.negative_label,
        "splits": splits,
        "files": data_file_hashes(profile),
    }
