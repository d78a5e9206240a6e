"""StableLM 2 (StableLmForCausalLM): LayerNorms with biases, partial rotary, a keys order of its own.

What the reference does:

- its own hyperparameter keys, in its order: the rope dimension count is
  ``int(partial_rotary_factor * (hidden / heads))`` (required), ``parallel_residual`` is the config's
  ``use_parallel_residual`` (true when absent), the LayerNorm epsilon from ``layer_norm_eps`` or
  ``norm_eps``, no rope theta;
- tensors mapped as they are (q/k/v biases with ``use_qkv_bias``, no q/k permute);
- vocab: ``tokenizer.json`` as BPE; without one (StableLM 2 1.6B's first upload, a tiktoken vocab)
  the reference builds the tokenizer with the repo's own code, which hfstream never runs: refused;
- StableLM 2 12B's per-head q/k LayerNorms (``qk_layernorm``, one tensor per head) make the reference
  stop ("Unprocessed norms": its stacking step is never run), so there is no output to match: refused.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import gguf

from .. import errors
from ..safetensors import SourceTensor
from . import register
from .base import DECODER_SHAPES, LAYER, TextFamily


@register
class StableLm(TextFamily):
    hf_architectures = ("StableLmForCausalLM",)
    model_types = ("stablelm",)
    gguf_arch = gguf.MODEL_ARCH.STABLELM
    vocab_strategies = ("bpe",)
    shape_rules = DECODER_SHAPES + (
        (r"model\.norm\.bias", ("hidden",)),
        (LAYER + r"(input|post_attention)_layernorm\.bias", ("hidden",)),
    )

    def _required(self, key: str):
        if key not in self.hparams:
            raise errors.InvalidConfigError(f"config.json: StableLM needs {key}")
        return self.hparams[key]

    def add_hparams(self, w: gguf.GGUFWriter, file_type: int) -> None:
        hidden, heads = self._required("hidden_size"), self._required("num_attention_heads")
        if "partial_rotary_factor" not in self.rope:
            raise errors.InvalidConfigError("config.json: StableLM needs partial_rotary_factor")
        w.add_context_length(self._required("max_position_embeddings"))
        w.add_embedding_length(hidden)
        w.add_block_count(self.block_count)
        w.add_feed_forward_length(self._required("intermediate_size"))
        w.add_rope_dimension_count(int(self.rope["partial_rotary_factor"] * (hidden // heads)))
        w.add_head_count(heads)
        w.add_head_count_kv(self._required("num_key_value_heads"))
        w.add_parallel_residual(self.hparams.get("use_parallel_residual", True))
        w.add_layer_norm_eps(self.find(("layer_norm_eps", "norm_eps")))
        w.add_file_type(file_type)

    def use_sources(self, sources: Sequence[tuple[str, SourceTensor]]) -> None:
        norm = next((name for name, _ in sources if "q_layernorm.norms" in name or "k_layernorm.norms" in name), None)
        if norm is not None:
            raise errors.UnsupportedArchitectureError(
                f"StableLM per-head q/k norms ({norm}): llama.cpp's converter stops on them (its stacking step "
                "never runs), so there is no reference output for hfstream to match")

    def add_vocab(self, w: gguf.GGUFWriter, files: Mapping[str, bytes], bpe_pre: str | None) -> None:
        if "tokenizer.json" not in files:
            raise errors.UnsupportedTokenizerError(
                "StableLM without tokenizer.json: the reference builds its tokenizer with the repo's own code "
                "(trust_remote_code), which hfstream never runs")
        super().add_vocab(w, files, bpe_pre)
