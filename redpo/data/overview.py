"""Notebook 00's overview of a dataset: split sizes, label counts, the K-shot files, and ``metrics/data.json``.

``metrics/data.json`` is the input of the label-distribution figure and names every data file by hash, so
its layout is built here once rather than inline in the notebook.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from redpo.config import Profile, derive
from redpo.core.io import DataError, ResultsDir, write_json
from redpo.data.fetch import data_file_hashes
from redpo.data.splits import SPLITS, load_profile_kshot, load_split, profile_schema, write_profile_kshots


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


def overview_lines(profile: Profile) -> list[str]:
    """What ``python -m redpo data`` (``make data``) prints: the full dataset first, then the profile's subset, each
    under a heading that says which it is. The README and the data docs quote the full dataset's numbers (SemEval:
    6,507 / 1,493 / 2,717, 19 labels); printing only the default profile's few labels made them look wrong."""
    full = describe_data(derive(profile, {"dataset.relations": None}))
    lines = [f"dataset {full['dataset']} at {full['path']}", "", "full dataset (every label):",
             *_size_lines(full)]
    lines.append("")
    if profile.dataset.relations is None:
        lines.append(f"profile {profile.name}: every label, so the same splits as the full dataset")
    else:
        subset = describe_data(profile)
        lines += [f"profile {profile.name}'s subset (dataset.relations: {subset['num_labels']} of "
                  f"{full['num_labels']} labels):", *_size_lines(subset)]
    sub = [f"{what} {n:,} of {split} (dataset.{what}_subsample)"
           for what, split, n in (("dev", "val", profile.dataset.dev_subsample),
                                  ("test", "test", profile.dataset.test_subsample)) if n]
    if sub:
        lines.append("RE runs evaluate on one stratified subset of these: " + ", ".join(sub))
    return lines


def _size_lines(info: dict[str, Any]) -> list[str]:
    rows = [(split, f"{s['count']:,}" if "count" in s else "missing") for split, s in info["splits"].items()]
    width = max(len(split) for split, _n in rows)
    return [f"  {split:<{width}}  {n:>7}" for split, n in rows] + [
        f"  {info['num_labels']} labels (negative: {info['negative_label']})"]


def split_sizes(info: dict[str, Any]) -> pd.DataFrame:
    """One row per split: its sample count (empty for a split the dataset does not have)."""
    return pd.DataFrame({split: {"samples": s.get("count")} for split, s in info["splits"].items()}).T


def label_table(info: dict[str, Any]) -> pd.DataFrame:
    """Rows relations (most frequent in train first), columns splits, values sample counts."""
    labels = pd.DataFrame([
        {"split": split, "relation": rel, "samples": n}
        for split, s in info["splits"].items()
        for rel, n in s.get("labels", {}).items()
    ])
    order = labels[labels.split == "train"].sort_values("samples", ascending=False).relation
    return labels.pivot(index="relation", columns="split", values="samples").loc[order]


def write_kshot_table(profile: Profile, results: ResultsDir) -> pd.DataFrame:
    """Write every K-shot split of the profile and describe each: K, seed, samples, relations, path."""
    rows = []
    for folder in write_profile_kshots(profile, results.kshot):
        k, seed = (int(x) for x in folder.name.split("-"))
        split = load_profile_kshot(profile, results.kshot, k, seed)
        rows.append({
            "k": k,
            "seed": seed,
            "samples": len(split),
            "relations": len({s.relation for s in split}),
            "path": str(folder.relative_to(results.root)),
        })
    return pd.DataFrame(rows)


def save_data_metrics(results: ResultsDir, info: dict[str, Any], kshot: pd.DataFrame) -> Path:
    """``metrics/data.json``: counts and label distribution per split, data file hashes, the K-shot files."""
    return write_json(results.metrics / "data.json", {
        "dataset": info["dataset"],
        "num_labels": info["num_labels"],
        "negative_label": info["negative_label"],
        "counts": {split: s.get("count") for split, s in info["splits"].items()},
        "label_distribution": {split: s.get("labels") for split, s in info["splits"].items()},
        "files": info["files"],
        "kshot": kshot.to_dict(orient="records"),
    })
