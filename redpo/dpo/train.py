"""DPO training of the two LoRA adapters (TRL ``DPOTrainer`` + PEFT).

- The reference model is the base model with the adapter disabled (``ref_model=None`` on a PEFT model), so no
  second copy is loaded; ``dpo.precompute_ref_log_probs`` computes its log-probs once, before training.
- Every knob comes from ``profile.dpo``; no gradient checkpointing (it trades time for memory, and CPU time is
  the scarce resource here); LoRA dropout stays as configured (TRL's ``disable_dropout`` is off, and the base
  models have no dropout of their own).
- The base model is loaded fresh after ``clear_model_cache()``: PEFT injects LoRA layers *in place*, and the
  cached object is shared with other callers.
- An adapter whose ``training_log.json`` fingerprint (pairs file, dpo section, base model hash) matches is
  reused, so adapters trained elsewhere (``accelerate launch -m redpo.dpo.train ...``) are picked up by the
  notebook, and a re-run costs nothing.
- The held-out pairs are scored on the *saved* adapter, one pair per batch (:func:`evaluate_held_out`), and the
  score is kept in the log with the hash of the weights it was measured on.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import shutil
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
import pandas as pd
from datasets import Dataset

from redpo.config import ConfigError, Profile, load_profile, parse_override
from redpo.core.io import ResultsDir, read_json, write_json
from redpo.core.manifest import CHECKPOINTS_DIR
from redpo.core.replay import miss, replay_models
from redpo.data.splits import load_split, profile_schema
from redpo.dpo.pairs import (
    HALVES,
    DPOPairs,
    all_kshot_samples,
    build_pairs,
    hold_out,
    leakage_report,
    load_pairs,
    pairs_path,
    save_pairs,
)
from redpo.generation.arms import prepare_generator
from redpo.generation.engines import identity_settings, profile_tokenizer
from redpo.generation.prompts import render
from redpo.generation.smoke_fit import fitted_tiny_llama_info
from redpo.models.load import clear_model_cache
from redpo.models.packaged import hash_model_dir
from redpo.models.registry import LoadedModel

ADAPTER_LABEL = "dpo"
"""Arms generated with an adapter are named ``<arm>_dpo``."""
LOG_NAME = "training_log.json"
PAIR_COLUMNS = ["prompt", "chosen", "rejected"]
LOG_KEYS = ("loss", "rewards/margins", "rewards/accuracies", "rewards/chosen", "rewards/rejected", "learning_rate")


# ---- base model -------------------------------------------------------------------------------------------
def fresh_generator(profile: Profile) -> LoadedModel:
    """A private copy of the profile's generator: training mutates it, so the shared cache must not hold it."""
    clear_model_cache()
    loaded = prepare_generator(profile)
    clear_model_cache()
    return loaded


def base_model_name(profile: Profile) -> str:
    """What ``load_causal_lm`` needs to rebuild the generator: the fitted tiny model's dir on smoke, else the
    profile's model name."""
    if profile.generator.fit.steps > 0:
        return str(fitted_tiny_llama_info(profile).path)
    return profile.generator.model


def render_with(profile: Profile) -> Any:
    """The chat-template renderer of the profile's generator (pairs are built on exactly the OBO prompt); its
    tokenizer alone, so building pairs loads no weights."""
    tokenizer = profile_tokenizer(profile)
    return lambda messages: render(messages, tokenizer)


# ---- pairs ------------------------------------------------------------------------------------------------
def build_and_save_pairs(profile: Profile, results: ResultsDir) -> tuple[DPOPairs, dict[str, Any]]:
    """Build both adapters' pairs from the train split, check leakage, write them under ``dpo/``."""
    schema = profile_schema(profile)
    train, kshot = load_split(profile, "train"), all_kshot_samples(profile, results)
    pairs = build_pairs(profile, schema, train, kshot, render_with(profile))
    leakage = leakage_report(pairs, train, kshot)
    save_pairs(pairs, results, leakage)
    return pairs, leakage


# ---- training ---------------------------------------------------------------------------------------------
def adapter_dir(results: ResultsDir, half: str) -> Path:
    return results.adapters / half


