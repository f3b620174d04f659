"""The consistency filter's judges: who decides, per K-shot split, whether a generated sample says its relation.

The beyond-paper arm ``obo_consistent`` is OBO whose every valid sample is judged before it may join the
demonstrations (:mod:`redpo.generation.judge` says what the loop does with a verdict). Only what a K-shot user has
may judge (``consistency.judge``):

- ``kshot``: an RE classifier trained on the split's K-shot samples, with the profile's encoder settings and the
  shared dev subset for early stopping: the ``manual`` RE arm's training, with the seed of the split's first grid
  cell unless ``consistency.seed`` sets one. Trained once per split and kept under
  ``cache/judge/<fingerprint[:16]>/`` (:mod:`redpo.extraction.saved_classifier`); the fingerprint hashes the
  encoder settings, the seed, the K-shot samples and the dev samples, so a later run loads what the cache holds
  and any change to them trains a new judge beside the old one.
- ``generator``: the generator itself, reading one verbalised statement per label after the direct-LLM baseline's
  prompt (one K-shot demonstration per label) with contextual calibration (:mod:`redpo.extraction.llm_scoring`).
  Its scores go through ``cache/llm_scores.jsonl``, keyed by the weights, the prompt and the statements; the
  fingerprint hashes the scorer's key, the calibration inputs, the labels and the K-shot samples.

Why not the oracle: it is trained on the whole training split (SemEval: 6,507 labelled sentences). Filtering with
it measures what label noise costs (the ladder's L3), but a few-shot method may not read those labels.

A replaying folder builds no judge. It answers from the committed arm's own files, where every judged sample is
kept (its label is its relation) or rejected as ``inconsistent`` with the judged label beside it, as the oracle
answers from its committed labels: a judge retrained on another machine's floats could turn a borderline sample,
and the replayed arm would then ask calls the committed run never made.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from redpo.config import Profile, identity
from redpo.core.hashing import json_sha256
from redpo.core.io import ResultsDir, read_json
from redpo.core.replay import miss, replay_models
from redpo.core.sample import RESample
from redpo.data.splits import load_profile_kshot, profile_schema
from redpo.extraction.executor import torch_threads
from redpo.extraction.llm_prompt import candidate_labels
from redpo.extraction.llm_scoring import ContinuationScorer, run_closed_set, scorer_model_key
from redpo.extraction.model import predict, train_re_model
from redpo.extraction.run_store import samples_digest
from redpo.extraction.saved_classifier import load_saved, save_trained
from redpo.extraction.training_sets import CLASSIFIER_SEED_STRIDE, evaluation_sets
from redpo.generation.arms import generator_info, prepare_generator
from redpo.generation.judge import INCONSISTENT, Judge, JudgeFactory
from redpo.generation.store import arm_paths, arm_stem

JUDGE_DIR = "judge"
SUMMARY = "judge.json"
SUMMARY_FIELDS = ("n_train", "n_dev", "seed", "epochs_run", "best_dev_micro_f1", "train_seconds")
"""What an arm's info keeps of the ``kshot`` judge's summary: its data, its seed and how well it did on dev."""


def judge_seed(profile: Profile, split_seed: int) -> int:
    """``consistency.seed``, or the seed of the split's first RE grid cell (split seed x 1000)."""
    seed = profile.consistency.seed
    return seed if seed is not None else split_seed * CLASSIFIER_SEED_STRIDE


def kshot_fingerprint(profile: Profile, kshot: Sequence[RESample], dev: Sequence[RESample], seed: int) -> str:
    """Hash of what determines the ``kshot`` judge: encoder settings, seed, dataset, K-shot and dev samples."""
    return json_sha256({"judge": "kshot", "encoder": identity(profile.encoder), "seed": seed,
                    "dataset": profile.dataset.name, "train": samples_digest(kshot), "dev": samples_digest(dev)})


def kshot_judge(profile: Profile, results: ResultsDir, k: int, split_seed: int, *, progress: bool = False) -> Judge:
    """The split's ``kshot`` judge: loaded from ``cache/judge/<fingerprint[:16]>/``, or trained there once."""
    schema = profile_schema(profile)
    kshot = load_profile_kshot(profile, results.kshot, k, split_seed)
    dev, _test = evaluation_sets(profile)
    seed = judge_seed(profile, split_seed)
    fingerprint = kshot_fingerprint(profile, kshot, dev, seed)
    folder = results.cache / JUDGE_DIR / fingerprint[:16]
    with torch_threads(profile.encoder.threads):
        saved = load_saved(folder, SUMMARY)
        if saved is None:
            trained = train_re_model(kshot, dev, schema, profile.encoder, encoder_name=profile.encoder.model,
                                     seed=seed, output_dir=results.cache, progress=progress)
            summary = {"fingerprint": fingerprint, "k": k, "split_seed": split_seed,
                       **{key: v for key, v in trained.summary().items() if key != "history"}}
            saved = trained, save_trained(folder, trained, summary, SUMMARY)
    trained, summary = saved

    def label(samples: Sequence[RESample]) -> list[str]:
        with torch_threads(profile.encoder.threads):
            return predict(trained, samples)

    return Judge("kshot", fingerprint, label, {key: summary[key] for key in SUMMARY_FIELDS if key in summary})


