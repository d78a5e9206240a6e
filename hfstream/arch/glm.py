"""GLM-4.5, 4.6 and 4.5-Air (``Glm4MoeForCausalLM``): leading dense blocks, then routed and shared
experts under a sigmoid router; the NextN (MTP) block is kept.

Attention is grouped-query with q/k/v biases (and per-head q/k norms on GLM-4.5 and 4.6), NEOX rope
over the first ``partial_rotary_factor`` of each head, so nothing is permuted. Each MoE block stacks
its per-expert ``gate/up/down_proj`` into ``ffn_*_exps`` beside the shared experts; the router's
float32 ``e_score_correction_bias`` becomes ``exp_probs_b.bias``. Unlike DeepSeek, the checkpoints'
NextN layers past ``num_hidden_layers`` (``eh_proj``, ``enorm``, ``hnorm``, ``shared_head.norm`` and a
whole MoE layer) stay in the file as the last blocks, as the reference writes them by default:
llama.cpp loads them for speculative decoding (``nextn_predict_layers``). The vocabulary is byte-level
BPE with four special tokens named by content ([gMASK] is BOS).
"""

from __future__ import annotations

from typing import Iterator

import gguf

from ..graph import Node
from ..hfconfig import INT_HPARAMS, check_hparams
from . import register
from .base import DECODER_SHAPES, LAYER, SIZES, ExpertStacks, TextFamily

#: the projections of one expert, in the order the reference writes their stacks
_EXPERT_PROJS = ("down_proj", "gate_proj", "up_proj")
#: what the reference's ``_set_vocab_glm`` sets by token content (a type the files name keeps theirs)
_NAMED_SPECIALS = {"bos": "[gMASK]", "eot": "<|user|>", "unk": "<|endoftext|>", "eom": "<|observation|>"}

_GLM_HPARAMS = {
    **INT_HPARAMS,
    "nextn layers": (("num_nextn_predict_layers",), 0, 64),
    "leading dense blocks": (("first_k_dense_replace",), 0, 4096),
    "shared experts": (("n_shared_experts",), 0, 1 << 16),
}


@register
class Glm4Moe(TextFamily):
    hf_architectures = ("Glm4MoeForCausalLM",)
    model_types = ("glm4_moe",)
    gguf_arch = gguf.MODEL_ARCH.GLM4_MOE
    vocab_strategies = ("bpe",)
    shape_sizes = {**SIZES, "experts": ("n_routed_experts",), "moe_ffn": ("moe_intermediate_size",),
                   "n_shared": ("n_shared_experts",)}
    shape_rules = DECODER_SHAPES + (
        (LAYER + r"mlp\.shared_experts\.(gate|up)_proj\.weight", ("moe_ffn*n_shared", "hidden")),
        (LAYER + r"mlp\.shared_experts\.down_proj\.weight", ("hidden", "moe_ffn*n_shared")),
        (LAYER + r"mlp\.gate\.weight", ("experts", "hidden")),
        (LAYER + r"mlp\.gate\.e_score_correction\.bias", ("experts",)),
        (LAYER + r"(enorm|hnorm|shared_head\.norm)\.weight", ("hidden",)),
    )

    def __init__(self, hparams, hf_arch):
        super().__init__(hparams, hf_arch)
        check_hparams(self.hparams, ints=_GLM_HPARAMS)
        # the NextN layers are blocks of their own, after the main ones
        self.block_count += self.hparams.get("num_nextn_predict_layers") or 0
        self.tensor_map = gguf.get_tensor_name_map(self.gguf_arch, self.block_count)
        self._stacks: ExpertStacks | None = None

    def add_hparams(self, w: gguf.GGUFWriter, file_type: int) -> None:
        super().add_hparams(w, file_type)
        hp = self.hparams
        head_dim = hp.get("head_dim")
        if head_dim is None:
            head_dim = self.find(("hidden_size",)) // self.find(("num_attention_heads",))
        w.add_rope_dimension_count(int(head_dim * self.rope.get("partial_rotary_factor", 0.5)))
        if (v := hp.get("n_routed_experts")) is not None:
            w.add_expert_count(v)
        if (v := hp.get("moe_intermediate_size")) is not None:
            w.add_expert_feed_forward_length(v)
        if (v := hp.get("n_shared_experts")) is not None:
            w.add_expert_shared_count(v)
        if (v := hp.get("first_k_dense_replace")) is not None:
            w.add_leading_dense_block_count(v)
        w.add_expert_gating_func(gguf.ExpertGatingFuncType.SIGMOID)
        if (v := hp.get("routed_scaling_factor")) is not None:
            w.add_expert_weights_scale(v)
        if (v := hp.get("norm_topk_prob")) is not None:
            w.add_expert_weights_norm(v)
        if (v := hp.get("num_nextn_predict_layers")) is not None:
            w.add_nextn_predict_layers(v)

    def convert(self, name: str, node: Node, bid: int | None) -> Iterator[tuple[str, Node]]:
        if "mlp.experts" in name:
            if self._stacks is None:
                self._stacks = ExpertStacks(self.find(("n_routed_experts",)), _EXPERT_PROJS,
                                            "model.layers.{bid}.mlp.experts.{xid}.{proj}.weight",
                                            "model.layers.{bid}.mlp.experts.{proj}.weight")
            yield from self._stacks.add(name, node, bid, self.map_name)
            return
        yield self.map_name(name), node

    def finish(self) -> Iterator[tuple[str, Node]]:
        if self._stacks is not None:
            self._stacks.check_complete()
        return iter(())

    def add_vocab(self, w: gguf.GGUFWriter, files, bpe_pre: str | None) -> None:
        from ..vocab import add_vocab

        add_vocab(w, files, self.hparams, strategies=self.vocab_strategies, bpe_pre=bpe_pre,
                  named_specials=_NAMED_SPECIALS)
