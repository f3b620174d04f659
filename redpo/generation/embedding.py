"""Sentence embeddings from an HF encoder, for the embedding-cosine diversity metric.

Apart from :mod:`redpo.generation.diversity` because it needs torch, and the diversity metrics themselves must stay
importable by the analysis layer, which loads no model library.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from redpo.generation.diversity import Embedder


def make_encoder_embedder(loaded_model: Any, batch_size: int = 32, max_length: int = 128) -> Embedder:
    """Mean-pooled last hidden states of an HF encoder (``.model``, ``.tokenizer``), as sentence-transformers'
    MiniLM does; padding is masked out so a sentence embeds the same alone or in a batch."""
    import torch

    model, tokenizer = loaded_model.model, loaded_model.tokenizer
    model.eval()

    def embed(texts: list[str]) -> np.ndarray:
        chunks: list[np.ndarray] = []
        with torch.no_grad():
            for start in range(0, len(texts), batch_size):
                enc = tokenizer(
                    texts[start : start + batch_size],
                    padding=True,
                    truncation=True,
                    max_length=max_length,
                    return_tensors="pt",
                ).to(model.device)
                hidden = model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                chunks.append(pooled.float().cpu().numpy())
        width = getattr(getattr(model, "config", None), "hidden_size", 0)
        return np.concatenate(chunks) if chunks else np.zeros((0, width), dtype=np.float32)

    return embed
