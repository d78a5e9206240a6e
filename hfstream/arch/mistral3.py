"""Mistral 3 (``Mistral3ForConditionalGeneration``: Mistral Small 3.1/3.2, Magistral, Devstral Small 2,
Ministral 3; ``Ministral3ForCausalLM``): the text model, converted as Llama with llama.cpp's
``mistral3`` architecture (the reference's ``Mistral3Model`` delegates to a ``LlamaModel`` subclass).

The vision tower and projector of the multimodal checkpoints are left out (``TextFamily.source_name``).
A ``ministral3`` text config (Ministral 3, Devstral Small 2) must have yarn rope parameters and adds
its yarn log multiplier (``mscale_all_dim``) and Llama 4's attention temperature scale
(``llama_4_scaling_beta``). A ``mistral4`` text config (a DeepSeek-V2 style MoE with latent attention)
is refused: the reference converts it as another architecture.
"""

from __future__ import annotations

from typing import ClassVar

import gguf

from .. import errors
from . import register
from .llama import Llama


@register
class Mistral3(Llama):
    hf_architectures: ClassVar[tuple[str, ...]] = ("Mistral3ForConditionalGeneration", "Ministral3ForCausalLM")
    model_types: ClassVar[tuple[str, ...]] = ("mistral3", "ministral3")
    gguf_arch = gguf.MODEL_ARCH.MISTRAL3

    def __init__(self, hparams, hf_arch):
        super().__init__(hparams, hf_arch)
        if self.hparams.get("model_type") == "mistral4":
            raise errors.UnsupportedArchitectureError(
                f"{hf_arch} with a mistral4 text model (latent attention, DeepSeek-V2 layout) is not supported")

    def add_hparams(self, w: gguf.GGUFWriter, file_type: int) -> None:
        super().add_hparams(w, file_type)
        if self.hparams.get("model_type") != "ministral3":
            return
        rope = self.rope
        if rope.get("rope_type") != "yarn":
            raise errors.InvalidConfigError(f"config.json: ministral3 needs yarn rope_parameters, not {rope.get('rope_type')!r}")
        for key in ("mscale_all_dim", "llama_4_scaling_beta"):
            if key not in rope:
                raise errors.InvalidConfigError(f"config.json: ministral3 rope_parameters lack {key}")
        w.add_rope_scaling_yarn_log_mul(rope["mscale_all_dim"])
        w.add_attn_temperature_scale(rope["llama_4_scaling_beta"])
