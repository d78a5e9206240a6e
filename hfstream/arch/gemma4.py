"""Gemma 4 (text, and the text part of Gemma4ForConditionalGeneration), on top of Gemma 3.

Gemma 4's layers come in two kinds, set by ``layer_types``: sliding-window layers (``head_dim``,
``num_key_value_heads``, plain rope) and full-attention layers (a larger head, from
``per_layer_config`` or ``global_head_dim``; with ``attention_k_eq_v`` fewer KV heads and no
v_proj; "proportional" rope on a quarter of the head). The last ``num_kv_shared_layers`` layers
reuse earlier layers' KV (their k/v weights are still in the released files and are converted),
and with ``use_double_wide_mlp`` their MLP is twice as wide. Optional parts: per-layer inputs
(E2B/E4B) and a mixture-of-experts block next to the dense MLP (26B-A4B).

What the reference does beyond Gemma 3:

- Keys: Gemma 3's, then the KV-sharing layer count, the per-layer input width (0 without), one SWA
  flag per layer, the key/value lengths of full layers (written over Gemma 3's, in place) and of
  SWA layers, the expert FFN width, per-layer FFN widths and KV head counts when they differ
  (arrays over the numbers, in place), and the rope dimension counts (the whole full head: the
  unrotated part is made by ``rope_freqs``).
- ``rope_freqs`` is generated, first: 1 for each rotated pair of the full head, 1e30 for the rest.
- Norms are used as stored (no +1). ``layer_scalar`` and ``per_dim_scale`` get ``.weight``; the
  experts' fused ``gate_up_proj`` and ``down_proj`` (3-D parameters) too, and map to
  ``ffn_gate_up_exps``/``ffn_down_exps``; the router's ``scale`` and ``per_expert_scale`` become
  ``ffn_gate_inp.scale`` and ``ffn_down_exps.scale``.
- The token embedding is cut as Gemma 3's (tokenizer.json's vocab and added tokens: no cut on the
  real files).
- Vocab: the tokenizer.json as gguf-py's ``LlamaHfVocab`` reads it, under tokenizer model
  ``gemma4`` (no pre-tokenizer key); the tokens the chat parser reads (tool calls, channels, the
  string quote) are USER_DEFINED so they are rendered; merges, special ids, ``add_space_prefix``
  false and ``add_bos_token`` true.
- The vision and audio towers and their embedders are left out (``TextFamily``).
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Mapping

import gguf
import numpy as np

from .. import errors
from ..graph import Constant, Node
from ..safetensors import SourceTensor
from . import register
from .base import LAYER, SIZES
from .gemma import Gemma3, _add_again, check_layer_shapes, kv_shared_layers, required, sliding_window_pattern

K = gguf.Keys

#: tokens written USER_DEFINED whatever the tokenizer says, so llama.cpp renders them for the chat parser
VISIBLE_TOKENS = frozenset({"<|channel>", "<channel|>", "<|tool_call>", "<tool_call|>", "<|tool_response>",
                            "<tool_response|>", '<|"|>'})
#: suffixes of expert parameters that keep their name (quantized checkpoints' scales)
_EXPERT_SUFFIXES = (".weight", ".weight_scale", ".weight_scale_2", ".input_scale")

_SIZES: Mapping[str, tuple[str, ...]] = {
    **SIZES,
    "head_dim": ("global_head_dim", "head_dim"),
    "kv_heads": ("num_global_key_value_heads", "num_key_value_heads"),
    "ffn": ("intermediate_size (double wide)", "intermediate_size"),
    "experts": ("num_experts",),
    "moe_ffn": ("moe_intermediate_size",),
    "moe_ffn_pair": ("moe_intermediate_size (gate and up)",),
    "ple": ("hidden_size_per_layer_input",),
    "ple_vocab": ("vocab_size_per_layer_input",),
    "layers": ("num_hidden_layers",),
}
_MODEL_SHAPES = (
    (r"model\.embed_tokens\.weight", ("vocab", "hidden")),
    (r"model\.embed_tokens_per_layer\.weight", ("ple_vocab", "layers*ple")),
    (r"model\.per_layer_model_projection\.weight", ("layers*ple", "hidden")),
    (r"model\.per_layer_projection_norm\.weight", ("ple",)),
    (r"model\.norm\.weight", ("hidden",)),
)
_LAYER_SHAPES = (
    (LAYER + r"self_attn\.q_proj\.weight", ("heads*head_dim", "hidden")),
    (LAYER + r"self_attn\.[kv]_proj\.weight", ("kv_heads*head_dim", "hidden")),
    (LAYER + r"self_attn\.o_proj\.weight", ("hidden", "heads*head_dim")),
    (LAYER + r"self_attn\.[qk]_norm\.weight", ("head_dim",)),
    (LAYER + r"mlp\.(gate|up)_proj\.weight", ("ffn", "hidden")),
    (LAYER + r"mlp\.down_proj\.weight", ("hidden", "ffn")),
    (LAYER + r"router\.proj\.weight", ("experts", "hidden")),
    (LAYER + r"router\.scale", ("hidden",)),
    (LAYER + r"router\.per_expert_scale", ("experts",)),
    (LAYER + r"experts\.gate_up_proj\.weight", ("experts", "moe_ffn_pair", "hidden")),
    (LAYER + r"experts\.down_proj\.weight", ("experts", "hidden", "moe_ffn")),
    (LAYER + r"per_layer_input_gate\.weight", ("ple", "hidden")),
    (LAYER + r"per_layer_projection\.weight", ("hidden", "ple")),
    (LAYER + r"(input|post_attention|pre_feedforward|post_feedforward)_layernorm(_[12])?\.weight", ("hidden",)),
    (LAYER + r"post_per_layer_input_norm\.weight", ("hidden",)),
)


@register
class Gemma4(Gemma3):
    hf_architectures = ("Gemma4ForCausalLM", "Gemma4ForConditionalGeneration")
    #: full-attention layers with ``attention_k_eq_v`` have no v_proj
    optional_tensors = (gguf.MODEL_TENSOR.ATTN_V,)
    model_types = ("gemma4", "gemma4_text")
    gguf_arch = gguf.MODEL_ARCH.GEMMA4

    def __init__(self, hparams, hf_arch):
        super().__init__(hparams, hf_arch)
        self.swa_layers = sliding_window_pattern(self.hparams, self.block_count)
        self.n_kv_shared = kv_shared_layers(self.hparams, self.block_count)

    # -- the two kinds of layers ----------------------------------------------

    def _full_layer_value(self, key: str) -> Any:
        """A full-attention layer's ``key`` from ``per_layer_config`` (the first full layer naming it),
        as transformers 5 writes ``global_head_dim`` and ``num_global_key_value_heads`` into it."""
        per_layer = self.hparams.get("per_layer_config")
        if not isinstance(per_layer, dict):
            return None
        for index, layer in per_layer.items():
            if not str(index).isdecimal():
                raise errors.InvalidConfigError("config.json: per_layer_config has a key that is not a layer number")
            i = int(index)
            if i < self.block_count and not self.swa_layers[i] and isinstance(layer, dict) and key in layer:
                return layer[key]
        return None

    def full_head_dim(self) -> int:
        hd = self.hparams.get("global_head_dim")
        if hd is None:
            hd = self._full_layer_value("head_dim")
        if hd is None:
            # transformers leaves a per-layer value equal to the model's out of per_layer_config
            raise errors.UnsupportedArchitectureError(
                "config.json: full-attention layers with the head size of sliding ones (global_head_dim = "
                "head_dim): llama.cpp's converter finds no head size for them and stops")
        if type(hd) is not int or hd <= 0:
            raise errors.InvalidConfigError(f"config.json: global_head_dim must be a positive integer, not {hd!r}")
        return hd

    def full_kv_heads(self) -> int | None:
        n = self.hparams.get("num_global_key_value_heads")
        return self._full_layer_value("num_key_value_heads") if n is None else n

    def _layer_sizes(self, i: int) -> dict[str, Any]:
        hp = self.hparams
        sizes: dict[str, Any] = {}
        if type(hp.get("moe_intermediate_size")) is int:
            sizes["moe_intermediate_size (gate and up)"] = 2 * hp["moe_intermediate_size"]
        if not self.swa_layers[i]:
            sizes["global_head_dim"] = self.full_head_dim()
            if (kv := self.full_kv_heads()) is not None:
                sizes["num_global_key_value_heads"] = kv
        shared = i >= self.block_count - self.n_kv_shared
        if shared and hp.get("use_double_wide_mlp") and type(hp.get("intermediate_size")) is int:
            sizes["intermediate_size (double wide)"] = 2 * hp["intermediate_size"]
        return sizes

    # -- hyperparameters ------------------------------------------------------

    def add_hparams(self, w: gguf.GGUFWriter, file_type: int) -> None:
        super().add_hparams(w, file_type)
        hp = self.hparams
        again = lambda add, key, value: _add_again(w, add, key, value)  # noqa: E731
        w.add_shared_kv_layers(self.n_kv_shared)
        w.add_embedding_length_per_layer_input(hp.get("hidden_size_per_layer_input") or 0)
        w.add_sliding_window_pattern(self.swa_layers)
        head_dim_full, head_dim_swa = self.full_head_dim(), required(hp, "head_dim")
        again(w.add_key_length, K.Attention.KEY_LENGTH, head_dim_full)
        again(w.add_value_length, K.Attention.VALUE_LENGTH, head_dim_full)
        w.add_key_length_swa(head_dim_swa)
        w.add_value_length_swa(head_dim_swa)
        if "expert_intermediate_size" not in hp and "moe_intermediate_size" not in hp:
            raise errors.InvalidConfigError("config.json: moe_intermediate_size is not set")
        if (expert_ff := self.find(("expert_intermediate_size", "moe_intermediate_size"))) is not None:
            w.add_expert_feed_forward_length(expert_ff)
        if hp.get("use_double_wide_mlp", False):
            n_ff = required(hp, "intermediate_size")
            first_shared = self.block_count - self.n_kv_shared
            again(w.add_feed_forward_length, K.LLM.FEED_FORWARD_LENGTH,
                  [n_ff if i < first_shared else n_ff * 2 for i in range(self.block_count)])
        kv_full, kv_swa = self.full_kv_heads(), hp.get("num_key_value_heads")
        if kv_full is not None and kv_swa is not None:
            again(w.add_head_count_kv, K.Attention.HEAD_COUNT_KV,
                  [kv_swa if swa else kv_full for swa in self.swa_layers])
        w.add_rope_dimension_count(int(head_dim_full))  # the rest of the head is kept still by rope_freqs
        w.add_rope_dimension_count_swa(int(head_dim_swa * self.rope.get("partial_rotary_factor", 1.0)))

    # -- tensors --------------------------------------------------------------

    def check_shapes(self, sources: Iterable[tuple[str, SourceTensor]]) -> None:
        check_layer_shapes(self.hparams, sources, _MODEL_SHAPES, _LAYER_SHAPES, self._layer_sizes, _SIZES)

    def source_name(self, name: str) -> str | None:
        if name.endswith(("per_dim_scale", "layer_scalar")):
            name += ".weight"
        if ".experts." in name and not name.endswith(_EXPERT_SUFFIXES):
            name += ".weight"
        return super().source_name(name)

    def extra_tensors(self) -> Iterable[tuple[str, Node]]:
        """``rope_freqs``: the full-attention layers rotate only ``partial_rotary_factor`` of each head
        ("proportional" rope), and llama.cpp's NEOX rope rotates the leading pairs; a frequency factor
        of 1e30 keeps the other pairs still."""
        rope = self.hparams.get("rope_parameters")
        full = rope.get("full_attention") if isinstance(rope, dict) else None
        if not isinstance(full, dict) or full.get("rope_type") != "proportional":
            raise errors.UnsupportedArchitectureError(
                "config.json: Gemma 4's full-attention layers must use rope_type 'proportional' "
                "(rope_parameters.full_attention), as llama.cpp's converter requires")
        factor = required(full, "partial_rotary_factor")
        if type(factor) not in (int, float) or not 0 < factor <= 1:
            raise errors.InvalidConfigError("config.json: partial_rotary_factor of full attention must be in (0, 1]")
        head_dim = self.full_head_dim()
        n_rot = int(head_dim * factor / 2)
        n_still = int(head_dim / 2) - n_rot
        values = np.array([1.0] * n_rot + [1e30] * n_still, dtype=np.float32)
        yield gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", Constant(values)

    def convert(self, name: str, node: Node, bid: int | None) -> Iterator[tuple[str, Node]]:
        if name.endswith("router.scale"):
            yield self._block_tensor(gguf.MODEL_TENSOR.FFN_GATE_INP, bid, name) + ".scale", node
        elif ".per_expert_scale" in name:  # each expert's output scale, applied after its down projection
            yield self._block_tensor(gguf.MODEL_TENSOR.FFN_DOWN_EXP, bid, name) + ".scale", node
        else:
            yield from super().convert(name, node, bid)

    def norm_shift(self, name: str, node: Node) -> Node:
        return node

    @staticmethod
    def _block_tensor(kind: gguf.MODEL_TENSOR, bid: int | None, name: str) -> str:
        if bid is None:
            raise errors.UnsupportedArchitectureError(f"tensor {name!r} has no layer number")
        return gguf.TENSOR_NAMES[kind].format(bid=bid)

    # -- vocab ----------------------------------------------------------------

    def add_vocab(self, w: gguf.GGUFWriter, files: Mapping[str, bytes], bpe_pre: str | None) -> None:
        from ..vocab import add_special_vocab, llama_hf_tokens

        tokens, scores, types = llama_hf_tokens(files, self.hparams)
        visible = int(gguf.TokenType.USER_DEFINED)
        types = [visible if t.decode("utf-8") in VISIBLE_TOKENS else kind for t, kind in zip(tokens, types)]
        w.add_tokenizer_model("gemma4")
        w.add_token_list(tokens)
        w.add_token_scores(scores)
        w.add_token_types(types)
        add_special_vocab(w, files, self.hparams, load_merges=True)
        _add_again(w, w.add_add_space_prefix, K.Tokenizer.ADD_PREFIX, False)
        _add_again(w, w.add_add_bos_token, K.Tokenizer.ADD_BOS, True)
