"""DPO training of one LoRA adapter with TRL's ``DPOTrainer`` and PEFT: the TRL side and nothing else.

- The reference model is the base model with the adapter disabled (``ref_model=None`` on a PEFT model), so no
  second copy is loaded; ``dpo.precompute_ref_log_probs`` computes its log-probs once, before training.
- Every knob comes from ``profile.dpo``; no activation checkpointing unless the memory plan needs it (it trades
  time for memory, and CPU time is the scarce resource here); LoRA dropout stays as configured (TRL's
  ``disable_dropout`` is off, and the base models have no dropout of their own).
- A killed training resumes from its last checkpoint (:func:`last_checkpoint`), TRL's derived data included
  (:func:`on_disk`). Which adapter to train or reuse is decided in :mod:`redpo.dpo.adapters`.
- Memory is planned before training (:mod:`redpo.dpo.memory`): the micro-batch and gradient accumulation come from
  an estimate for the longest pairs, prompts are truncated from the left to ``dpo.max_prompt_length``
  (:func:`dpo_trainer`), and the LM head scores only the completion tokens (:func:`completion_only_scoring`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import shutil
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import datasets
from datasets import Dataset

from redpo.config import LoraConfigSection, Profile
from redpo.core.io import write_json
from redpo.core.manifest import CHECKPOINTS_DIR
from redpo.core.memory import peak_window
from redpo.dpo.base import fresh_generator
from redpo.dpo.memory import MemoryPlan, pair_lengths, plan_for
from redpo.dpo.pairs import hold_out
from redpo.models.packaged import hash_model_dir
from redpo.models.precision import check_precision, trainer_precision
from redpo.models.registry import LoadedModel

LOG_NAME = "training_log.json"
PAIR_COLUMNS = ["prompt", "chosen", "rejected"]
"""The columns TRL reads; every other column of a pair is provenance."""
LOG_KEYS = ("loss", "rewards/margins", "rewards/accuracies", "rewards/chosen", "rewards/rejected", "learning_rate")


def lora_config(lora: LoraConfigSection) -> Any:
    """PEFT's ``LoraConfig`` from the profile's ``dpo.lora`` section."""
    from peft import LoraConfig

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
    reference log-probs) beside the dataset's own files, and an in-memory dataset has none, so those caches would
    go to a temporary folder that dies with the process, and a resumed training would recompute the reference pass
    over every pair (seconds per pair on a CPU, many minutes in all) before its first step. Kept under the
    checkpoints, they resume too.
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


def trainer_config(profile: Profile, out_dir: Path, *, progress: bool, checkpointing: bool = False,
                   **overrides: Any) -> Any:
    """TRL ``DPOConfig`` from ``profile.dpo`` (``overrides`` replace fields); bf16 autocast with ``dpo.precision:
    bf16`` (checked for native bf16 first), or on a GPU with a bf16 generator; activation checkpointing only when
    the memory plan asks for it."""
    import torch
    from trl import DPOConfig

    dpo = profile.dpo
    check_precision(profile, "dpo.precision")
    # TRL turns activation checkpointing on by default (a second forward per step: slower, and pointless unless
    # memory is short). Newer transformers name the switch ``activation_checkpointing`` beside
    # ``gradient_checkpointing``; older 5.x releases (5.17, as GPU images ship it) know only the latter.
    switches = {"gradient_checkpointing": checkpointing}
    if "activation_checkpointing" in {f.name for f in dataclasses.fields(DPOConfig)}:
        switches["activation_checkpointing"] = checkpointing
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
        **switches,
        disable_dropout=False,
        **trainer_precision("bf16" if dpo.precision == "bf16" or (
            profile.generator.dtype == "bfloat16" and torch.cuda.is_available()) else "fp32"),
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


def token_lengths(pairs: Dataset, tokenizer: Any) -> tuple[list[int], list[int]]:
    """Per pair, the prompt's tokens and the longer completion's (EOS included), tokenized as TRL does: the
    completion is what ``prompt + completion`` adds to the prompt."""
    prompts = [len(ids) for ids in tokenizer(list(pairs["prompt"]))["input_ids"]]
    eos = tokenizer.eos_token or ""
    longest = [0] * len(prompts)
    for side in ("chosen", "rejected"):
        texts = [p + c + ("" if c.endswith(eos) else eos) for p, c in zip(pairs["prompt"], pairs[side], strict=True)]
        for i, ids in enumerate(tokenizer(texts)["input_ids"]):
            longest[i] = max(longest[i], len(ids) - prompts[i])
    return prompts, longest


def _keep_prompt_end(example: dict[str, Any], keep: int) -> dict[str, Any]:
    return {"prompt_ids": example["prompt_ids"][-keep:]}


@functools.cache
def _trainer_class() -> type:
    """TRL's ``DPOTrainer`` with left truncation of the tokenized prompts (built on first use: TRL loads slowly)."""
    from trl import DPOTrainer

    class PromptTruncatingDPOTrainer(DPOTrainer):  # type: ignore[misc]
        """TRL 1.x has no ``max_prompt_length``: it cuts ``prompt + completion`` at ``max_length`` from the end,
        which eats the completion, and drops a pair whose prompt alone fills ``max_length``. Here the tokenized
        prompt keeps its last ``max_prompt_length`` tokens before TRL's length filter runs (the validated profile
        leaves room for a completion, so none is dropped)."""

        def __init__(self, *args: Any, max_prompt_length: int | None = None, **kwargs: Any) -> None:
            self.max_prompt_length = max_prompt_length  # read by _prepare_dataset, which TRL's __init__ calls
            super().__init__(*args, **kwargs)

        def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, dataset_name: str) -> Any:
            keep = self.max_prompt_length
            if keep is None:
                return super()._prepare_dataset(dataset, processing_class, args, dataset_name)
            unfiltered = copy.copy(args)
            unfiltered.max_length = None  # TRL would drop long prompts before they are truncated
            dataset = super()._prepare_dataset(dataset, processing_class, unfiltered, dataset_name)
            return dataset.map(_keep_prompt_end, fn_kwargs={"keep": keep},
                               desc=f"Truncating {dataset_name} prompts to {keep} tokens")

    return PromptTruncatingDPOTrainer


