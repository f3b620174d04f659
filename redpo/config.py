"""Profiles: one typed, validated config object per run.

A profile is a YAML file in ``redpo/profiles/``. Everything tunable lives there, never in code, so that a
run is fully described by ``(profile, overrides)`` and both go into the manifest.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import to_jsonable_python

PROFILES_DIR = Path(__file__).parent / "profiles"
REPO_ROOT = Path(__file__).resolve().parent.parent


PromptKind = Literal["baseline", "aao", "obo"]


@dataclass(frozen=True)
class ArmSpec:
    """What a generation arm's name means: which prompt it sends, whether the dissimilarity sentence is in it, and
    whether a consistency judge filters its samples (``consistent``: an arm beyond the paper)."""

    prompt: PromptKind
    dissimilar: bool
    consistent: bool = False
    """Every valid sample is judged (``consistency.judge``); one whose judged label is not the relation it was written
    for is rejected as ``inconsistent`` and never joins the demonstrations, and generation goes on for that relation
    within the arm's attempt budget (``redpo.generation.judge``). Never set on a paper arm: the paper's arms keep
    every valid sample."""

    @property
    def many(self) -> bool:
        """Baseline and AAO ask for many samples per call; OBO for one."""
        return self.prompt != "obo"


ARMS: dict[str, ArmSpec] = {
    "baseline": ArmSpec("baseline", dissimilar=False),
    "aao": ArmSpec("aao", dissimilar=True),
    "aao_nodiv": ArmSpec("aao", dissimilar=False),
    "obo": ArmSpec("obo", dissimilar=True),
    "obo_nodiv": ArmSpec("obo", dissimilar=False),
    "obo_consistent": ArmSpec("obo", dissimilar=True, consistent=True),
}
"""The arm vocabulary, defined once: profiles are validated against these names, and the loops read each name's
prompt from here. ``baseline`` is Xu et al.'s prompt (notebook 01); ``aao``, ``aao_nodiv``, ``obo`` and
``obo_nodiv`` are notebook 02's ICL grid; ``obo_consistent`` is beyond the paper: ``obo`` with the consistency
filter (notebook 02 runs it where ``generation.arms`` lists it; no committed profile does)."""
BASELINE_ARM = "baseline"
PAPER_ARMS: tuple[str, ...] = tuple(a for a, spec in ARMS.items() if not spec.consistent)
"""The arms the paper describes: every arm without a consistency judge."""
GenerationArm = Literal[tuple(ARMS)]  # type: ignore[valid-type]
"""The generation arms a profile may name."""
IclArm = Literal[tuple(a for a in PAPER_ARMS if a != BASELINE_ARM)]  # type: ignore[valid-type]
"""The paper's ICL arms (every paper arm but the Xu et al. baseline): the ones DPO can re-run with its adapters and
the plateau and the ladder study. A consistent arm is not among them: those stages build no judge."""
DPO_ARM_SUFFIX = "_dpo"
DPO_HALVES = ("A", "B")
"""The two DPO adapters, each named after the half of the relation types it trains on (``redpo.dpo.halves``)."""


class ConfigError(ValueError):
    """A profile or override is invalid; the message names the file and key and says how to fix it."""


def strictly_increasing(values: list[int]) -> list[int]:
    """A validator's body for N lists: non-empty, positive and strictly increasing (the curve's x axis)."""
    if not values or any(x < 1 for x in values) or sorted(set(values)) != values:
        raise ValueError("must be a non-empty, strictly increasing list of positive integers")
    return values


# ---- identity: which fields decide a result -----------------------------------------------------------------
IDENTITY = "identity"
"""The ``json_schema_extra`` key that marks how a field enters cache keys and fingerprints (:func:`identity`)."""
RUN_ONLY = "run_only"
"""The field changes how a run goes (threads, progress, checkpoint cadence, how many cells), never what one
result holds: it is left out of every key, so changing it reuses every cached call, run and adapter."""
WHEN_SET = "when_set"
"""The field joins a key only when it differs from its default: results committed before it existed were made
under that default, and their keys must stay what they were so that they still replay."""


def run_only(default: Any, **kwargs: Any) -> Any:
    """A field that is not part of any result's identity (see :data:`RUN_ONLY`)."""
    return Field(default, json_schema_extra={IDENTITY: RUN_ONLY}, **kwargs)


def keyed_when_set(default: Any, *, committed: str, **kwargs: Any) -> Any:
    """A field added after the committed result ``committed`` was made (see :data:`WHEN_SET`)."""
    return Field(default, json_schema_extra={IDENTITY: WHEN_SET, "committed": committed}, **kwargs)


def identity(section: BaseModel, *, exclude: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The JSON-safe fields of ``section`` (nested sections included) that decide a result: the one recipe behind
    every cache key and fingerprint. Fields marked :data:`RUN_ONLY` are left out, fields marked :data:`WHEN_SET`
    are left out while they hold their default, and ``exclude`` drops fields that a key names elsewhere."""
    out: dict[str, Any] = {}
    for name, field in type(section).model_fields.items():
        if name in exclude:
            continue
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        mark, value = extra.get(IDENTITY), getattr(section, name)
        if mark == RUN_ONLY or (mark == WHEN_SET and value == field.get_default(call_default_factory=True)):
            continue
        out[name] = identity(value) if isinstance(value, BaseModel) else to_jsonable_python(value)
    return out


class _Strict(BaseModel):
    """Base for every config section: unknown keys are errors, values are type-checked. A field's docstring (the
    string literal under it) becomes its ``description``: the documentation's profile reference is generated from
    these (``redpo.site.reference``), so it cannot drift from the code."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, use_attribute_docstrings=True)