def generator_fingerprint(profile: Profile, kshot: Sequence[RESample], scorer_key: str) -> str:
    """Hash of what determines the ``generator`` judge: the scorer's weights, the calibration inputs, the labels it
    chooses among and the K-shot samples its prompt demonstrates."""
    return json_sha256({"judge": "generator", "scorer": scorer_key, "calibration": profile.llm_re.calibration_inputs,
                    "labels": candidate_labels(profile, profile_schema(profile)), "kshot": samples_digest(kshot)})


def generator_judge(profile: Profile, results: ResultsDir, k: int, split_seed: int,
                    scorer: Callable[[], ContinuationScorer]) -> Judge:
    """The split's ``generator`` judge: the calibrated closed-set label of each sample (``scorer`` is called on the
    first sample that the score cache cannot answer, so the weights load once and only when needed)."""
    schema = profile_schema(profile)
    kshot = load_profile_kshot(profile, results.kshot, k, split_seed)

    def label(samples: Sequence[RESample]) -> list[str]:
        return run_closed_set(profile, results, schema, samples, kshot, k=k, split_seed=split_seed,
                              scorer=scorer(), progress=False).predictions

    key = scorer_model_key(generator_info(profile))
    return Judge("generator", generator_fingerprint(profile, kshot, key), label, {"scorer": key})


def committed_judge(results: ResultsDir, arm: str, k: int, split_seed: int) -> Judge:
    """A replaying folder's judge: the verdicts the committed run's judge gave, read from the arm's own files (a
    kept or surplus sample was judged its relation; an ``inconsistent`` one carries the judged label)."""
    paths = arm_paths(results, arm, k, split_seed)
    if not (paths["stats"].is_file() and paths["responses"].is_file()):
        raise miss(results, f"the consistency judge of {arm_stem(arm, k, split_seed)} (no committed responses file)")
    made_by = read_json(paths["stats"])["info"].get("judge")
    if made_by is None:
        raise miss(results, f"the consistency judge of {arm_stem(arm, k, split_seed)} (its stats name none)")
    known: dict[tuple[str, str], str] = {}
    for record in read_json(paths["responses"]):
        rel = record["relation"]
        known.update({(rel, marked): rel for marked in record["valid"]})
        for reject in record["rejects"]:
            if reject["reason"] in ("surplus", INCONSISTENT):
                known[(rel, reject["text"])] = reject.get("judged", rel)

    def label(samples: Sequence[RESample]) -> list[str]:
        keys = [(s.relation, s.to_marked()) for s in samples]
        unknown = next((key for key in keys if key not in known), None)
        if unknown is not None:
            raise miss(results, f"the consistency judge's label of {unknown[1]!r}")
        return [known[key] for key in keys]

    return Judge(made_by["kind"], made_by["fingerprint"], label, made_by.get("summary", {}))


def split_judges(profile: Profile, results: ResultsDir, *, progress: bool = True) -> JudgeFactory:
    """The judge of each consistent arm on each split (``consistency.judge``), built on first use: a profile that
    lists no consistent arm trains and loads nothing. The generator judge's weights load once for every split."""
    made: dict[tuple[str, int, int], Judge] = {}
    scorers: list[ContinuationScorer] = []

    def scorer() -> ContinuationScorer:
        if not scorers:
            scorers.append(ContinuationScorer(prepare_generator(profile)))
        return scorers[0]

    def judge_for(arm: str, k: int, split_seed: int) -> Judge:
        if (arm, k, split_seed) not in made:
            if replay_models(results) is not None:
                made[(arm, k, split_seed)] = committed_judge(results, arm, k, split_seed)
            elif profile.consistency.judge == "kshot":
                made[(arm, k, split_seed)] = kshot_judge(profile, results, k, split_seed, progress=progress)
            else:
                made[(arm, k, split_seed)] = generator_judge(profile, results, k, split_seed, scorer)
        return made[(arm, k, split_seed)]

    return judge_for
