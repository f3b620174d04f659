"""``python -m redpo bench lora``: does llama.cpp apply a DPO adapter as transformers + PEFT does?

The llama.cpp engine serves each PEFT adapter converted to GGUF LoRA. A conversion or scaling error would not
crash anything: it would silently generate the DPO arms with a different model. So this measures, on the
profile's own generator and a real adapter, the **teacher-forced top-1 agreement**: transformers + PEFT decodes
greedily from each prompt, and at every step of that continuation the server, given the same token prefix and the
adapter at scale 1, names its single most likely next token. Agreement is the share of steps where the two agree
(ties in near-equal logits are the only expected disagreements).

The adapter is ``adapters/A`` of the results folder when notebook 03 has trained it; otherwise a short *probe*
adapter is trained on half A's first ``PROBE_PAIRS`` real pairs (``PROBE_STEPS`` steps at a learning rate high
enough to move the weights), under ``cache/lora_probe/``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from redpo.config import Profile, derive
from redpo.core.io import ResultsDir
from redpo.dpo.adapters import adapter_dir
from redpo.dpo.pairs import build_and_save_pairs, load_pairs, pairs_path
from redpo.dpo.train import train_adapter
from redpo.generation import engines
from redpo.generation.backends.server import ServerBackend
from redpo.generation.cache import LLMCache
from redpo.models.load import clear_model_cache, load_causal_lm
from redpo.models.packaged import hash_model_dir

PROBE_STEPS = 4
PROBE_PAIRS = 8
"""The probe adapter trains on half A's first pairs only: its job is to move the LoRA weights, not to be good."""
PROBE_LEARNING_RATE = 5e-4
PROMPTS = 3
STEPS = 32


def top1_agreement(reference_model: Any, tokenizer: Any, server: ServerBackend, prompts: Sequence[str],
                   lora: list[dict[str, float]] | None = None, steps: int = STEPS) -> dict[str, Any]:
    """Teacher-forced top-1 agreement of the llama-server behind ``server`` with ``reference_model`` (see the module
    docstring); ``lora`` is the request's adapter scales."""
    import torch

    agree = total = 0
    per_prompt = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            out = reference_model.generate(**ids, max_new_tokens=steps, do_sample=False, temperature=None,
                                           top_p=None, top_k=None, pad_token_id=tokenizer.pad_token_id)
        prompt_ids, reference = ids["input_ids"][0].tolist(), out[0, ids["input_ids"].shape[1]:].tolist()
        hits = 0
        for i, expected in enumerate(reference):
            body: dict[str, Any] = {"prompt": prompt_ids + reference[:i], "n_predict": 1, "temperature": 0.0,
                                    "top_k": 1, "samplers": ["top_k"], "return_tokens": True, "cache_prompt": True,
                                    "id_slot": 0}
            if lora is not None:
                body["lora"] = lora
            hits += server.post("/completion", body)["tokens"][0] == expected
        per_prompt.append({"steps": len(reference), "agree": hits})
        agree, total = agree + hits, total + len(reference)
    return {"agreement": round(agree / total, 4) if total else None, "tokens": total, "per_prompt": per_prompt}


def probe_adapter(profile: Profile, results: ResultsDir) -> Path:
    """``adapters/A`` if notebook 03 trained it, else a short probe adapter on half A's real pairs (cached)."""
    trained = adapter_dir(results, "A")
    if (trained / "adapter_config.json").is_file():
        return trained
    out = results.cache / "lora_probe"
    if (out / "adapter_config.json").is_file():
        return out
    if not pairs_path(results, "A").is_file():
        build_and_save_pairs(profile, results)
    probe = derive(profile, {"dpo.max_steps": PROBE_STEPS, "dpo.batch_size": 2,
                             "dpo.learning_rate": PROBE_LEARNING_RATE, "dpo.checkpoint_steps": 0,
                             "dpo.held_out": 0.0})
    pairs = load_pairs(results, "A")
    train_adapter(probe, pairs.select(range(min(PROBE_PAIRS, len(pairs)))), out, progress=False)
    return out


def bench_lora(profile: Profile, results: ResultsDir, *, backends: Sequence[str] = ("llama_cpp",)) -> dict[str, Any]:
    """Agreement of the GGUF LoRA on llama-server with transformers + PEFT, on half A's first DPO prompts."""
    if list(backends) != ["llama_cpp"]:
        raise ValueError(f"bench lora compares llama_cpp with transformers + PEFT only, got {list(backends)}")
    adapter = probe_adapter(profile, results)
    prompts = list(dict.fromkeys(load_pairs(results, "A")["prompt"]))[:PROMPTS]
    clear_model_cache()
    reference = load_causal_lm(str(engines.base_hf_dir(profile)), adapter=str(adapter))
    sha = hash_model_dir(adapter)
    generator = engines.server_generator(profile, results, LLMCache(None), adapters=[(adapter, sha)], active=0)
    try:
        base = top1_agreement(reference.model, reference.tokenizer, generator.backend, prompts,
                              lora=[{"id": 0, "scale": 0.0}])
        with_lora = top1_agreement(reference.model, reference.tokenizer, generator.backend, prompts,
                                   lora=generator.backend.lora)
    finally:
        engines.stop_servers()
        clear_model_cache()
    return {"profile": profile.name, "model": profile.generator.model, "adapter": str(adapter),
            "adapter_sha256": sha, "prompts": len(prompts), "steps": STEPS,
            "lora_agreement": with_lora, "adapter_off_agreement": base,
            "note": "adapter_off: the server with the adapter at scale 0 against transformers + PEFT with it on; "
                    "lower than lora_agreement means the adapter changes the model and llama.cpp applies it"}