def fingerprint(profile: Profile, pairs_file: Path, base_sha256: str) -> str:
    """Identity of a training run: the pairs file, the dpo section, the seed and the base weights. ``arms`` (which
    generation arms use the adapters) and ``checkpoint_steps`` do not change what is trained, so they are left out."""
    blob = json.dumps(
        {
            "pairs": hashlib.sha256(pairs_file.read_bytes()).hexdigest(),
            "dpo": profile.dpo.model_dump(mode="json", exclude={"checkpoint_steps", "arms"}),
            "seed": profile.seed,
            "base": base_sha256,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def lora_config(profile: Profile) -> Any:
    from peft import LoraConfig

    lora = profile.dpo.lora
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        task_type="CAUSAL_LM",
    )


def checkpoint_dir(out_dir: Path) -> Path:
    """Where a training in progress keeps its resumable checkpoints (removed once the adapter is saved)."""
    return out_dir / CHECKPOINTS_DIR


def on_disk(dataset: Dataset, folder: Path) -> Dataset:
    """``dataset`` backed by Arrow files in ``folder`` (written once, then read back).

    Why: TRL caches what it derives from a dataset (the tokenised pairs, and with ``precompute_ref_log_probs`` the
    reference log-probs) beside the dataset's own files, and an in-memory dataset has none, so those caches went to
    a temporary folder that died with the process. A resumed training then recomputed the reference pass over
    every pair (~17 min on idle cores for ``cpu-full``'s 135) before its first step. Kept under the checkpoints,
    they resume too.
    """
    if not (folder / "state.json").is_file():
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)
        dataset.save_to_disk(str(partial))
        partial.rename(folder)
    return datasets.load_from_disk(str(folder))


@contextlib.contextmanager
def dataset_progress(shown: bool) -> Iterator[None]:
    """``datasets``' progress bars off for the block unless ``shown``, and as they were afterwards. TRL runs
    tokenizing and caching maps over the pairs; in papermill or tests their bars would only add noise to the log."""
    before = datasets.is_progress_bar_enabled()
    if not shown:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if before:
            datasets.enable_progress_bars()


def last_checkpoint(out_dir: Path, stamp: str) -> str | None:
    """The newest checkpoint of a killed training of *this* run (same fingerprint), else None. Checkpoints of
    another run (other pairs, settings or base weights) are deleted: resuming them would mix two trainings."""
    from transformers.trainer_utils import get_last_checkpoint

    folder = checkpoint_dir(out_dir)
    marker = folder / "fingerprint"
    if folder.is_dir() and (not marker.is_file() or marker.read_text().strip() != stamp):
        shutil.rmtree(folder)
    if not folder.is_dir():
        folder.mkdir(parents=True)
        marker.write_text(stamp)
        return None
    return get_last_checkpoint(str(folder))


def trainer_config(profile: Profile, out_dir: Path, *, progress: bool, **overrides: Any) -> Any:
    """TRL ``DPOConfig`` from ``profile.dpo`` (``overrides`` replace fields); bf16 only on a GPU with a bf16
    generator."""
    import torch
    from trl import DPOConfig

    dpo = profile.dpo
    # TRL turns activation checkpointing on by default (a second forward per step: slower, and pointless at these
    # sizes). Newer transformers name the switch ``activation_checkpointing`` beside ``gradient_checkpointing``;
    # older 5.x releases (5.17, as GPU images ship it) know only the latter and refuse the former.
    checkpointing = {"gradient_checkpointing": False}
    if "activation_checkpointing" in {f.name for f in dataclasses.fields(DPOConfig)}:
        checkpointing["activation_checkpointing"] = False
    settings = dict(
        output_dir=str(checkpoint_dir(out_dir)),
        beta=dpo.beta,
        learning_rate=dpo.learning_rate,
        num_train_epochs=dpo.epochs,
        max_steps=dpo.max_steps,
        per_device_train_batch_size=dpo.batch_size,
        per_device_eval_batch_size=dpo.batch_size,
        gradient_accumulation_steps=dpo.gradient_accumulation_steps,
        max_length=dpo.max_length,
        precompute_ref_log_probs=dpo.precompute_ref_log_probs,
        **checkpointing,
        disable_dropout=False,
        bf16=profile.generator.dtype == "bfloat16" and torch.cuda.is_available(),
        fp16=False,
        logging_steps=1,
        save_strategy="steps" if dpo.checkpoint_steps else "no",
        save_steps=dpo.checkpoint_steps or 500,
        save_total_limit=1,
        report_to="none",
        seed=profile.seed,
        data_seed=profile.seed,
        disable_tqdm=not progress,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
    )
    return DPOConfig(**{**settings, **overrides})


def prompt_lengths(pairs: Dataset, tokenizer: Any) -> Any:
    """Prompt lengths in tokens (TRL drops a pair whose prompt alone reaches ``max_length``)."""
    import numpy as np

    return np.array([len(ids) for ids in tokenizer(list(pairs["prompt"]), add_special_tokens=False)["input_ids"]])


