"""EXAONE 4.0 (LG AI): the shared decoder, plus its vocab size, sliding window and llama3 rope factors.

What the reference does beyond the defaults (per-head q/k norms and post-norms map as they are; no
q/k permute; byte-level BPE vocab):

- ``vocab_size`` is written after the common keys;
- with ``sliding_window`` set: the window, and one flag per layer, from ``layer_types`` (transformers
  fills it in), else from ``sliding_window_pattern`` (a string of L/G repeated over the layers, or
  every n-th layer global), written only when it has one flag per layer;
- ``rope_type: llama3`` gives ``rope_freqs`` as Llama 3.1's does, but ``factor`` defaults to 16.
"""

from __future__ import annotations

from typing import Iterable

import gguf

from .. import errors
from ..graph import Node
from . import register
from .base import TextFamily
from .llama import llama3_rope_freqs


@register
class Exaone4(TextFamily):
    hf_architectures = ("Exaone4ForCausalLM",)
    model_types = ("exaone4",)
    gguf_arch = gguf.MODEL_ARCH.EXAONE4

    def add_hparams(self, w: gguf.GGUFWriter, file_type: int) -> None:
        super().add_hparams(w, file_type)
        hp = self.hparams
        if "vocab_size" not in hp:
            raise errors.InvalidConfigError("config.json: vocab_size is not set")
        w.add_vocab_size(hp["vocab_size"])
        if hp.get("sliding_window") is None:
            return
        if type(hp["sliding_window"]) is not int:
            raise errors.InvalidConfigError(f"config.json: sliding_window must be an integer, not {hp['sliding_window']!r}")
        w.add_sliding_window(hp["sliding_window"])
        if "layer_types" in hp:
            if not isinstance(hp["layer_types"], list):
                raise errors.InvalidConfigError("config.json: layer_types must be a list")
            w.add_sliding_window_pattern([kind == "sliding_attention" for kind in hp["layer_types"]])
            return
        pattern = hp.get("sliding_window_pattern")
        n = self.find(("num_hidden_layers",))
        if pattern in ("", 0):
            raise errors.InvalidConfigError(f"config.json: sliding_window_pattern {pattern!r} names no layer")
        if isinstance(pattern, str):  # e.g. "LLLG", repeated over the layers
            w.add_sliding_window_pattern([pattern[i % len(pattern)] == "L" for i in range(n)])
        elif type(pattern) is int:  # every pattern-th layer is global
            w.add_sliding_window_pattern([(i + 1) % pattern != 0 for i in range(n)])

    def extra_tensors(self) -> Iterable[tuple[str, Node]]:
        return llama3_rope_freqs(self, default_factor=16.0)
