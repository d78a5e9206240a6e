"""Gemma 3's vision projector (``--mmproj``): its SigLIP tower and the multimodal projector.

What the reference (``Gemma3VisionModel``) does beyond every projector's keys:

- projector type ``gemma3``, the tower's layer-norm epsilon (1e-6 when the config has none), GELU;
  the projector's pooling factor ``(image_size / patch_size) / sqrt(image_seq_length)`` only when it
  is not Gemma 3's 4 (a test-sized model);
- the tensors of ``vision_tower.`` and ``multi_modal_projector.`` (SigLIP's unused head left out),
  ``*_weight`` parameters named ``*.weight``, the soft-embedding norm + 1 (Gemma's RMSNorm scales by
  1 + w; the tower's own norms are LayerNorms);
- the input projection is F16 and the embeddings (patch and position) are F32 whatever the outtype.
"""

from __future__ import annotations

from typing import Iterator

import gguf

from ..graph import AddScalar, Node
from . import register_projector
from .base import ProjectorFamily


@register_projector
class Gemma3Vision(ProjectorFamily):
    hf_architectures = ("Gemma3ForConditionalGeneration",)
    model_types = ("gemma3", "siglip_vision_model")
    tensor_prefixes = ("multi_modal_projector.", "vision_tower.", "multimodal_projector.", "vision_model.")

    def source_name(self, name: str) -> str | None:
        if "vision_model.head." in name:  # SigLIP's pooling head: not part of Gemma 3
            return None
        kept = super().source_name(name)
        return None if kept is None else kept.replace("_weight", ".weight")

    def add_hparams(self, w: gguf.GGUFWriter, file_type: int) -> None:
        super().add_hparams(w, file_type)
        w.add_clip_projector_type(gguf.VisionProjectorType.GEMMA3)
        w.add_vision_attention_layernorm_eps(self.hparams.get("layer_norm_eps", 1e-6))
        w.add_vision_use_gelu(True)
        per_side = int(self.preprocessor.get("image_seq_length", 256) ** 0.5)
        pooling = (self.find(("image_size",)) // self.find(("patch_size",))) // per_side
        if pooling > 0 and pooling != 4:
            w.add_vision_projector_scale_factor(pooling)

    def convert(self, name: str, node: Node, bid: int | None) -> Iterator[tuple[str, Node]]:
        if "soft_emb_norm.weight" in name:
            node = AddScalar(node, 1.0)
        yield self.map_name(name), node

    def forced_type(self, gguf_name: str, bid: int | None, source_name: str | None) -> gguf.GGMLQuantizationType | None:
        if source_name is not None and "input_projection" in source_name:
            return gguf.GGMLQuantizationType.F16
        if source_name is not None and ".embeddings." in source_name:
            return gguf.GGMLQuantizationType.F32
        return super().forced_type(gguf_name, bid, source_name)
