"""OLMo 2, OLMo 3 and OLMoE: the shared decoder keys and tensor names, q/k norms over all heads.

What the reference does for them beyond the defaults:

- their q/k norms weigh the whole projection (``heads * head_dim`` and ``kv_heads * head_dim``
  wide), not one head, so their shape rules say so; no q/k permute (NEOX rope); byte-level BPE vocab.
- OLMo 2 and 3 (arch ``olmo2``): with ``sliding_window`` in the config (OLMo 3), the window and one
  flag per layer, from ``layer_types`` (transformers fills it in), else every 4th layer global.
- OLMoE: each layer's experts stacked into ``ffn_{down,gate,up}_exps`` as Qwen2-MoE's are; the RMS
  epsilon written again as 1e-5 after the other keys, whatever the config says (it keeps its place).
"""

from __future__ import annotations

from typing import Iterator

import gguf

from .. import errors
from ..graph import Node
from . import register
from .base import DECODER_SHAPES, LAYER, ExpertStacks, TextFamily

#: q/k norms as wide as their projections (checked before the per-head rule of DECODER_SHAPES)
FULL_WIDTH_QK_NORMS = (
    (LAYER + r"self_attn\.q_norm\.weight", ("heads*head_dim",)),
    (LAYER + r"self_attn\.k_norm\.weight", ("kv_heads*head_dim",)),
)


@register
class Olmo2(TextFamily):
    hf_architectures = ("Olmo2ForCausalLM", "Olmo3ForCausalLM")
    model_types = ("olmo2", "olmo3")
    gguf_arch = gguf.MODEL_ARCH.OLMO2
    shape_rules = FULL_WIDTH_QK_NORMS + DECODER_SHAPES

    def add_hparams(self, w: gguf.GGUFWriter, file_type: int) -> None:
        super().add_hparams(w, file_type)
        if "sliding_window" not in self.hparams:
            return
        window = self.hparams["sliding_window"]
        if type(window) is not int:
            raise errors.InvalidConfigError(f"config.json: sliding_window must be an integer, not {window!r}")
        w.add_sliding_window(window)
        if "layer_types" in self.hparams:
            kinds = self.hparams["layer_types"]
            if not isinstance(kinds, list):
                raise errors.InvalidConfigError("config.json: layer_types must be a list")
            w.add_sliding_window_pattern([kind == "sliding_attention" for kind in kinds])
        else:
            w.add_sliding_window_pattern([(i + 1) % 4 != 0 for i in range(self.block_count)])


#: the projections of one expert, in the order the reference writes their stacks
_EXPERT_PROJS = ("down_proj", "gate_proj", "up_proj")


@register
class Olmoe(TextFamily):
    hf_architectures = ("OlmoeForCausalLM",)
    model_types = ("olmoe",)
    gguf_arch = gguf.MODEL_ARCH.OLMOE
    shape_rules = FULL_WIDTH_QK_NORMS + DECODER_SHAPES

    def __init__(self, hparams, hf_arch):
        super().__init__(hparams, hf_arch)
        self._experts = ExpertStacks(self.find(("num_local_experts", "num_experts")), _EXPERT_PROJS,
                                     "model.layers.{bid}.mlp.experts.{xid}.{proj}.weight",
                                     "model.layers.{bid}.mlp.experts.{proj}.weight")

    def add_hparams(self, w: gguf.GGUFWriter, file_type: int) -> None:
        super().add_hparams(w, file_type)
        w.add_layer_norm_rms_eps(1e-5)  # written before from the config: it keeps its place

    def convert(self, name: str, node: Node, bid: int | None) -> Iterator[tuple[str, Node]]:
        if "experts" in name:
            yield from self._experts.add(name, node, bid, self.map_name)
        else:
            yield self.map_name(name), node

    def finish(self) -> Iterator[tuple[str, Node]]:
        self._experts.check_complete()
        return iter(())
