"""Llama and Mistral: rotary q/k rows permuted per head; Mixtral experts stacked per layer."""

from __future__ import annotations

from typing import Iterator

import gguf

from .. import errors
from ..graph import Node, PermuteHeads, Stack
from . import register
from .base import TextFamily


@register
class Llama(TextFamily):
    hf_architectures = ("LlamaForCausalLM", "LLaMAForCausalLM", "MistralForCausalLM", "MixtralForCausalLM")
    gguf_arch = gguf.MODEL_ARCH.LLAMA
    vocab_strategies = ("spm", "llama_hf", "bpe")

    def __init__(self, hparams, hf_arch):
        super().__init__(hparams, hf_arch)
        self._experts: dict[int, dict[str, Node]] = {}

    def add_hparams(self, w: gguf.GGUFWriter, file_type: int) -> None:
        super().add_hparams(w, file_type)
        if "vocab_size" not in self.hparams:
            raise errors.InvalidConfigError("config.json: vocab_size is not set")
        w.add_vocab_size(self.hparams["vocab_size"])
        rope_dim = self.hparams.get("head_dim")
        if rope_dim is None:
            rope_dim = self.find(("hidden_size",)) // self.find(("num_attention_heads",))
        w.add_rope_dimension_count(rope_dim)

    def convert(self, name: str, node: Node, bid: int | None) -> Iterator[tuple[str, Node]]:
        n_head = self.find(("n_heads", "num_attention_heads"))
        n_kv_head = self.find(("n_kv_heads", "num_key_value_heads"))
        if name.endswith(("q_proj.weight", "q_proj.bias")):
            node = PermuteHeads(node, n_head)
        elif name.endswith(("k_proj.weight", "k_proj.bias")):
            node = PermuteHeads(node, n_kv_head)

        if "block_sparse_moe.experts" in name:
            yield from self._collect_expert(name, node, bid)
            return
        yield self.map_name(name), node

    def _collect_expert(self, name: str, node: Node, bid: int | None) -> Iterator[tuple[str, Node]]:
        """Mixtral: once all experts of a layer arrived, stack w1/w2/w3 into ffn_*_exps."""
        n_experts = self.find(("num_local_experts",))
        if bid is None:
            raise errors.UnsupportedArchitectureError(f"expert tensor {name!r} has no layer number")
        layer = self._experts.setdefault(bid, {})
        layer[name] = node
        if len(layer) < n_experts * 3:
            return
        for wid in ("w1", "w2", "w3"):
            parts = []
            for xid in range(n_experts):
                key = f"model.layers.{bid}.block_sparse_moe.experts.{xid}.{wid}.weight"
                if key not in layer:
                    raise errors.InvalidHeaderError(f"expert tensor {key!r} is missing")
                parts.append(layer.pop(key))
            yield self.map_name(f"layers.{bid}.feed_forward.experts.{wid}.weight"), Stack(tuple(parts))
        del self._experts[bid]

    def finish(self) -> Iterator[tuple[str, Node]]:
        left = sorted(n for layer in self._experts.values() for n in layer)
        if left:
            raise errors.InvalidHeaderError(f"incomplete expert set, e.g. {left[0]!r}")
        return iter(())
