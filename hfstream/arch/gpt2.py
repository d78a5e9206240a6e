"""GPT-2 (GPT2LMHeadModel): Conv1D weights transposed to (out, in), learned position embeddings,
biases and LayerNorm everywhere, the output head tied to the token embedding (no ``output.weight``
unless the checkpoint has ``lm_head.weight``)."""

from __future__ import annotations

from typing import Iterator

import gguf

from .. import errors
from ..graph import Node, Transpose
from . import register
from .base import TextFamily

#: Conv1D modules: their weights are stored (in, out), llama.cpp wants (out, in)
_CONV1D_WEIGHTS = (".c_attn.weight", ".c_proj.weight", ".c_fc.weight")
#: causal-mask buffers older transformers saved with the weights (openai-community/gpt2 has them)
_MASK_BUFFERS = (".attn.bias", ".attn.masked_bias")


@register
class GPT2(TextFamily):
    hf_architectures = ("GPT2LMHeadModel",)
    model_types = ("gpt2",)
    gguf_arch = gguf.MODEL_ARCH.GPT2
    vocab_strategies = ("bpe",)

    def _key(self, key: str):
        if key not in self.hparams:
            raise errors.InvalidConfigError(f"config.json: GPT-2 needs {key}")
        return self.hparams[key]

    def add_hparams(self, w: gguf.GGUFWriter, file_type: int) -> None:
        n_embd = self._key("n_embd")
        w.add_block_count(self.block_count)
        # n_ctx is not a GPT2Config field: configs saved from a fresh GPT2Config lack it (the reference
        # then fails); it always equalled n_positions, the length of the position embedding
        w.add_context_length(self.hparams["n_ctx"] if "n_ctx" in self.hparams else self._key("n_positions"))
        w.add_embedding_length(n_embd)
        w.add_feed_forward_length(4 * n_embd)
        w.add_head_count(self._key("n_head"))
        w.add_layer_norm_eps(self._key("layer_norm_epsilon"))
        w.add_file_type(file_type)

    def source_name(self, name: str) -> str | None:
        if name.endswith(_MASK_BUFFERS):
            return None  # not weights (the reference means to skip them but fails on them)
        return super().source_name(name)

    def convert(self, name: str, node: Node, bid: int | None) -> Iterator[tuple[str, Node]]:
        if name.endswith(_CONV1D_WEIGHTS):
            node = Transpose(node)
        yield self.map_name(name), node