@contextlib.contextmanager
def completion_only_scoring() -> Iterator[None]:
    """Let TRL's fused LM head score only the completion tokens on every device, as it already does on CUDA.

    On a device without Triton, TRL projects *every* position through the LM head (keeping tile shapes fixed, which
    only compiling backends need) and masks the prompt afterwards: for DPO prompts of ~500 tokens and completions of
    ~50, nine tenths of the head's work (a 151,936-word vocabulary on Qwen) is thrown away, in the reference pass, the
    forward and the backward. The switch is TRL's private ``_use_triton`` as ``trl.trainer.utils`` sees it; the
    kernels keep their own. Where a TRL release no longer has it, nothing is patched and every position is scored
    (slower, same values); ``tests/test_dpo_memory.py`` notices.
    """
    try:
        from trl.trainer import utils as trl_utils
    except ImportError:
        trl_utils = None
    original = getattr(trl_utils, "_use_triton", None)
    if original is None:
        yield
        return
    trl_utils._use_triton = lambda device: True
    try:
        yield
    finally:
        trl_utils._use_triton = original


def dpo_trainer(profile: Profile, loaded: LoadedModel, args: Any, train_set: Dataset, **kwargs: Any) -> Any:
    """TRL's ``DPOTrainer`` on ``loaded`` with the profile's LoRA, reference = the disabled adapter, prompts truncated
    to ``dpo.max_prompt_length``. Build and run it inside :func:`completion_only_scoring` (the reference pass runs
    while it is built)."""
    return _trainer_class()(model=loaded.model, ref_model=None, args=args, train_dataset=train_set,
                            processing_class=loaded.tokenizer, peft_config=lora_config(profile.dpo.lora),
                            max_prompt_length=profile.dpo.max_prompt_length, **kwargs)


def training_plan(profile: Profile, train_pairs: Dataset, loaded: LoadedModel, *, what: str,
                  padded_to: int | None = None) -> MemoryPlan:
    """The memory plan for training ``loaded`` on ``train_pairs`` (the pairs a training steps through, the held-out
    ones already left out): sized for their longest pair as TRL truncates it, or for ``padded_to`` tokens when
    every batch is padded to one length. Planned on every trained pair, not on a sample of them, because the
    longest pair decides what a step needs at its peak."""
    dpo = profile.dpo
    prompts, completions = token_lengths(train_pairs, loaded.tokenizer)
    if dpo.max_prompt_length is None and min(prompts) >= dpo.max_length:
        raise ValueError(
            f"every prompt of {what} has >= dpo.max_length={dpo.max_length} tokens, so TRL would drop every "
            "pair; set dpo.max_prompt_length, raise dpo.max_length or lower dpo.num_demos / dpo.chain_length"
        )
    lengths = pair_lengths(prompts, completions, dpo)
    if padded_to is not None:
        lengths = dataclasses.replace(lengths, longest=padded_to)
    return plan_for(dpo, lengths, loaded.model, what=what)


def planned_trainer(profile: Profile, loaded: LoadedModel, train_set: Dataset, plan: MemoryPlan, out_dir: Path, *,
                    progress: bool, callbacks: list[Any] | None = None, **overrides: Any) -> Any:
    """:func:`dpo_trainer` with the plan's micro-batch, accumulation and activation checkpointing: the one setup that
    training and ``bench training`` both step through, so a timed step is a trained step. ``overrides`` replace
    ``DPOConfig`` fields (:func:`trainer_config`). Build it inside :func:`completion_only_scoring`."""
    args = trainer_config(profile, out_dir, progress=progress, checkpointing=plan.checkpointing,
                          per_device_train_batch_size=plan.micro_batch,
                          gradient_accumulation_steps=plan.accumulation, **overrides)
    return dpo_trainer(profile, loaded, args, train_set, **({"callbacks": callbacks} if callbacks else {}))


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

    if len(pairs) == 0:
        raise ValueError(f"no pairs to train {out_dir.name} on; check dpo.pairs_per_relation and dataset.relations")
    dpo = profile.dpo
    loaded = loaded or fresh_generator(profile)
    train_pairs, _ = hold_out(pairs, dpo.held_out, profile.seed)
    plan = training_plan(profile, train_pairs, loaded, what=f"DPO adapter {out_dir.name}")
    t0 = time.perf_counter()
    with dataset_progress(progress), completion_only_scoring(), peak_window() as peak:
        train_set = train_pairs.select_columns(PAIR_COLUMNS)
        if dpo.checkpoint_steps:  # resumable: TRL's derived data (reference log-probs) must resume too
            train_set = on_disk(train_set, checkpoint_dir(out_dir) / "data" / "train")
        trainer = planned_trainer(profile, loaded, train_set, plan, out_dir, progress=progress)
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
        "memory": {**plan.to_json(), **peak.to_json()},
        "dpo": dpo.model_dump(mode="json"),
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
