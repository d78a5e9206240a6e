"""Llama 4's vision projector (``--mmproj``; ``Llama4ForConditionalGeneration``: Scout, Maverick).

What the reference (``Llama4VisionModel``) does beyond every projector's keys:

- projector type ``llama4``, the tower's LayerNorm epsilon (``norm_eps``), the pixel shuffle's scale
  factor ``1 / pixel_shuffle_ratio`` (2), GELU (another activation is refused, as there);
- the tensors of ``vision_model.`` and ``multi_modal_projector.``: ``positional_embedding_vlm`` (stored
  without a ``.weight`` suffix) gets one, ``class_embedding`` keeps its bare name; the pixel-shuffle
  MLP ``vision_adapter.mlp.fc{1,2}`` becomes ``mm.model.mlp.{1,2}`` (the reference maps it through its
  block numbers, so a tower of fewer than three layers fails there; here any depth maps) and the single
  ``multi_modal_projector.linear_1`` is ``mm.model.fc``;
- the patch embedding is F16 at f16 and F32 otherwise (``ProjectorFamily``); the position embedding
  and the class embedding are F32 by the type rules.
"""

from __future__ import annotations

import re
from typing import Any, Iterator, Mapping, Sequence

import gguf

from .. import errors
from ..graph import Node
from ..safetensors import SourceTensor
from . import register_projector
from .base import ProjectorFamily

_ADAPTER_MLP = re.compile(r"vision_model\.vision_adapter\.mlp\.fc(\d+)\.(weight|bias)")


@register_projector
class Llama4Vision(ProjectorFamily):
    hf_architectures = ("Llama4ForConditionalGeneration",)
    model_types = ("llama4",)
    tensor_prefixes = ("multi_modal_projector.", "vision_model.")
    # mm.model.mlp.1, .2: numbered like blocks, but one each
    optional_tensors = (gguf.MODEL_TENSOR.V_MMPROJ_MLP,)

    def __init__(self, hparams: Mapping[str, Any], hf_arch: str):
        super().__init__(hparams, hf_arch)
        if self.hparams.get("hidden_act") != "gelu":
            raise errors.InvalidConfigError(
                f"config.json: Llama 4's vision hidden_act is {self.hparams.get('hidden_act')!r}; llama.cpp's "
                "projector runs GELU")
        ratio = self.hparams.get("pixel_shuffle_ratio")
        if not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
            raise errors.InvalidConfigError(f"config.json: vision_config pixel_shuffle_ratio {ratio!r} is not in (0, 1]")

    def source_name(self, name: str) -> str | None:
        if "multi_modal_projector" not in name and "vision_model" not in name:
            return None
        kept = super().source_name(name)
        if kept is not None and "positional_embedding_vlm" in kept and ".weight" not in kept:
            kept += ".weight"
        return kept

    def check_tensors(self, outputs: Mapping[str, Node], sources: Sequence[tuple[str, SourceTensor]]) -> None:
        if gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.V_ENC_EMBD_PATCH] + ".weight" not in outputs:
            raise errors.MissingTensorError(
                f"{self.hf_arch}'s projector needs the vision tower (vision_model.patch_embedding.linear.weight ...), "
                "which is not in the weights under that name")
        super().check_tensors(outputs, sources)

    def add_hparams(self, w: gguf.GGUFWriter, file_type: int) -> None:
        super().add_hparams(w, file_type)
        w.add_clip_projector_type(gguf.VisionProjectorType.LLAMA4)
        w.add_vision_attention_layernorm_eps(self.find(("norm_eps",)))
        w.add_vision_projector_scale_factor(int(1.0 / self.hparams["pixel_shuffle_ratio"]))
        w.add_vision_use_gelu(True)

    def convert(self, name: str, node: Node, bid: int | None) -> Iterator[tuple[str, Node]]:
        if "multi_modal_projector.linear_1" in name:  # one fully connected layer, whatever its name says
            yield gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.V_MMPROJ_FC] + ".weight", node
            return
        mlp = _ADAPTER_MLP.fullmatch(name)
        if mlp is not None:
            yield f"{gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.V_MMPROJ_MLP].format(bid=int(mlp[1]))}.{mlp[2]}", node
            return
        yield self.map_name(name), node
