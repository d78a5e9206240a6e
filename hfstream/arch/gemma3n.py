"""Gemma 3n (text, and the text part of Gemma3nForConditionalGeneration), on top of Gemma 3.

What the reference does beyond Gemma 3:

- Keys: Gemma 3's, then the AltUp active index and stream count, the per-layer input width, the
  number of layers that share KV, one activation sparsity scale per layer and one SWA flag per
  layer. A layer's sparsity scale is the standard normal quantile of its
  ``activation_sparsity_pattern`` entry as torch computes it in float32 (``Normal(0, 1).icdf``):
  -inf for 0, a dense layer.
- Norms are used as stored (no +1); nothing is cut from the embedding. The token embedding and the
  per-layer embeddings are padded with zero rows up to ``vocab_size`` (the image and audio tokens
  past the text vocab get theirs from the towers).
- The checkpoint stores the AltUp projections (and unembedding projections) one tensor per extra
  stream; they become one 3-D tensor each, written where the last of them arrives. Only 4 streams
  are converted (the reference asserts it).
- Parameters named ``*_scale`` (AltUp's ``correct_output_scale``) are ``*_scale.weight``.
- Vocab: Gemma 3's, the SentencePiece vocab padded to ``vocab_size`` rather than to
  ``vocab_size_per_layer_input``.
- The vision tower (MobileNetV5), the audio tower and their embedders are left out (``TextFamily``).
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterable, Iterator, Mapping

import gguf
import numpy as np

from .. import errors
from ..graph import Node, PadRows, Stack
from ..hfconfig import INT_HPARAMS
from ..safetensors import SourceTensor
from . import register
from .base import DECODER_SHAPES, LAYER, SIZES
from .gemma import Gemma3, check_layer_shapes, kv_shared_layers, required, sliding_window_pattern

#: the AltUp stream count the reference converts
_ALTUP_INPUTS = 4
_ALTUP = re.compile(r"model\.(altup_projections|altup_unembed_projections)\.(\d+)\.weight")

_SIZES: Mapping[str, tuple[str, ...]] = {
    **SIZES, "ple": ("hidden_size_per_layer_input",), "ple_vocab": ("vocab_size_per_layer_input",),
    "layers": ("num_hidden_layers",), "altup": ("altup_num_inputs",), "laurel": ("laurel_rank",),
}
_MODEL_SHAPES = (
    (r"model\.embed_tokens\.weight", ("vocab", "hidden")),
    (r"model\.embed_tokens_per_layer\.weight", ("ple_vocab", "layers*ple")),
    (r"model\.per_layer_model_projection\.weight", ("layers*ple", "hidden")),
    (r"model\.per_layer_projection_norm\.weight", ("ple",)),
    (r"model\.altup_(unembed_)?projections\.\d+\.weight", ("hidden", "hidden")),
    (r"model\.norm\.weight", ("hidden",)),
)
_LAYER_SHAPES = (*(r for r in DECODER_SHAPES if r[0].startswith(LAYER)), *(
    (LAYER + r"altup\.(correct_output_scale|router_norm)\.weight", ("hidden",)),
    (LAYER + r"altup\.correction_coefs\.weight", ("altup", "altup")),
    (LAYER + r"altup\.prediction_coefs\.weight", ("altup*altup", "altup")),
    (LAYER + r"altup\.modality_router\.weight", ("altup", "hidden")),
    (LAYER + r"laurel\.linear_left\.weight", ("laurel", "hidden")),
    (LAYER + r"laurel\.linear_right\.weight", ("hidden", "laurel")),
    (LAYER + r"laurel\.post_laurel_norm\.weight", ("hidden",)),
    (LAYER + r"per_layer_input_gate\.weight", ("ple", "hidden")),
    (LAYER + r"per_layer_projection\.weight", ("hidden", "ple")),
    (LAYER + r"post_per_layer_input_norm\.weight", ("hidden",)),
))
#: intermediate_size is one width per layer here (transformers makes a list of a single int)
_INTS = {k: v for k, v in INT_HPARAMS.items() if k != "feed forward length"}


@register
class Gemma3n(Gemma3):
    hf_architectures = ("Gemma3nForCausalLM", "Gemma3nForConditionalGeneration")
    model_types = ("gemma3n", "gemma3n_text")
    gguf_arch = gguf.MODEL_ARCH.GEMMA3N
    hparam_ints = _INTS

    def __init__(self, hparams, hf_arch):
        super().__init__(hparams, hf_arch)
        if self.hparams.get("altup_num_inputs") != _ALTUP_INPUTS:
            raise errors.UnsupportedArchitectureError(
                f"config.json: altup_num_inputs is {self.hparams.get('altup_num_inputs')!r}; llama.cpp's "
                f"converter converts Gemma 3n with {_ALTUP_INPUTS} AltUp inputs only")
        self.ffn_widths = _ffn_widths(self.hparams, self.block_count)
        self._altup: dict[str, dict[int, Node]] = {}

    # -- hyperparameters ------------------------------------------------------

    def add_hparams(self, w: gguf.GGUFWriter, file_type: int) -> None:
        super().add_hparams(w, file_type)
        hp = self.hparams
        w.add_altup_active_idx(required(hp, "altup_active_idx"))
        w.add_altup_num_inputs(hp["altup_num_inputs"])
        w.add_embedding_length_per_layer_input(required(hp, "hidden_size_per_layer_input"))
        w.add_shared_kv_layers(kv_shared_layers(hp, self.block_count))
        pattern = required(hp, "activation_sparsity_pattern")
        if not isinstance(pattern, list):
            raise errors.InvalidConfigError("config.json: activation_sparsity_pattern must be a list")
        w.add_activation_sparsity_scale([normal_quantile_f32(p) for p in pattern])
        w.add_sliding_window_pattern(sliding_window_pattern(hp, self.block_count))

    # -- tensors --------------------------------------------------------------

    def check_shapes(self, sources: Iterable[tuple[str, SourceTensor]]) -> None:
        check_layer_shapes(self.hparams, sources, _MODEL_SHAPES, _LAYER_SHAPES,
                           lambda i: {"intermediate_size": self.ffn_widths[i]}, _SIZES)

    def source_name(self, name: str) -> str | None:
        if name.endswith("_scale"):
            name += ".weight"
        return super().source_name(name)

    def convert(self, name: str, node: Node, bid: int | None) -> Iterator[tuple[str, Node]]:
        if "embed_tokens.weight" in name or "embed_tokens_per_layer" in name:
            n_vocab = self.hparams.get("vocab_size", 262400)
            yield self.map_name(name), PadRows(node, n_vocab) if node.shape[0] < n_vocab else node
        elif m := _ALTUP.fullmatch(name):
            yield from self._stack_altup(m.group(1), int(m.group(2)), node)
        else:
            yield from super().convert(name, node, bid)

    def norm_shift(self, name: str, node: Node) -> Node:
        return node

    def _stack_altup(self, kind: str, index: int, node: Node) -> Iterator[tuple[str, Node]]:
        if index >= _ALTUP_INPUTS - 1:
            raise errors.InvalidHeaderError(f"unexpected AltUp projection model.{kind}.{index}.weight")
        parts = self._altup.setdefault(kind, {})
        parts[index] = node
        if len(parts) == _ALTUP_INPUTS - 1:
            del self._altup[kind]
            yield self.map_name(f"model.{kind}.weight"), Stack(tuple(parts[i] for i in range(_ALTUP_INPUTS - 1)))

    def finish(self) -> Iterator[tuple[str, Node]]:
        for kind, parts in self._altup.items():
            missing = min(set(range(_ALTUP_INPUTS - 1)) - set(parts))
            raise errors.InvalidHeaderError(f"AltUp projection model.{kind}.{missing}.weight is missing")
        return iter(())

    # -- vocab ----------------------------------------------------------------

    def vocab_hparams(self) -> dict[str, Any]:
        # the vocab covers the image and audio tokens too: vocab_size, not vocab_size_per_layer_input
        return {k: v for k, v in self.hparams.items() if k != "vocab_size_per_layer_input"}


def _ffn_widths(hparams: Mapping[str, Any], n_layer: int) -> list[int]:
    """The MLP width of each layer: ``intermediate_size``, one int or one per layer."""
    value = required(hparams, "intermediate_size")
    widths = value if isinstance(value, list) else [value] * n_layer
    low, high = INT_HPARAMS["feed forward length"][1:]
    if len(widths) != n_layer or not all(type(v) is int and low <= v <= high for v in widths):
        raise errors.InvalidConfigError(
            f"config.json: intermediate_size must be an integer from {low} to {high}, or one per layer ({n_layer})")
    return widths


def normal_quantile_f32(p: Any) -> float:
    """``torch.distributions.Normal(0, 1).icdf(torch.tensor(p, dtype=torch.float32)).item()``.

    torch computes ``erfinv(2 * p - 1) * sqrt(2)`` in float32: ``2 * p - 1`` and the product are
    float32 operations, done here in numpy float32; ``erfinv`` is torch's float32 function, which
    gives the correctly rounded value (checked against torch on thousands of points), computed here
    to double precision by Newton steps on ``erf``/``erfc`` and then rounded. 0 gives -inf, 1 +inf.
    """
    if type(p) not in (int, float) or not 0.0 <= p <= 1.0:
        raise errors.InvalidConfigError(
            f"config.json: activation_sparsity_pattern values must be numbers from 0 to 1, not {p!r}")
    y = float(np.float32(2.0) * np.float32(p) - np.float32(1.0))
    erfinv = math.copysign(_erfinv_abs(abs(y)), y)
    return float(np.float32(np.float32(erfinv) * np.float32(math.sqrt(2.0))))


def _erfinv_abs(y: float) -> float:
    """erfinv(y) for 0 <= y <= 1 in double precision."""
    if y == 1.0:
        return math.inf
    if y == 0.0:
        return 0.0
    # a start within about 2e-3 (Winitzki), then Newton: on erf near 0, on erfc = 1 - y (exact
    # for a float32 y) further out, where erf(x) - y would cancel
    a = 0.147
    ln = math.log1p(-y * y)
    t = 2.0 / (math.pi * a) + ln / 2.0
    x = math.sqrt(math.sqrt(t * t - ln / a) - t)
    slope = 2.0 / math.sqrt(math.pi)
    for _ in range(50):
        err = math.erf(x) - y if y <= 0.5 else (1.0 - y) - math.erfc(x)
        step = err / (slope * math.exp(-x * x))
        x -= step
        if abs(step) <= 1e-17 * abs(x):
            break
    return x
