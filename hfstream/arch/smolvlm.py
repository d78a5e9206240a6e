"""Idefics3 and SmolVLM (``Idefics3ForConditionalGeneration``, ``SmolVLMForConditionalGeneration``):
the Llama text model, and the vision projector (``--mmproj``: a SigLIP tower and the pixel-shuffle
connector).

The reference picks the class of a text conversion by ``text_config.architectures`` when it is there
(SmolVLM2 says ``VLlama3ForCausalLM``, converted by its Llama converter): the tensors under
``model.text_model.`` become Llama's (q/k rows permuted), the tower and connector are left out. A
config whose ``text_config`` names no architecture has no text conversion in the reference (it would
look for a text class named after the whole model), so it is refused.

What the projector (the reference's ``SmolVLMModel``) adds to every projector's keys: projector type
``idefics3``, the tower's LayerNorm epsilon (1e-5 when the config has none), the connector's pixel
shuffle ``scale_factor`` (2 when absent), GELU, and the longest edge the image processor resizes to
(``size.longest_edge`` of the processor files, else the tower's image size). Its tensors are those of
``model.vision_model.`` and ``model.connector.``; the embeddings (patch and position) are F32
whatever the outtype.
"""

from __future__ import annotations

from typing import ClassVar

import gguf

from .. import errors
from . import register, register_projector
from .base import ProjectorFamily
from .llama import Llama

#: the text architectures the reference's Llama converter takes from ``text_config.architectures``
_LLAMA_TEXT = ("VLlama3ForCausalLM", "LlamaForCausalLM")
#: defaults of transformers' SmolVLM vision config, which the reference fills in when a SmolVLM2
#: config.json leaves them out
_SMOLVLM_VISION_DEFAULTS = {"hidden_size": 1152, "num_attention_heads": 16, "intermediate_size": 3072}


@register
class SmolVLM(Llama):
    hf_architectures: ClassVar[tuple[str, ...]] = ("SmolVLMForConditionalGeneration", "Idefics3ForConditionalGeneration")
    model_types: ClassVar[tuple[str, ...]] = ("smolvlm", "idefics3")

    def __init__(self, hparams, hf_arch):
        text = hparams.get("text_config")
        archs = text.get("architectures") if isinstance(text, dict) else None
        text_arch = archs[0] if isinstance(archs, list) and archs else None
        if text_arch not in _LLAMA_TEXT:
            said = f"names {text_arch!r}" if text_arch is not None else "names no architecture"
            raise errors.UnsupportedArchitectureError(
                f"{hf_arch}: text_config {said}; llama.cpp's converter converts the text model only when it "
                f"names one of {', '.join(_LLAMA_TEXT)} (--mmproj converts the projector)")
        super().__init__(hparams, hf_arch)

    def source_name(self, name: str) -> str | None:
        kept = super().source_name(name)
        return None if kept is None else kept.replace("text_model.", "")


@register_projector
class SmolVLMVision(ProjectorFamily):
    hf_architectures = ("SmolVLMForConditionalGeneration", "Idefics3ForConditionalGeneration")
    model_types = ("smolvlm", "idefics3", "smolvlm_vision", "idefics3_vision")

    def __init__(self, hparams, hf_arch):
        super().__init__(hparams, hf_arch)
        if self.hparams.get("model_type") == "smolvlm_vision":
            for key, value in _SMOLVLM_VISION_DEFAULTS.items():
                self.hparams.setdefault(key, value)

    def source_name(self, name: str) -> str | None:
        # the reference keeps any name that mentions the tower or the connector
        if "language_model." in name:
            return None
        if "vision_tower" in name or "vision_model" in name or "model.connector" in name:
            return name
        return None

    def add_hparams(self, w: gguf.GGUFWriter, file_type: int) -> None:
        super().add_hparams(w, file_type)
        w.add_clip_projector_type(gguf.VisionProjectorType.IDEFICS3)
        w.add_vision_attention_layernorm_eps(self.hparams.get("layer_norm_eps", 1e-5))
        w.add_vision_projector_scale_factor(self.global_config.get("scale_factor", 2))
        w.add_vision_use_gelu(True)
        size = self.preprocessor.get("size", {})
        image_size = self.find(("image_size",))
        w.add_vision_preproc_image_size(size.get("longest_edge", image_size) if isinstance(size, dict) else image_size)

    def forced_type(self, gguf_name: str, bid: int | None, source_name: str | None) -> gguf.GGMLQuantizationType | None:
        if source_name is not None and ".embeddings." in source_name:
            return gguf.GGMLQuantizationType.F32
        return super().forced_type(gguf_name, bid, source_name)