def train_adapter(
    profile: Profile,
    pairs: Dataset,
    out_dir: Path,
    *,
    loaded: LoadedModel | None = None,
    progress: bool = True,
    extra_log: Mapping[str, Any] | None = None,
    resume_from: str | None = None,
) -> dict[str, Any]:
    """Train one LoRA adapter with DPO on ``pairs`` and save it, with its per-step log, to ``out_dir``.

    ``loaded`` (default: a fresh copy of the profile's generator) is modified in place; never pass a model
    another caller shares. ``resume_from`` is a checkpoint folder of a killed training of the same run. Returns
    the training log that is also written to ``out_dir/training_log.json``.
    """
    from transformers import PrinterCallback
    from trl import DPOTrainer

    if len(pairs) == 0:
        raise ValueError(f"no pairs to train {out_dir.name} on; check dpo.pairs_per_relation and dataset.relations")
    loaded = loaded or fresh_generator(profile)
    too_long = prompt_lengths(pairs, loaded.tokenizer) >= profile.dpo.max_length
    if too_long.all():
        raise ValueError(
            f"every prompt of {out_dir.name} has >= dpo.max_length={profile.dpo.max_length} tokens, so TRL would "
            "drop every pair; raise dpo.max_length or lower dpo.num_demos / dpo.chain_length in the profile"
        )
    train_pairs, _ = hold_out(pairs, profile.dpo.held_out, profile.seed)
    t0 = time.perf_counter()
    with dataset_progress(progress):
        train_set = train_pairs.select_columns(PAIR_COLUMNS)
        if profile.dpo.checkpoint_steps:  # resumable: TRL's derived data (reference log-probs) must resume too
            train_set = on_disk(train_set, checkpoint_dir(out_dir) / "data" / "train")
        trainer = DPOTrainer(
            model=loaded.model,
            ref_model=None,
            args=trainer_config(profile, out_dir, progress=progress),
            train_dataset=train_set,
            processing_class=loaded.tokenizer,
            peft_config=lora_config(profile),
        )
        if not progress:
            trainer.remove_callback(PrinterCallback)
        kept = len(trainer.train_dataset)
        setup_seconds = time.perf_counter() - t0
        output = trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.perf_counter() - t0
    trainer.accelerator.wait_for_everyone()
    steps = trainer.state.global_step
    log = {
        **dict(extra_log or {}),
        "adapter": out_dir.name,
        "base_model": loaded.info.name,
        "base_sha256": loaded.info.sha256,
        "pairs": len(pairs),
        "pairs_trained": kept,
        "pairs_dropped_too_long": len(train_pairs) - kept,
        "steps": steps,
        "resumed_from": Path(resume_from).name if resume_from else None,
        "train_seconds": round(output.metrics.get("train_runtime", seconds), 3),
        "setup_seconds": round(setup_seconds, 3),
        "total_seconds": round(seconds, 3),
        "dpo": profile.dpo.model_dump(mode="json"),
        "history": [
            {"step": row["step"], "epoch": row.get("epoch"), **{k: row[k] for k in LOG_KEYS if k in row}}
            for row in trainer.state.log_history
            if "loss" in row
        ],
    }
    if trainer.accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        trainer.accelerator.unwrap_model(trainer.model).save_pretrained(out_dir)
        shutil.rmtree(checkpoint_dir(out_dir), ignore_errors=True)  # before hashing: not part of the adapter
        log["adapter_sha256"] = hash_model_dir(out_dir)
        write_json(out_dir / LOG_NAME, log)
    trainer.accelerator.wait_for_everyone()
    return log