class SamplingConfig(_Strict):
    """Decoding parameters; the defaults are the paper's (LLaMA-2-7b-chat)."""

    temperature: float = Field(0.4, ge=0.0)
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    top_k: int = Field(20, ge=0)
    repetition_penalty: float = Field(1.15, gt=0.0)
    max_new_tokens: int = Field(96, ge=1)
    grammar: str | None = keyed_when_set(None, committed="cpu-full")
    """A GBNF grammar the server must sample within (``redpo.generation.grammar``). Set per arm by the loops when
    ``generation.constrained`` is on, not here."""
    stop: list[str] = keyed_when_set([], committed="cpu-full")
    """Stop strings: a reply ends where one appears. Set per arm by the loops (``generation.obo_stop``), not here.
    Keyed only when set: ``cpu-full``'s AAO and baseline calls were cached before stop strings existed, and its
    replay archive answers them under those keys (``tests/test_identity.py`` recomputes one)."""


class DatasetConfig(_Strict):
    """Which dataset, where its files are (relative to ``REDPO_DATA_DIR``), and optional subsetting."""

    name: Literal["semeval", "tacred", "tacrev", "retacred", "fewrel", "custom"] = "semeval"
    """A built-in dataset, or ``custom``: a folder of your own described by its ``relations.yaml``."""
    path: str | None = None
    """Folder under ``REDPO_DATA_DIR`` (or an absolute path); ``None`` picks the standard place (``DEFAULT_PATHS``).
    Required for ``custom``."""
    relations: list[str] | None = None
    """Restrict every stage to these labels (smoke uses a few); ``None`` means all labels."""
    test_subsample: int | None = Field(None, ge=1)
    """One stratified, seeded test subset of this size, shared by all arms (``None``: full test)."""
    dev_subsample: int | None = Field(None, ge=1)


    @model_validator(mode="after")
    def _custom_has_a_folder(self) -> DatasetConfig:
        if self.name == "custom" and not self.path:
            raise ValueError("dataset.name 'custom' needs dataset.path: the folder with train.txt, val.txt (or "
                             "dev.txt), test.txt, rel2id.json and relations.yaml")
        return self

    @property
    def resolved_path(self) -> str:
        return self.path or DEFAULT_PATHS[self.name]


DEFAULT_PATHS = {
    "semeval": "semeval2010_task8/knowprompt_split",
    "tacred": "tacred",
    "tacrev": "tacrev",
    "retacred": "retacred",
    "fewrel": "fewrel",
}


class FewShotConfig(_Strict):
    """KnowPrompt-style K-shot splits: K rows per relation after a seeded shuffle."""

    k: list[int] = Field(default_factory=lambda: [8])
    seeds: list[int] = Field(default_factory=lambda: [1, 2, 3])
    chained_shuffle: bool = True
    """KnowPrompt's script shuffles one list in place for seeds 1..5 in turn, so split K-3 is the train file
    shuffled with seed 1, then 2, then 3. ``True`` reproduces its files; ``False`` shuffles once per seed."""

    @field_validator("k", "seeds")
    @classmethod
    def _non_empty_positive(cls, v: list[int]) -> list[int]:
        if not v or any(x < 1 for x in v):
            raise ValueError("must be a non-empty list of positive integers")
        return v


class TinyFitConfig(_Strict):
    """Smoke only: fit a tiny random Llama on real (prompt -> gold sample) pairs so it emits marker-shaped text.

    A fixed step count (not a wall-time budget) keeps the fitted model identical on any machine.
    """

    steps: int = Field(0, ge=0)
    """Optimiser steps; 0 disables fitting and loads ``generator.model`` as named."""
    examples: int = Field(400, ge=1)
    vocab_size: int = Field(1000, ge=300)
    hidden: int = Field(128, ge=16)
    layers: int = Field(2, ge=1)
    learning_rate: float = Field(5e-3, gt=0)
    batch_size: int = Field(8, ge=1)
    max_length: int = Field(192, ge=32)
    """Fitting sees only the prompt's tail (last demonstrations, instruction, assistant turn): cheaper steps."""
    threads: int = Field(1, ge=1)
    """A sub-million-parameter model gains nothing from intra-op threads and loses a lot to oversubscription.
    Part of the fitted model's identity: another thread count sums the gradients in another order."""


