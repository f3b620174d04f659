"""The DPO half of ``python -m redpo bench training``: what a DPO step costs, and whether bf16 trains the same.

- **Step timing** (:func:`time_dpo_steps`): ``DPO_TIMED_STEPS`` optimizer steps of the profile's DPO settings
  (batch, LoRA, ``max_length``) on the first real pairs of half A, each step timed by a callback, so neither the
  model load nor the reference log-prob pass is counted. Two steps can be timed (:data:`PATHS`): the step training
  runs now, with its memory plan (a micro-batch that fits, accumulation making up the batch) and its LM head
  scoring only the completion, and the first edition's step, the profile's batch unplanned with every position
  scored. A model too large for the first edition's step on this machine (the 1.5B generator) is timed on the
  training's path only. ``padding="longest"`` is what TRL does (its collator pads each batch to its longest pair);
  ``"fixed"`` pads every batch to ``dpo.max_length``, the cost the first edition's "batch 4 x 768 tokens" would have
  had. The per-step losses are kept: fp32 and bf16 start from the same weights on the same batches, so their first
  losses should agree to bf16's rounding.
- **Probe equivalence** (:func:`probe_equivalence`): a short probe adapter (the ``bench lora`` probe's settings)
  trained in each precision on the same pairs, each one's held-out reward accuracy on half A's held-out chains,
  and the samples each one writes (:func:`probe_samples`) for ``redpo.run.bench_training`` to give the oracle
  (which this layer may not import) and to put the confidence intervals on (statistics live above this layer).
"""

from __future__ import annotations

import contextlib
import gc
import resource
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from datasets import Dataset

from redpo.config import Profile, derive
from redpo.core.io import ResultsDir
from redpo.core.memory import GB, lifetime_peak
from redpo.data.splits import generation_splits, profile_schema, write_profile_kshots
from redpo.dpo.base import base_model_name, fresh_generator
from redpo.dpo.evaluate import evaluate_held_out
from redpo.dpo.generate import adapter_generator
from redpo.dpo.halves import HALVES, load_halves
from redpo.dpo.memory import MemoryPlan, pair_lengths
from redpo.dpo.pairs import hold_out
from redpo.dpo.train import (
    PAIR_COLUMNS,
    completion_only_scoring,
    dataset_progress,
    planned_trainer,
    token_lengths,
    train_adapter,
    training_plan,
)
from redpo.generation.arms import kshot_by_relation
from redpo.generation.loops import generate_arm
from redpo.generation.store import ArmResult
from redpo.models.load import clear_model_cache
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


PATHS = ("training", "first edition")
"""The step timed: ``training`` is what :func:`redpo.dpo.train.train_adapter` runs now (the memory plan's
micro-batch, accumulation and checkpointing, the LM head scoring only the completion); ``first edition`` is what
the first ``cpu-full`` edition ran (the profile's batch unplanned, every position scored)."""


