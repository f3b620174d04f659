"""The DPO half of ``python -m redpo bench training``: what a DPO step costs, and whether bf16 trains the same.

- **Step timing** (:func:`time_dpo_steps`): ``DPO_TIMED_STEPS`` optimizer steps of the profile's DPO settings
  (batch, LoRA, ``max_length``) on the first real pairs of half A, each step timed by a callback, so neither the
  model load nor the reference log-prob pass is counted. ``padding="longest"`` is what TRL does (its collator pads
  each batch to its longest pair); ``"fixed"`` pads every batch to ``dpo.max_length``, the cost the first edition's
  "batch 4 x 768 tokens" would have had. The per-step losses are kept: fp32 and bf16 start from the same weights
  on the same batches, so their first losses should agree to bf16's rounding.
- **Probe equivalence** (:func:`probe_equivalence`): a short probe adapter (the ``bench lora`` probe's settings)
  trained in each precision on the same pairs, and each one's held-out reward accuracy on half A's held-out
  chains (``redpo.run.bench_training`` puts the confidence intervals on them: statistics live above this layer).
"""

from __future__ import annotations

import gc
import resource
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from datasets import Dataset

from redpo.config import Profile, derive
from redpo.dpo.base import fresh_generator
from redpo.dpo.evaluate import evaluate_held_out
from redpo.dpo.pairs import hold_out
from redpo.dpo.train import PAIR_COLUMNS, dataset_progress, lora_config, train_adapter, trainer_config
from redpo.models.precision import Precision

DPO_TIMED_STEPS = 2
"""Steps timed per setting (the first pays one-off allocations; both are reported)."""
PROBE = {"dpo.max_steps": 4, "dpo.batch_size": 2, "dpo.learning_rate": 5e-4, "dpo.checkpoint_steps": 0,
         "dpo.held_out": 0.0}
"""The probe adapter: the ``bench lora`` probe's settings, a learning rate high enough to move the weights."""
PROBE_PAIRS = 8


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _step_clock() -> Any:
    """A Trainer callback that records each optimizer step's wall and CPU seconds."""
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):  # type: ignore[misc]
        def __init__(self) -> None:
            self.steps: list[dict[str, float]] = []
            self._start = (0.0, 0.0)

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._start = (time.perf_counter(), _cpu())

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            wall, cpu = self._start
            self.steps.append({"seconds": round(time.perf_counter() - wall, 2), "cpu_seconds": round(_cpu() - cpu, 2)})

    return StepClock()


def time_dpo_steps(profile: Profile, pairs: Dataset, model: str, precision: Precision, padding: str, *,
                   steps: int = DPO_TIMED_STEPS) -> dict[str, Any]:
    """``steps`` timed DPO steps of ``model`` on the first ``steps x dpo.batch_size`` of ``pairs``."""
    from transformers import PrinterCallback
    from trl import DPOTrainer

    other = {"generator.model": model, "generator.fit.steps": 0} if model != profile.generator.model else {}
    prof = derive(profile, {**other, "dpo.precision": precision, "dpo.max_steps": steps, "dpo.checkpoint_steps": 0})
    subset = pairs.select(range(min(len(pairs), steps * prof.dpo.batch_size))).select_columns(PAIR_COLUMNS)
    loaded = fresh_generator(prof)
    clock = _step_clock()
    shapes: list[int] = []  # the padded length of every forward pass (reference pass and training)

    def record(_module: Any, args: Any, kwargs: Any) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None and getattr(ids, "ndim", 0) == 2:
            shapes.append(int(ids.shape[1]))

    loaded.model.register_forward_pre_hook(record, with_kwargs=True)
    fixed = {"pad_to_multiple_of": prof.dpo.max_length} if padding == "fixed" else {"pad_to_multiple_of": None}
    with tempfile.TemporaryDirectory(prefix="redpo-bench-dpo-") as scratch, dataset_progress(False):
        args = trainer_config(prof, Path(scratch), progress=False, output_dir=scratch, **fixed)
        trainer = DPOTrainer(model=loaded.model, ref_model=None, args=args, train_dataset=subset,
                             processing_class=loaded.tokenizer, peft_config=lora_config(prof.dpo.lora),
                             callbacks=[clock])
        trainer.remove_callback(PrinterCallback)
        trainer.train()
        history = [row for row in trainer.state.log_history if "loss" in row]
    lengths = [len(loaded.tokenizer(p + max(c, r, key=len))["input_ids"])
               for p, c, r in zip(subset["prompt"], subset["chosen"], subset["rejected"], strict=True)]
    del trainer, loaded
    gc.collect()  # the Trainer and its callbacks hold the model in cycles: free it before the next setting loads one
    return {"model": model, "precision": precision, "padding": padding, "batch_size": prof.dpo.batch_size,
            "max_length": prof.dpo.max_length, "longest_pair_tokens": max(lengths),
            "mean_pair_tokens": round(sum(lengths) / len(lengths), 1), "padded_lengths": sorted(set(shapes)),
            "steps": clock.steps,
            "losses": [round(float(row["loss"]), 5) for row in history]}


def probe_equivalence(profile: Profile, pairs: Dataset, *,
                      precisions: Sequence[Precision] = ("fp32", "bf16")) -> dict[str, Any]:
    """A probe adapter trained in each precision on the same pairs; each one's held-out reward accuracy."""
    train_pairs, held = hold_out(pairs, profile.dpo.held_out or 0.1, profile.seed)
    out: dict[str, Any] = {"train_pairs": PROBE_PAIRS, "held_out_pairs": len(held), "probe": PROBE, "adapters": {}}
    for precision in precisions:
        prof = derive(profile, {**PROBE, "dpo.precision": precision})
        with tempfile.TemporaryDirectory(prefix="redpo-bench-probe-") as scratch:
            folder = Path(scratch) / "probe"
            start = time.perf_counter()
            log = train_adapter(prof, train_pairs.select(range(min(PROBE_PAIRS, len(train_pairs)))), folder,
                                progress=False)
            held_out = evaluate_held_out(prof, held, folder)
        accuracy = held_out["reward_accuracy"]
        out["adapters"][precision] = {
            "seconds": round(time.perf_counter() - start, 1), "losses": [row["loss"] for row in log["history"]],
            "reward_accuracy": accuracy, "reward_margin": held_out["reward_margin"], "loss": held_out["loss"],
        }
    return out