class LlamaServerConfig(_Strict):
    """``generator.backend: llama_cpp``: the local ``llama-server`` redpo starts, or a running server it talks to."""

    threads: int | None = Field(None, ge=1)
    """Threads of the server (``None``: every core this process may use). Never more than the free cores: the
    engine's OpenMP threads collapse when oversubscribed, and RE training never runs beside it."""
    parallel: int = Field(19, ge=1)
    """Server slots: requests decoded together with continuous batching; one slot keeps one prompt prefix warm."""
    ctx_per_slot: int = Field(4096, ge=128)
    """Context tokens per slot (prompt + reply); the server's context is ``parallel`` times this."""
    weights: Literal["packaged", "f32", "f16", "bf16", "q8_0"] = "packaged"
    """``packaged``: serve a packaged model's own GGUF file as it is. ``f32``/``f16``/``bf16``/``q8_0``: a GGUF made
    once with llama.cpp's converter from the very weights the transformers backend loads (the smoke generator too).
    ``bf16`` pays off only on a CPU with ``avx512_bf16`` (llama.cpp is built for the machine's own flags)."""
    startup_timeout: float = Field(300.0, gt=0)
    """Seconds to wait for a started server to load and answer with its key (a 0.5B GGUF takes a few seconds)."""
    url: str | list[str] | None = None
    """A running server to use instead of starting one: ``http://host:port`` of ``llama-server`` (``kind:
    llama_cpp``), or of ``vllm serve`` / SGLang (``kind: openai``). redpo then starts and stops nothing. A list
    names a fleet serving the same model: requests spread over it, each OBO chain stays on one server (its prefix
    cache stays warm), and a server that goes down costs only its requests in flight, which go to the others.
    The URLs (in any order) name the model in the cache keys, as one URL does."""
    kind: Literal["llama_cpp", "openai"] = "llama_cpp"
    """The API spoken at ``url``: llama.cpp's native ``/completion`` (slots, prompt cache) or ``/v1/completions``."""
    served_model: str | None = None
    """``kind: openai``: the model name the server serves (``vllm serve <name>``); default ``generator.model``."""
    api_key_env: str | None = run_only(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """``url`` only: the name of the environment variable that holds the server's API key (``llama-server
    --api-key``, ``vllm serve --api-key``), sent as ``Authorization: Bearer``. The key itself never goes in a
    profile, which the manifest copies. The local server gets a fresh random key at every start, with no setting."""
    connect_timeout: float = run_only(10.0, gt=0)
    """Seconds a request waits for the server to accept its connection. A loopback connection is accepted in well
    under a millisecond, even while every slot decodes (the kernel accepts, not the server's threads); 10 s leaves
    room for a remote server on a slow network without hiding one that is gone."""
    read_timeout: float = run_only(1200.0, gt=0)
    """Seconds a request waits for its reply. Replies are not streamed, so this bounds one whole completion, prompt
    pass included. Measured in ``cpu-full``'s 1,316 generation batches on 2 cores (18 slots, 0.5B GGUF): median
    6.4 s, 99th percentile 80 s, longest 564 s (an AAO batch of 6 replies of up to 664 tokens); the default is
    twice the longest. A server that accepts and never answers fails the step with one line after this long, and
    the rerun answers the finished steps from the cache. Raise it for a bigger model or a slower machine; neither
    time-out is part of any cache key."""

    @field_validator("url")
    @classmethod
    def _fleet(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and (not v or len(set(v)) != len(v)):
            raise ValueError("a list of servers must be non-empty and name each server once")
        return v

    @property
    def urls(self) -> list[str]:
        """The servers at ``url``: none, one, or a fleet."""
        return [] if self.url is None else [self.url] if isinstance(self.url, str) else list(self.url)


class GeneratorConfig(_Strict):
    """The generator LLM: a registry name, hub id or local path, plus batching and decoding."""

    model: str = "qwen2.5-coder-0.5b-instruct"
    backend: Literal["transformers", "llama_cpp"] = "transformers"
    """``transformers``: batched ``generate`` in this process. ``llama_cpp``: an HTTP server (see ``server``)."""
    server: LlamaServerConfig = LlamaServerConfig()
    batch_size: int = Field(19, ge=1)
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:[0-9]+)?)$")
    """Where the transformers generator runs (sample generation, the DPO arms' generation, closed-set scoring):
    ``auto`` takes the first CUDA GPU when torch sees one, else the CPU; ``cpu``, ``cuda`` or ``cuda:N`` pin it.
    DPO and RE training follow the HF Trainer's own placement; the ``llama_cpp`` backend ignores this."""
    sampling: SamplingConfig = SamplingConfig()
    fit: TinyFitConfig = TinyFitConfig()


class GenerationConfig(_Strict):
    """Sample generation (AAO / OBO / baseline): how many, how many tries, which demonstrations."""

    n_per_relation: int = Field(8, ge=1)
    """Valid samples wanted per relation and arm."""
    max_attempts: int = Field(24, ge=1)
    """Model calls per relation and arm before giving up (OBO: one sample per call)."""
    aao_max_calls: int = Field(3, ge=1)
    """AAO/baseline: calls per relation before giving up (each call asks for the missing samples)."""
    num_demos: int = Field(5, ge=1)
    """Gold demonstrations drawn from the K-shot split for each relation's prompt."""
    obo_stop: list[str] = Field(default_factory=lambda: ["\n"])
    """Stop strings for OBO calls: ``["\\n"]`` (the default) ends a reply after its one requested sample line, so no
    decode is spent on lines the parser would drop: a valid OBO sample stands on the reply's first line all but
    always. ``[]`` turns it off."""
    obo_window: int | None = Field(None, ge=1)
    """OBO ablation: keep only the last W demonstrations (``None``: accumulate all, as the paper does)."""
    negative_label: Literal["generate", "manual"] = "manual"
    """``manual`` (default): every arm copies the split's K manual negative samples, so arms differ only in their
    generated positives (the negative class is a catch-all that a one-line explanation describes poorly, so the
    arms would hold very different numbers of generated negatives against the same K manual ones: a confound);
    ``generate``: the negative label is generated like any other, and RE training gives it the same quota in every
    arm."""
    min_tokens: int = Field(4, ge=1)
    max_tokens: int = Field(80, ge=2)
    constrained: bool = False
    """Grammar-constrained decoding: the inference server samples only lines the parser can read (entity markers
    in place, the prompt's fields), so a call is no longer lost to format. Needs an inference server
    (``generator.backend: llama_cpp``, or a vLLM/SGLang ``generator.server.url``)."""
    filter: Literal["paper", "strict"] = "paper"
    """The validity filter. ``paper``: the rules the paper suggests (parses, both entities present and distinct,
    types in the schema, no exact copy of a demonstration or earlier sample). ``strict`` also rejects near copies
    of any demonstration or earlier sample (``near_copy_threshold``), stray markup tags, punctuation-only
    entities and restatements of the relation's explanation, each under its own reason."""
    near_copy_threshold: float = Field(0.8, gt=0, le=1)
    """A sample whose entity-masked tokens match a demonstration's with a ``difflib`` ratio at least this high is a
    near copy (the same sentence with other entities scores 1.0): the diversity tables' near-copy share, and the
    least a DPO near-copy rejection must score."""
    arms: list[GenerationArm] = Field(
        default_factory=lambda: ["baseline", "aao", "aao_nodiv", "obo", "obo_nodiv"]
    )
    """Notebook 01 generates ``baseline`` if listed, notebook 02 every other arm listed."""
    kshot_seeds: list[int] | None = None
    """K-shot seeds whose splits get generated data (``None``: every seed in ``fewshot.seeds``)."""
    seed: int = 0