def time_dpo_steps(profile: Profile, pairs: Dataset, model: str, precision: Precision, padding: str, *,
                   path: str = "training", steps: int = DPO_TIMED_STEPS) -> dict[str, Any]:
    """``steps`` timed DPO steps of ``model`` on the first ``steps x dpo.batch_size`` of ``pairs``, on ``path``
    (:data:`PATHS`). The training path plans its micro-batch for the padded length: with ``fixed`` padding every
    pair is ``dpo.max_length`` tokens long. ``peak_rss_gb`` is the process's lifetime peak, the model's load
    included: time one setting per process for it to be that setting's."""
    from transformers import PrinterCallback

    if path not in PATHS:
        raise ValueError(f"unknown DPO step path {path!r}; use one of {PATHS}")
    other = {"generator.model": model, "generator.fit.steps": 0} if model != profile.generator.model else {}
    first_edition = {"dpo.max_prompt_length": None} if path == "first edition" else {}  # it truncated no prompt
    prof = derive(profile, {**other, **first_edition, "dpo.precision": precision, "dpo.max_steps": steps,
                            "dpo.checkpoint_steps": 0})
    dpo = prof.dpo
    per_step = dpo.batch_size * dpo.gradient_accumulation_steps
    subset = pairs.select(range(min(len(pairs), steps * per_step))).select_columns(PAIR_COLUMNS)
    loaded = fresh_generator(prof)
    lengths = pair_lengths(*token_lengths(subset, loaded.tokenizer), dpo)
    if path == "training":  # planned as train_adapter plans: on every pair it trains, not only on the timed ones
        plan = training_plan(prof, hold_out(pairs, dpo.held_out, prof.seed)[0], loaded,
                             what=f"the DPO step of {model}",
                             padded_to=dpo.max_length if padding == "fixed" else None)
    else:
        plan = MemoryPlan.unplanned(dpo, lengths)
    clock = _step_clock()
    shapes: list[int] = []  # the padded length of every forward pass (reference pass and training)

    def record(_module: Any, args: Any, kwargs: Any) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None and getattr(ids, "ndim", 0) == 2:
            shapes.append(int(ids.shape[1]))

    loaded.model.register_forward_pre_hook(record, with_kwargs=True)
    fixed = {"pad_to_multiple_of": dpo.max_length if padding == "fixed" else None}
    scoring = completion_only_scoring() if path == "training" else contextlib.nullcontext()
    with tempfile.TemporaryDirectory(prefix="redpo-bench-dpo-") as scratch, dataset_progress(False), scoring:
        trainer = planned_trainer(prof, loaded, subset, plan, Path(scratch), progress=False, callbacks=[clock],
                                  output_dir=scratch, **fixed)
        trainer.remove_callback(PrinterCallback)
        trainer.train()
        history = [row for row in trainer.state.log_history if "loss" in row]
    del trainer, loaded
    gc.collect()  # the Trainer and its callbacks hold the model in cycles: free it before the next setting loads one
    planned = plan.to_json() if path == "training" else {  # the first edition's step was never planned
        "micro_batch": plan.micro_batch, "accumulation": plan.accumulation, "checkpointing": False, "planned": False}
    return {"model": model, "path": path, "peak_rss_gb": round(lifetime_peak() / GB, 2), "precision": precision,
            "padding": padding, "batch_size": dpo.batch_size,
            "plan": planned, "max_length": dpo.max_length, "max_prompt_length": dpo.max_prompt_length,
            "longest_pair_tokens": lengths.longest,
            "mean_pair_tokens": lengths.mean,
            "padded_lengths": sorted(set(shapes)), "steps": clock.steps,
            "losses": [round(float(row["loss"]), 5) for row in history]}


def step_name(run: Mapping[str, Any]) -> str:
    """The workload a timed step belongs to: the model, the path and, on the training path, the memory plan (a
    different plan is a different step, not a spread of one). The plan depends on the memory free when the step
    was timed, so a timing repeated on a busier machine may start a workload of its own."""
    if run.get("path", "first edition") == "first edition":
        return f"{run['model']}, first edition's step (batch {run['batch_size']} unplanned, every position scored)"
    plan = run["plan"]
    ckpt = ", activation checkpointing" if plan["checkpointing"] else ""
    return f"{run['model']}, training's step (micro-batch {plan['micro_batch']} x {plan['accumulation']}{ckpt})"


PROBE_ARM = "aao"
"""The arm the probe adapters write their samples with: one call asks for K samples, so a relation costs one to
``generation.aao_max_calls`` calls, where OBO would cost K or more."""
PROBE_SPLITS = 3
"""Generation splits the probes write for: one call's samples are alike, so the unit the comparison resamples is a
relation on a split, and one split's 7-9 relations are too few of them."""


PRECISION_PROBES: dict[str, dict[str, Any]] = {"fp32": {"dpo.precision": "fp32"}, "bf16": {"dpo.precision": "bf16"}}
"""``bench training``'s ``dpo_equivalence``: one probe per precision, otherwise alike."""


