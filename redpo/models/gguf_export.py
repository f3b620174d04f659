"""``python -m redpo.models.gguf_export SRC PRE HF_DIR [converter args]``: llama.cpp's ``convert_hf_to_gguf.py``
from the pinned source at ``SRC``, optionally told the pre-tokenizer ``PRE`` (see
:func:`redpo.models.llama_cpp.convert_to_gguf`). It runs in its own process: the converter imports its own
``gguf-py`` and configures logging globally.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> None:
    source, pre_tokenizer, *converter_args = argv
    sys.path[:0] = [source, f"{source}/gguf-py"]
    from conversion import base, llama  # the vendored converter's package, from SRC

    if pre_tokenizer:
        base.TextModel.get_vocab_base_pre = lambda self, tokenizer: pre_tokenizer
        # Llama tries a SentencePiece vocabulary first; a stated pre-tokenizer means a byte-level BPE one.
        llama.LlamaModel.set_vocab = lambda self: self._set_vocab_gpt2()
    import convert_hf_to_gguf

    sys.argv = ["convert_hf_to_gguf.py", *converter_args]
    convert_hf_to_gguf.main()


if __name__ == "__main__":
    main(sys.argv[1:])
