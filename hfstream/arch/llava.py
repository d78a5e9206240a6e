"""Llava with a Pixtral tower (``LlavaForConditionalGeneration``: Pixtral 12B as mistral-community ships it
in Hugging Face format): the text model, converted as Llama (the reference registers the architecture
with its ``LlamaModel``), the vision tower and projector left out (``TextFamily.source_name``; the
projector is ``pixtral_vision``'s).

A Llava of another tower (llava-1.5's CLIP, ...) is refused: no fixture checks its text model here, and
the reference converts no projector for it.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

from .. import errors
from . import register
from .llama import Llama


@register
class Llava(Llama):
    hf_architectures: ClassVar[tuple[str, ...]] = ("LlavaForConditionalGeneration",)
    model_types: ClassVar[tuple[str, ...]] = ("llava",)

    def __init__(self, hparams: Mapping[str, Any], hf_arch: str):
        super().__init__(hparams, hf_arch)
        vision = self.hparams.get("vision_config")
        kind = vision.get("model_type") if isinstance(vision, dict) else None
        if kind != "pixtral":
            raise errors.UnsupportedArchitectureError(
                f"{hf_arch} with a {kind!r} vision tower is not supported: hfstream converts Llava with Pixtral's")
