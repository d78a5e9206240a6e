"""LFM2 (``Lfm2ForCausalLM``) and LFM2-MoE (``Lfm2MoeForCausalLM``): short-convolution and attention layers.

``layer_types`` says which layers are gated short convolutions (``conv``) and which attention; the
GGUF writes the per-layer KV head counts (0 for a convolution layer), the convolution's cache length,
and its ``conv.conv`` weight [C, 1, L_cache] squeezed to [C, L_cache] (llama.cpp's conv op takes 2-D).
What else the reference (``LFM2Model``, ``LFM2MoeModel``) does differently from the shared decoder:

- LFM2 writes the feed-forward length again, as the model computes it from ``block_ff_dim`` when
  ``block_auto_adjust_ff_dim`` (two thirds, times ``block_ffn_dim_multiplier``, up to a multiple of
  ``block_multiple_of``); the key keeps its first place.
- LFM2-MoE stacks each layer's per-expert ``w1/w2/w3`` past the ``num_dense_layers`` leading dense
  layers, maps ``expert_bias`` to ``exp_probs_b.bias``, and writes sigmoid gating, the expert width and
  the number of leading dense layers.
- Both write the vocab size, and read only ``tokenizer.json`` (byte-level BPE).
"""

from __future__ import annotations

from typing import Iterator

import gguf

from .. import errors
from ..graph import Node, Reshape
from . import register
from .base import HYBRID_REQUIRED_TENSORS, LAYER, SIZES, ExpertStacks, ShapeRule, TextFamily

_SIZES = {**SIZES, "conv_cache": ("conv_L_cache",),
          "experts": ("num_experts",), "moe_ffn": ("moe_intermediate_size",)}
_SHAPES: tuple[ShapeRule, ...] = (
    (r"model\.embed_tokens\.weight", ("vocab", "hidden")),
    (r"lm_head\.weight", ("vocab", "hidden")),
    (LAYER + r"self_attn\.q_proj\.weight", ("heads*head_dim", "hidden")),
    (LAYER + r"self_attn\.[kv]_proj\.weight", ("kv_heads*head_dim", "hidden")),
    (LAYER + r"self_attn\.out_proj\.weight", ("hidden", "heads*head_dim")),
    (LAYER + r"self_attn\.[qk]_layernorm\.weight", ("head_dim",)),
    (LAYER + r"conv\.conv\.weight", ("hidden", "1", "conv_cache")),
    (LAYER + r"conv\.out_proj\.weight", ("hidden", "hidden")),
    (LAYER + r"feed_forward\.gate\.weight", ("experts", "hidden")),
    (LAYER + r"feed_forward\.experts\.\d+\.w[13]\.weight", ("moe_ffn", "hidden")),
    (LAYER + r"feed_forward\.experts\.\d+\.w2\.weight", ("hidden", "moe_ffn")),
    (r"model\.embedding_norm\.weight", ("hidden",)),
    (LAYER + r"(operator|ffn)_norm\.weight", ("hidden",)),
)


def _squeezed(name: str, node: Node) -> Node:
    """``conv.conv`` [C, 1, K] -> [C, K], as torch's ``squeeze(1)`` (which leaves a dimension other than 1)."""
    if "conv.conv" in name and node.ndim >= 2 and node.shape[1] == 1:
        return Reshape(node, (node.shape[0], *node.shape[2:]))
    return node


class _Lfm2Base(TextFamily):
    vocab_strategies = ("bpe",)
    shape_sizes = _SIZES
    shape_rules = _SHAPES
    #: the layer types whose layers have attention (the others have KV head count 0)
    _attention_types: frozenset[str] = frozenset()
    required_tensors = HYBRID_REQUIRED_TENSORS

    def layer_kind(self, bid: int) -> str:
        return "attention" if self._is_attention(self._layer_types()[bid]) else "conv"

    def _layer_types(self) -> list[str]:
        types = self.hparams.get("layer_types")
        if not isinstance(types, list) or len(types) != self.block_count or not all(isinstance(t, str) for t in types):
            raise errors.InvalidConfigError(
                f"config.json: layer_types must list the {self.block_count} layers' types")
        return types

    def _add_common(self, w: gguf.GGUFWriter, file_type: int) -> None:
        n_kv = self.find(("num_key_value_heads",))
        per_layer = [n_kv if self._is_attention(t) else 0 for t in self._layer_types()]
        # the reference replaces the hparam itself before the shared keys read it
        self.hparams = {**self.hparams, "num_key_value_heads": per_layer}
        super().add_hparams(w, file_type)

    def _is_attention(self, layer_type: str) -> bool:
        raise NotImplementedError

    def _conv_cache(self) -> int:
        return self.find(("conv_L_cache",))


