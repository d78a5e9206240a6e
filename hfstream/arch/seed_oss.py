"""Seed-OSS (ByteDance): the shared decoder as it is, under its own llama.cpp architecture.

The reference converts it with nothing of its own: the common keys (``head_dim`` among them, which
is not hidden / heads), q/k/v biases mapped as they are, no q/k permute, byte-level BPE vocab.
"""

from __future__ import annotations

import gguf

from . import register
from .base import TextFamily


@register
class SeedOss(TextFamily):
    hf_architectures = ("SeedOssForCausalLM",)
    model_types = ("seed_oss",)
    gguf_arch = gguf.MODEL_ARCH.SEED_OSS
