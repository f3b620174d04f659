"""The DPO training's memory plan: the micro-batch is chosen before training, from an estimate, never found by OOM.

A DPO step on a causal LM keeps, per token of every chosen and rejected sequence, the activations its backward pass
needs. With LoRA on the attention projections and a frozen MLP they are dominated by the MLP's ``intermediate``-wide
tensors, so the step's peak resident memory is estimated as

    peak(b) = resident + c * T(b) * dtype_bytes * S + 2b * heads * L^2 * 4
              + 2 * 4 * min(C(b), token_tile) * min(vocab, vocab_tile) + 16 * lora_parameters + overhead

- ``T(b) = 2 * b * L``: a micro-batch of ``b`` pairs is ``2b`` sequences (chosen, rejected) padded to the longest,
  and the worst batch holds the longest pair (``L`` tokens: the prompt truncated from the left to
  ``dpo.max_prompt_length``, prompt + completion cut at ``dpo.max_length``, as training cuts them);
- ``S`` floats are saved per token: ``layers * (4 * intermediate + 5 * hidden) + 13 * hidden``, what
  ``torch.autograd``'s saved-tensor hooks count for Qwen2.5-0.5B (2.34 MB per token in fp32) and the tiny Llama
  (20 KB) within 2%. With activation checkpointing only each layer's input is kept, plus one layer's activations
  while it is recomputed: ``S = layers * hidden + (4 * intermediate + 5 * hidden) + 13 * hidden``;
- ``c`` = :data:`CALIBRATION` (:data:`CALIBRATION_CHECKPOINTED` with checkpointing), the measured ratio of peak RSS
  growth to saved bytes: backward transients, gradients of activations, and glibc's free lists (~0.9 GB of a plain
  Qwen step's peak). Checkpointing saves little, so the layer being recomputed and its gradients weigh more;
- ``2b * heads * L^2`` fp32 attention scores of one layer, which SDPA's CPU kernels materialize for a moment: small
  next to the activations for Qwen (48 MB of 8 GB), but most of the tiny Llama's step at 1,700 tokens;
- the LM head (TRL's fused head, :func:`redpo.dpo.train.completion_only_scoring`) scores the ``C(b) = 2 * b *
  longest completion`` completion tokens in fp32 tiles of ``token_tile x vocab_tile``, one in the forward and one
  in the backward: this is where the vocabulary enters;
- LoRA weights, gradients and Adam's two moments: 16 bytes per LoRA parameter; :data:`STEP_OVERHEAD` is the rest of
  a step that does not grow with tokens (autograd graph, TRL's metrics, the data loader);
- ``resident``: the process's RSS once the model's weights are paged in (``parameters x dtype_bytes``;
  safetensors are memory-mapped and become resident only when first read, so :func:`resident_with_weights` reads
  them first), which also counts whatever else the process already holds, measured instead of guessed.

Plans are tried fastest first: every divisor ``b`` of ``dpo.batch_size``, largest first, without checkpointing,
then the same with activation checkpointing (it recomputes each layer's forward in the backward: about half a step
more). Gradient accumulation makes up ``dpo.batch_size``, so an optimiser step still averages over the same pairs.
The budget is ``min(dpo.max_memory_gb, resident + dpo.memory_share x available, total)``; the machine's memory
(``total``, or the cgroup's limit) caps it because memory-mapped weights are counted twice, in the resident set and
in ``MemAvailable``'s page cache. When nothing fits, training stops before it starts with one line naming the
settings to change.

The plan is for host memory, where the CPU profiles train. On a CUDA device the activations live in GPU memory,
which this estimate does not model (the constants were measured with glibc's allocator, not CUDA's): there the
profile's batch trains as configured, unplanned (:func:`plan_for`), rather than be cut to fit the host's RAM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from redpo.config import ConfigError, DPOConfig, LoraConfigSection
from redpo.core.memory import GB, available_bytes, total_bytes

CALIBRATION = 1.75
"""Peak RSS growth over saved activation bytes, measured on the cpu profile's DPO (Qwen2.5-0.5B in fp32, AMD EPYC, 2
cores, micro-batch 1 with accumulation): 1.56 and 1.63 on FewRel pairs (micro-batches of 1,096 and 1,308 tokens),
1.60 and 1.72 on SemEval's (1,080 and 1,058 tokens; a later micro-batch starts on the free lists an earlier one left,
which is most of the spread); rounded up so that every measured peak stays under its estimate."""
CALIBRATION_CHECKPOINTED = 6.0
"""The same ratio with activation checkpointing, measured the same way on FewRel pairs: 4.64, 3.67 and 3.92 for one
micro-batch of 2,616, 3,924 and 4,984 tokens, 5.42 for two micro-batches of 2,492 (the second starts on the free
lists the first left)."""
SAVED_PER_LAYER = (4, 5)
"""Floats saved per token and layer, in multiples of ``(intermediate, hidden)``: gate, up, SiLU and product of the
MLP; the norms' inputs, the attention output and the LoRA inputs."""
SAVED_OUTSIDE_LAYERS = 13
"""Floats saved per token outside the layers, in multiples of ``hidden``: embeddings, final norm, the LM head's input
and statistics."""
HEAD_TILES = 2
"""fp32 logit tiles the fused LM head holds at once: the forward's, and the backward's recomputation."""
LORA_BYTES = 16
"""Per LoRA parameter in fp32: weight, gradient and Adam's two moments."""
STEP_OVERHEAD = 100 * 10**6
"""Bytes a step adds whatever its length (autograd graph, optimiser and TRL bookkeeping, the data loader), rounded
up from the tiny Llama's steps, whose activations are too small to hide it."""