def evaluate_held_out(profile: Profile, held_pairs: Dataset, out_dir: Path, *, progress: bool = False,
                      loaded: LoadedModel | None = None) -> dict[str, Any]:
    """DPO loss, reward accuracy and reward margin of the adapter *saved* in ``out_dir`` on ``held_pairs`` (the
    ``dpo.held_out`` share of its pairs: whole chains that never trained), one pair per evaluation batch.

    Why a pass of its own: TRL reports an evaluation metric as the mean of per-batch means, which is not the mean
    over pairs when the last batch is short (15 held-out pairs at batch 4 gave a reward accuracy of 0.9375, a value
    no count out of 15 can have). A batch of one makes each batch a pair, so the reported means are means over
    pairs (in one process; with several, TRL gathers one pair per process per step). And it scores the saved
    weights, the ones every later stage loads, with the base model under the disabled adapter as the reference.
    ``loaded`` (default: a fresh copy of the generator) gets the LoRA layers in place, as in training.
    """
    import tempfile

    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import PrinterCallback
    from trl import DPOTrainer

    record: dict[str, Any] = {"pairs": len(held_pairs), "loss": None, "reward_accuracy": None, "reward_margin": None,
                              "adapter_sha256": hash_model_dir(out_dir)}
    if not len(held_pairs):
        return record
    loaded = loaded or fresh_generator(profile)
    held_set = held_pairs.select_columns(PAIR_COLUMNS)
    with dataset_progress(progress), tempfile.TemporaryDirectory(prefix="redpo-dpo-eval-") as scratch:
        args = trainer_config(profile, Path(scratch), progress=progress, output_dir=scratch,
                              per_device_eval_batch_size=1, precompute_ref_log_probs=False)
        # The adapter as training built it (a PeftModel handed to TRL would get a copy of itself as reference),
        # then the saved weights into it.
        trainer = DPOTrainer(model=loaded.model, ref_model=None, args=args, train_dataset=held_set,
                             eval_dataset=held_set, processing_class=loaded.tokenizer,
                             peft_config=lora_config(profile))
        weights = load_file(out_dir / "adapter_model.safetensors")
        unexpected = set_peft_model_state_dict(trainer.model, weights).unexpected_keys
        if unexpected:
            raise ValueError(f"{out_dir} holds weights the profile's LoRA settings do not have: {unexpected[:3]}")
        if not progress:
            trainer.remove_callback(PrinterCallback)
        metrics = trainer.evaluate()
    return {**record, "loss": metrics.get("eval_loss"), "reward_accuracy": metrics.get("eval_rewards/accuracies"),
            "reward_margin": metrics.get("eval_rewards/margins")}


def finished_adapter_log(out_dir: Path, stamp: str) -> dict[str, Any] | None:
    """The training log of the adapter saved in ``out_dir`` if it was trained under fingerprint ``stamp``, else None.

    A finished adapter's folder may still hold checkpoints of its training (a session that stopped mid-training
    committed them, and the commit that finished it did not remove them); their weight files would enter the
    adapter's hash and miss every cached call it answered, so they are removed here.
    """
    log_file = out_dir / LOG_NAME
    log = read_json(log_file) if log_file.is_file() else {}
    if log.get("fingerprint") != stamp or not (out_dir / "adapter_config.json").is_file():
        return None
    shutil.rmtree(checkpoint_dir(out_dir), ignore_errors=True)
    return log


def ensure_adapter(profile: Profile, results: ResultsDir, half: str, *, progress: bool = True) -> dict[str, Any]:
    """Adapter ``half`` trained on ``dpo/pairs_<half>.jsonl``: reused when its fingerprint matches, else trained."""
    out_dir = adapter_dir(results, half)
    models = replay_models(results)
    if models is not None:  # a replaying folder: the committed run's training log, no weights, no training
        models.check_settings(results, identity_settings(profile))
        record = models.adapter(results, half)
        if fingerprint(profile, pairs_path(results, half), record.base_sha256) != record.log.get("fingerprint"):
            raise miss(results, f"DPO adapter {half!r} trained on these pairs and dpo settings")
        return {**record.log, "reused": True, "replayed": True}
    loaded = fresh_generator(profile)
    stamp = fingerprint(profile, pairs_path(results, half), loaded.info.sha256)
    log_file = out_dir / LOG_NAME
    pairs = load_pairs(results, half)
    log = finished_adapter_log(out_dir, stamp)
    reused = log is not None
    if log is None:
        resume = last_checkpoint(out_dir, stamp) if profile.dpo.checkpoint_steps else None
        log = train_adapter(profile, pairs, out_dir, loaded=loaded, progress=progress,
                            extra_log={"fingerprint": stamp}, resume_from=resume)
    if log.get("held_out", {}).get("adapter_sha256") != log["adapter_sha256"]:  # measured on these weights only
        held_pairs = hold_out(pairs, profile.dpo.held_out, profile.seed)[1]
        untouched = loaded if reused else None  # training changed it in place: the evaluation loads a fresh copy
        log["held_out"] = evaluate_held_out(profile, held_pairs, out_dir, progress=progress, loaded=untouched)
        from accelerate import PartialState

        if PartialState().is_main_process:
            write_json(log_file, log)
    return {**log, "reused": reused}


