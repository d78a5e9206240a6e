"""Gemma 4's projector (``--mmproj``): the vision tower and its embedder, and the audio tower and its
embedder when the model hears (gemma-4-E2B/E4B; the 26B and 31B models have no ``audio_config``).

What the reference (``Gemma4VisionAudioModel``) does beyond every projector's keys:

- Keys: the vision projector type ``gemma4v`` (under ``clip.vision.projector_type``: one file holds
  two encoders), image size 224 (a placeholder; llama.cpp sizes images from the token limits), the
  tower's layer-norm epsilon (1e-6 when the config has none); with audio, the audio encoder's keys
  (width, FFN 4 x width, blocks, heads), projector type ``gemma4a``, mel bins (``input_feat_size``,
  128 when unset) and epsilon.
- Every tensor but the language model's. Scalars (the clip bounds of Gemma 4's clippable linears:
  ``input_min`` ... ``output_max``) become 1-element vectors; ``.linear.`` weights drop that level.
  Vision: ``encoder.`` is the tower's model, ``layer_scalar`` and ``position_embedding_table`` get
  ``.weight``, and the patch projection (n, p*p*3), a flattened (p, p, channel) patch, becomes the
  convolution kernel (n, 3, p, p). Audio: the Conformer under ``conformer.``; ``per_dim_scale``
  (and ``per_dim_key_scale``) is stored through softplus; the depthwise convolution (C, 1, K) as (C, K).
- Types: the position table F32; audio convolutions (a source name with ``.conv``, or ``_conv`` and
  ``.weight``: the subsampling block, the depthwise kernel) F32; the patch kernel F16 or F32 as
  every projector's.

The softplus is the correctly rounded float32 value (``graph.Softplus``). The reference's comes from
torch's vector math, which is not correctly rounded and differs by CPU (AVX2, AVX-512): for about 1
in 300 bf16 inputs it is one unit in the last place away. Only the per-dimension scales (float32
vectors of one head width per layer) can differ that way; ``tests/test_mmproj.py`` checks them to
within one unit in the last place and every other byte exactly.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

import gguf

from .. import errors
from ..graph import Node, Reshape, Softplus, SwapLastAxes
from . import register_projector
from .base import ProjectorFamily

#: what a Gemma 4 tensor name may end with besides ``.weight``/``.bias``: a clippable linear's bounds
_SUFFIXES = (".weight", ".bias", ".input_max", ".input_min", ".output_max", ".output_min")
#: tensors stored through softplus: the GGUF holds the scale itself
SOFTPLUS_SCALES = ("per_dim_key_scale", "per_dim_scale")


def is_audio(name: str) -> bool:
    return "audio_tower" in name or "embed_audio" in name


@register_projector
class Gemma4Vision(ProjectorFamily):
    hf_architectures = ("Gemma4ForConditionalGeneration",)
    model_types = ("gemma4",)
    has_audio_encoder = True
    tensor_prefixes = ("",)  # every tensor but the language model's, as the reference takes them

    def __init__(self, hparams: Mapping[str, Any], hf_arch: str):
        super().__init__(hparams, hf_arch)
        self.hparams["image_size"] = 224
        if self.hparams_audio is not None:
            self.hparams_audio["feat_in"] = self.hparams_audio.get("input_feat_size", 128)
            if "hidden_size" in self.hparams_audio:
                self.hparams_audio["intermediate_size"] = self.hparams_audio["hidden_size"] * 4

    def add_hparams(self, w: gguf.GGUFWriter, file_type: int) -> None:
        super().add_hparams(w, file_type)
        w.add_clip_vision_projector_type(gguf.VisionProjectorType.GEMMA4V)
        w.add_vision_attention_layernorm_eps(self.hparams.get("layer_norm_eps", 1e-6))
        if self.hparams_audio is not None:
            w.add_clip_audio_projector_type(gguf.VisionProjectorType.GEMMA4A)
            w.add_audio_num_mel_bins(self.hparams_audio["feat_in"])
            w.add_audio_attention_layernorm_eps(self.hparams_audio.get("layer_norm_eps", 1e-6))

    def convert(self, name: str, node: Node, bid: int | None) -> Iterator[tuple[str, Node]]:
        if node.ndim == 0:
            node = Reshape(node, (1,))
        if is_audio(name):
            if self.hparams_audio is None:
                raise errors.UnsupportedArchitectureError(
                    f"{self.hf_arch}: audio tensor {name!r} but config.json has no audio_config")
            name = name.replace("model.audio_tower.", "conformer.").replace(".linear.", ".")
            if name.endswith(SOFTPLUS_SCALES):
                name, node = name + ".weight", Softplus(node)
            if "lconv1d.depthwise_conv1d" in name and name.endswith(".weight"):
                if node.ndim != 3 or node.shape[1] != 1:
                    raise errors.InvalidHeaderError(f"{name}: a depthwise kernel is (channels, 1, width), "
                                                    f"not {list(node.shape)}")
                node = Reshape(node, (node.shape[0], node.shape[2]))
        else:
            name = name.replace("model.vision_tower.encoder.", "vision_model.model.")
            name = name.replace(".linear.weight", ".weight")
            if name.endswith(("layer_scalar", "position_embedding_table")):
                name += ".weight"
            if name.endswith("patch_embedder.input_proj.weight"):
                node = _patch_kernel(name, node)
        yield self.map_name(name, _SUFFIXES), node

    def forced_type(self, gguf_name: str, bid: int | None, source_name: str | None) -> gguf.GGMLQuantizationType | None:
        if source_name is not None:
            if is_audio(source_name) and (".conv" in source_name or ("_conv" in source_name and ".weight" in source_name)):
                return gguf.GGMLQuantizationType.F32
            if "position_embedding_table" in source_name:
                return gguf.GGMLQuantizationType.F32
        return super().forced_type(gguf_name, bid, source_name)


def _patch_kernel(name: str, node: Node) -> Node:
    """(n, p*p*3), each row a patch flattened as (row, column, channel), as the convolution kernel
    (n, 3, p, p): the channel axis moved ahead of the pixels."""
    if node.ndim != 2 or node.shape[1] % 3:
        raise errors.InvalidHeaderError(f"{name}: a patch projection is (width, patch*patch*3), not {list(node.shape)}")
    n, pixels = node.shape[0], node.shape[1] // 3
    side = int(pixels ** 0.5)
    if side * side != pixels:
        raise errors.InvalidHeaderError(f"{name}: {node.shape[1]} inputs are not a square patch of 3 channels")
    return Reshape(SwapLastAxes(Reshape(node, (n, pixels, 3))), (n, 3, side, side))