class EncoderConfig(_Strict):
    """The non-LLM RE classifier (entity-marker pooling over an encoder)."""

    @model_validator(mode="after")
    def _step_schedule(self) -> EncoderConfig:
        stepwise = {"min_steps": self.min_steps, "max_steps": self.max_steps, "warmup_steps": self.warmup_steps}
        if self.eval_steps is None and any(stepwise.values()):
            raise ValueError(f"{[k for k, v in stepwise.items() if v]} belong to the step schedule: set "
                             "encoder.eval_steps too (or leave them unset for the schedule in epochs)")
        if self.max_steps is not None and self.min_steps > self.max_steps:
            raise ValueError("encoder.min_steps must not exceed encoder.max_steps")
        return self

    model: str = "minilm-l6"
    max_length: int = Field(128, ge=16)
    batch_size: int = Field(16, ge=1)
    epochs: int = Field(10, ge=1)
    learning_rate: float = Field(5e-5, gt=0)
    warmup_ratio: float = Field(0.1, ge=0, le=1)
    weight_decay: float = Field(0.01, ge=0)
    early_stopping_patience: int = Field(3, ge=1)
    early_stopping_threshold: float = Field(0.0, ge=0, lt=1)
    """Smallest gain in dev micro-F1 that counts as an improvement. On a few hundred dev sentences a converged
    model's dev score creeps up by a single sentence now and then; with a threshold of 0 every such tie-breaker
    restarts the patience, so runs hit the epoch cap instead of stopping where they converged."""
    typed_markers: bool = False
    eval_batch_size: int = Field(64, ge=1)
    eval_steps: int | None = keyed_when_set(None, committed="cpu-full", ge=1)
    """The schedule in optimizer steps: evaluate on dev every this many steps, and count
    ``early_stopping_patience`` in these evaluations, so patience and cadence mean the same amount of training
    whatever the set's size. ``None`` keeps the schedule in epochs (an evaluation per epoch), which collapses on a
    small set: 56 samples at batch 16 are 4 steps an epoch, so warm-up barely ends before patience runs out."""
    min_steps: int = keyed_when_set(0, committed="cpu-full", ge=0)
    """Optimizer steps before early stopping may fire (step schedule only): a run is never judged converged
    before it has trained this long."""
    max_steps: int | None = keyed_when_set(None, committed="cpu-full", ge=1)
    """The step schedule's cap (``None``: ``epochs`` passes over the set); the data cycles as needed."""
    warmup_steps: int | None = keyed_when_set(None, committed="cpu-full", ge=0)
    """Linear warm-up in optimizer steps (``None``: ``warmup_ratio`` of the run's step cap)."""
    seeds_per_split: int = run_only(1, ge=1)
    """Classifier seeds per K-shot split. Every RE arm runs on the same (split, seed) grid; the cpu profile
    generates for one split only, so it varies the classifier seed instead. It says how many cells there are, not
    what one run holds (each cell keys its own seed), so it is no part of a run's identity."""
    precision: Literal["fp32", "bf16"] = keyed_when_set("fp32", committed="cpu-full")
    """Arithmetic of RE training, dev evaluation and prediction (the oracle's too): ``fp32``, or ``bf16`` autocast
    (fp32 master weights; matrix products in bf16), about twice as fast on a CPU with native bf16. Refused where the
    machine has none (``redpo.models.precision``), and part of a run's key: bf16 rounds differently, so its runs
    are other runs. ``python -m redpo bench training`` measures both and their paired F1 difference."""
    threads: int | None = run_only(None, ge=1)
    """Torch intra-op threads while training and predicting (``None``: torch's default). Smoke uses 1: a tiny
    model gains nothing from threads and loses a lot to oversubscription on a busy machine."""


class LoraConfigSection(_Strict):
    """PEFT LoRA of the DPO adapters (the paper publishes no rank; r=8 on the attention projections is cheap)."""

    r: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