def training_history(logs: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Per-step loss, reward margin and reward accuracy of every adapter, long format for seaborn."""
    rows = [
        {"adapter": name, "step": row["step"], "metric": key, "value": row[key]}
        for name, log in logs.items()
        for row in log["history"]
        for key in ("loss", "rewards/margins", "rewards/accuracies")
        if key in row
    ]
    return pd.DataFrame(rows, columns=["adapter", "step", "metric", "value"])


def steps_run(log: Mapping[str, Any]) -> int:
    """Optimizer steps this training log's process ran: all of them, less those a resumed checkpoint held
    (``checkpoint-<step>``, the Trainer's naming). ``train_seconds`` covers only these."""
    resumed = log.get("resumed_from")
    return log["steps"] - (int(str(resumed).rsplit("-", 1)[1]) if resumed else 0)


def seconds_per_step(log: Mapping[str, Any]) -> float | None:
    """Training seconds per optimizer step of the process that wrote ``log`` (None if it ran none)."""
    ran = steps_run(log)
    return round(log["train_seconds"] / ran, 3) if ran > 0 else None


def training_summary(logs: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """One row per adapter: pairs, steps, time, first/last training loss, and reward accuracy, margin and loss on
    the held-out pairs (the last training batch's accuracy is not a measurement: it is one batch)."""
    rows = []
    for name, log in logs.items():
        hist = log["history"]
        rows.append({
            "adapter": name,
            "pairs": log["pairs_trained"],
            "steps": log["steps"],
            "seconds": log["total_seconds"],
            "seconds_per_step": seconds_per_step(log),
            "first_loss": hist[0]["loss"] if hist else None,
            "last_loss": hist[-1]["loss"] if hist else None,
            "held_out_pairs": log.get("held_out", {}).get("pairs"),
            "held_out_reward_accuracy": log.get("held_out", {}).get("reward_accuracy"),
            "held_out_reward_margin": log.get("held_out", {}).get("reward_margin"),
            "held_out_loss": log.get("held_out", {}).get("loss"),
            "reused": log.get("reused", False),
            "replayed": log.get("replayed", False),
        })
    return pd.DataFrame(rows)


def save_dpo_history(results: ResultsDir, history: pd.DataFrame) -> Path:
    """``metrics/dpo_history.json``: per-step adapter training curves, so the figure needs no adapter files."""
    return write_json(results.metrics / "dpo_history.json", history.to_dict(orient="records"))


def save_dpo_metrics(
    results: ResultsDir, pairs: DPOPairs, leakage: Mapping[str, Any], logs: Mapping[str, Mapping[str, Any]]
) -> Path:
    """``metrics/dpo.json``: pair counts per half and kind, the leakage verdict and each adapter's training
    summary (steps, seconds per step, final loss and reward accuracy), for the README and the claims report."""
    frame = pairs.frame()
    return write_json(results.metrics / "dpo.json", {
        "pairs": {h: len(ds) for h, ds in pairs.datasets.items()},
        "pairs_by_kind": {h: g["kind"].value_counts().to_dict() for h, g in frame.groupby("half")},
        "halves": pairs.halves.to_json(),
        "skipped_relations": pairs.skipped,
        "leakage_ok": bool(leakage["ok"]),
        "training": training_summary(logs).to_dict(orient="records"),
    })


# ---- command line (also under `accelerate launch`) ----------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """``python -m redpo.dpo.train --profile P --build-pairs`` then
    ``accelerate launch -m redpo.dpo.train --profile P --half A`` (and ``--half B``)."""
    parser = argparse.ArgumentParser(prog="redpo.dpo.train", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("-p", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--results-dir", default="")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--half", choices=HALVES, help="train this adapter on dpo/pairs_<half>.jsonl")
    group.add_argument("--build-pairs", action="store_true", help="build and check the pairs of both halves")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        profile = load_profile(args.profile, dict(parse_override(o) for o in args.overrides))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    results = ResultsDir(profile, root=Path(args.results_dir) if args.results_dir else None)
    if args.build_pairs:
        pairs, leakage = build_and_save_pairs(profile, results)
        sizes = {h: len(ds) for h, ds in pairs.datasets.items()}
        print(f"pairs {sizes}, leakage ok: {leakage['ok']} -> {results.dpo}")
        return 0 if leakage["ok"] else 1
    log = ensure_adapter(profile, results, args.half, progress=not args.no_progress)
    print(
        f"adapter {args.half}: {log['steps']} steps, {seconds_per_step(log)} s/step, held-out reward accuracy "
        f"{log['held_out']['reward_accuracy']}"
        f"{' (reused)' if log['reused'] else ''} -> {adapter_dir(results, args.half)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
