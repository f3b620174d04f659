"""The oracle: an RE classifier trained once on the full training split, which labels every generated sample.

The paper's claim is that the samples are diverse *and correct*. Diversity metrics cannot see correctness: a
sample that expresses ``Cause-Effect(e1,e2)`` with its roles swapped is as diverse as a right one. So, as ZeroGen
measures synthetic data, a classifier trained on all the gold training data (SemEval: 6,507 sentences) reads every
generated sample, and per arm we report

- **oracle agreement**: the share it labels as the intended, directed relation;
- **direction flips**: the share it labels as the intended *type* in the other direction;
- **negative share**: the share it labels as the negative class (the sample expresses no relation it knows).

The oracle is only as good as its own test micro-F1, which is saved beside these shares so that readers know how
far to trust them. It is trained with the profile's encoder and ``oracle`` section, always in fp32 on an epoch schedule
(:func:`oracle_encoder`: a profile's few-shot step schedule would stop it early), and cached under
``cache/oracle/<fingerprint>/`` (safetensors weights, tokenizer and a JSON summary), so it is trained once per
profile and a killed run retrains at most it. Predictions are cheap and recomputed.

A replaying results folder (:mod:`redpo.core.replay`) does not train it: its oracle is the packed run's own
labels (:class:`CommittedOracle`, read from the committed ``metrics/correctness_*_labels.jsonl``), because a
retrained classifier costs a full training on the train split and, on another machine's floats, could label a
borderline sample differently, so the replayed correctness would no longer be the committed run's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from redpo.config import EncoderConfig, Profile, derive, identity
from redpo.core.hashing import json_sha256
from redpo.core.io import ResultsDir, atomic_write, iter_jsonl, read_json, write_json
from redpo.core.manifest import recorded_peak
from redpo.core.relations import RelationSchema
from redpo.core.replay import miss, replay_models
from redpo.core.sample import RESample, generated_only, is_manual_copy
from redpo.data.splits import load_split, profile_schema, stratified_subset
from redpo.extraction.executor import torch_threads
from redpo.extraction.metrics import score
from redpo.extraction.model import TrainedRE, predict, train_re_model
from redpo.extraction.run_store import samples_digest
from redpo.extraction.saved_classifier import load_saved, save_trained
from redpo.extraction.training_sets import evaluation_sets
from redpo.generation.arms import gold_arm
from redpo.generation.store import ArmKey, ArmResult

ORACLE_DIR = "oracle"
SUMMARY = "oracle.json"


@dataclass
class Oracle:
    """The trained classifier and how it was made and scored (``summary``: JSON-safe)."""

    trained: TrainedRE
    summary: dict[str, Any]

    def label(self, samples: Sequence[RESample]) -> list[str]:
        return predict(self.trained, samples)


@dataclass
class CommittedOracle:
    """A replaying run's oracle: the label the packed run's oracle gave each sample, keyed by the marked text (the
    oracle reads nothing else), and that oracle's summary. A sample it never labelled is a replay miss."""

    labels: dict[str, str]
    summary: dict[str, Any]
    results: ResultsDir

    def label(self, samples: Sequence[RESample]) -> list[str]:
        marked = [s.to_marked() for s in samples]
        unknown = next((m for m in marked if m not in self.labels), None)
        if unknown is not None:
            raise miss(self.results, f"the oracle's label of {unknown!r}")
        return [self.labels[m] for m in marked]


def committed_oracle(results: ResultsDir) -> CommittedOracle:
    """The packed run's oracle labels and summary, from its committed ``metrics/correctness_*`` files."""
    labels = {row["marked"]: row["oracle"] for path in sorted(results.metrics.glob("correctness_*_labels.jsonl"))
              for _, row in iter_jsonl(path)}
    summaries = [read_json(path)["oracle"] for stem in ("correctness_icl", "correctness_dpo")
                 if (path := results.metrics / f"{stem}.json").is_file()]
    if not summaries or not labels:
        raise miss(results, "the oracle's labels (no committed metrics/correctness_*.json and *_labels.jsonl)")
    return CommittedOracle(labels, summaries[0], results)


def _train_set(profile: Profile) -> list[RESample]:
    train = load_split(profile, "train")
    n = profile.oracle.train_subsample
    return stratified_subset(train, n, profile.oracle.seed) if n else train


