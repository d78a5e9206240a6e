"""InternVL (``InternVLChatModel``, repo code: config.json is read as written, ``llm_config`` as the
text config): the text model, and the vision projector (``--mmproj``: InternViT and the ``mlp1``
projector).

The reference picks the classes by the nested configs' ``architectures``: the text model by
``llm_config`` (here Qwen2's, under ``language_model.``; InternVL 2.5 / 3 with a Qwen2 or Qwen2.5 text
model), the projector by ``vision_config`` (``InternVisionModel``). A text model of another family is
refused here (the reference converts it with that family's converter, which hfstream does not pair
yet).

What the projector (the reference's ``InternVisionModel``) does beyond every projector's keys:
projector type ``internvl``, the tower's LayerNorm epsilon, GELU or SiLU by ``hidden_act``, the
pixel-shuffle factor ``1 / downsample_ratio``, the tile counts ``min_dynamic_patch`` /
``max_dynamic_patch`` when set; image and patch sizes given as lists take their first value. Tensors:
``vision_model.`` (put under ``vision_tower.``) and ``mlp1.`` (``mm.model.mlp.{0,1,3}``, from gguf's
map for the tower's block count, so a tower of fewer than 4 layers has no ``mm.model.mlp.3``, there as
here); the fused ``attn.qkv`` split into q, k and v by rows; bare parameters (``ls1``, ``ls2``, the
position embedding) named ``*.weight``; the position embedding F32 whatever the outtype.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import ClassVar

import gguf

from .. import errors
from ..graph import Node, SliceCols, SliceRows
from . import register, register_projector
from .base import ProjectorFamily
from .qwen import Qwen2

#: the text architectures of ``llm_config`` hfstream converts beside InternViT
_TEXT = ("Qwen2ForCausalLM",)
#: InternS1's HF-style projector names, as the reference renames them
_S1_NAMES = {
    "model.multi_modal_projector.layer_norm.bias": "mlp1.0.bias",
    "model.multi_modal_projector.layer_norm.weight": "mlp1.0.weight",
    "model.multi_modal_projector.linear_1.bias": "mlp1.1.bias",
    "model.multi_modal_projector.linear_1.weight": "mlp1.1.weight",
    "model.multi_modal_projector.linear_2.bias": "mlp1.3.bias",
    "model.multi_modal_projector.linear_2.weight": "mlp1.3.weight",
}


def _nested_arch(hparams, key: str) -> str | None:
    nested = hparams.get(key)
    archs = nested.get("architectures") if isinstance(nested, dict) else None
    return archs[0] if isinstance(archs, list) and archs and isinstance(archs[0], str) else None


@register
class InternVLChat(Qwen2):
    hf_architectures: ClassVar[tuple[str, ...]] = ("InternVLChatModel",)
    # the text config it reads; internvl_chat itself is repo code, which transformers does not know: the
    # reference reads that config.json as written, and so does hfstream (so it is not named here, where
    # a model type transformers does not know is refused)
    model_types: ClassVar[tuple[str, ...]] = ("qwen2",)

    def __init__(self, hparams, hf_arch):
        text_arch = _nested_arch(hparams, "text_config")
        if text_arch not in _TEXT:
            raise errors.UnsupportedArchitectureError(
                f"{hf_arch} with a {text_arch or 'unnamed'} text model (llm_config.architectures) is not supported; "
                f"hfstream converts InternVL with {', '.join(_TEXT)}")
        super().__init__(hparams, hf_arch)


@register_projector
class InternVLVision(ProjectorFamily):
    hf_architectures = ("InternVLChatModel",)
    model_types = ("intern_vit_6b",)
    #: the projector's layers, numbered like blocks but not the tower's
    optional_tensors = (gguf.MODEL_TENSOR.V_MMPROJ_MLP,)

    def __init__(self, hparams, hf_arch):
        vision_arch = _nested_arch(hparams, "vision_config")
        if vision_arch != "InternVisionModel":
            raise errors.UnsupportedArchitectureError(
                f"{hf_arch} with a {vision_arch or 'unnamed'} vision tower (vision_config.architectures) has no "
                "projector hfstream converts; it converts InternVisionModel")
        super().__init__(hparams, hf_arch)
        for key in ("image_size", "patch_size"):
            if isinstance(self.hparams.get(key), list) and self.hparams[key]:
                self.hparams[key] = self.hparams[key][0]

    def source_name(self, name: str) -> str | None:
        if not name.startswith(("vision_model", "mlp", "model.vision_tower", "model.multi_modal_projector")):
            return None
        name = _S1_NAMES.get(name, name)
        if name.startswith("vision_model"):
            name = "vision_tower." + name
        if (".ls" in name or ".lambda_" in name or "position_embedding" in name) and not name.endswith(".weight"):
            name += ".weight"
        return name

    def map_name(self, name: str, suffixes: Sequence[str] = (".weight", ".bias")) -> str:
        # gguf's map for the tower's block count, as the reference's (mlp1.3 is in it from 4 blocks on)
        found = self.tensor_map.get_name(name, try_suffixes=tuple(suffixes))
        return found if found is not None else super().map_name(name, suffixes)

    def add_hparams(self, w: gguf.GGUFWriter, file_type: int) -> None:
        super().add_hparams(w, file_type)
        w.add_clip_projector_type(gguf.VisionProjectorType.INTERNVL)
        w.add_vision_attention_layernorm_eps(self.find(("layer_norm_eps",)))
        self.add_activation(w)
        ratio = self.global_config.get("downsample_ratio")
        if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or not 0 < ratio <= 1:
            raise errors.InvalidConfigError(f"config.json: downsample_ratio is {ratio!r}")
        w.add_vision_projector_scale_factor(int(1.0 / ratio))
        if (tiles := self.global_config.get("min_dynamic_patch", 0)) > 0:
            w.add_vision_preproc_min_tiles(tiles)
        if (tiles := self.global_config.get("max_dynamic_patch", 0)) > 0:
            w.add_vision_preproc_max_tiles(tiles)

    def convert(self, name: str, node: Node, bid: int | None) -> Iterator[tuple[str, Node]]:
        if ".qkv." not in name:
            yield self.map_name(name), node
            return
        if node.shape[0] % 3:
            raise errors.ConfigMismatchError(f"{name} has {node.shape[0]} rows, not 3 x the width")
        width = node.shape[0] // 3
        for i, proj in enumerate(("q_proj", "k_proj", "v_proj")):
            # a bias is one row: its thirds are column ranges
            part = (SliceRows(node, i * width, (i + 1) * width) if node.ndim > 1
                    else SliceCols(node, i * width, (i + 1) * width))
            yield self.map_name(name.replace("attn.qkv", f"self_attn.{proj}")), part

    def forced_type(self, gguf_name: str, bid: int | None, source_name: str | None) -> gguf.GGMLQuantizationType | None:
        if ".position_embd." in gguf_name:
            return gguf.GGMLQuantizationType.F32
        return super().forced_type(gguf_name, bid, source_name)
