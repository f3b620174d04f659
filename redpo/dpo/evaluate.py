"""Held-out evaluation of a saved DPO adapter: DPO loss, reward accuracy and reward margin on pairs it never saw."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datasets import Dataset

from redpo.config import Profile
from redpo.core.memory import peak_window
from redpo.dpo.base import fresh_generator
from redpo.dpo.train import PAIR_COLUMNS, completion_only_scoring, dataset_progress, dpo_trainer, trainer_config
from redpo.models.packaged import hash_model_dir
from redpo.models.registry import LoadedModel


def evaluate_held_out(profile: Profile, held_pairs: Dataset, out_dir: Path, *, progress: bool = False,
                      loaded: LoadedModel | None = None) -> dict[str, Any]:
    """DPO loss, reward accuracy and reward margin of the adapter *saved* in ``out_dir`` on ``held_pairs`` (the
    ``dpo.held_out`` share of its pairs: whole chains that never trained), one pair per evaluation batch.

    Why a pass of its own: TRL reports an evaluation metric as the mean of per-batch means, which is not the mean
    over pairs when the last batch is short (15 held-out pairs at batch 4 can report a reward accuracy of 0.9375,
    a value no count out of 15 can have). A batch of one makes each batch a pair, so the reported means are means
    over pairs (in one process; with several, TRL gathers one pair per process per step). And it scores the saved
    weights, the ones every later stage loads, with the base model under the disabled adapter as the reference.
    ``loaded`` (default: a fresh copy of the generator) gets the LoRA layers in place, as in training.
    """
    import tempfile

    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import PrinterCallback

    record: dict[str, Any] = {"pairs": len(held_pairs), "loss": None, "reward_accuracy": None, "reward_margin": None,
                              "adapter_sha256": hash_model_dir(out_dir)}
    if not len(held_pairs):
        return record
    loaded = loaded or fresh_generator(profile)
    held_set = held_pairs.select_columns(PAIR_COLUMNS)
    with (dataset_progress(progress), completion_only_scoring(), peak_window() as peak,
          tempfile.TemporaryDirectory(prefix="redpo-dpo-eval-") as scratch):
        args = trainer_config(profile, Path(scratch), progress=progress, output_dir=scratch,
                              per_device_eval_batch_size=1, precompute_ref_log_probs=False)
        # The adapter as training built it (a PeftModel handed to TRL would get a copy of itself as reference),
        # then the saved weights into it.
        trainer = dpo_trainer(profile, loaded, args, held_set, eval_dataset=held_set)
        weights = load_file(out_dir / "adapter_model.safetensors")
        unexpected = set_peft_model_state_dict(trainer.model, weights).unexpected_keys
        if unexpected:
            raise ValueError(f"{out_dir} holds weights the profile's LoRA settings do not have: {unexpected[:3]}")
        if not progress:
            trainer.remove_callback(PrinterCallback)
        metrics = trainer.evaluate()
    return {**record, "loss": metrics.get("eval_loss"), "reward_accuracy": metrics.get("eval_rewards/accuracies"),
            "reward_margin": metrics.get("eval_rewards/margins"), "peak_rss_gb": peak.to_json()["peak_rss_gb"]}