NOT_THE_ORACLES = frozenset({"eval_steps", "min_steps", "max_steps", "warmup_steps", "precision"})
"""Encoder settings the oracle never takes. The step schedule is sized for few-shot sets (``cpu-full-v2``: at most
800 steps, patience 4 evaluations of 20 steps): on the whole training split it stopped that run's oracle after 660
steps (1.6 epochs; test micro-F1 77.8 against 83.1 over ``oracle.epochs`` = 3), and the weaker oracle agreed with
the gold K-shot samples 0.70 of the time against 0.82. bf16 changes where a run stops too. Agreement shares are
compared between runs and editions, so every run's oracle trains the same way: in fp32, evaluated once per epoch."""


def oracle_encoder(profile: Profile) -> EncoderConfig:
    """The encoder settings the oracle trains with: the profile's encoder on the ``oracle`` section's epochs and
    learning rate, evaluated once per epoch, in fp32 (:data:`NOT_THE_ORACLES` left out)."""
    return derive(profile.encoder, {"epochs": profile.oracle.epochs, "learning_rate": profile.oracle.learning_rate,
                                    "eval_steps": None, "min_steps": 0, "max_steps": None, "warmup_steps": None,
                                    "precision": "fp32"})


def oracle_fingerprint(profile: Profile, train: Sequence[RESample], dev: Sequence[RESample]) -> str:
    """Hash of what determines the oracle: encoder settings (less :data:`NOT_THE_ORACLES`), the ``oracle`` section
    and the data it sees. A profile that differs from another only in its RE schedule or precision has its oracle."""
    return json_sha256({
        "encoder": identity(profile.encoder, exclude=NOT_THE_ORACLES),
        "oracle": identity(profile.oracle),
        "dataset": profile.dataset.name,
        "train": samples_digest(train),
        "dev": samples_digest(dev),
    })


def ensure_oracle(profile: Profile, results: ResultsDir, *, progress: bool = True) -> Oracle | CommittedOracle:
    """The profile's oracle: loaded from its cache folder, or trained, scored on the test set and saved there; in
    a replaying folder, the packed run's labels (:func:`committed_oracle`). ``progress`` shows the training's bar
    (one training on the whole train split: the longest single step of notebook 02)."""
    if replay_models(results) is not None:
        return committed_oracle(results)
    schema = profile_schema(profile)
    train = _train_set(profile)
    dev, test = evaluation_sets(profile)
    fingerprint = oracle_fingerprint(profile, train, dev)
    folder = results.cache / ORACLE_DIR / fingerprint[:16]
    encoder_cfg = oracle_encoder(profile)
    with torch_threads(profile.encoder.threads):
        saved = load_saved(folder, SUMMARY)
        if saved is not None:
            return Oracle(*saved)
        with recorded_peak(results, "oracle"):  # only when it trains: a cached oracle would overwrite the record
            trained = train_re_model(train, dev, schema, encoder_cfg, encoder_name=profile.encoder.model,
                                     seed=profile.oracle.seed, output_dir=results.cache, progress=progress)
            metrics = score([s.relation for s in test], predict(trained, test), schema)
    summary = {
        "fingerprint": fingerprint,
        **{k: v for k, v in trained.summary().items() if k != "history"},
        "test_micro_f1": metrics["micro_f1"],
        "test_n": len(test),
        "test_semeval_macro_f1": metrics.get("semeval_macro_f1"),
    }
    return Oracle(trained, save_trained(folder, trained, summary, SUMMARY))


# ---- correctness of generated samples ----------------------------------------------------------------------
def correctness(intended: Sequence[str], labelled: Sequence[str], schema: RelationSchema) -> dict[str, Any]:
    """Agreement, direction-flip and negative shares of the oracle's labels against the intended relations."""
    n = len(intended)
    if len(labelled) != n:
        raise ValueError(f"{n} intended relations but {len(labelled)} oracle labels")
    agree = sum(i == p for i, p in zip(intended, labelled, strict=True))
    flips = sum(i != p and schema.undirected(i) == schema.undirected(p) for i, p in zip(intended, labelled,
                                                                                        strict=True))
    negative = sum(p == schema.negative_label for p in labelled)
    share = (lambda c: round(c / n, 4) if n else None)  # noqa: E731
    return {"n": n, "oracle_agreement": share(agree), "direction_flip_rate": share(flips),
            "negative_share": share(negative)}


