"""IBM Granite (3.x) and GraniteMoE: the Llama converter with Granite's scale keys.

What the reference does on top of Llama's (q/k permute, vocab, ``rope_freqs``):

- ``head_dim`` is dropped from the hparams before the keys are written (no key/value length keys;
  the rope dimension is hidden / heads);
- the config's multipliers become scale keys, each only when set and not zero:
  ``attention_multiplier`` -> ``attention.scale``, ``embedding_multiplier`` -> ``embedding_scale``,
  ``residual_multiplier`` -> ``residual_scale``, ``logits_scaling`` -> ``logit_scale``;
- tensors of the Granite 4 vision variants (``encoder.*``, ``image_*``, projectors) are left out;
- GraniteMoE stores each layer's experts as two 3-D tensors: ``block_sparse_moe.input_linear``
  (experts, 2 * ffn, hidden) holds gate and up, split here into ``ffn_gate_exps`` and
  ``ffn_up_exps``; ``output_linear`` (down) and ``router.layer`` map as they are.
"""

from __future__ import annotations

from typing import ClassVar, Iterator, Mapping

import gguf

from .. import errors
from ..graph import Node, SliceStackRows
from . import register
from .base import DECODER_SHAPES, LAYER, SIZES
from .llama import Llama

_T = gguf.MODEL_TENSOR

#: the multiplier keys of the config, and the GGUFWriter method of their scale key
_SCALES = (
    ("attention_multiplier", gguf.GGUFWriter.add_attention_scale),
    ("embedding_multiplier", gguf.GGUFWriter.add_embedding_scale),
    ("residual_multiplier", gguf.GGUFWriter.add_residual_scale),
    ("logits_scaling", gguf.GGUFWriter.add_logit_scale),
)


@register
class Granite(Llama):
    hf_architectures = ("GraniteForCausalLM",)
    model_types = ("granite",)
    gguf_arch = gguf.MODEL_ARCH.GRANITE

    def __init__(self, hparams, hf_arch):
        super().__init__(hparams, hf_arch)
        if self.hparams.get("spatial_target_layers") or self.hparams.get("deepstack_layer_map"):
            # the reference writes a deepstack layer map for Granite 4 Vision's language model
            raise errors.UnsupportedArchitectureError(
                f"{hf_arch} with deepstack vision layers (Granite 4 Vision) is not supported")

    def source_name(self, name: str) -> str | None:
        if name.startswith("encoder.") or any(p in name for p in ("image_", "layerwise_projectors",
                                                                  "spatial_projectors")):
            return None
        return super().source_name(name)

    def add_hparams(self, w: gguf.GGUFWriter, file_type: int) -> None:
        # after the tensors, as the reference's pop: its q/k shapes still count with head_dim
        self.hparams.pop("head_dim", None)
        super().add_hparams(w, file_type)
        for key, add in _SCALES:
            if value := self.hparams.get(key):
                if type(value) not in (int, float):
                    raise errors.InvalidConfigError(f"config.json: {key} must be a number, not {value!r}")
                add(w, value)


@register
class GraniteMoe(Granite):
    hf_architectures = ("GraniteMoeForCausalLM",)
    model_types = ("granitemoe",)
    gguf_arch = gguf.MODEL_ARCH.GRANITE_MOE
    shape_sizes: ClassVar[Mapping[str, tuple[str, ...]]] = {**SIZES, "experts": ("num_local_experts",)}
    shape_rules = DECODER_SHAPES + (
        (LAYER + r"block_sparse_moe\.output_linear\.weight", ("experts", "hidden", "ffn")),
        (LAYER + r"block_sparse_moe\.router\.layer\.weight", ("experts", "hidden")),
    )

    def convert(self, name: str, node: Node, bid: int | None) -> Iterator[tuple[str, Node]]:
        if not name.endswith("block_sparse_moe.input_linear.weight"):
            yield from super().convert(name, node, bid)
            return
        ffn = self.find(("intermediate_size",))
        if node.ndim != 3 or node.shape[1] != 2 * ffn:
            raise errors.ConfigMismatchError(
                f"tensor {name} has shape {list(node.shape)} but config.json makes its rows 2 x intermediate_size "
                f"{ffn} per expert")
        for kind, start in ((_T.FFN_GATE_EXP, 0), (_T.FFN_UP_EXP, ffn)):
            yield gguf.TENSOR_NAMES[kind].format(bid=bid) + ".weight", SliceStackRows(node, start, start + ffn)
