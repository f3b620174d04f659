"""Tiny random models built locally in seconds, so tests and the ``smoke`` profile need no download.

Everything is seeded: the corpus, the tokenizer training and the weights, so the same arguments give
byte-identical weight files (the manifest's sha256 stays stable between runs). The builders only
write a directory; :func:`ensure_tiny` caches their output under ``REDPO_CACHE``.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    BertConfig,
    BertModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from redpo.models.packaged import cached_build
from redpo.models.registry import ModelInfo, ModelNotFoundError, model_dir

BUILDER_VERSION = 1
"""Bump when a builder changes what it writes, so cached tiny models are rebuilt."""

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
"""ChatML: the same shape as Qwen's, so prompt code renders system/user/assistant turns the same way."""

LLAMA_SPECIAL = ["<|pad|>", "<|im_start|>", "<|im_end|>"]
BERT_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _phrases(text: str) -> list[str]:
    return text.split("|")


_SUBJECTS = _phrases(
    "the company|a soldier|the government|her brother|the engineer|a child|the bank|the president|"
    "a journalist|the university|the team|a doctor|the machine|a researcher|the river|my neighbour|"
    "the committee|an engine|the author|a small village|the museum|our teacher|the storm|a farmer|"
    "the virus|the orchestra"
)
_VERBS = _phrases(
    "produced|crossed|discovered|attacked|visited|announced|delivered|repaired|surrounded|generated|"
    "was made of|belonged to|resulted in|painted|described|founded|destroyed|contained|caused|wrote|"
    "moved into|owned|was part of|came from|sent|used|was located in|emitted|built"
)
_OBJECTS = _phrases(
    "a new bridge|the kitchen|a powerful computer|the ancient temple|a glass of water|"
    "the national park|a heavy suitcase|the football stadium|a famous painting|the newspaper|"
    "a chemical reaction|the electricity network|a birthday cake|the parliament|a cotton shirt|"
    "the old factory|a red apple|the library|a letter|the mountain|a song|the city council|"
    "a wooden box|the hospital|a loud noise|the harbour|a large crowd"
)
_EXTRAS = [
    "Relation: Cause-Effect(e1,e2).",
    "Entity-Origin",
    "Component-Whole",
    "Member-Collection",
    "Other",
    "Generate 5 samples.",
    "Sentence:",
    "Output the samples one per line.",
    "Here is an example:",
    "0123456789",
    "Tom, Anna & Co. (2024) - 'quoted'; 50% [x] {y} <z> ? ! :",
    "user",
    "assistant",
]


def default_corpus(n_sentences: int = 3000, seed: int = 0) -> list[str]:
    """Deterministic English-like sentences with entity markers, so BPE learns useful merges offline."""
    rng = random.Random(seed)
    lines = list(_EXTRAS)
    for _ in range(n_sentences):
        subj, verb, obj = rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_OBJECTS)
        if rng.random() < 0.5:
            line = f"<e1>{subj}</e1> {verb} <e2>{obj}</e2>."
        else:
            line = f"{subj.capitalize()} {verb} {obj} in {rng.randint(1800, 2030)}."
        lines.append(line)
    return lines