def seed_probes(profile: Profile) -> dict[str, dict[str, Any]]:
    """Two fp32 probes that differ in the training seed alone (the LoRA's initialisation, the pairs' order)."""
    return {"fp32": {"dpo.precision": "fp32"},
            f"fp32, seed {profile.seed + 1}": {"dpo.precision": "fp32", "seed": profile.seed + 1}}


def probe_equivalence(profile: Profile, pairs: Dataset, *, results: ResultsDir | None = None,
                      probes: Mapping[str, Mapping[str, Any]] = PRECISION_PROBES) -> dict[str, Any]:
    """A probe adapter for each of ``probes`` (name -> profile overrides on top of :data:`PROBE`) trained on the
    same pairs; each one's held-out reward accuracy and, given the run's ``results`` (its K-shot splits and
    relation halves), the samples each one writes (``"samples"``: name -> split ->
    :class:`~redpo.generation.store.ArmResult`, not JSON: the caller judges and summarises them)."""
    train_pairs, held = hold_out(pairs, profile.dpo.held_out or 0.1, profile.seed)
    out: dict[str, Any] = {"train_pairs": PROBE_PAIRS, "held_out_pairs": len(held), "probe": PROBE, "adapters": {},
                           "probes": {name: dict(changes) for name, changes in probes.items()}}
    with tempfile.TemporaryDirectory(prefix="redpo-bench-probe-") as scratch:
        folders = {}
        for i, (name, changes) in enumerate(probes.items()):
            prof = derive(profile, {**PROBE, **changes})
            folders[name] = folder = Path(scratch) / f"probe-{i}"
            start = time.perf_counter()
            log = train_adapter(prof, train_pairs.select(range(min(PROBE_PAIRS, len(train_pairs)))), folder,
                                progress=False)
            held_out = evaluate_held_out(prof, held, folder)
            accuracy = held_out["reward_accuracy"]
            out["adapters"][name] = {
                "seconds": round(time.perf_counter() - start, 1), "losses": [row["loss"] for row in log["history"]],
                "reward_accuracy": accuracy, "reward_margin": held_out["reward_margin"], "loss": held_out["loss"],
            }
        if results is not None:
            out["samples"] = probe_samples(profile, results, folders, Path(scratch) / "results")
    return out


def probe_samples(profile: Profile, results: ResultsDir, folders: Mapping[str, Path], scratch: Path
                  ) -> dict[str, dict[tuple[int, int], ArmResult]]:
    """What each adapter of ``folders`` (name -> PEFT folder, all trained on half A's pairs) writes with
    :data:`PROBE_ARM` for the relations an adapter of half A generates for, on each of the first
    :data:`PROBE_SPLITS` generation splits (name -> split -> samples). Its K-shot splits, server log, model records
    and calls stay in ``scratch``: a probe is no part of the run it reads, and needs nothing of it but the relation
    halves."""
    schema = profile_schema(profile)
    wanted = set(load_halves(results).generate_relations(HALVES[0]))
    probe_results = ResultsDir(profile, root=scratch)
    write_profile_kshots(profile, probe_results.kshot)  # KnowPrompt's seeded draw: the run's own splits, which a
    # committed run does not carry (they are data)
    pools = {split: {rel: pool for rel, pool in kshot_by_relation(profile, probe_results, *split, schema).items()
                     if rel in wanted}
             for split in generation_splits(profile)[:PROBE_SPLITS]}
    out: dict[str, dict[tuple[int, int], ArmResult]] = {}
    for i, name in enumerate(folders):
        generator = adapter_generator(profile, probe_results, name, base_model_name(profile), folders)
        out[name] = {(k, seed): generate_arm(PROBE_ARM, profile, schema, by_relation, generator,
                                             adapter=f"probe{i}", k=k, kshot_seed=seed, progress=False)
                     for (k, seed), by_relation in pools.items()}
    clear_model_cache()
    return out
