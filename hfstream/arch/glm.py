"""GLM-4-0414 (Glm4ForCausalLM): the shared decoder with GLM's own norms and vocab.

What the reference does beyond the defaults:

- the rope dimension count is ``head_dim`` (else hidden / heads) times ``partial_rotary_factor``
  (0.5 when the config has none): GLM rotates half of each head;
- tensors are mapped as they are: the fused ``gate_up_proj`` stays one ``ffn_up`` (llama.cpp splits it),
  ``post_self_attn_layernorm`` / ``post_mlp_layernorm`` become ``post_attention_norm`` / ``post_ffw_norm``;
  no q/k permute (a config with M-RoPE sections, GLM-4V's, would need one: refused);
- vocab: the BPE ``tokenizer.json``, then ``<|endoftext|>`` as EOS, UNK and BOS and ``<|user|>`` as EOT,
  from the tokenizer's added tokens, for the types the tokenizer files do not name. The reference
  loads that tokenizer with ``trust_remote_code``; one that names its own code (``auto_map``) is refused.
"""

from __future__ import annotations

from typing import Mapping

import gguf

from .. import errors, jsonfile
from . import register
from .base import TextFamily

#: special token types the reference takes from GLM-4's added tokens when the files name none, in its order
_ADDED_SPECIALS = (("eos", "<|endoftext|>"), ("eot", "<|user|>"), ("unk", "<|endoftext|>"), ("bos", "<|endoftext|>"))


@register
class Glm4(TextFamily):
    hf_architectures = ("Glm4ForCausalLM",)
    model_types = ("glm4",)
    gguf_arch = gguf.MODEL_ARCH.GLM4
    vocab_strategies = ("bpe",)

    def __init__(self, hparams, hf_arch):
        super().__init__(hparams, hf_arch)
        if "mrope_section" in self.rope:
            raise errors.UnsupportedArchitectureError(
                f"{hf_arch} with M-RoPE sections (rope mrope_section) is not supported")

    def add_hparams(self, w: gguf.GGUFWriter, file_type: int) -> None:
        super().add_hparams(w, file_type)
        head_dim = self.hparams.get("head_dim")
        if head_dim is None:
            head_dim = self.find(("hidden_size",)) // self.find(("num_attention_heads",))
        w.add_rope_dimension_count(int(head_dim * self.rope.get("partial_rotary_factor", 0.5)))

    def add_vocab(self, w: gguf.GGUFWriter, files: Mapping[str, bytes], bpe_pre: str | None) -> None:
        from ..vocab import SpecialTokens, add_vocab

        tok_config = jsonfile.load(files["tokenizer_config.json"], "tokenizer_config.json") \
            if "tokenizer_config.json" in files else None
        if isinstance(tok_config, dict) and "auto_map" in tok_config:
            raise errors.UnsupportedTokenizerError(
                f"{self.hf_arch}: tokenizer_config.json names the repo's own tokenizer code (auto_map), which "
                "the reference runs (trust_remote_code) and hfstream never runs")

        def added_specials(_: gguf.GGUFWriter, special: SpecialTokens) -> None:
            missing = [content for _, content in _ADDED_SPECIALS if content not in special.added]
            if missing:
                raise errors.UnsupportedTokenizerError(
                    f"{self.hf_arch}: the tokenizer has no added token {missing[0]}, which GLM-4's vocab needs")
            for typ, content in _ADDED_SPECIALS:
                special.set_default(typ, special.added[content])

        add_vocab(w, files, self.hparams, strategies=self.vocab_strategies, bpe_pre=bpe_pre, special=added_specials)