class MemoryPlanError(ConfigError):
    """The training would not fit in memory in any plan; the message names the settings to change."""


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs from the model: sizes from its config, parameter counts and the weights' dtype."""

    parameters: int
    lora_parameters: int
    dtype_bytes: int
    vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int

    @classmethod
    def of(cls, model: Any, lora: LoraConfigSection) -> ModelShape:
        """The shape of ``model`` before PEFT wraps it; ``lora_parameters`` counts what ``lora`` will add (``r x (in
        + out)`` per targeted linear layer)."""
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        params = list(model.parameters())
        targeted = [m for name, m in model.named_modules()
                    if name.rsplit(".", 1)[-1] in lora.target_modules and hasattr(m, "in_features")]
        return cls(
            parameters=sum(p.numel() for p in params),
            lora_parameters=sum(lora.r * (m.in_features + m.out_features) for m in targeted),
            dtype_bytes=max(p.element_size() for p in params if p.is_floating_point()),
            vocab=config.vocab_size,
            hidden=config.hidden_size,
            intermediate=getattr(config, "intermediate_size", None) or 4 * config.hidden_size,
            layers=config.num_hidden_layers,
            heads=config.num_attention_heads,
        )

    def saved_floats_per_token(self, checkpointing: bool) -> int:
        one_layer = SAVED_PER_LAYER[0] * self.intermediate + SAVED_PER_LAYER[1] * self.hidden
        layers = self.layers * self.hidden + one_layer if checkpointing else self.layers * one_layer
        return layers + SAVED_OUTSIDE_LAYERS * self.hidden


@dataclass(frozen=True)
class PairLengths:
    """The longest pair as training sees it: prompt truncated from the left, prompt + completion cut at max_length."""

    pairs: int
    longest: int
    longest_completion: int
    longest_prompt_untruncated: int
    mean: float = 0.0
    """The mean pair as training sees it (what a benchmark reports beside the longest)."""


def pair_lengths(prompts: Sequence[int], completions: Sequence[int], dpo: DPOConfig) -> PairLengths:
    """``prompts[i]``, ``completions[i]``: tokens of pair ``i``'s prompt and of its longer completion (with EOS)."""
    keep = dpo.max_prompt_length
    kept = [min(p, keep) if keep else p for p in prompts]
    totals = [min(p + c, dpo.max_length) for p, c in zip(kept, completions, strict=True)]
    return PairLengths(
        pairs=len(totals),
        longest=max(totals, default=0),
        longest_completion=max((t - p for t, p in zip(totals, kept, strict=True)), default=0),
        longest_prompt_untruncated=max(prompts, default=0),
        mean=round(sum(totals) / len(totals), 1) if totals else 0.0,
    )


def head_tiles() -> tuple[int | None, int | None]:
    """TRL's fused LM-head tile (tokens, vocabulary columns); ``(None, None)`` where TRL has none, so the estimate
    counts full logits."""
    try:
        from trl.kernels.chunked_logprob import TOKEN_CHUNK_SIZE
        from trl.trainer.utils import _CHUNKED_LOGPROB_CHUNK_SIZE
    except ImportError:
        return None, None
    return TOKEN_CHUNK_SIZE, _CHUNKED_LOGPROB_CHUNK_SIZE


def estimate_peak_bytes(micro_batch: int, lengths: PairLengths, shape: ModelShape, resident: int, *,
                        checkpointing: bool = False) -> int:
    """The module docstring's formula for one plan."""
    tokens = 2 * micro_batch * lengths.longest
    scored = 2 * micro_batch * lengths.longest_completion
    ratio = CALIBRATION_CHECKPOINTED if checkpointing else CALIBRATION
    activations = ratio * tokens * shape.dtype_bytes * shape.saved_floats_per_token(checkpointing)
    attention = 2 * micro_batch * shape.heads * lengths.longest**2 * 4
    token_tile, vocab_tile = head_tiles()
    head = HEAD_TILES * 4 * min(scored, token_tile or scored) * min(shape.vocab, vocab_tile or shape.vocab)
    return int(resident + activations + attention + head + LORA_BYTES * shape.lora_parameters + STEP_OVERHEAD)


