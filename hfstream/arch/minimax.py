"""MiniMax-M2 (``MiniMaxM2ForCausalLM``): every block a sparse MoE under a sigmoid router, no shared expert.

Attention is grouped-query with q/k RMS norms taken over all heads at once (one weight of
heads x head_dim, ``attn_q_norm``/``attn_k_norm`` as they are) and NEOX rope over the first
``rotary_dim`` of each head, so nothing is permuted. Each block's ``w1``/``w2``/``w3`` experts stack into
``ffn_gate/down/up_exps``; the router's float32 ``e_score_correction_bias`` becomes ``exp_probs_b.bias``.
MiniMaxAI ships the model FP8 (128 x 128 block scales, router and norms bf16): ``prequant`` hands the
weights over already dequantized, as the reference's ``dequant_model`` does, whatever the outtype.
"""

from __future__ import annotations

from typing import Iterator

import gguf

from ..graph import Node
from . import register
from .base import LAYER, SIZES, ExpertStacks, TextFamily

_MOE = LAYER + r"block_sparse_moe\."


@register
class MiniMaxM2(TextFamily):
    hf_architectures = ("MiniMaxM2ForCausalLM",)
    model_types = ("minimax_m2",)
    gguf_arch = gguf.MODEL_ARCH.MINIMAXM2
    vocab_strategies = ("bpe",)
    shape_sizes = {**SIZES, "experts": ("num_local_experts",)}
    shape_rules = (
        (r"model\.embed_tokens\.weight", ("vocab", "hidden")),
        (r"lm_head\.weight", ("vocab", "hidden")),
        (LAYER + r"self_attn\.q_proj\.weight", ("heads*head_dim", "hidden")),
        (LAYER + r"self_attn\.[kv]_proj\.weight", ("kv_heads*head_dim", "hidden")),
        (LAYER + r"self_attn\.o_proj\.weight", ("hidden", "heads*head_dim")),
        (LAYER + r"self_attn\.q_norm\.weight", ("heads*head_dim",)),
        (LAYER + r"self_attn\.k_norm\.weight", ("kv_heads*head_dim",)),
        (_MOE + r"gate\.weight", ("experts", "hidden")),
        (_MOE + r"e_score_correction\.bias", ("experts",)),
        (_MOE + r"experts\.\d+\.w[13]\.weight", ("ffn", "hidden")),
        (_MOE + r"experts\.\d+\.w2\.weight", ("hidden", "ffn")),
        (r"model\.norm\.weight", ("hidden",)),
        (LAYER + r"(input|post_attention)_layernorm\.weight", ("hidden",)),
    )

    def __init__(self, hparams, hf_arch):
        super().__init__(hparams, hf_arch)
        self._stacks: ExpertStacks | None = None

    def add_hparams(self, w: gguf.GGUFWriter, file_type: int) -> None:
        super().add_hparams(w, file_type)
        w.add_expert_feed_forward_length(self.find(("intermediate_size",)))
        w.add_rope_dimension_count(self.find(("rotary_dim",)))

    def convert(self, name: str, node: Node, bid: int | None) -> Iterator[tuple[str, Node]]:
        if "block_sparse_moe.experts." in name:
            if self._stacks is None:
                self._stacks = ExpertStacks(self.find(("num_local_experts", "num_experts")), ("w1", "w2", "w3"),
                                            "model.layers.{bid}.block_sparse_moe.experts.{xid}.{proj}.weight",
                                            "model.layers.{bid}.block_sparse_moe.experts.{proj}.weight")
            yield from self._stacks.add(name, node, bid, self.map_name)
            return
        yield self.map_name(name), node

    def finish(self) -> Iterator[tuple[str, Node]]:
        if self._stacks is not None:
            self._stacks.check_complete()
        return iter(())
