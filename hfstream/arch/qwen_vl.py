"""The text models of Qwen's vision-language checkpoints: Qwen2-VL / Qwen2.5-VL, Qwen3-VL and Qwen3-VL-MoE.

Their decoders are Qwen2's (q/k/v biases), Qwen3's (q/k norms) and Qwen3-MoE's under llama.cpp's
``qwen2vl``, ``qwen3vl`` and ``qwen3vlmoe`` architectures, whose rotary embedding is multimodal (M-RoPE:
the head's rotary pairs split into time, height and width sections). What the reference does beyond
Qwen2/Qwen3:

- ``rope.dimension_sections``: the config's ``mrope_section`` padded to 4 (every ``TextFamily``
  writes it when the rope parameters have one);
- Qwen2-VL / 2.5-VL are a plain decoder to the reference (no sentence-transformers pooling, unlike
  Qwen2); Qwen3-VL is Qwen3 plus ``n_deepstack_layers``, the number of vision layers whose features
  are added to the first text layers (``vision_config.deepstack_visual_indexes``), after
  ``general.file_type``;
- names: the vision tower (``visual.``) is left out (``TextFamily``), ``language_model.`` and the
  omni models' ``thinker.`` prefix are dropped;
- Qwen3-VL-MoE's experts come fused, as released: ``mlp.experts.gate_up_proj`` [E, hidden, 2 ffn]
  (gate the first half of the last axis, up the second) and ``mlp.experts.down_proj`` [E, ffn, hidden],
  each expert's matrix transposed into ``ffn_{gate,up,down}_exps`` [E, out, in].

The vision towers are the projectors' (``qwen_vision.py``).
"""

from __future__ import annotations

from collections.abc import Iterator

import gguf

from .. import errors
from ..graph import Node, Reshape, Select, SwapLastAxes
from . import register
from .base import TextFamily
from .qwen import Qwen3, Qwen3Moe


@register
class Qwen2VL(TextFamily):
    hf_architectures = ("Qwen2VLForConditionalGeneration", "Qwen2_5_VLForConditionalGeneration")
    model_types = ("qwen2_vl", "qwen2_5_vl")
    gguf_arch = gguf.MODEL_ARCH.QWEN2VL
    vocab_strategies = ("spm", "bpe")

    def source_name(self, name: str) -> str | None:
        if name.startswith("thinker."):
            name = name.replace("thinker.", "")
        return super().source_name(name)


@register
class Qwen3VL(Qwen3):
    hf_architectures = ("Qwen3VLForConditionalGeneration",)
    model_types = ("qwen3_vl",)
    gguf_arch = gguf.MODEL_ARCH.QWEN3VL

    def source_name(self, name: str) -> str | None:
        return super().source_name(name.replace("thinker.", ""))

    def add_hparams(self, w: gguf.GGUFWriter, file_type: int) -> None:
        super().add_hparams(w, file_type)
        w.add_num_deepstack_layers(len(deepstack_indexes(self.hparams)))


@register
class Qwen3VLMoe(Qwen3Moe):
    hf_architectures = ("Qwen3VLMoeForConditionalGeneration",)
    model_types = ("qwen3_vl_moe",)
    gguf_arch = gguf.MODEL_ARCH.QWEN3VLMOE

    def source_name(self, name: str) -> str | None:
        return super().source_name(name.replace("thinker.", ""))

    def add_hparams(self, w: gguf.GGUFWriter, file_type: int) -> None:
        super().add_hparams(w, file_type)
        w.add_num_deepstack_layers(len(deepstack_indexes(self.hparams)))

    def convert(self, name: str, node: Node, bid: int | None) -> Iterator[tuple[str, Node]]:
        if name.endswith(("mlp.experts.down_proj", "mlp.experts.down_proj.weight")):
            if node.ndim != 3:
                raise errors.InvalidHeaderError(f"{name}: fused experts are [experts, ffn, hidden], not {list(node.shape)}")
            yield self.map_name(name.removesuffix(".weight") + ".weight"), SwapLastAxes(node)
        elif name.endswith(("mlp.experts.gate_up_proj", "mlp.experts.gate_up_proj.weight")):
            if node.ndim != 3 or node.shape[-1] % 2:
                raise errors.InvalidHeaderError(
                    f"{name}: fused experts are [experts, hidden, 2 x ffn], not {list(node.shape)}")
            n_expert, hidden, pair = node.shape
            halves = Reshape(node, (n_expert, hidden, 2, pair // 2))
            experts = name.removesuffix(".weight").rsplit(".", 1)[0]
            for i, proj in enumerate(("gate_proj", "up_proj")):
                yield self.map_name(f"{experts}.{proj}.weight"), SwapLastAxes(Select(halves, 2, i))
        else:
            yield from super().convert(name, node, bid)


def deepstack_indexes(hparams: dict) -> list[int]:
    """``deepstack_visual_indexes`` of the vision config (the omni models' under ``thinker_config``)."""
    holder = hparams["thinker_config"] if isinstance(hparams.get("thinker_config"), dict) else hparams
    vision = holder.get("vision_config")
    indexes = vision.get("deepstack_visual_indexes") if isinstance(vision, dict) else None
    return list(indexes) if isinstance(indexes, list) else []