def label_arms(oracle: Oracle | CommittedOracle, arms: Mapping[ArmKey, ArmResult], schema: RelationSchema,
               gold: Mapping[tuple[int, int], Sequence[RESample]] | None = None) -> pd.DataFrame:
    """One row per generated sample: arm, split, intended relation, the oracle's label and the sample.

    ``gold`` (K-shot samples per split) adds a ``gold`` reference arm: the oracle's agreement on manual data. The
    reference covers the labels the arms generate: a label the arms copy from the manual samples instead
    (:func:`~redpo.core.sample.is_manual_copy`) is not judged in the arms, so it is not in the gold row either.
    """
    rows = []
    named = [((name, k, seed), generated_only(res.all_samples())) for (name, k, seed), res in arms.items()]
    copied = {s.relation for res in arms.values() for s in res.all_samples() if is_manual_copy(s)}
    named += [(("gold", k, seed), [s for s in samples if s.relation not in copied])
              for (k, seed), samples in (gold or {}).items()]
    for (name, k, seed), samples in named:
        for sample, label in zip(samples, oracle.label(samples), strict=True):
            rows.append({"arm": name, "k": k, "seed": seed, "relation": sample.relation, "oracle": label,
                         "marked": sample.to_marked()})
    return pd.DataFrame(rows, columns=["arm", "k", "seed", "relation", "oracle", "marked"])


def correctness_table(labels: pd.DataFrame, schema: RelationSchema) -> pd.DataFrame:
    """Per arm (pooled over splits): samples, oracle agreement, direction-flip rate and negative share."""
    rows = [{"arm": arm, **correctness(group["relation"].tolist(), group["oracle"].tolist(), schema)}
            for arm, group in labels.groupby("arm", sort=False)]
    return pd.DataFrame(rows, columns=["arm", "n", "oracle_agreement", "direction_flip_rate", "negative_share"])


@dataclass(frozen=True)
class Judged:
    """What :func:`judge_arms` measured: the oracle's summary, its per-sample labels and the per-arm table."""

    summary: Mapping[str, Any]
    labels: pd.DataFrame
    table: pd.DataFrame

    def describe(self) -> str:
        """One line on the oracle itself, so a reader knows how far to trust its shares."""
        s = self.summary
        return (f"oracle: {s['n_train']} training sentences, {s['epochs_run']:.0f} epochs; test micro-F1 "
                f"{s['test_micro_f1']:.3f} on {s['test_n']} sentences")


def judge_arms(profile: Profile, results: ResultsDir, arms: Mapping[ArmKey, ArmResult], stem: str, *,
               progress: bool = True) -> Judged:
    """Notebooks 02 and 03's correctness step in one call: the profile's oracle (trained once, or the committed
    labels when replaying) labels every sample of ``arms`` and the gold K-shot samples of each of their splits,
    and ``metrics/<stem>.json`` and ``<stem>_labels.jsonl`` are written (:func:`save_correctness`)."""
    schema = profile_schema(profile)
    judge = ensure_oracle(profile, results, progress=progress)
    splits = sorted({(k, seed) for (_name, k, seed) in arms})
    gold = {split: gold_arm(profile, results, *split).all_samples() for split in splits}
    labels = label_arms(judge, arms, schema, gold)
    save_correctness(results, stem, judge, labels, schema)
    return Judged(judge.summary, labels, correctness_table(labels, schema))


def save_correctness(results: ResultsDir, stem: str, oracle: Oracle | CommittedOracle, labels: pd.DataFrame,
                     schema: RelationSchema) -> Path:
    """``metrics/<stem>.json``: the oracle's summary (its test micro-F1 first) and per-arm shares, plus every
    per-sample label in ``metrics/<stem>_labels.jsonl`` so any other share can be recomputed from disk."""
    table = correctness_table(labels, schema)
    lines = "".join(json.dumps(row, sort_keys=True) + "\n" for row in labels.to_dict(orient="records"))
    atomic_write(results.metrics / f"{stem}_labels.jsonl", lines)
    return write_json(results.metrics / f"{stem}.json", {
        "oracle": oracle.summary,
        "arms": {row["arm"]: {k: v for k, v in row.items() if k != "arm"} for row in table.to_dict("records")},
    })
