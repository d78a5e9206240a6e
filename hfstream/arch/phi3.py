"""Phi-3 (Phi3ForCausalLM): fused ``qkv_proj`` and ``gate_up_proj`` kept as they are, NEOX rope (no
permute), LongRoPE factor tensors generated from the config, and a vocab of its own. Phi-3.5-MoE
(PhiMoEForCausalLM) is Phi-3 with Mixtral's experts.

What the reference (``Phi3MiniModel``) does that differs from the shared defaults:

- its own hyperparameter keys and order (no ``vocab_size``, no rope scaling type; the original
  context length always; ``sliding_window`` 0 when the config has none, which marks Phi-4);
- with ``long_factor`` in the rope parameters (the 128k models): ``rope_factors_long`` and
  ``rope_factors_short`` first in the file, and the attention factor key written while tensors are
  generated, so right after ``general.architecture``;
- vocab: ``GPT2Tokenizer`` repos (Phi-4) take the BPE path; the others read ``tokenizer.model``,
  pad to ``vocab_size`` with ``[PAD{i}]`` (score -10000, unused), then let ``added_tokens.json``,
  ``added_tokens_decoder`` and ``tokenizer.json``'s ``added_tokens`` overwrite ids in that order.

Phi-3.5-MoE (``PhiMoeModel``, a ``Phi3MiniModel``): the same keys, vocab and LongRoPE tensors, then
the expert counts (used, then total); each layer's ``block_sparse_moe.experts.{i}.w1/w2/w3`` stacked
into ``ffn_gate/down/up_exps``; its biases (q/k/v/o, LayerNorms, ``lm_head``) mapped as they are.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Iterator, Mapping

import gguf
import numpy as np

from .. import errors, jsonfile
from ..graph import Constant, Node
from . import register
from .base import ExpertStacks, TextFamily

_T = gguf.TokenType


@register
class Phi3(TextFamily):
    hf_architectures = ("Phi3ForCausalLM",)
    model_types = ("phi3",)
    gguf_arch = gguf.MODEL_ARCH.PHI3
    vocab_strategies = ("bpe",)  # only for GPT2Tokenizer repos; see add_vocab

    # -- hyperparameters ------------------------------------------------------

    def _rope_key(self, key: str) -> Any:
        try:
            return self.rope[key]
        except KeyError:
            raise errors.InvalidConfigError(
                f"config.json: Phi-3 needs {key} (at the root or in rope_scaling)") from None

    def _rope_dims(self) -> int:
        n_embd = self.find(("hidden_size", "n_embd"))
        n_head = self.find(("num_attention_heads", "n_head"))
        return int(self.rope.get("partial_rotary_factor", 1.0) * n_embd) // n_head

    def add_hparams(self, w: gguf.GGUFWriter, file_type: int) -> None:
        w.add_context_length(self.find(("n_positions", "max_position_embeddings")))
        w.add_rope_scaling_orig_ctx_len(self._rope_key("original_max_position_embeddings"))
        w.add_embedding_length(self.find(("hidden_size", "n_embd")))
        w.add_feed_forward_length(self.find(("intermediate_size",)))
        w.add_block_count(self.block_count)
        w.add_head_count(self.find(("num_attention_heads", "n_head")))
        w.add_head_count_kv(self.find(("num_key_value_heads", "n_head_kv")))
        w.add_layer_norm_rms_eps(self.find(("rms_norm_eps",)))
        w.add_rope_dimension_count(self._rope_dims())
        theta = self.rope.get("full_attention", self.rope).get("rope_theta")
        if theta is None:
            raise errors.InvalidConfigError("config.json: Phi-3 needs rope_theta")
        w.add_rope_freq_base(theta)
        w.add_file_type(file_type)
        w.add_sliding_window(self.hparams.get("sliding_window") or 0)

    # -- LongRoPE -------------------------------------------------------------

    def _long_rope(self) -> tuple[float, list, list] | None:
        """(attention factor, long factors, short factors) for a long-context config, else None."""
        long_factors = self.rope.get("long_factor")
        short_factors = self.rope.get("short_factor")
        if not long_factors:
            return None
        max_pos = self.find(("n_positions", "max_position_embeddings"))
        orig = self._rope_key("original_max_position_embeddings")
        scale = max_pos / orig
        kind = str(self.rope.get("rope_type") or "").lower()
        if kind in ("su", "longrope"):
            attn_factor = math.sqrt(1 + math.log(scale) / math.log(orig)) if scale > 1.0 else 1.0
        elif kind == "yarn":
            attn_factor = 0.1 * math.log(scale) + 1.0 if scale > 1.0 else 1.0
        elif not kind:
            raise errors.InvalidConfigError("config.json: rope_scaling has long_factor but no type")
        else:
            raise errors.UnsupportedArchitectureError(f"Phi-3 rope scaling type {kind!r} is not supported")
        half = self._rope_dims() / 2
        if short_factors is None or len(long_factors) != len(short_factors) or len(long_factors) != half:
            raise errors.InvalidConfigError(
                f"config.json: rope long_factor and short_factor must both have {half:g} values "
                f"(they have {len(long_factors)} and {len(short_factors or [])})")
        return attn_factor, list(long_factors), list(short_factors)

    def extra_tensors(self) -> Iterable[tuple[str, Node]]:
        long_rope = self._long_rope()
        if long_rope is None:
            return ()
        _, long_factors, short_factors = long_rope
        return (
            (gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FACTORS_LONG] + ".weight",
             Constant(np.asarray(long_factors, dtype=np.float32))),
            (gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FACTORS_SHORT] + ".weight",
             Constant(np.asarray(short_factors, dtype=np.float32))),
        )

    def add_tensor_time_hparams(self, w: gguf.GGUFWriter) -> None:
        long_rope = self._long_rope()
        if long_rope is not None:
            w.add_rope_scaling_attn_factors(long_rope[0])

    # -- vocab ----------------------------------------------------------------

    def add_vocab(self, w: gguf.GGUFWriter, files: Mapping[str, bytes], bpe_pre: str | None) -> None:
        tok_config = _json(files, "tokenizer_config.json")
        if isinstance(tok_config, dict) and tok_config.get("tokenizer_class") == "GPT2Tokenizer":
            super().add_vocab(w, files, bpe_pre)  # Phi-4
            return
        _add_phi3_spm(w, files, self.hparams)


@register
class PhiMoE(Phi3):
    hf_architectures = ("PhiMoEForCausalLM",)
    model_types = ("phimoe",)
    gguf_arch = gguf.MODEL_ARCH.PHIMOE

    def __init__(self, hparams, hf_arch):
        super().__init__(hparams, hf_arch)
        self._stacks = ExpertStacks(self.find(("num_local_experts", "num_experts")), ("w1", "w2", "w3"),
                                    "model.layers.{bid}.block_sparse_moe.experts.{xid}.{proj}.weight",
                                    "model.layers.{bid}.block_sparse_moe.experts.{proj}.weight")

    def add_hparams(self, w: gguf.GGUFWriter, file_type: int) -> None:
        super().add_hparams(w, file_type)
        w.add_expert_used_count(self.find(("num_experts_per_tok", "num_experts_per_token")))
        w.add_expert_count(self.find(("num_local_experts", "num_experts")))

    def convert(self, name: str, node: Node, bid: int | None) -> Iterator[tuple[str, Node]]:
        if "block_sparse_moe.experts" in name:
            yield from self._stacks.add(name, node, bid, self.map_name)
            return
        yield self.map_name(name), node

    def finish(self) -> Iterator[tuple[str, Node]]:
        self._stacks.check_complete()
        return iter(())


def _json(files: Mapping[str, bytes], name: str, expect: type | None = None) -> Any:
    return jsonfile.load(files[name], name, expect=expect) if name in files else None


def _add_phi3_spm(w: gguf.GGUFWriter, files: Mapping[str, bytes], hparams: Mapping[str, Any]) -> None:
    from sentencepiece import SentencePieceProcessor

    from ..vocab import add_special_vocab

    model = files.get("tokenizer.model")
    if model is None:
        raise errors.UnsupportedTokenizerError("no usable tokenizer in the repo: Phi-3 expects tokenizer.model")
    try:
        sp = SentencePieceProcessor(model_proto=bytes(model))
    except Exception as e:  # sentencepiece raises RuntimeError/OSError on a bad proto
        raise errors.UnsupportedTokenizerError(f"tokenizer.model: not a valid SentencePiece model ({e})") from None

    n_sp = sp.vocab_size()
    vocab_size = hparams.get("vocab_size", n_sp)
    if not isinstance(vocab_size, int) or vocab_size < n_sp:
        raise errors.InvalidConfigError(
            f"config.json: vocab_size {vocab_size!r} is smaller than tokenizer.model ({n_sp} pieces)")
    tokens = [f"[PAD{i}]".encode() for i in range(vocab_size)]
    scores = [-10000.0] * vocab_size
    types = [int(_T.UNUSED)] * vocab_size
    for i in range(n_sp):
        kind = (_T.UNKNOWN if sp.IsUnknown(i) else _T.CONTROL if sp.IsControl(i) else _T.UNUSED if sp.IsUnused(i)
                else _T.BYTE if sp.IsByte(i) else _T.NORMAL)
        tokens[i], scores[i], types[i] = sp.IdToPiece(i).encode(), sp.GetScore(i), int(kind)

    def put(tid: Any, text: Any, where: str, special: bool = False) -> None:
        if not isinstance(tid, int) or not isinstance(text, str) or not 0 <= tid < vocab_size:
            raise errors.InvalidConfigError(f"{where}: token {text!r} has an id outside 0..{vocab_size - 1}: {tid!r}")
        tokens[tid], scores[tid] = text.encode(), -1000.0
        types[tid] = int(_T.CONTROL if special else _T.USER_DEFINED)

    added = _json(files, "added_tokens.json", dict)
    if added is not None:
        for text, tid in added.items():
            if isinstance(tid, int) and tid >= vocab_size:
                continue  # the reference skips ids past the vocab here (only here)
            put(tid, text, "added_tokens.json")
    tok_config = _json(files, "tokenizer_config.json")
    decoder = tok_config.get("added_tokens_decoder", {}) if isinstance(tok_config, dict) else {}
    for key, data in (decoder.items() if isinstance(decoder, dict) else ()):
        data = data if isinstance(data, dict) else {}
        tid = int(key) if str(key).isdecimal() else key
        put(tid, data.get("content"), "tokenizer_config.json added_tokens_decoder", bool(data.get("special")))
    tok_json = _json(files, "tokenizer.json")
    for data in (tok_json.get("added_tokens", []) if isinstance(tok_json, dict) else []):
        data = data if isinstance(data, dict) else {}
        put(data.get("id"), data.get("content"), "tokenizer.json added_tokens", bool(data.get("special")))

    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    add_special_vocab(w, files, dict(hparams), n_vocab=len(tokens))
