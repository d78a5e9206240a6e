"""Qwen2, Qwen3 and their MoE variants: NEOX rope (no q/k permute), experts stacked per layer.

Qwen2 carries q/k/v biases and Qwen3 per-head q/k norms; both map one to one through the
tensor-name map. The MoE variants stack each layer's per-expert ``gate/up/down_proj`` into
``ffn_{gate,up,down}_exps`` (Qwen2-MoE also has a shared expert and its gate, mapped as they
are) and add the expert feed-forward lengths. The vocab is SentencePiece when the repo has a
``tokenizer.model``, else byte-level BPE, as the reference tries them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import ClassVar

import gguf

from .. import errors
from ..graph import Node
from . import register
from .base import ExpertStacks, TextFamily


@register
class Qwen2(TextFamily):
    hf_architectures = ("Qwen2ForCausalLM",)
    model_types = ("qwen2",)
    gguf_arch = gguf.MODEL_ARCH.QWEN2
    vocab_strategies = ("spm", "bpe")

    def use_files(self, files: Mapping[str, bytes]) -> None:
        self.read_pooling(files)

    def add_hparams(self, w: gguf.GGUFWriter, file_type: int) -> None:
        super().add_hparams(w, file_type)
        # an embedding model packaged for sentence-transformers (Qwen3-Embedding, gte-Qwen2)
        self.add_pooling(w)


@register
class Qwen3(Qwen2):
    hf_architectures = ("Qwen3ForCausalLM",)
    model_types = ("qwen3",)
    gguf_arch = gguf.MODEL_ARCH.QWEN3

    def __init__(self, hparams, hf_arch):
        super().__init__(hparams, hf_arch)
        name = str(self.hparams.get("_name_or_path", "")).lower()
        if "qwen3-reranker" in name or "qwen3-vl-reranker" in name:
            # the reference turns these into a ranking model (cls_out head, RANK pooling)
            raise errors.UnsupportedArchitectureError("Qwen3 reranker models are not supported")

    def add_vocab(self, w: gguf.GGUFWriter, files, bpe_pre: str | None) -> None:
        readme = files.get("README.md", b"").decode("utf-8", "replace").lower()
        if "# qwen3-reranker" in readme or "# qwen3-vl-reranker" in readme:
            raise errors.UnsupportedArchitectureError("Qwen3 reranker models are not supported")
        super().add_vocab(w, files, bpe_pre)


#: the projections of one expert, in the order the reference writes their stacks
_EXPERT_PROJS = ("down_proj", "gate_proj", "up_proj")


@register
class Qwen2Moe(TextFamily):
    hf_architectures: ClassVar[tuple[str, ...]] = ("Qwen2MoeForCausalLM",)
    model_types: ClassVar[tuple[str, ...]] = ("qwen2_moe",)
    gguf_arch = gguf.MODEL_ARCH.QWEN2MOE
    # unlike dense Qwen, the reference's MoE classes only read tokenizer.json (never tokenizer.model)
    vocab_strategies = ("bpe",)

    def __init__(self, hparams, hf_arch):
        super().__init__(hparams, hf_arch)
        self._stacks: ExpertStacks | None = None

    def add_hparams(self, w: gguf.GGUFWriter, file_type: int) -> None:
        super().add_hparams(w, file_type)
        if (v := self.hparams.get("moe_intermediate_size")) is not None:
            w.add_expert_feed_forward_length(v)
        if (v := self.hparams.get("shared_expert_intermediate_size")) is not None:
            w.add_expert_shared_feed_forward_length(v)

    def convert(self, name: str, node: Node, bid: int | None) -> Iterator[tuple[str, Node]]:
        if name.endswith(("mlp.experts.gate_up_proj", "mlp.experts.gate_up_proj.weight",
                          "mlp.experts.down_proj", "mlp.experts.down_proj.weight")):
            raise errors.UnsupportedArchitectureError(
                f"fused expert tensor {name!r} (already stacked experts) is not supported")
        if "experts" in name:
            yield from self._collect_expert(name, node, bid)
            return
        yield self.map_name(name), node

    def _collect_expert(self, name: str, node: Node, bid: int | None) -> Iterator[tuple[str, Node]]:
        """Once all experts of a layer arrived, stack each projection over the experts."""
        if self._stacks is None:
            self._stacks = ExpertStacks(self.find(("num_local_experts", "num_experts")), _EXPERT_PROJS,
                                        "model.layers.{bid}.mlp.experts.{xid}.{proj}.weight",
                                        "model.layers.{bid}.mlp.experts.{proj}.weight")
        yield from self._stacks.add(name, node, bid, self.map_name)

    def finish(self) -> Iterator[tuple[str, Node]]:
        if self._stacks is not None:
            self._stacks.check_complete()
        return iter(())


@register
class Qwen3Moe(Qwen2Moe):
    hf_architectures = ("Qwen3MoeForCausalLM",)
    model_types = ("qwen3_moe",)
    gguf_arch = gguf.MODEL_ARCH.QWEN3MOE
