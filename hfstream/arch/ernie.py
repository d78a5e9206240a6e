"""ERNIE 4.5 (Baidu), dense and MoE: SentencePiece vocab, ``ernie.`` names, experts stacked per layer.

What the reference does beyond the defaults (no q/k permute):

- vocab: ``tokenizer.model`` only, then ``add_space_prefix`` from ``tokenizer_config.json``'s
  ``add_prefix_space`` when it has one (after the special tokens, unlike Llama's);
- ``ernie.`` in a tensor name reads ``model.``; the dense model splits a fused ``qkv_proj`` into
  q, k and v by rows (heads * head_dim, then kv_heads * head_dim twice) and ``up_gate_proj`` into its
  halves (gate first), for checkpoints stored that way (the ``-PT`` ones have them apart);
- MoE: the multi-token-prediction block (``mtp_*``) is left out; each layer's experts are stacked
  into ``ffn_{gate,up,down}_exps`` in that order; the router's ``moe_statics`` correction bias
  becomes ``exp_probs_b``; keys for the expert counts and layout follow the common ones, the shared
  experts' length being ``intermediate_size / num_key_value_heads`` (the reference's rule; it
  equals ``moe_intermediate_size * moe_num_shared_experts`` in the released models).
"""

from __future__ import annotations

import re
from typing import ClassVar, Iterator, Mapping

import gguf

from .. import errors
from ..graph import Node, SliceRows
from ..hfconfig import check_hparams
from . import register
from .base import ExpertStacks, TextFamily


@register
class Ernie4_5(TextFamily):
    hf_architectures: ClassVar[tuple[str, ...]] = ("Ernie4_5ForCausalLM", "Ernie4_5_ForCausalLM")
    model_types = ("ernie4_5",)
    gguf_arch = gguf.MODEL_ARCH.ERNIE4_5
    vocab_strategies = ("spm",)

    def source_name(self, name: str) -> str | None:
        return super().source_name(name.replace("ernie.", "model."))

    def convert(self, name: str, node: Node, bid: int | None) -> Iterator[tuple[str, Node]]:
        split = self._fused_parts(name, node)
        if split is None:
            yield self.map_name(name), node
            return
        fused, parts = split
        if sum(rows for _, rows in parts) != node.shape[0]:
            raise errors.ConfigMismatchError(
                f"tensor {name} has {node.shape[0]} rows, but config.json makes its parts "
                f"{' + '.join(str(rows) for _, rows in parts)}")
        start = 0
        for part, rows in parts:
            yield self.map_name(name.replace(fused, part)), SliceRows(node, start, start + rows)
            start += rows

    def _fused_parts(self, name: str, node: Node) -> tuple[str, list[tuple[str, int]]] | None:
        """(fused name, [(part name, rows)]) for a fused projection, else None."""
        if "qkv_proj" in name:
            heads, kv_heads = self.find(("num_attention_heads",)), self.find(("num_key_value_heads",))
            head_dim = self.hparams.get("head_dim") or self.find(("hidden_size",)) // heads
            return "qkv_proj.weight", [("q_proj.weight", heads * head_dim), ("k_proj.weight", kv_heads * head_dim),
                                       ("v_proj.weight", kv_heads * head_dim)]
        if "up_gate_proj" in name:
            half = node.shape[0] // 2
            return "up_gate_proj.weight", [("gate_proj.weight", half), ("up_proj.weight", half)]
        return None

    def add_vocab(self, w: gguf.GGUFWriter, files: Mapping[str, bytes], bpe_pre: str | None) -> None:
        from ..vocab import tokenizer_config

        super().add_vocab(w, files, bpe_pre)
        config = tokenizer_config(files)
        if "add_prefix_space" in config:
            if type(config["add_prefix_space"]) is not bool:
                raise errors.InvalidConfigError("tokenizer_config.json: add_prefix_space must be true or false")
            w.add_add_space_prefix(config["add_prefix_space"])


#: the reference's patterns for the multi-token-prediction tensors (matched at the start, before
#: ``ernie.`` is read as ``model.``)
_MTP = re.compile(r"model.mtp_block.(\d+)|model.mtp_emb_norm.(\d+)|model.mtp_hidden_norm.(\d+)|"
                  r"model.mtp_linear_proj.(\d+)")
#: the projections of one expert, in the order the reference writes their stacks
_EXPERT_PROJS = ("gate_proj", "up_proj", "down_proj")
#: the MoE keys of ERNIE's config (``check_hparams``' table format: keys, lowest, highest)
_MOE_INTS = {
    "expert count": (("moe_num_experts",), 1, 1 << 16),
    "experts used": (("moe_k",), 1, 1 << 16),
    "MoE layer interval": (("moe_layer_interval",), 1, 4096),
    "first MoE layer": (("moe_layer_start_index",), 0, 4096),
    "shared experts": (("moe_num_shared_experts",), 0, 1 << 16),
}


@register
class Ernie4_5Moe(Ernie4_5):
    hf_architectures = ("Ernie4_5_MoeForCausalLM",)
    model_types = ("ernie4_5_moe",)
    gguf_arch = gguf.MODEL_ARCH.ERNIE4_5_MOE

    def __init__(self, hparams, hf_arch):
        super().__init__(hparams, hf_arch)
        check_hparams(self.hparams, ints=_MOE_INTS, floats=(), divisible=())
        self._experts = ExpertStacks(self._required("moe_num_experts"), _EXPERT_PROJS,
                                     "model.layers.{bid}.mlp.experts.{xid}.{proj}.weight",
                                     "model.layers.{bid}.mlp.experts.{proj}.weight")

    def _required(self, key: str):
        if key not in self.hparams:
            raise errors.InvalidConfigError(f"config.json: {key} is not set")
        return self.hparams[key]

    def source_name(self, name: str) -> str | None:
        if _MTP.match(name):
            return None
        return super().source_name(name)

    def layer_kind(self, bid: int) -> str:
        # transformers' Ernie4_5_MoeDecoderLayer: experts every moe_layer_interval-th layer within the range
        hp = self.hparams
        end = hp.get("moe_layer_end_index", -1)
        end = self.block_count - 1 if end == -1 else end
        moe = (bid + 1) % self._required("moe_layer_interval") == 0 and self._required("moe_layer_start_index") <= bid <= end
        return "moe" if moe else "dense"

    def add_hparams(self, w: gguf.GGUFWriter, file_type: int) -> None:
        super().add_hparams(w, file_type)
        hp = self.hparams
        w.add_expert_count(self._required("moe_num_experts"))
        w.add_expert_used_count(self._required("moe_k"))
        w.add_interleave_moe_layer_step(self._required("moe_layer_interval"))
        w.add_leading_dense_block_count(self._required("moe_layer_start_index"))
        if (v := hp.get("moe_intermediate_size")) is not None:
            w.add_expert_feed_forward_length(v)
        if (shared := hp.get("moe_num_shared_experts")) is not None:
            w.add_expert_shared_count(shared)
            ffn, kv_heads = hp.get("intermediate_size"), hp.get("num_key_value_heads")
            if shared > 0 and ffn is not None and kv_heads is not None:
                w.add_expert_shared_feed_forward_length(ffn // kv_heads)

    def convert(self, name: str, node: Node, bid: int | None) -> Iterator[tuple[str, Node]]:
        # the dense model's fused-projection split is not the MoE's (the reference maps these as they are)
        if "mlp.experts" in name:
            yield from self._experts.add(name, node, bid, self.map_name)
        else:
            yield self.map_name(name), node

    def finish(self) -> Iterator[tuple[str, Node]]:
        self._experts.check_complete()
        return iter(())