class DPOConfig(_Strict):
    """DPO fine-tuning of the generator (TRL DPOTrainer + PEFT LoRA), paper §4."""

    beta: float = Field(0.1, gt=0)
    learning_rate: float = Field(5e-5, gt=0)
    epochs: float = Field(1.0, gt=0)
    max_steps: int = Field(-1, ge=-1)
    """Optimiser steps per adapter; -1 trains for ``epochs`` instead."""
    batch_size: int = Field(2, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    max_length: int = Field(512, ge=32)
    """Prompt + completion tokens (the paper truncates at 1024); a pair whose prompt alone is longer is dropped."""
    max_prompt_length: int | None = keyed_when_set(None, committed="cpu-full", ge=1)
    """Prompt tokens kept, counted from the end (the oldest demonstrations go first), so that a long prompt leaves
    ``max_length - max_prompt_length`` tokens to its completion instead of having the completion cut or the pair
    dropped. ``None``: prompts are not truncated (only ``max_length`` applies). Part of an adapter's identity only
    when set: the committed adapters were trained without it, and it changes which tokens a pair trains on."""
    max_memory_gb: float | None = run_only(None, gt=0)
    """Most resident memory (GB, the whole process) the DPO training may plan for; ``None``: no cap beyond
    ``memory_share`` of the memory available when training starts. The plan (:mod:`redpo.dpo.memory`) picks the
    fastest plan whose estimate fits (the largest micro-batch, then activation checkpointing), and gradient
    accumulation keeps the effective batch at ``batch_size``, so this changes how a training runs, never what a step
    averages over: it is in no adapter's identity. Host memory only: a training on a GPU is not planned."""
    memory_share: float = run_only(0.8, gt=0, le=1)
    """Share of the memory available at plan time that the training may grow into: the rest is headroom for the
    estimate's error and for whatever else the machine runs meanwhile."""
    pairs_per_relation: int = Field(8, ge=1)
    chain_length: int = Field(4, ge=1)
    """Steps of one simulated OBO chain (demonstrations grow by one per step)."""
    num_demos: int | None = Field(None, ge=1)
    """Gold demonstrations that start each chain (``None``: ``generation.num_demos``); fewer = shorter prompts."""
    kind_mix: dict[str, float] = Field(
        default_factory=lambda: {"wrong_relation": 1.0, "near_copy": 1.0, "exact_copy": 1.0}
    )
    """Relative weights of the rejected kinds; per relation, counts follow by largest remainder. The paper's three
    are ``wrong_relation``, ``near_copy`` and ``exact_copy``; ``mirror_direction`` (the chosen sample with its two
    entities' roles swapped, a sample of the reverse relation) teaches direction, where a relation has a reverse."""
    chosen: Literal["random", "distinct"] = keyed_when_set("random", committed="cpu-full")
    """Which gold sample is preferred at each chain step. ``random``: any gold sample not in the prompt (the
    paper's). ``distinct``: of ``chosen_candidates`` drawn ones, the least similar to the prompt's demonstrations
    (entity-masked), so the adapter is rewarded for the most diverse *correct* sample (DivPO's choice)."""
    chosen_candidates: int = keyed_when_set(8, committed="cpu-full", ge=2)
    """``chosen: distinct``: how many gold candidates each step chooses among."""
    precompute_ref_log_probs: bool = True
    precision: Literal["fp32", "bf16"] = keyed_when_set("fp32", committed="cpu-full")
    """Arithmetic of DPO training and the held-out evaluation: ``fp32``, or ``bf16`` autocast (fp32 master weights;
    matrix products in bf16). Refused on a machine without native bf16 (``redpo.models.precision``); part of an
    adapter's fingerprint. ``fp32`` still trains in bf16 on a GPU when ``generator.dtype`` is ``bfloat16``."""
    checkpoint_steps: int = run_only(25, ge=0)
    """Save a resumable checkpoint (LoRA weights, optimiser, scheduler, RNG) every N optimiser steps; a killed
    training resumes from the last one (0: none). Not part of the adapter's fingerprint: it changes no result."""
    held_out: float = Field(0.1, ge=0, lt=0.5)
    """Share of each half's pairs (whole simulated chains, so no held-out prompt extends a trained one) kept out of
    training; the adapter's reward accuracy and margin on them are measured once training ends."""
    split_seed: int = 0
    """Seeds the two-half relation split (adapter A trains on half A and generates for half B)."""
    arms: list[IclArm] = run_only(["obo", "aao"])
    """Generation arms re-run with the adapters; results are named ``<arm>_dpo``. Each must be in
    ``generation.arms``, since notebook 03 compares it with notebook 02's run of the same arm. No part of an
    adapter's identity: the adapters train the same whichever arms use them."""
    lora: LoraConfigSection = LoraConfigSection()

    @field_validator("kind_mix")
    @classmethod
    def _known_kinds(cls, v: dict[str, float]) -> dict[str, float]:
        allowed = {"wrong_relation", "near_copy", "exact_copy", "mirror_direction"}
        unknown = set(v) - allowed
        if unknown:
            raise ValueError(f"unknown rejected kind(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
        if any(w < 0 for w in v.values()) or sum(v.values()) <= 0:
            raise ValueError("weights must be >= 0 and not all zero")
        return v

    @model_validator(mode="after")
    def _room_for_a_completion(self) -> DPOConfig:
        if self.max_prompt_length is not None and self.max_prompt_length >= self.max_length:
            raise ValueError(
                f"dpo.max_prompt_length ({self.max_prompt_length}) must be smaller than dpo.max_length "
                f"({self.max_length}), or no completion token would be left to train on"
            )
        return self


class TrainingSetsConfig(_Strict):
    """How generated samples become RE training sets (``redpo.extraction.training_sets``)."""

    quota: Literal["weakest_arm", "own"] = "weakest_arm"
    """``weakest_arm``: every generated arm of a split trains on the per-relation counts the weakest arm reached,
    so arms differ only in what they wrote; one arm that stalls on a relation removes it from all. ``own``: each
    arm trains on its own first K per relation (what it can give), and the comparisons that decide a claim train
    on sets matched count by count (``gen:<arm>@pair``)."""


class OracleConfig(_Strict):
    """The oracle RE classifier that labels generated samples (``redpo.extraction.oracle``).

    Trained once on the full training split with the profile's encoder, as ZeroGen measures synthetic data: its
    label for a generated sample says whether the sample expresses the relation it was generated for. The
    encoder's other settings (max length, batch size, ``warmup_ratio``, decay, patience) come from ``encoder``,
    never its step schedule (``eval_steps``, ``min_steps``, ``max_steps``, ``warmup_steps``) or its precision: the
    schedule is sized for few-shot sets, so the oracle is evaluated once per epoch for ``epochs`` epochs, in fp32,
    the same in every run, so that agreement shares compare between runs.
    """

    enabled: bool = True
    epochs: int = Field(3, ge=1)
    learning_rate: float = Field(5e-5, gt=0)
    train_subsample: int | None = Field(None, ge=2)
    """Train on one stratified subset of this size (``None``: the whole training split)."""
    seed: int = 0


class ConsistencyConfig(_Strict):
    """The consistency filter of the beyond-paper arm ``obo_consistent`` (``redpo.extraction.consistency``): who
    judges each valid sample's relation. Read only when ``generation.arms`` lists a consistent arm, and part of no
    key but the judge's own: the paper's arms never see it.

    Only what a K-shot user has may judge. The oracle (trained on the whole training split) would filter better,
    but a filter that reads thousands of labelled sentences is no few-shot method: it stays a diagnostic (the
    ladder's L3)."""

    judge: Literal["kshot", "generator"] = "kshot"
    """``kshot``: an RE classifier trained on the split's K-shot samples with the profile's encoder settings and the
    shared dev subset for early stopping, as the ``manual`` RE arm is (cached once per split under
    ``cache/judge/``). ``generator``: the generator itself, scoring one verbalised statement per label with
    contextual calibration, as the direct-LLM baseline's closed-set scoring does (``redpo.extraction.llm_scoring``;
    scores cached in ``cache/llm_scores.jsonl``); its prompt shows one K-shot demonstration per label."""
    seed: int | None = Field(None, ge=0)
    """The ``kshot`` judge's classifier seed (``None``: the seed of the split's first RE grid cell, split seed x
    1000, so the judge is trained as that cell's ``manual`` run is)."""

    @field_validator("judge", mode="before")
    @classmethod
    def _legitimate(cls, v: Any) -> Any:
        if v == "oracle":
            raise ValueError("the oracle is trained on the whole training split, which a K-shot user does not have, "
                             "so it cannot filter a few-shot arm (the ladder's L3 measures it as a diagnostic); use "
                             "kshot or generator")
        return v


class LLMREConfig(_Strict):
    """The direct-LLM RE baseline (``redpo.extraction.llm_baseline``): the generator labels each test sentence."""

    enabled: bool = True
    max_new_tokens: int = Field(16, ge=1)
    """Greedy tokens per answer; a label name needs few (SemEval's longest is 11 Qwen tokens)."""
    batch_size: int = Field(8, ge=1)
    """Prompts per cached model call. LLM-RE prompts carry every relation (~1,000 tokens), so batches are
    smaller than generation's."""
    calibration_inputs: list[str] = Field(default_factory=lambda: ["N/A", "[MASK]"], min_length=1)
    """Content-free stand-ins (as the sentence and both entities) whose label scores estimate the prior that
    closed-set scoring divides out (contextual calibration, Zhao et al. 2021)."""
    free_generation: bool = True
    """Also run the secondary row: the LLM writes the label name (greedy), with its unparseable rate."""
    splits: int = Field(1, ge=1)
    """Run on the first N generation splits (each shows that split's demonstrations). One demonstration per
    relation makes K nearly irrelevant, and every run costs a full pass over the test set."""
    test_subsample: int | None = Field(None, ge=1)
    """Score the LLM on one stratified, seeded subset of the RE test set (``None``: all of it). Closed-set scoring
    reads one statement per label, so a sentence costs seconds on a CPU, and more with every label (the CPU
    profiles' comments give their sizing); the claims pair the LLM with the RE arms on the sentences both scored."""


class PlateauConfig(_Strict):
    """Notebook 05: RE score against N generated samples per relation (``redpo.plateau``).

    Each arm is generated once up to ``max(n_values)``; every smaller N takes the first N samples per relation.
    """

    n_values: list[int] = Field(default_factory=lambda: [4, 8, 16, 32])
    arms: list[str] = Field(default_factory=lambda: ["obo", "obo_dpo", "aao"])
    """Generation arms, or ``<arm>_dpo`` (an ICL arm) for the notebook 03 adapters."""
    min_gain: float = Field(0.01, ge=0)
    """Plateau rule: a gain in micro-F1 (0-1) no larger than max(this, the larger seed sd) is no gain."""
    splits: int | None = Field(None, ge=1)
    """Run on the first N generation splits (``None``: all). Generation to the largest N is the costliest stage, so
    a run that adds splits for the precision of the F1 claims need not extend the plateau to them."""
    seeds_per_split: int | None = Field(None, ge=1)
    """Classifier seeds per split for the plateau's RE runs (``None``: ``encoder.seeds_per_split``). The split is
    the unit of replication either way. The plateau trains 3 arms x 2 data kinds at every N, and its N = 32 sets
    are the largest of the run, so a decisive run on few cores may give it fewer seeds than notebook 04's grid.
    Seed index 0 is the same run either way (the seed count is not part of a run's key)."""

    @field_validator("arms")
    @classmethod
    def _known_arms(cls, v: list[str]) -> list[str]:
        allowed = [*PAPER_ARMS, *(f"{a}{DPO_ARM_SUFFIX}" for a in get_args(IclArm))]
        unknown = [a for a in v if a not in allowed]
        if unknown:
            raise ValueError(f"unknown arm(s) {unknown}; allowed: {', '.join(allowed)} (a consistent arm runs in "
                             "notebooks 02 and 04 only: the plateau builds no judge)")
        return v

    _increasing = field_validator("n_values")(classmethod(lambda cls, v: strictly_increasing(v)))


LadderRung = Literal["L0", "L1", "L2", "L3", "L4", "L5", "L6", "L7"]


class LadderConfig(_Strict):
    """Notebook 06, the gap ladder (``redpo.ladder``): rungs from a perfect generator down to ours, each changing one
    thing with the RE setup fixed, to locate where generated data loses to manual data.

    L0 manual; L1 a perfect generator (K other real training sentences per relation); L2 style (positives and
    negatives real or generated, 2 x 2); L3 label noise (oracle-filtered, matched N); L4 diversity (near copies
    removed, matched N); L5 count (own quota at each of ``n_values``); L6 generator (``generator``); L7 encoder
    (``encoder``).
    """

    arm: IclArm = "obo"
    """The generation arm the ladder studies (its generated samples are the rungs' "generated")."""
    rungs: list[LadderRung] = Field(default_factory=lambda: ["L0", "L1", "L2", "L3", "L4", "L5", "L6", "L7"])
    splits: int | None = Field(None, ge=1)
    """Run on the first N generation splits (``None``: all)."""
    seeds_per_split: int | None = run_only(None, ge=1)
    """Classifier seeds per split (``None``: ``encoder.seeds_per_split``)."""
    n_values: list[int] = Field(default_factory=lambda: [8, 16, 32])
    """L5's counts per relation (K joins them); the arm is generated once up to the largest of them and K (the
    pool every generated rung takes a prefix or a filtered prefix of)."""
    generator: str | None = "qwen2.5-coder-1.5b-instruct"
    """L6: the other generator, a registry name or hub id served like ``generator.model``."""
    encoder: str = "mpnet-base"
    """L7: the other encoder, trained on manual data and on the best generated rung."""
    seed: int = 0
    """Seeds L1's draw of other real sentences."""
    share_negatives: bool = False
    """L2 also trains ``L2:gen+negshare``: ``L2:gen`` with its manual negatives topped up by other real ones to the
    training split's share of the negative label (17.6% in SemEval's, against 8 in a K-shot split's 144 at K = 8):
    what a realistic count of real negatives does beside generated positives."""

    _increasing = field_validator("n_values")(classmethod(lambda cls, v: strictly_increasing(v)))

    @model_validator(mode="after")
    def _share_needs_l2(self) -> LadderConfig:
        if self.share_negatives and "L2" not in self.rungs:
            raise ValueError("ladder.share_negatives adds a set to rung L2: add L2 to ladder.rungs, or set "
                             "ladder.share_negatives: false")
        return self


RAY_INSTALL = "pip install -e '.[ray]' (or make setup EXTRAS=ray)"
"""How to get the optional ``ray`` extra, said wherever it is missing."""


class ExecutorConfig(_Strict):
    """Where the RE runs train: every run of notebook 04's grid, notebook 05's plateau and any stage that trains
    through ``redpo.extraction.grid.run_training_sets``. No field is part of any key: a run trains to the same
    result wherever it runs, so switching executors reuses every stored run (``docs/cluster.md``)."""

    kind: Literal["local", "ray"] = run_only("local")
    """``local``: one run after another in this process. ``ray``: each run (cell x arm x seed) is one Ray task,
    so a grid of hundreds of runs spreads over a cluster; this process stays the only writer of the run store and
    appends each record as it arrives. Needs the optional ``ray`` extra."""
    address: str = run_only("local", min_length=1)
    """``kind: ray``: which cluster. ``local`` starts a private one on this machine (``local_cpus``) that ends
    with this process; ``auto`` joins the one ``ray start`` made on this machine (a head node, a Slurm job);
    ``<host>:6379`` one elsewhere."""
    local_cpus: int | None = run_only(None, ge=1)
    """CPUs of the private cluster that ``address: local`` starts (``None``: every core Ray sees). On a shared
    machine this bounds how many runs train at once."""
    num_cpus: int = run_only(1, ge=1)
    """CPUs Ray reserves for each run, and its torch threads unless ``encoder.threads`` is set. One thread per run
    makes a run's predictions the same as the local loop's with one thread."""
    num_gpus: float = run_only(0.0, ge=0)
    """GPUs Ray reserves for each run: 1 on a GPU cluster (the HF Trainer then trains on the GPU Ray assigns), 0
    on CPUs; a fraction packs several small runs onto one GPU."""
    max_retries: int = run_only(2, ge=0)
    """How often Ray re-runs a task whose worker died (a killed process, a lost node) before the grid fails; the
    driver appends a run only once, whichever attempt finished it."""

    @field_validator("kind")
    @classmethod
    def _ray_installed(cls, v: str) -> str:
        if v == "ray" and importlib.util.find_spec("ray") is None:
            raise ValueError(f"executor kind 'ray' needs Ray, which is not installed: {RAY_INSTALL}")
        return v


class ClaimsConfig(_Strict):
    """How the claims report decides (``redpo.analysis.report``): bootstrap size and the stated margins."""

    bootstrap_replicates: int = Field(2000, ge=100)
    """Replicates of every paired bootstrap behind a claim's CI."""
    bootstrap_seed: int = 0
    edition: str = Field("", max_length=300, pattern=r"^[^\n\r]*$")
    """What this run is when a decisive run is repeated on a changed pipeline: which edition, its generator and
    pipeline version (say ``first edition (Qwen2.5-Coder-0.5B generator, pipeline 1: ...)``). The folder keeps the
    profile's name, so that the edition replays from its own archive; this name goes into the claims report's title
    and the README's editions table, so that a reader sees what each edition was: one line, since the title holds
    it. Empty for a run that has no editions."""
    close_ratio: float = Field(0.6, gt=0, le=1)
    """Claim 4's "comes close": the lower end of the CI of F1(generated) / F1(manual) must reach this. A ratio,
    not a gap in points, because the paper's own SemEval gap (61.39 - 42.02 = 19.4 points) is a ratio of 0.68:
    what "close" means scales with how well manual data does."""


class AuditConfig(_Strict):
    """The hand check (``python -m redpo audit``, ``redpo.analysis.audit``): which arms a person judges, how many
    samples of each, and the confidence level of the share judged correct. Read by that command only, never by a
    run, so no result's identity depends on it."""

    arms: list[str] = Field(default_factory=lambda: ["obo", "obo_dpo", "aao"], min_length=1)
    """Generation arms to draw from, by their file stem (``generations/<arm>_k<K>_s<seed>.jsonl``): the paper's
    primary arms by default; a new configuration is added with ``--arm NAME``."""
    per_arm: int = Field(40, ge=1)
    """Samples drawn per arm: enough that the share correct has a CI of about +/- 15 points, few enough that one
    person reads every one of them carefully."""
    ci_level: float = Field(0.95, gt=0, lt=1)
    """Confidence level of the Wilson interval around each arm's share judged correct."""

    @field_validator("arms")
    @classmethod
    def _stems(cls, v: list[str]) -> list[str]:
        bad = [a for a in v if not a or not all(ch.isalnum() or ch == "_" for ch in a)]
        if bad:
            raise ValueError(f"arm names are file stems of letters, digits and '_': {bad}")
        return v


FITTED_BASE = "tiny-random-llama"
"""What ``generator.fit`` builds and fits instead of loading ``generator.model`` (the smoke profile)."""


class Profile(_Strict):
    """One run's complete configuration."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=100)
    """The results folder's name under the results root: one plain folder name (letters, digits, ``.``, ``_``,
    ``-``; no ``/`` and no leading dot), so ``-p name=../../x`` cannot write outside the results root."""
    description: str = ""
    dataset: DatasetConfig = DatasetConfig()
    fewshot: FewShotConfig = FewShotConfig()
    generator: GeneratorConfig = GeneratorConfig()
    generation: GenerationConfig = GenerationConfig()
    encoder: EncoderConfig = EncoderConfig()
    dpo: DPOConfig = DPOConfig()
    llm_re: LLMREConfig = LLMREConfig()
    oracle: OracleConfig = OracleConfig()
    consistency: ConsistencyConfig = ConsistencyConfig()
    training_sets: TrainingSetsConfig = TrainingSetsConfig()
    plateau: PlateauConfig = PlateauConfig()
    ladder: LadderConfig = LadderConfig()
    claims: ClaimsConfig = ClaimsConfig()
    audit: AuditConfig = AuditConfig()
    executor: ExecutorConfig = ExecutorConfig()
    seed: int = 42

    @field_validator("executor", mode="before")
    @classmethod
    def _executor_by_name(cls, v: Any) -> Any:
        """``executor: ray`` (or ``-p executor=ray``) is short for ``executor: {kind: ray}``."""
        return {"kind": v} if isinstance(v, str) else v

    @model_validator(mode="after")
    def _consistent(self) -> Profile:
        if self.generator.fit.steps > 0 and self.generator.model != FITTED_BASE:
            raise ValueError(
                f"generator.fit.steps > 0 builds and fits its own tiny Llama ({FITTED_BASE} architecture; the "
                f"manifest records it as the fitted model with its hash), so generator.model "
                f"{self.generator.model!r} would never be used: set generator.model to {FITTED_BASE!r} or "
                "generator.fit.steps to 0"
            )
        if self.generation.constrained and self.generator.backend != "llama_cpp":
            raise ValueError("generation.constrained needs an inference server that samples within a grammar: set "
                             "generator.backend to llama_cpp (a local llama-server, or a vLLM/SGLang server at "
                             "generator.server.url), or generation.constrained to false")
        if self.generation.min_tokens >= self.generation.max_tokens:
            raise ValueError("generation.min_tokens must be smaller than generation.max_tokens")
        not_generated = [a for a in self.dpo.arms if a not in self.generation.arms]
        if not_generated:
            raise ValueError(
                f"dpo.arms {not_generated} are not in generation.arms {self.generation.arms}: notebook 03 compares "
                "each DPO arm with notebook 02's run of the same arm; add them to generation.arms"
            )
        return self

    # ---- paths -------------------------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return data_dir()

    @property
    def dataset_dir(self) -> Path:
        return data_dir() / self.dataset.resolved_path



# ---- environment-driven locations ------------------------------------------------------------------
def data_dir() -> Path:
    """``REDPO_DATA_DIR``, defaulting to the gitignored ``data/`` at the repository root."""
    return Path(os.environ.get("REDPO_DATA_DIR") or REPO_ROOT / "data").expanduser()


def cache_dir() -> Path:
    """``REDPO_CACHE`` (converted models, tiny models), defaulting to ``~/.cache/redpo``."""
    return Path(os.environ.get("REDPO_CACHE") or Path.home() / ".cache" / "redpo").expanduser()


def results_root() -> Path:
    """``REDPO_RESULTS_DIR``, defaulting to ``results/`` at the repository root."""
    return Path(os.environ.get("REDPO_RESULTS_DIR") or REPO_ROOT / "results").expanduser()


SectionT = TypeVar("SectionT", bound=BaseModel)


# ---- loading -------------------------------------------------------------------------------------
def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error as ``line L, column C: problem`` on one line: PyYAML's own text spans several lines (it quotes
    the offending snippet), and every expected error must be one ``error:`` line."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + " ".join(str(problem).split())


def safe_yaml(text: str, source: str, fix: str) -> Any:
    """``yaml.safe_load`` whose every failure, a ``!!python/...`` tag included, is a one-line :class:`ConfigError`
    naming ``source``, the line and ``fix``."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML ({yaml_problem(err)}); {fix}") from None