@dataclass(frozen=True)
class MemoryPlan:
    """The chosen micro-batch, the accumulation that keeps the effective batch, checkpointing, and the numbers
    behind them (GB; ``None`` where the model sits on another ``device`` than the CPU and nothing was planned)."""

    micro_batch: int
    accumulation: int
    checkpointing: bool
    estimate_gb: float | None
    budget_gb: float | None
    resident_gb: float | None
    available_gb: float | None
    longest_tokens: int
    longest_completion_tokens: int
    device: str = "cpu"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def unplanned(cls, dpo: DPOConfig, lengths: PairLengths, device: str = "cpu") -> MemoryPlan:
        """The profile's own batch and accumulation, no checkpointing, no estimate: what runs where nothing is
        planned (a GPU, or the first edition's step that ``bench training`` times)."""
        return cls(micro_batch=dpo.batch_size, accumulation=dpo.gradient_accumulation_steps, checkpointing=False,
                   estimate_gb=None, budget_gb=None, resident_gb=None, available_gb=None,
                   longest_tokens=lengths.longest, longest_completion_tokens=lengths.longest_completion, device=device)


def _budget(dpo: DPOConfig, resident: int, available: int, total: int | None) -> tuple[int, str]:
    share = int(resident + dpo.memory_share * available)
    if total is not None and total < share:
        # memory-mapped weights count twice, in the RSS and in MemAvailable's page cache: never plan past the RAM
        share = total
    if dpo.max_memory_gb is not None and dpo.max_memory_gb * GB < share:
        return int(dpo.max_memory_gb * GB), f"dpo.max_memory_gb={dpo.max_memory_gb:g}"
    if share == total:
        return share, f"all {total / GB:.1f} GB of this machine's memory"
    return share, f"{resident / GB:.1f} GB held + dpo.memory_share={dpo.memory_share:g} of {available / GB:.1f} GB free"


def plan_micro_batch(
    dpo: DPOConfig, lengths: PairLengths, shape: ModelShape, *, resident: int, available: int, what: str,
    total: int | None = None,
) -> MemoryPlan:
    """The fastest plan whose estimated peak fits the budget (module docstring); raises :class:`MemoryPlanError`
    when none does. ``what`` names the training in the message; ``total`` (the machine's memory) caps the budget."""
    budget, reason = _budget(dpo, resident, available, total)
    sizes = [b for b in range(dpo.batch_size, 0, -1) if dpo.batch_size % b == 0]
    plans = [(b, ckpt) for ckpt in (False, True) for b in sizes]
    estimates = {plan: estimate_peak_bytes(plan[0], lengths, shape, resident, checkpointing=plan[1])
                 for plan in plans}
    fitting = [plan for plan in plans if estimates[plan] <= budget]
    if not fitting:
        prompt_hint = (f"lower dpo.max_prompt_length ({dpo.max_prompt_length})" if dpo.max_prompt_length else
                       f"set dpo.max_prompt_length (the longest prompt has {lengths.longest_prompt_untruncated} "
                       "tokens)")
        raise MemoryPlanError(
            f"{what} would need about {estimates[(1, True)] / GB:.1f} GB even at micro-batch 1 with activation "
            f"checkpointing (longest pair {lengths.longest} tokens, {shape.parameters / 1e9:.2f}B parameters of "
            f"{shape.dtype_bytes} bytes) but may use {budget / GB:.1f} GB ({reason}); lower dpo.max_length "
            f"({dpo.max_length}) or {prompt_hint}, or raise dpo.max_memory_gb, or free memory"
        )
    micro, checkpointing = fitting[0]
    return MemoryPlan(
        micro_batch=micro,
        accumulation=dpo.gradient_accumulation_steps * dpo.batch_size // micro,
        checkpointing=checkpointing,
        estimate_gb=round(estimates[(micro, checkpointing)] / GB, 3),
        budget_gb=round(budget / GB, 3),
        resident_gb=round(resident / GB, 3),
        available_gb=round(available / GB, 3),
        longest_tokens=lengths.longest,
        longest_completion_tokens=lengths.longest_completion,
    )


def resident_with_weights(model: Any) -> int:
    """This process's RSS after every weight page has been read once (one float per 4 KiB page), so memory-mapped
    weights count as the resident memory they become in the first forward pass."""
    import psutil
    import torch

    with torch.no_grad():
        for param in model.parameters():
            flat = param.detach().reshape(-1)
            flat[:: max(1, 4096 // flat.element_size())].sum()
    return int(psutil.Process().memory_info().rss)


def plan_for(dpo: DPOConfig, lengths: PairLengths, model: Any, *, what: str) -> MemoryPlan:
    """:func:`plan_micro_batch` for ``model`` in this process, with the memory available now. A model on another
    device than the CPU is not planned (the module docstring): its plan is the profile's batch and accumulation."""
    device = next(model.parameters()).device.type
    if device != "cpu":
        return MemoryPlan.unplanned(dpo, lengths, device)
    resident = resident_with_weights(model)
    return plan_micro_batch(dpo, lengths, ModelShape.of(model, dpo.lora), resident=resident,
                            available=available_bytes(), what=what, total=total_bytes())
