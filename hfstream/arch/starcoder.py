"""StarCoder2 (Starcoder2ForCausalLM): the shared decoder as it is, under llama.cpp's ``starcoder2``.

The reference adds nothing to the defaults: the common keys (LayerNorm epsilon from
``layer_norm_epsilon`` or ``norm_epsilon``), tensors mapped as they are (q/k/v/o and the plain MLP
``c_fc``/``c_proj`` with biases, LayerNorms with biases, no q/k permute), the output tied to the
token embedding unless the checkpoint has ``lm_head``, a BPE vocab.
"""

from __future__ import annotations

import gguf

from . import register
from .base import DECODER_SHAPES, LAYER, TextFamily


@register
class Starcoder2(TextFamily):
    hf_architectures = ("Starcoder2ForCausalLM",)
    model_types = ("starcoder2",)
    gguf_arch = gguf.MODEL_ARCH.STARCODER2
    vocab_strategies = ("bpe",)
    shape_rules = DECODER_SHAPES + (
        (LAYER + r"mlp\.c_fc\.weight", ("ffn", "hidden")),
        (LAYER + r"mlp\.c_fc\.bias", ("ffn",)),
        (LAYER + r"mlp\.c_proj\.weight", ("hidden", "ffn")),
        (LAYER + r"(self_attn\.o_proj|mlp\.c_proj)\.bias", ("hidden",)),
        (r"model\.norm\.bias", ("hidden",)),
        (LAYER + r"(input|post_attention)_layernorm\.bias", ("hidden",)),
    )
