"""Cohere's Command R family: Command R / R+ / Aya 23 (CohereForCausalLM) and Command R7B /
Command A (Cohere2ForCausalLM). The shared decoder keys, the tensors mapped as they are (no q/k
permute), the output tied to the token embedding, a BPE vocab; what the reference adds:

- both write ``logit_scale`` and rope scaling type "none";
- Command R writes the context length from ``model_max_length`` when config.json has it (the
  models were trained to 128k while ``max_position_embeddings`` says 8192); Command R+'s per-head
  q/k LayerNorms (``use_qk_norm``) are (heads, head_dim) matrices, kept F32 as every norm;
- Command R7B writes the sliding window, the vocab size and the rope dimension count
  ``int(rotary_pct * (hidden / heads))``, and drops bias tensors after checking that they are zero.
  That check reads values, which hfstream does not do before planning: a Cohere2 checkpoint with
  bias tensors is refused (Command R7B's config sets ``attention_bias`` false: it has none).
"""

from __future__ import annotations

from typing import Any, Iterable

import gguf

from .. import errors
from ..safetensors import SourceTensor
from . import register
from .base import DECODER_SHAPES, LAYER, TextFamily


class _Cohere(TextFamily):
    vocab_strategies = ("bpe",)

    def _required(self, key: str) -> Any:
        if self.hparams.get(key) is None:
            raise errors.InvalidConfigError(f"config.json: {self.hf_arch} needs {key}")
        return self.hparams[key]

    def add_hparams(self, w: gguf.GGUFWriter, file_type: int) -> None:
        super().add_hparams(w, file_type)
        w.add_logit_scale(self._required("logit_scale"))


@register
class CommandR(_Cohere):
    hf_architectures = ("CohereForCausalLM",)
    model_types = ("cohere",)
    gguf_arch = gguf.MODEL_ARCH.COMMAND_R
    # before the shared rules (the first match wins): these q/k norms are per head, not one head wide
    shape_rules = (
        (LAYER + r"self_attn\.q_norm\.weight", ("heads", "head_dim")),
        (LAYER + r"self_attn\.k_norm\.weight", ("kv_heads", "head_dim")),
    ) + DECODER_SHAPES

    def __init__(self, hparams, hf_arch):
        super().__init__(hparams, hf_arch)
        self.hparams["max_position_embeddings"] = self.find(("model_max_length", "max_position_embeddings"))

    def add_hparams(self, w: gguf.GGUFWriter, file_type: int) -> None:
        super().add_hparams(w, file_type)
        w.add_rope_scaling_type(gguf.RopeScalingType.NONE)


@register
class Cohere2(_Cohere):
    hf_architectures = ("Cohere2ForCausalLM",)
    model_types = ("cohere2",)
    gguf_arch = gguf.MODEL_ARCH.COHERE2

    def add_hparams(self, w: gguf.GGUFWriter, file_type: int) -> None:
        super().add_hparams(w, file_type)
        w.add_sliding_window(self._required("sliding_window"))
        w.add_vocab_size(self._required("vocab_size"))
        head_size = self.find(("hidden_size",)) // self.find(("num_attention_heads",))
        w.add_rope_dimension_count(int(self._required("rotary_pct") * head_size))
        w.add_rope_scaling_type(gguf.RopeScalingType.NONE)

    def use_sources(self, sources: Iterable[tuple[str, SourceTensor]]) -> None:
        bias = next((name for name, _ in sources if name.endswith(".bias")), None)
        if bias is not None:
            raise errors.UnsupportedArchitectureError(
                f"Cohere2 bias tensor {bias}: llama.cpp has no place for it, and the reference drops such "
                "tensors only after checking that they are all zero, a check of values hfstream does not make")
