"""Splits of a profile's dataset: the files behind train/val/test, KnowPrompt's K-shot sampler, stratified subsets.

The K-shot sampler reproduces KnowPrompt's ``generate_k_shot.py`` byte for byte, so redpo's splits are the
splits the paper's RE model was trained on; subsets are seeded and stratified, so every arm sees the same
sentences.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np

from redpo.config import Profile
from redpo.core.io import DataError, atomic_write, iter_jsonl, require_file
from redpo.core.relations import RelationSchema, get_schema
from redpo.core.sample import RESample
from redpo.data.fetch import copy_if_changed
from redpo.data.formats import load_fewrel, load_knowprompt_jsonl, load_tacred_json

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")
TACRED_FAMILY = ("tacred", "tacrev", "retacred")

# KnowPrompt's generate_k_shot.py defaults to ``--seed 1 2 3 4 5`` and shuffles ONE list in place per seed,
# so its split ``K-s`` is the list shuffled with seeds 1, 2, ..., s in turn (see kshot_sample).
KNOWPROMPT_SEEDS = (1, 2, 3, 4, 5)

T = TypeVar("T", RESample, dict)


# ---- splits ---------------------------------------------------------------------------------------------
def _tacred_missing(name: str, folder: Path) -> DataError:
    rev = " (TACREV: dev_rev.json and test_rev.json, as TACREV's patch script writes them, beside TACRED's " \
          "train.json)" if name == "tacrev" else ""
    return DataError(
        f"{folder}: {name} data not found. TACRED, TACREV and Re-TACRED are LDC-licensed (LDC2018T24) and "
        "cannot be downloaded by redpo. Put your licensed copy's official train.json, dev.json and test.json"
        f"{rev} in $REDPO_DATA_DIR/{name}/ (or set dataset.path): redpo reads them directly. A conversion to "
        "KnowPrompt JSONL (train.txt, val.txt, test.txt and rel2id.json) works too and is preferred when both are there"
    )


def find_split_file(folder: Path, name: str, split: Split) -> Path:
    """The file of ``split`` in a dataset ``folder`` of dataset ``name`` (a :class:`DataError` when it is missing).

    KnowPrompt JSONL first (``val.txt`` or ``dev.txt`` for the dev split), then, for the TACRED family, the official
    JSON release. A folder holding both ``val.txt`` and ``dev.txt`` is refused: which one a run reads must not
    depend on a precedence rule the user may not know."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if not folder.is_dir():
        if name in TACRED_FAMILY:
            raise _tacred_missing(name, folder)
        fix = "point dataset.path at it" if name == "custom" else "run `make data` (or set REDPO_DATA_DIR)"
        raise DataError(f"{folder}: {name} data folder not found; {fix}")
    if name == "fewrel":
        if split == "test":
            raise DataError(f"{folder}: FewRel's test set was never released; use the train or val split")
        return require_file(
            folder / f"{split}_wiki.json", "FewRel split", "copy it from thunlp/FewRel data/ into this folder"
        )
    candidates = [folder / f"{split}.txt"] + ([folder / "dev.txt"] if split == "val" else [])
    both = [p for p in candidates if p.is_file()]
    if len(both) > 1:
        raise DataError(f"{folder}: both val.txt and dev.txt are here, and only one can be the dev split; remove "
                        "or rename the other")
    if name in TACRED_FAMILY:  # the official JSON release, read directly, after KnowPrompt's JSONL
        official = "dev" if split == "val" else split
        candidates += [folder / f"{official}_rev.json"] * (name == "tacrev" and split != "train")
        candidates += [folder / f"{official}.json"]
    for path in candidates:
        if path.is_file():
            return path
    if name in TACRED_FAMILY:
        raise _tacred_missing(name, folder)
    fix = "add it in KnowPrompt JSONL (one sample per line)" if name == "custom" else (
        "run `make data` to restore the KnowPrompt files")
    raise DataError(f"{candidates[0]}: {split} split not found; {fix}")


def split_path(profile: Profile, split: Split) -> Path:
    """The file ``load_split`` reads for ``split`` (raises DataError when it is missing)."""
    return find_split_file(profile.dataset_dir, profile.dataset.name, split)


def load_split(profile: Profile, split: Split) -> list[RESample]:
    """One split of the profile's dataset, restricted to ``dataset.relations`` when that is set."""
    name = profile.dataset.name
    schema = profile_schema(profile)
    path = split_path(profile, split)
    if name == "fewrel":
        samples = load_fewrel(path, schema)
    elif path.suffix == ".json":
        samples = load_tacred_json(path, schema)
    else:
        samples = load_knowprompt_jsonl(path, schema)
    wanted = profile.dataset.relations
    if wanted is None:
        return samples
    unknown_relations(profile, schema)
    keep = set(wanted)
    return [s for s in samples if s.relation in keep]


def unknown_relations(profile: Profile, schema: RelationSchema) -> None:
    """Refuse labels of ``dataset.relations`` the dataset does not have (a :class:`DataError` naming them)."""
    unknown = [r for r in profile.dataset.relations or () if r not in schema]
    if unknown:
        raise DataError(
            f"profile {profile.name!r}: dataset.relations has labels not in {profile.dataset.name}: {unknown}; "
            "fix them in the profile YAML; quote labels that contain commas, since a YAML flow list "
            f"[a, b] splits `Cause-Effect(e1,e2)` at the comma (known: {', '.join(schema.labels)})"
        )


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
    atomic_write(target / "train.txt", text.encode("utf-8"))
    for src in siblings:
        if src.is_file():
            copy_if_changed(src, target / src.name)
    return target


def load_kshot(
    out_dir: Path | str, k: int, seed: int, schema: RelationSchema | None = None
) -> list[RESample]:
    """Read back the split :func:`write_kshot` wrote."""
    path = kshot_dir(out_dir, k, seed) / "train.txt"
    require_file(path, f"{k}-shot split (seed {seed})", "write it first with write_kshot (notebook 00_data)")
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
    """The relation schema of the profile's dataset: shipped with redpo, or read from the dataset folder (FewRel's
    ``pid2name.json``, a custom dataset's ``relations.yaml``)."""
    name = profile.dataset.name
    return get_schema(name, profile.dataset_dir if name in ("fewrel", "custom") else None)


def generation_splits(profile: Profile) -> list[tuple[int, int]]:
    """The ``(K, seed)`` splits that get generated data: every K, and ``generation.kshot_seeds`` (or all seeds)."""
    seeds = profile.generation.kshot_seeds or profile.fewshot.seeds
    return [(k, seed) for k in profile.fewshot.k for seed in seeds]


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