@register
class Lfm2(_Lfm2Base):
    hf_architectures = ("Lfm2ForCausalLM", "LFM2ForCausalLM")
    model_types = ("lfm2",)
    gguf_arch = gguf.MODEL_ARCH.LFM2

    def _is_attention(self, layer_type: str) -> bool:
        return layer_type != "conv"

    def add_hparams(self, w: gguf.GGUFWriter, file_type: int) -> None:
        self._add_common(w, file_type)
        w.add_vocab_size(self.find(("vocab_size",)))
        w.add_shortconv_l_cache(self._conv_cache())
        w.add_layer_norm_rms_eps(self.find(("norm_eps",)))
        w.add_feed_forward_length(self._ff_dim())

    def _ff_dim(self) -> int:
        """The feed-forward width the model builds (``Lfm2MLP``), as the reference computes it."""
        ff = self.find(("block_ff_dim", "intermediate_size"))
        if self.find(("block_auto_adjust_ff_dim",)):
            ff = int(2 * ff / 3)
            if (multiplier := self.find(("block_ffn_dim_multiplier",))) is not None:
                ff = int(multiplier * ff)
            multiple = self.find(("block_multiple_of",))
            if type(multiple) is not int or multiple <= 0:
                raise errors.InvalidConfigError(f"config.json: block_multiple_of is {multiple!r}")
            ff = multiple * ((ff + multiple - 1) // multiple)
        return ff

    def convert(self, name: str, node: Node, bid: int | None) -> Iterator[tuple[str, Node]]:
        yield self.map_name(name), _squeezed(name, node)


@register
class Lfm2Moe(_Lfm2Base):
    hf_architectures = ("Lfm2MoeForCausalLM",)
    model_types = ("lfm2_moe",)
    gguf_arch = gguf.MODEL_ARCH.LFM2MOE

    def __init__(self, hparams, hf_arch):
        super().__init__(hparams, hf_arch)
        self._stacks = ExpertStacks(self.find(("num_local_experts", "num_experts")), ("w1", "w2", "w3"),
                                    "model.layers.{bid}.feed_forward.experts.{xid}.{proj}.weight",
                                    "layers.{bid}.feed_forward.experts.{proj}.weight")

    def _is_attention(self, layer_type: str) -> bool:
        return layer_type == "full_attention"

    def layer_kind(self, bid: int) -> str:
        dense = bid < self.find(("num_dense_layers",))
        return super().layer_kind(bid) + ("+dense" if dense else "+moe")

    def add_hparams(self, w: gguf.GGUFWriter, file_type: int) -> None:
        self._add_common(w, file_type)
        w.add_expert_feed_forward_length(self.find(("moe_intermediate_size",)))
        w.add_leading_dense_block_count(self.find(("num_dense_layers",)))
        w.add_expert_gating_func(gguf.ExpertGatingFuncType.SIGMOID)
        w.add_vocab_size(self.find(("vocab_size",)))
        w.add_shortconv_l_cache(self._conv_cache())

    def source_name(self, name: str) -> str | None:
        kept = super().source_name(name)
        if kept is not None and kept.endswith(".expert_bias"):
            return kept + ".bias"  # a bare parameter: the name map wants a suffix
        return kept

    def convert(self, name: str, node: Node, bid: int | None) -> Iterator[tuple[str, Node]]:
        node = _squeezed(name, node)
        if "experts" in name:
            yield from self._stacks.add(name, node, bid, self.map_name)
            return
        yield self.map_name(name), node

    def finish(self) -> Iterator[tuple[str, Node]]:
        self._stacks.check_complete()
        return iter(())
