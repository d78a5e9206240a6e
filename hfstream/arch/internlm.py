"""InternLM3 (InternLM3ForCausalLM): Llama's converter under llama.cpp's ``llama`` architecture, with
a SentencePiece vocab of its own.

Both config.json and tokenizer_config.json name repo code (``auto_map``). Neither is run here, nor
needed: transformers has its own ``internlm3`` config class, which ``AutoConfig`` takes (the class
in the repo would need ``trust_remote_code``), and the reference reads the tokenizer as data:

- ``tokenizer.model`` and the ``added_tokens_decoder`` (the SentencePiece path), then
  ``add_space_prefix`` from ``add_prefix_space`` when tokenizer_config.json has it (after the token
  types, before the special tokens), then the special tokens with the EOS id moved to ``<|im_end|>``
  when that is a special added token (the chat models end a turn with it);
- hyperparameters and tensors as Llama's (vocab size and rope dimension count; q/k rows permuted),
  but no ``rope_freqs``: InternLM3's rope scaling is ``dynamic``, which llama.cpp reads as no scaling;
- multimodal parts (``vision_model.*``, ``mlp*``) are left out.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import gguf

from .. import errors, jsonfile
from ..graph import Node
from . import register
from .base import TextFamily
from .llama import Llama


@register
class InternLM3(Llama):
    hf_architectures = ("InternLM3ForCausalLM",)
    model_types = ("internlm3",)
    gguf_arch = gguf.MODEL_ARCH.LLAMA

    def source_name(self, name: str) -> str | None:
        if name.startswith("vision_model"):
            return None
        return super().source_name(name)

    def extra_tensors(self) -> Iterable[tuple[str, Node]]:
        return TextFamily.extra_tensors(self)

    def add_vocab(self, w: gguf.GGUFWriter, files: Mapping[str, bytes], bpe_pre: str | None) -> None:
        from ..vocab import SpecialTokens, add_vocab

        config = jsonfile.load(files["tokenizer_config.json"], "tokenizer_config.json") \
            if "tokenizer_config.json" in files else None
        config = config if isinstance(config, dict) else {}
        decoder = config.get("added_tokens_decoder", {})

        def chat_eos(writer: gguf.GGUFWriter, special: SpecialTokens) -> None:
            if "add_prefix_space" in config:
                if type(config["add_prefix_space"]) is not bool:
                    raise errors.InvalidConfigError("tokenizer_config.json: add_prefix_space must be true or false")
                writer.add_add_space_prefix(config["add_prefix_space"])
            # the reference sets every special added token as a "type" named by its text, which no GGUF
            # key has (so nothing is written for them), and moves EOS to <|im_end|>
            for key, data in (decoder.items() if isinstance(decoder, dict) else ()):
                if (isinstance(data, dict) and data.get("special") and data.get("content") == "<|im_end|>"
                        and "eos" in special.ids):
                    if not str(key).isdecimal():
                        raise errors.InvalidConfigError(f"tokenizer_config.json: bad added_tokens_decoder id {key!r}")
                    special.replace("eos", int(key))

        # tokenizer.model only (the reference's SentencePiece path), and none of Llama's vocab quirks
        add_vocab(w, files, self.hparams, strategies=("spm",), special=chat_eos)
