"""Llama 4 (``Llama4ForConditionalGeneration``: Scout, Maverick), the text model; the vision tower is left out.

Every ``interleave_moe_layer_step``-th layer is a MoE block (a router, one routed expert per token
beside a shared expert), the others a dense MLP, which the config calls ``intermediate_size_mlp``
while ``intermediate_size`` is the experts' width: the reference swaps the two, so the GGUF's
feed-forward length is the dense one. Meta's checkpoints fuse the experts per projection in [in, out]
order: ``gate_up_proj`` [E, hidden, 2 ff] holds the gate columns then the up columns, ``down_proj``
[E, ff, hidden]; each becomes [E, out, in] expert by expert (``SwapLastAxes`` over ``SliceCols``).
Unlike Llama 1-3 the q/k rows are not permuted. Chunked attention and the rope-less layers have no
keys: llama.cpp fixes them for the architecture (the reference writes ``sliding_window`` 0 only when
every layer is full attention). ``rope_type: llama3`` gives ``rope_freqs`` as for Llama 3.1.
"""

from __future__ import annotations

from functools import cached_property
from typing import Iterator

import gguf

from .. import errors
from ..graph import Node, SliceCols, SwapLastAxes
from . import register
from .base import LAYER, SIZES
from .llama import Llama

_FF = LAYER + r"feed_forward\."


@register
class Llama4(Llama):
    hf_architectures = ("Llama4ForConditionalGeneration",)
    model_types = ("llama4",)
    gguf_arch = gguf.MODEL_ARCH.LLAMA4
    vocab_strategies = ("bpe",)
    shape_sizes = {**SIZES, "ffn": ("intermediate_size",), "moe_ffn": ("intermediate_size_moe",),
                   "experts": ("num_local_experts",)}
    shape_rules = (
        (r"model\.embed_tokens\.weight", ("vocab", "hidden")),
        (r"lm_head\.weight", ("vocab", "hidden")),
        (LAYER + r"self_attn\.q_proj\.weight", ("heads*head_dim", "hidden")),
        (LAYER + r"self_attn\.[kv]_proj\.weight", ("kv_heads*head_dim", "hidden")),
        (LAYER + r"self_attn\.o_proj\.weight", ("hidden", "heads*head_dim")),
        (_FF + r"(gate|up)_proj\.weight", ("ffn", "hidden")),
        (_FF + r"down_proj\.weight", ("hidden", "ffn")),
        (_FF + r"router\.weight", ("experts", "hidden")),
        (_FF + r"experts\.gate_up_proj", ("experts", "hidden", "moe_ffn+moe_ffn")),
        (_FF + r"experts\.down_proj", ("experts", "moe_ffn", "hidden")),
        (_FF + r"shared_expert\.(gate|up)_proj\.weight", ("moe_ffn", "hidden")),
        (_FF + r"shared_expert\.down_proj\.weight", ("hidden", "moe_ffn")),
        (r"model\.norm\.weight", ("hidden",)),
        (LAYER + r"(input|post_attention)_layernorm\.weight", ("hidden",)),
    )

    def __init__(self, hparams, hf_arch):
        super().__init__(hparams, hf_arch)
        if "intermediate_size_mlp" not in self.hparams or "intermediate_size" not in self.hparams:
            raise errors.InvalidConfigError("config.json: Llama 4 needs intermediate_size and intermediate_size_mlp")
        # the dense MLP's width is the model's feed-forward length; intermediate_size is the experts'
        self.hparams = {**self.hparams, "intermediate_size_moe": self.hparams["intermediate_size"],
                        "intermediate_size": self.hparams["intermediate_size_mlp"]}

    def layer_kind(self, bid: int) -> str:
        return "moe" if bid in self._moe_layers else "dense"

    @cached_property
    def _moe_layers(self) -> frozenset[int]:
        # transformers' config lists them (every interleave_moe_layer_step-th layer unless it says otherwise)
        layers = self.hparams.get("moe_layers")
        if not isinstance(layers, list) or not all(type(i) is int for i in layers):
            raise errors.InvalidConfigError("config.json: Llama 4's moe_layers must be a list of layer numbers")
        return frozenset(layers)

    def add_hparams(self, w: gguf.GGUFWriter, file_type: int) -> None:
        super().add_hparams(w, file_type)
        w.add_interleave_moe_layer_step(self.find(("interleave_moe_layer_step",)))
        w.add_expert_feed_forward_length(self.hparams["intermediate_size_moe"])
        layer_types = self.hparams.get("layer_types")
        if layer_types is not None and all(t == "full_attention" for t in layer_types):
            w.add_sliding_window(0)

    def convert(self, name: str, node: Node, bid: int | None) -> Iterator[tuple[str, Node]]:
        if "gate_up_proj" in name:
            if node.ndim != 3 or node.shape[-1] % 2:
                raise errors.ConfigMismatchError(
                    f"tensor {name!r} has shape {list(node.shape)}; expected [experts, hidden, 2 x ff]")
            ff = node.shape[-1] // 2
            for proj, (start, stop) in (("gate_proj", (0, ff)), ("up_proj", (ff, 2 * ff))):
                yield self.map_name(name.replace("gate_up_proj", proj + ".weight")), SwapLastAxes(SliceCols(node, start, stop))
            return
        if name.endswith("down_proj"):
            yield self.map_name(name + ".weight"), SwapLastAxes(node)
            return
        yield self.map_name(name), node
