"""The projectors (``--mmproj``) of Qwen's vision-language models: Qwen2-VL, Qwen2.5-VL, Qwen3-VL (dense and MoE)
and Qwen3.5 (whose tower is Qwen3-VL's without deepstack mergers).

All three are a ViT under ``visual.`` whose patch embedding is a Conv3D over two frames (an image
is its own second frame) and whose merger concatenates 2 x 2 neighbouring patches into the text
model's width. What the reference does beyond every projector's keys:

- Qwen2-VL / 2.5-VL (``Qwen2VLVisionModel``): image size 560 when the config has none; the config's
  ``num_heads`` and ``depth`` are the head and block counts; Qwen2-VL's vision ``hidden_size`` is the
  text width, so its tower width is ``embed_dim`` and the FFN length written is that ``hidden_size``
  (not the MLP's real width: llama.cpp reads it from the tensors). Projector ``qwen2vl_merger``, or
  ``qwen2.5vl_merger`` with SiLU and the window-attention pattern (``fullatt_block_indexes`` evenly
  spaced: every n-th block attends to the whole image, n = first index + 1); the layer-norm epsilon
  is the top level's ``rms_norm_eps`` (1e-6 when absent). The fused ``attn.qkv`` weight and bias are
  split into thirds, q, k and v.
- Qwen3-VL (``Qwen3VLVisionModel``): image size sqrt(``num_position_embeddings``) x patch when the
  config has none; projector ``qwen3vl_merger``, GELU, the spatial merge size, the text model's
  epsilon, and one flag per block saying whether its features also go to the text model
  (``deepstack_visual_indexes``). The fused qkv stays fused; the merger's ``linear_fc1``/``linear_fc2``
  are ``mm.0``/``mm.2`` and its norm ``v.post_ln``; the i-th deepstack merger is named after the block
  it reads (``v.deepstack.{block}.*``); the patch embedding has a bias.
- Both: the Conv3D kernel (out, 3, 2, p, p) becomes two Conv2D kernels, one per frame
  (``v.patch_embd.weight`` and ``v.patch_embd.weight.1``, F16 or F32 as every projector's patch
  kernel); position embeddings are F32.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from itertools import pairwise
from typing import Any

import gguf

from .. import errors
from ..graph import Node, Select, SliceRows
from . import register_projector
from .base import ProjectorFamily
from .qwen_vl import deepstack_indexes

MT = gguf.MODEL_TENSOR
_PATCH = gguf.TENSOR_NAMES[MT.V_ENC_EMBD_PATCH]


def conv3d_frames(name: str, node: Node) -> Iterator[tuple[str, Node]]:
    """A Conv3D patch kernel (out, in, 2, p, p) as the two Conv2D kernels of its frames."""
    if node.ndim != 5 or node.shape[2] != 2:
        raise errors.UnsupportedArchitectureError(
            f"{name}: a patch embedding over {node.shape[2] if node.ndim == 5 else '?'} frames; the reference "
            f"converts 2 (temporal_patch_size 2), shape {list(node.shape)}")
    yield _PATCH + ".weight", Select(node, 2, 0)
    yield _PATCH + ".weight.1", Select(node, 2, 1)


@register_projector
class Qwen2VLVision(ProjectorFamily):
    hf_architectures = ("Qwen2VLForConditionalGeneration", "Qwen2_5_VLForConditionalGeneration")
    model_types = ("qwen2_vl", "qwen2_5_vl")
    tensor_prefixes = ("visual.",)

    def __init__(self, hparams: Mapping[str, Any], hf_arch: str):
        super().__init__(hparams, hf_arch)
        v = self.hparams
        v["image_size"] = v.get("image_size", 560)
        v["num_attention_heads"] = v.get("num_heads")
        v["num_hidden_layers"] = v.get("depth")
        if "embed_dim" in v:  # Qwen2-VL: hidden_size is the text model's width
            v["intermediate_size"] = v.get("hidden_size")
            v["hidden_size"] = v.get("embed_dim")

    def add_hparams(self, w: gguf.GGUFWriter, file_type: int) -> None:
        super().add_hparams(w, file_type)
        model_type = self.global_config.get("model_type")
        if model_type == "qwen2_vl":
            w.add_clip_projector_type(gguf.VisionProjectorType.QWEN2VL)
        elif model_type == "qwen2_5_vl":
            w.add_clip_projector_type(gguf.VisionProjectorType.QWEN25VL)
            w.add_vision_use_silu(True)
            w.add_vision_n_wa_pattern(window_attention_pattern(self.hparams.get("fullatt_block_indexes")))
        else:
            raise errors.UnsupportedArchitectureError(f"{self.hf_arch}: unknown Qwen-VL model_type {model_type!r}")
        w.add_vision_attention_layernorm_eps(self.global_config.get("rms_norm_eps", 1e-6))

    def convert(self, name: str, node: Node, bid: int | None) -> Iterator[tuple[str, Node]]:
        if ".qkv." in name:
            third, left = divmod(node.shape[0], 3)
            if left:
                raise errors.InvalidHeaderError(f"{name}: a fused q/k/v of {node.shape[0]} rows is not three equal parts")
            for i, part in enumerate("qkv"):
                yield self.map_name(name.replace("qkv", part)), SliceRows(node, i * third, (i + 1) * third)
        elif "patch_embed.proj.weight" in name:
            yield from conv3d_frames(name, node)
        else:
            yield self.map_name(name), node

    def forced_type(self, gguf_name: str, bid: int | None, source_name: str | None) -> gguf.GGMLQuantizationType | None:
        if ".position_embd." in gguf_name:
            return gguf.GGMLQuantizationType.F32
        return super().forced_type(gguf_name, bid, source_name)


def window_attention_pattern(full_attention_blocks: Any) -> int:
    """Qwen2.5-VL's ``n_wa_pattern``: the blocks that attend to the whole image must be evenly spaced,
    every n-th one, n the first index + 1."""
    if not isinstance(full_attention_blocks, list) or not full_attention_blocks \
            or not all(type(i) is int for i in full_attention_blocks):
        raise errors.InvalidConfigError("config.json: Qwen2.5-VL's vision_config needs fullatt_block_indexes, "
                                        f"a list of block numbers, not {full_attention_blocks!r}"[:200])
    n = full_attention_blocks[0] + 1
    if n < 1 or any(b - a != n for a, b in pairwise(full_attention_blocks)):
        raise errors.InvalidConfigError(
            f"config.json: fullatt_block_indexes {full_attention_blocks} are not every {n} blocks from block {n - 1}"[:200])
    return n


@register_projector
class Qwen3VLVision(ProjectorFamily):
    hf_architectures = ("Qwen3VLForConditionalGeneration", "Qwen3VLMoeForConditionalGeneration",
                        "Qwen3_5ForConditionalGeneration", "Qwen3_5MoeForConditionalGeneration")
    model_types = ("qwen3_vl", "qwen3_vl_moe", "qwen3_5", "qwen3_5_moe")
    tensor_prefixes = ("visual.",)

    def __init__(self, hparams: Mapping[str, Any], hf_arch: str):
        super().__init__(hparams, hf_arch)
        v = self.hparams
        if "image_size" not in v:  # (image_size / patch_size)^2 position embeddings
            positions, patch = v.get("num_position_embeddings", 2304), v.get("patch_size", 16)
            v["image_size"] = int(positions ** 0.5 * patch)
        v["num_attention_heads"] = v.get("num_heads")
        v["num_hidden_layers"] = v.get("depth")
        self.deepstack = deepstack_indexes(self.global_config)
        depth = int(v["num_hidden_layers"] or 0)
        if any(type(i) is not int or not 0 <= i < depth for i in self.deepstack):
            raise errors.InvalidConfigError(
                f"config.json: deepstack_visual_indexes {self.deepstack} are not blocks of a depth-{depth} tower"[:200])

    def source_name(self, name: str) -> str | None:
        if name.startswith(("lm_head.", "mtp.")):
            return None
        if name.startswith("model.visual."):
            name = name.replace("model.visual.", "visual.", 1)
        return super().source_name(name)

    def add_hparams(self, w: gguf.GGUFWriter, file_type: int) -> None:
        super().add_hparams(w, file_type)
        w.add_clip_projector_type(gguf.VisionProjectorType.QWEN3VL)
        w.add_vision_use_gelu(True)
        if (merge := self.hparams.get("spatial_merge_size")) is not None:
            w.add_vision_spatial_merge_size(int(merge))
        text = self.global_config.get("text_config")
        w.add_vision_attention_layernorm_eps((text if isinstance(text, dict) else {}).get("rms_norm_eps", 1e-6))
        depth = int(self.hparams["num_hidden_layers"] or 0)
        if depth:
            w.add_vision_is_deepstack_layers([i in self.deepstack for i in range(depth)])

    def convert(self, name: str, node: Node, bid: int | None) -> Iterator[tuple[str, Node]]:
        if name.startswith("visual.deepstack_merger_list."):
            _, _, index, rest = name.split(".", 3)
            if not index.isdecimal() or int(index) >= len(self.deepstack):
                raise errors.InvalidHeaderError(f"{name}: no deepstack merger {index} in deepstack_visual_indexes")
            part, _, suffix = rest.partition(".")
            kinds = {"norm": MT.V_DS_NORM, "linear_fc1": MT.V_DS_FC1, "linear_fc2": MT.V_DS_FC2}
            if part not in kinds:
                raise errors.UnsupportedArchitectureError(f"cannot map deepstack tensor {name!r}")
            block = self.deepstack[int(index)]
            yield self.map_name(f"{gguf.TENSOR_NAMES[kinds[part]].format(bid=block)}.{suffix}"), node
        elif name.startswith("visual.merger."):
            part, _, suffix = name.split(".", 2)[2].partition(".")
            merger = {"linear_fc1": gguf.TENSOR_NAMES[MT.V_MMPROJ].format(bid=0),
                      "linear_fc2": gguf.TENSOR_NAMES[MT.V_MMPROJ].format(bid=2),
                      "norm": gguf.TENSOR_NAMES[MT.V_POST_NORM]}
            if part not in merger:
                raise errors.UnsupportedArchitectureError(f"cannot map merger tensor {name!r}")
            yield f"{merger[part]}.{suffix}", node
        elif name == "visual.patch_embed.proj.weight":
            yield from conv3d_frames(name, node)
        elif name == "visual.patch_embed.proj.bias":
            yield _PATCH + ".bias", node
        else:
            yield self.map_name(name), node
