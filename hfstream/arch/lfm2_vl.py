"""LFM2-VL (``Lfm2VlForConditionalGeneration``): the LFM2 text model, and the vision projector
(``--mmproj``: a SigLIP 2 NaFlex tower and a LayerNorm + two-linear projector over pixel-unshuffled
features).

The reference picks the class of a text conversion by ``text_config.architectures``
(``Lfm2ForCausalLM``): the tensors under ``model.language_model.`` are converted as LFM2's, the tower
and projector left out. A ``text_config`` that names no LFM2 architecture has no text conversion there.

What the projector (the reference's ``LFM2VLModel``) does beyond every projector's keys:

- the image size is 256 whatever the config says (SigLIP 2 NaFlex has none: images come at their own
  size), projector type ``lfm2``, the tower's LayerNorm epsilon, the pixel-unshuffle
  ``downsample_factor`` (2 when absent), GELU; the block count is written again, less the layers
  after ``vision_feature_layer`` (the key keeps its first place);
- ``model.vision_tower.`` and ``model.multi_modal_projector.`` lose their ``model.`` (``linear_1`` and
  ``linear_2`` become ``mm.1`` and ``mm.2``, with gguf's name map for the tower's block count, so a
  tower of fewer than 3 layers has no ``mm.2``, there as here); the linear patch
  embedding [width, 16·16·3] (each patch flattened as rows, columns, channels) becomes the convolution
  llama.cpp runs, [width, 3, 16, 16].
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import ClassVar

import gguf

from .. import errors
from ..graph import Node, PermuteCols, Reshape
from . import register, register_projector
from .base import ProjectorFamily
from .lfm2 import Lfm2

#: the reference hard-codes SigLIP 2's patch as 16 x 16 pixels of 3 channels
_PATCH, _CHANNELS = 16, 3
#: the image size the reference writes (its tile size for the runtime)
_IMAGE_SIZE = 256


@register
class Lfm2Vl(Lfm2):
    hf_architectures: ClassVar[tuple[str, ...]] = ("Lfm2VlForConditionalGeneration",)
    model_types: ClassVar[tuple[str, ...]] = ("lfm2_vl",)

    def __init__(self, hparams, hf_arch):
        text = hparams.get("text_config")
        archs = text.get("architectures") if isinstance(text, dict) else None
        text_arch = archs[0] if isinstance(archs, list) and archs else None
        if text_arch not in Lfm2.hf_architectures:
            said = f"names {text_arch!r}" if text_arch is not None else "names no architecture"
            raise errors.UnsupportedArchitectureError(
                f"{hf_arch}: text_config {said}; llama.cpp's converter converts the text model only when it "
                f"names one of {', '.join(Lfm2.hf_architectures)} (--mmproj converts the projector)")
        super().__init__(hparams, hf_arch)


def _conv_patch_embedding(node: Node) -> Node:
    """[width, 16·16·3] with each row a patch flattened as (y, x, channel) -> [width, 3, 16, 16]:
    column c·256 + y·16 + x of the output is column y·48 + x·3 + c of the input."""
    if node.ndim != 2 or node.shape[1] != _PATCH * _PATCH * _CHANNELS:
        raise errors.ConfigMismatchError(
            f"the patch embedding of LFM2-VL is {list(node.shape)}, not [width, {_PATCH * _PATCH * _CHANNELS}] "
            f"({_PATCH} x {_PATCH} patches of {_CHANNELS} channels, as llama.cpp's converter takes them)")
    perm = tuple(y * _PATCH * _CHANNELS + x * _CHANNELS + c
                 for c in range(_CHANNELS) for y in range(_PATCH) for x in range(_PATCH))
    return Reshape(PermuteCols(node, perm), (node.shape[0], _CHANNELS, _PATCH, _PATCH))


@register_projector
class Lfm2VlVision(ProjectorFamily):
    hf_architectures = ("Lfm2VlForConditionalGeneration",)
    model_types = ("lfm2_vl", "siglip2_vision_model")
    #: mm.1 and mm.2 are projector layers, not tower blocks: no tower block has the others
    optional_tensors = (gguf.MODEL_TENSOR.V_MMPROJ,)

    def __init__(self, hparams, hf_arch):
        super().__init__(hparams, hf_arch)
        self.hparams["image_size"] = _IMAGE_SIZE

    def source_name(self, name: str) -> str | None:
        if "language_model." in name:
            return None
        return name.replace("model.vision_tower.", "vision_tower.").replace(
            "model.multi_modal_projector.", "multi_modal_projector.")

    def add_hparams(self, w: gguf.GGUFWriter, file_type: int) -> None:
        super().add_hparams(w, file_type)
        w.add_clip_projector_type(gguf.VisionProjectorType.LFM2)
        w.add_vision_attention_layernorm_eps(self.find(("layer_norm_eps",)))
        w.add_vision_projector_scale_factor(self.global_config.get("downsample_factor", 2))
        w.add_vision_use_gelu(True)
        # vision_feature_layer in Python's notation: -1 is the last layer, so none is dropped
        dropped = -(self.global_config.get("vision_feature_layer", -1) + 1)
        w.add_vision_block_count(self.find(self.block_keys) - dropped)

    def map_name(self, name: str, suffixes: Sequence[str] = (".weight", ".bias")) -> str:
        # the projector's linear_{bid} carry their number inside a name part, which the one-block name
        # lookup does not see: gguf's map for the tower's block count has them (as the reference's)
        found = self.tensor_map.get_name(name, try_suffixes=tuple(suffixes))
        return found if found is not None else super().map_name(name, suffixes)

    def convert(self, name: str, node: Node, bid: int | None) -> Iterator[tuple[str, Node]]:
        if "patch_embedding.weight" in name:
            node = _conv_patch_embedding(node)
        yield self.map_name(name), node