def train_bpe_tokenizer(
    corpus: Iterable[str], vocab_size: int = 1000, added_tokens: Sequence[str] = ()
) -> PreTrainedTokenizerFast:
    """Byte-level BPE over ``corpus`` with ChatML specials; byte-level means any text encodes without UNK.

    ``added_tokens`` become single, non-special tokens (the smoke generator gets the entity markers this way,
    so a sub-million-parameter model learns the output format in seconds rather than spelling ``<e1>``).
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=LLAMA_SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in added_tokens])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<|pad|>",
        eos_token="<|im_end|>",
        bos_token="<|im_start|>",
        chat_template=CHAT_TEMPLATE,
        padding_side="left",
        model_max_length=2048,
    )


def train_wordpiece_tokenizer(corpus: Iterable[str], vocab_size: int = 1000) -> PreTrainedTokenizerFast:
    """Uncased BERT-style WordPiece with [CLS]/[SEP]; every printable ASCII char is in the vocab.

    The vocab is the characters plus the corpus's most frequent words (ties by spelling) rather than
    ``WordPieceTrainer``'s, whose output changes from process to process.
    """
    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre = pre_tokenizers.BertPreTokenizer()
    chars = [chr(c) for c in range(33, 127) if not chr(c).isupper()]
    vocab = [*BERT_SPECIAL, *chars, *(f"##{c}" for c in chars)]
    counts = Counter(
        word for line in corpus for word, _ in pre.pre_tokenize_str(normalizer.normalize_str(line)) if len(word) > 1
    )
    vocab += [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))][: vocab_size - len(vocab)]
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre
    tok.decoder = decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab.index("[CLS]")), ("[SEP]", vocab.index("[SEP]"))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=512,
    )


def _save(model: torch.nn.Module, tokenizer: PreTrainedTokenizerFast, out_dir: str | Path) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def build_tiny_llama(
    out_dir: str | Path,
    corpus: Iterable[str] | None = None,
    *,
    vocab_size: int = 1000,
    hidden: int = 128,
    layers: int = 2,
    heads: int = 4,
    max_positions: int = 2048,
    seed: int = 0,
    added_tokens: Sequence[str] = (),
) -> Path:
    """A random ``LlamaForCausalLM`` (~0.5M params by default) with a BPE tokenizer trained on ``corpus``.

    Pass a corpus of real prompts to get a tokenizer that fits them (the smoke profile's fitted model).
    """
    tokenizer = train_bpe_tokenizer(default_corpus(seed=seed) if corpus is None else corpus, vocab_size, added_tokens)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return _save(model, tokenizer, out_dir)


def build_tiny_bert(
    out_dir: str | Path,
    corpus: Iterable[str] | None = None,
    *,
    vocab_size: int = 1000,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    max_positions: int = 512,
    seed: int = 0,
) -> Path:
    """A random ``BertModel`` with a WordPiece tokenizer, standing in for MiniLM / RoBERTa in tests."""
    tokenizer = train_wordpiece_tokenizer(default_corpus(seed=seed) if corpus is None else corpus, vocab_size)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=hidden * 4,
        max_position_embeddings=max_positions,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return _save(BertModel(config), tokenizer, out_dir)


# ---- cached builds -------------------------------------------------------------------------------
TINY: dict[str, tuple[Callable[..., Path], str]] = {
    "tiny-random-llama": (build_tiny_llama, "Random 2-layer Llama + byte-level BPE with a ChatML template."),
    "tiny-random-bert": (build_tiny_bert, "Random 2-layer BERT (hidden 64) + WordPiece; for tests/smoke."),
}
"""Registry names of the tiny random models: ``name -> (builder, description)``."""


def ensure_tiny(name: str, corpus: Iterable[str] | None = None, **params: Any) -> ModelInfo:
    """Build (once) and cache a tiny model under ``REDPO_CACHE/models/<name>-<config hash>/``.

    ``name`` is ``tiny-random-llama`` or ``tiny-random-bert``; ``corpus`` and ``params`` go to the builder
    and, with ``BUILDER_VERSION``, into the hash, so a fitted variant (own corpus) gets its own directory.
    """
    if name not in TINY:
        raise ModelNotFoundError(f"unknown tiny model {name!r}; known: {', '.join(TINY)}")
    builder = TINY[name][0]
    lines = None if corpus is None else list(corpus)
    key = {"name": name, "builder": BUILDER_VERSION, "params": params}
    key["corpus_sha256"] = None if lines is None else hashlib.sha256("\n".join(lines).encode()).hexdigest()
    config_hash = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]

    def build(out: Path) -> dict[str, Any]:
        builder(out, lines, **params)
        return {"config_hash": config_hash, **key}

    return cached_build(name, model_dir(f"{name}-{config_hash}"), build, "tiny")


