"""RE experiments: build every arm's training set, train the classifier on the (arm, split, seed) grid, aggregate.

**The grid.** A *cell* is a generation split ``(K, split seed)`` from :func:`redpo.arms.generation_splits`
and a classifier seed index ``j < encoder.seeds_per_split``; its classifier seed is
``split_seed * CLASSIFIER_SEED_STRIDE + j`` (so seeds never collide across splits). Every arm is trained in
every cell, and all arms of all cells share one dev and one test set, so arms differ only in training data.
Means and standard deviations are over cells: on ``cpu`` (one generated split, three classifier seeds) they
measure classifier-seed variance only; on ``paper`` (five splits, one seed each) they measure split variance.

**The arms** of one split (:func:`arm_training_sets`):

* ``manual``: the K-shot split itself;
* ``gen:<arm>``: the first K samples per relation of ``generations/<arm>_k<K>_s<seed>.jsonl``, for every
  generation arm whose file exists (DPO arms join automatically once notebook 03 has written them). The
  negative label's samples are whatever generation produced (``generation.negative_label``: generated, or
  the K manual ones copied);
* ``mix:<arm>``: manual plus ``gen:<arm>`` (a generated sample equal to a manual one is kept once), for every
  ICL and DPO arm (not the Xu et al. baseline).

**Resume.** Each finished run is appended to ``cache/re_runs.jsonl`` under a fingerprint of everything that
determines it (arm, split, classifier seed, encoder settings, and the train/dev/test contents); a re-run skips
what is there, so a killed notebook loses at most the run in progress.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from redpo import paper_numbers
from redpo.arms import generation_splits
from redpo.config import Profile
from redpo.data import load_profile_kshot, load_split, profile_schema, stratified_subset
from redpo.generate import ARMS, arm_paths
from redpo.manifest import record_model
from redpo.re_metrics import score
from redpo.results import ResultsDir, read_samples, write_json
from redpo.sample import RESample

CLASSIFIER_SEED_STRIDE = 1000
"""Classifier seed = split seed x stride + seed index: distinct across splits for any ``seeds_per_split`` < 1000."""
DPO_ARMS = ("aao_dpo", "obo_dpo")
GENERATED_ARMS: tuple[str, ...] = ("baseline", *(a for a in ARMS if a != "baseline"), *DPO_ARMS)
"""Generation arms in display order; each becomes ``gen:<arm>`` when its generation file exists."""
MIXED_ARMS: tuple[str, ...] = tuple(a for a in GENERATED_ARMS if a != "baseline")
"""The ICL and DPO arms that also get a ``mix:<arm>`` (manual + generated) training set."""
LLM_ARM = "llm"
RUNS_CACHE = "re_runs.jsonl"


# ---- grid ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GridCell:
    """One (K, split seed, classifier seed) cell: every arm is trained once per cell."""

    k: int
    split_seed: int
    seed_index: int

    @property
    def classifier_seed(self) -> int:
        return self.split_seed * CLASSIFIER_SEED_STRIDE + self.seed_index

    @property
    def name(self) -> str:
        return f"k{self.k}_s{self.split_seed}_c{self.classifier_seed}"


def grid_cells(profile: Profile) -> list[GridCell]:
    """Every generation split times ``encoder.seeds_per_split`` classifier seeds, in a stable order."""
    return [
        GridCell(k, seed, j)
        for k, seed in generation_splits(profile)
        for j in range(profile.encoder.seeds_per_split)
    ]


def describe_grid(profile: Profile) -> str:
    """One sentence saying what the mean ± sd of a table cell varies over (for notebooks and the README)."""
    splits = generation_splits(profile)
    seeds = sorted({s for _k, s in splits})
    n = profile.encoder.seeds_per_split
    return (
        f"{len(grid_cells(profile))} cells per K: K-shot split seed(s) {seeds} x {n} classifier seed(s) "
        f"(seed = split seed x {CLASSIFIER_SEED_STRIDE} + 0..{n - 1}); mean ± sd are over these cells"
    )


# ---- evaluation sets -------------------------------------------------------------------------------------
def evaluation_sets(profile: Profile) -> tuple[list[RESample], list[RESample]]:
    """``(dev, test)``: each the full split or one stratified subset seeded by ``profile.seed``.

    Computed once and shared by every arm, cell and the direct-LLM baseline, so they all see the same
    sentences in the same order (``dataset.dev_subsample`` / ``dataset.test_subsample``).
    """
    out = []
    for split, n in (("val", profile.dataset.dev_subsample), ("test", profile.dataset.test_subsample)):
        samples = load_split(profile, split)
        out.append(stratified_subset(samples, n, profile.seed) if n else samples)
    return out[0], out[1]


# ---- training sets ---------------------------------------------------------------------------------------
def first_per_relation(samples: Sequence[RESample], n: int) -> list[RESample]:
    """The first ``n`` samples of each relation, in file order (generation order within a relation)."""
    seen: dict[str, int] = {}
    out = []
    for s in samples:
        if seen.get(s.relation, 0) < n:
            seen[s.relation] = seen.get(s.relation, 0) + 1
            out.append(s)
    return out


def union(manual: Sequence[RESample], generated: Sequence[RESample]) -> list[RESample]:
    """Manual samples, then generated ones not equal to a manual one (e.g. copied negative-label samples)."""
    have = set(manual)
    return [*manual, *(s for s in generated if s not in have)]


def available_generated_arms(results: ResultsDir, k: int, split_seed: int) -> list[str]:
    """Generation arms that have a samples file for this split, in :data:`GENERATED_ARMS` order."""
    return [a for a in GENERATED_ARMS if arm_paths(results, a, k, split_seed)["samples"].is_file()]


def arm_training_sets(
    profile: Profile, results: ResultsDir, k: int, split_seed: int
) -> dict[str, list[RESample]]:
    """``{"manual": ..., "gen:<arm>": ..., "mix:<arm>": ...}`` for one split (see the module docstring)."""
    manual = load_profile_kshot(profile, results.kshot, k, split_seed)
    wanted = profile.dataset.relations
    sets: dict[str, list[RESample]] = {"manual": manual}
    for arm in available_generated_arms(results, k, split_seed):
        path = arm_paths(results, arm, k, split_seed)["samples"]
        generated = [s for s in read_samples(path) if wanted is None or s.relation in wanted]
        sets[f"gen:{arm}"] = first_per_relation(generated, k)
        if arm in MIXED_ARMS:
            sets[f"mix:{arm}"] = union(manual, sets[f"gen:{arm}"])
    return sets


def arm_order(arms: Sequence[str]) -> list[str]:
    """Display order: manual, generated, mixed (each in :data:`GENERATED_ARMS` order), then the LLM."""
    order = ["manual", *(f"gen:{a}" for a in GENERATED_ARMS), *(f"mix:{a}" for a in MIXED_ARMS), LLM_ARM]
    known = [a for a in order if a in set(arms)]
    return known + sorted(set(arms) - set(order))


# ---- running ---------------------------------------------------------------------------------------------
@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op threads (``encoder.threads``); ``None`` leaves them alone."""
    import torch  # lazily: the aggregation helpers below serve `python -m redpo figures`, which loads no model

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _digest(samples: Sequence[RESample]) -> str:
    blob = json.dumps([s.to_json() for s in samples], sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def run_fingerprint(
    profile: Profile, arm: str, cell: GridCell, train: Sequence[RESample], dev_digest: str, test_digest: str
) -> str:
    """Hash of everything that determines a run's result; the resume cache's key."""
    encoder = profile.encoder.model_dump(mode="json", exclude={"threads", "seeds_per_split"})
    blob = json.dumps(
        {
            "arm": arm,
            "cell": [cell.k, cell.split_seed, cell.classifier_seed],
            "encoder": encoder,
            "dataset": profile.dataset.name,
            "train": _digest(train),
            "dev": dev_digest,
            "test": test_digest,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class RunStore:
    """Append-only JSONL of finished runs keyed by fingerprint; a torn last line (a killed run) is ignored."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.runs: dict[str, dict[str, Any]] = {}
        self._read_upto = 0  # bytes of complete lines already read
        self._read_new_lines()

    def _read_new_lines(self) -> None:
        """Read the lines appended since the last read; a line without its newline yet is left for later."""
        if not self.path.is_file():
            return
        with self.path.open("rb") as f:
            f.seek(self._read_upto)
            tail = f.read()
        complete = tail[: tail.rfind(b"\n") + 1]
        self._read_upto += len(complete)
        for line in complete.decode("utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and "fingerprint" in row:
                self.runs[row["fingerprint"]] = row

    def get(self, fingerprint: str) -> dict[str, Any] | None:
        """The finished run, re-reading the file on a miss: another notebook (e.g. 05 beside 04) may have
        finished it since this store was opened."""
        if fingerprint not in self.runs:
            self._read_new_lines()
        return self.runs.get(fingerprint)

    def add(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.runs[record["fingerprint"]] = record


def _train_and_score(
    profile: Profile,
    arm: str,
    cell: GridCell,
    train: Sequence[RESample],
    dev: Sequence[RESample],
    test: Sequence[RESample],
    output_dir: Path,
) -> dict[str, Any]:
    from redpo.re_model import predict, train_re_model

    schema = profile_schema(profile)
    trained = train_re_model(
        train, dev, schema, profile.encoder, encoder_name=profile.encoder.model, seed=cell.classifier_seed,
        output_dir=output_dir,
    )
    start = time.perf_counter()
    predictions = predict(trained, test)
    predict_seconds = time.perf_counter() - start
    metrics = score([s.relation for s in test], predictions, schema)
    return {
        "arm": arm,
        "k": cell.k,
        "split_seed": cell.split_seed,
        "seed_index": cell.seed_index,
        "classifier_seed": cell.classifier_seed,
        "cell": cell.name,
        "n_train": trained.n_train,
        "n_dev": trained.n_dev,
        "train_seconds": trained.train_seconds,
        "predict_seconds": round(predict_seconds, 2),
        "epochs_run": trained.epochs_run,
        "best_dev_micro_f1": trained.best_dev_micro_f1,
        "encoder": trained.encoder_name,
        **metrics,
    }


def run_grid(
    profile: Profile,
    results: ResultsDir,
    dev: Sequence[RESample],
    test: Sequence[RESample],
    *,
    progress: bool = True,
) -> dict[str, list[dict[str, Any]]]:
    """Train and score every arm in every grid cell; ``{"runs": [...], "skipped": [...]}``.

    Runs found in the resume cache are reused (``"cached": true``). An arm whose training set is empty (a
    generation arm that produced nothing valid) is listed under ``skipped`` with the reason, not trained.
    """
    splits = dict.fromkeys((c.k, c.split_seed) for c in grid_cells(profile))
    sets = {split: arm_training_sets(profile, results, *split) for split in splits}
    return run_training_sets(profile, results, sets, dev, test, progress=progress)


def run_training_sets(
    profile: Profile,
    results: ResultsDir,
    sets_by_split: Mapping[tuple[int, int], Mapping[str, Sequence[RESample]]],
    dev: Sequence[RESample],
    test: Sequence[RESample],
    *,
    progress: bool = True,
) -> dict[str, list[dict[str, Any]]]:
    """:func:`run_grid` on given training sets (``{(K, split seed): {arm: samples}}``), in every grid cell of
    each split, through the same resume cache: a set equal to one notebook 04 trained is not trained again."""
    from redpo.models import load_encoder

    record_model(results, load_encoder(profile.encoder.model).info)
    store = RunStore(results.cache / RUNS_CACHE)
    dev_digest, test_digest = _digest(dev), _digest(test)
    cells = grid_cells(profile)
    work = []
    for (k, split_seed), sets in sets_by_split.items():
        mine = [c for c in cells if (c.k, c.split_seed) == (k, split_seed)]
        work += [(c, arm, train) for c in mine for arm, train in sets.items()]
    runs: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    with torch_threads(profile.encoder.threads):
        for cell, arm, train in tqdm(work, desc="RE runs", unit="run", disable=not progress):
            if not train:
                skipped.append({"arm": arm, "cell": cell.name, "reason": "empty training set"})
                continue
            fingerprint = run_fingerprint(profile, arm, cell, train, dev_digest, test_digest)
            record = store.get(fingerprint)
            if record is None:
                record = {**_train_and_score(profile, arm, cell, train, dev, test, results.cache),
                          "fingerprint": fingerprint}
                store.add(record)
                runs.append({**record, "cached": False})
            else:
                runs.append({**record, "cached": True})
    return {"runs": runs, "skipped": skipped}


# ---- aggregation -----------------------------------------------------------------------------------------
def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; NaN for a single value, which has no spread to report)."""
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else float("nan")


def summarize(runs: Sequence[Mapping[str, Any]], metric: str = "micro_f1") -> pd.DataFrame:
    """One row per (arm, K): runs, mean and sd of ``metric`` over the grid cells, in display order."""
    frame = pd.DataFrame([{"arm": r["arm"], "k": r["k"], "value": r[metric]} for r in runs if metric in r])
    if frame.empty:
        return pd.DataFrame(columns=["arm", "k", "n", "mean", "sd"])
    rows = []
    for (arm, k), group in frame.groupby(["arm", "k"], sort=False):
        mean, sd = mean_sd(group["value"].tolist())
        rows.append({"arm": arm, "k": int(k), "n": len(group), "mean": mean, "sd": sd})
    out = pd.DataFrame(rows)
    out["order"] = out["arm"].map({a: i for i, a in enumerate(arm_order(out["arm"].unique()))})
    return out.sort_values(["order", "k"]).drop(columns="order").reset_index(drop=True)


def format_mean_sd(mean: float, sd: float, scale: float = 100.0) -> str:
    """``"61.4 ± 2.1"`` in percent; a single run shows its value alone."""
    if np.isnan(sd):
        return f"{mean * scale:.1f}"
    return f"{mean * scale:.1f} ± {sd * scale:.1f}"


def results_table(
    runs: Sequence[Mapping[str, Any]], dataset: str, metric: str = "micro_f1", with_paper: bool = True
) -> pd.DataFrame:
    """Rows arms, columns K: redpo's mean ± sd (%) and, for micro-F1, the paper's number beside it."""
    summary = summarize(runs, metric)
    arms = list(dict.fromkeys(summary["arm"]))
    table = pd.DataFrame(index=pd.Index(arms, name="arm"))
    for k in sorted(summary["k"].unique()):
        part = summary[summary["k"] == k].set_index("arm")
        table[f"K={k}"] = [format_mean_sd(part.at[a, "mean"], part.at[a, "sd"]) if a in part.index else ""
                           for a in arms]
        table[f"n K={k}"] = [int(part.at[a, "n"]) if a in part.index else 0 for a in arms]
        if with_paper:
            values = [paper_numbers.paper_value(dataset, int(k), a) for a in arms]
            table[f"paper K={k}"] = [f"{v:.2f}" if v is not None else "" for v in values]
    return table


def per_relation_frame(runs: Sequence[Mapping[str, Any]], labels: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean per-relation F1, rows arms, columns relations with gold support in the test set."""
    rows = [
        {"arm": r["arm"], "label": p["label"], "f1": p["f1"]}
        for r in runs
        for p in r.get("per_relation", [])
        if p["support"] > 0 and (labels is None or p["label"] in labels)
    ]
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows).pivot_table(index="arm", columns="label", values="f1", aggfunc="mean")
    return frame.loc[arm_order(frame.index.tolist())]


def best_arm(runs: Sequence[Mapping[str, Any]], metric: str = "micro_f1") -> str:
    """The arm with the highest mean ``metric`` over all its runs (ties: display order)."""
    summary = summarize([r for r in runs if r["arm"] != LLM_ARM], metric)
    if summary.empty:
        raise ValueError("no trained runs to choose the best arm from; run the grid first")
    means = summary.groupby("arm", sort=False)["mean"].mean()
    return str(means.idxmax())


def summed_confusion(runs: Sequence[Mapping[str, Any]], arm: str) -> pd.DataFrame:
    """The confusion counts of all of an arm's runs, summed; rows gold, columns predicted; empty labels dropped."""
    mine = [r for r in runs if r["arm"] == arm]
    if not mine:
        raise ValueError(f"no runs of arm {arm!r}; known arms: {sorted({r['arm'] for r in runs})}")
    labels = mine[0]["labels"]
    total = np.sum([np.asarray(r["confusion"]) for r in mine], axis=0)
    frame = pd.DataFrame(total, index=pd.Index(labels, name="gold"), columns=pd.Index(labels, name="predicted"))
    used = (frame.sum(axis=0) + frame.sum(axis=1)) > 0
    return frame.loc[used, used]


def timing_table(runs: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Per arm: training-set size and wall time per training run (runs trained now, not read from cache)."""
    frame = pd.DataFrame([r for r in runs if r["arm"] != LLM_ARM])
    if frame.empty:
        return pd.DataFrame()
    out = frame.groupby("arm", sort=False).agg(
        runs=("train_seconds", "size"),
        n_train=("n_train", "mean"),
        epochs=("epochs_run", "mean"),
        train_seconds_mean=("train_seconds", "mean"),
        train_seconds_max=("train_seconds", "max"),
        predict_seconds=("predict_seconds", "mean"),
    )
    return out.loc[arm_order(out.index.tolist())].round(2)


# ---- the paper's claims ----------------------------------------------------------------------------------
CLAIMS: tuple[tuple[str, str, str], ...] = (
    *((f"5: generated-only beats direct LLM ({a})", f"gen:{a}", LLM_ARM) for a in GENERATED_ARMS),
    *((f"6: manual + generated beats manual ({a})", f"mix:{a}", "manual") for a in MIXED_ARMS),
    ("3: DPO improves OBO-generated data", "gen:obo_dpo", "gen:obo"),
    ("3: DPO improves OBO-generated data (mixed)", "mix:obo_dpo", "mix:obo"),
    ("3: DPO improves AAO-generated data", "gen:aao_dpo", "gen:aao"),
    ("4: generated stays below manual on SemEval (OBO + DPO)", "manual", "gen:obo_dpo"),
)
"""``(claim, better arm, worse arm)``: PAPER.md §6 claims that a comparison of two arms can check."""


def claim_checks(runs: Sequence[Mapping[str, Any]], metric: str = "micro_f1") -> pd.DataFrame:
    """Each claim per K: both means, their difference, and whether it holds (``n/a`` when an arm is missing).

    ``clear`` says whether the difference exceeds the larger of the two standard deviations, because with
    three cells a difference inside the seed noise is not evidence either way.
    """
    summary = summarize(runs, metric).set_index(["arm", "k"])
    rows = []
    for k in sorted({int(r["k"]) for r in runs}):
        for claim, better, worse in CLAIMS:
            row: dict[str, Any] = {"claim": claim, "k": k, "better": better, "worse": worse}
            if (better, k) not in summary.index or (worse, k) not in summary.index:
                rows.append({**row, "holds": "n/a (arm not run)"})
                continue
            b, w = summary.loc[(better, k)], summary.loc[(worse, k)]
            diff = b["mean"] - w["mean"]
            noise = np.nanmax([b["sd"], w["sd"], 0.0])
            rows.append({
                **row, "better_mean": b["mean"], "worse_mean": w["mean"], "diff": diff,
                "holds": "yes" if diff > 0 else "no", "clear": bool(abs(diff) > noise),
            })
    return pd.DataFrame(rows)


# ---- saving ----------------------------------------------------------------------------------------------
def markdown_table(frame: pd.DataFrame, index: bool = True, digits: int = 3) -> str:
    """A GitHub markdown table (written here because pandas' ``to_markdown`` needs the optional tabulate)."""
    frame = frame.reset_index() if index else frame
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "" if np.isnan(v) else f"{v:.{digits}f}"
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(str(c) for c in frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def save_table(results: ResultsDir, name: str, frame: pd.DataFrame, index: bool = True) -> list[Path]:
    """``tables/<name>.csv`` and ``tables/<name>.md``."""
    csv, md = results.tables / f"{name}.csv", results.tables / f"{name}.md"
    frame.to_csv(csv, index=index)
    md.write_text(markdown_table(frame, index=index))
    return [csv, md]


def save_re_results(
    profile: Profile,
    results: ResultsDir,
    grid: Mapping[str, Sequence[Mapping[str, Any]]],
    llm: Sequence[Mapping[str, Any]],
    dev: Sequence[RESample],
    test: Sequence[RESample],
) -> Path:
    """``metrics/re_results.json``: every run, the LLM baseline, the summaries, and how the sets were made."""
    runs = list(grid["runs"])
    every = [*runs, *llm]
    payload = {
        "profile": profile.name,
        "dataset": profile.dataset.name,
        "grid": {
            "cells": [c.name for c in grid_cells(profile)],
            "description": describe_grid(profile),
            "classifier_seed_rule": f"split_seed * {CLASSIFIER_SEED_STRIDE} + seed_index",
        },
        "dev": {"n": len(dev), "subsample": profile.dataset.dev_subsample, "seed": profile.seed},
        "test": {"n": len(test), "subsample": profile.dataset.test_subsample, "seed": profile.seed},
        "encoder": profile.encoder.model_dump(mode="json"),
        "runs": runs,
        "skipped": list(grid.get("skipped", [])),
        "llm_baseline": list(llm),
        "summary": {
            "micro_f1": summarize(every, "micro_f1").to_dict(orient="records"),
            **({"semeval_macro_f1": summarize(every, "semeval_macro_f1").to_dict(orient="records")}
               if profile.dataset.name == "semeval" else {}),
        },
        "claims": claim_checks(every).to_dict(orient="records"),
        "paper_source": paper_numbers.SOURCE,
    }
    return write_json(results.metrics / "re_results.json", _json_safe(payload))


def _json_safe(obj: Any) -> Any:
    """NaN (a one-run sd) becomes ``null``; numpy scalars become Python numbers."""
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and np.isnan(obj):
        return None
    return obj