def parse_override(text: str) -> tuple[str, Any]:
    """``"generation.n_per_relation=4"`` -> ``("generation.n_per_relation", 4)``; values are YAML scalars."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} is not of the form key=value (e.g. -p fewshot.k=[8,16])")
    return key.strip(), safe_yaml(raw, f"override {text!r}", "quote the value or close its brackets, e.g. "
                                  "-p fewshot.k=[8,16]")


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any], source: str) -> dict[str, Any]:
    """Merge dotted-key overrides into a nested dict (a copy); unknown sections fail later in validation."""
    merged = _deep_copy(raw)
    for dotted, value in overrides.items():
        node = merged
        parts = dotted.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"{source}: override {dotted!r}: {part!r} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return merged


def load_profile(name_or_path: str | Path = "cpu", overrides: dict[str, Any] | None = None) -> Profile:
    """Load a profile by name (``smoke``/``cpu``/``paper``) or YAML path, apply overrides, validate."""
    path = Path(name_or_path)
    if path.suffix not in {".yaml", ".yml"}:
        path = PROFILES_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"profile {str(name_or_path)!r} not found at {path}; available: {', '.join(available_profiles())}"
        )
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 (byte offset {err.start}); re-save the profile as UTF-8") from None
    raw = safe_yaml(text, str(path), "fix the profile (plain YAML only: no tags such as !!python/object)") or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a profile must be a YAML mapping of sections")
    raw.setdefault("name", path.stem)
    merged = apply_overrides(raw, dict(overrides or {}), source=str(path))
    try:
        return Profile.model_validate(merged)
    except ValidationError as err:
        raise ConfigError(
            f"{path} (with overrides {overrides or {}}): {_problems(err)}. "
            "Fix the key in the profile YAML or the -p override; see README 'Profiles'."
        ) from None


def derive(section: SectionT, changes: Mapping[str, Any]) -> SectionT:
    """``section`` (a profile or one of its sections) with dotted ``changes`` applied and validated again.

    Why not ``model_copy(update=...)``: pydantic never validates that, so a derived profile could hold a value its
    own YAML would be refused for, and the cross-field checks of :class:`Profile` would not run.
    """
    raw = apply_overrides(section.model_dump(), dict(changes), source=f"derived {type(section).__name__}")
    try:
        return type(section).model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"derived {type(section).__name__} with {dict(changes)}: {_problems(err)}") from None


def _problems(err: ValidationError) -> str:
    """Every validation error as ``dotted.key: message``, joined: one line that names each key to fix."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in err.errors())


def profile_to_dict(profile: Profile) -> dict[str, Any]:
    """A JSON-safe dict of the resolved profile, for the manifest."""
    return profile.model_dump(mode="json")


def _deep_copy(d: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in d.items()}
