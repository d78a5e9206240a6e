"""Gemma, Gemma 2 and Gemma 3 (text, and the text part of Gemma3ForConditionalGeneration), and what
Gemma 3n and Gemma 4 (``gemma3n.py``, ``gemma4.py``, both built on Gemma 3) share with them.

What the reference does for them:

- Every ``*norm.weight`` gets +1 (Gemma's RMSNorm scales by ``1 + w``), in the dtype the tensor
  has after loading: F16 stays F16 (so the sum is rounded to F16 before the F32 output), every
  other dtype (BF16 included) is F32 first.
- No q/k permute (NEOX rope); the output is always tied to the token embedding: Gemma and Gemma 2
  drop a stray ``lm_head.weight``, Gemma 3 maps one if present.
- Gemma and Gemma 2 write their own hyperparameter keys (no rope keys at all); Gemma 2 adds the
  attention/final logit softcapping and the sliding window. Gemma 3 writes the common keys, then
  writes some again with its own defaults (a key already written keeps its place), then the final
  logit softcapping (when set) and the sliding window (unless ``sliding_window_pattern`` is 1).
- Gemma 3 cuts the token embedding to the real vocab size: the SentencePiece vocab's length
  (config ``vocab_size``, else the model's size), or, without ``tokenizer.model``, the number of
  entries of ``tokenizer.json``'s vocab plus its added tokens.
- Vocab: SentencePiece (``tokenizer.model``) and ``add_space_prefix`` false; Gemma 3 without a
  ``tokenizer.model`` uses the BPE ``tokenizer.json`` instead. Gemma (1) also writes CodeGemma's
  fixed special ids (only ``eot`` = 107 has a GGUF key) unless the tokenizer files name them.
- Gemma3ForConditionalGeneration: ``text_config`` is merged into the root, the vision tower and the
  multimodal projector are left out and ``language_model.`` is dropped from names (``TextFamily``).
- Gemma 3n and 4 keep Gemma 3's keys and its embedding cut but not the +1 on norms; their layers
  differ from each other (head sizes, MLP widths), so shapes are checked layer by layer
  (``check_layer_shapes``).
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any, Callable, ClassVar, Iterable, Iterator, Mapping, Sequence

import gguf

from .. import errors, jsonfile
from ..graph import AddScalar, Node, SliceRows
from ..safetensors import SourceTensor
from . import register
from .base import SIZES, ShapeRule, TextFamily, check_shapes

K = gguf.Keys


def _norm_shift(name: str, node: Node) -> Node:
    return AddScalar(node, 1.0) if name.endswith("norm.weight") else node


@register
class Gemma(TextFamily):
    hf_architectures = ("GemmaForCausalLM",)
    model_types = ("gemma",)
    gguf_arch = gguf.MODEL_ARCH.GEMMA
    vocab_strategies = ("spm",)
    #: CodeGemma's fill-in-the-middle and end-of-turn ids, written for every Gemma (1)
    fixed_special_ids: Mapping[str, int] = {"prefix": 67, "suffix": 69, "middle": 68, "fsep": 70, "eot": 107}

    def _required(self, key: str) -> Any:
        if key not in self.hparams:
            raise errors.InvalidConfigError(f"config.json: {key} is not set")
        return self.hparams[key]

    def source_name(self, name: str) -> str | None:
        if name == "lm_head.weight":  # tied; some quantized uploads carry a copy the reference skips
            return None
        return super().source_name(name)

    def add_hparams(self, w: gguf.GGUFWriter, file_type: int) -> None:
        hp = self.hparams
        w.add_context_length(self._required("max_position_embeddings"))
        w.add_embedding_length(self._required("hidden_size"))
        w.add_block_count(self.block_count)
        w.add_feed_forward_length(self._required("intermediate_size"))
        w.add_head_count(self._required("num_attention_heads"))
        w.add_head_count_kv(hp["num_key_value_heads"] if "num_key_value_heads" in hp else hp["num_attention_heads"])
        w.add_layer_norm_rms_eps(self._required("rms_norm_eps"))
        w.add_key_length(self._required("head_dim"))
        w.add_value_length(self._required("head_dim"))
        w.add_file_type(file_type)

    def convert(self, name: str, node: Node, bid: int | None) -> Iterator[tuple[str, Node]]:
        yield self.map_name(name), _norm_shift(name, node)

    def add_vocab(self, w: gguf.GGUFWriter, files: Mapping[str, bytes], bpe_pre: str | None) -> None:
        from ..vocab import add_fixed_special_ids

        super().add_vocab(w, files, bpe_pre)
        if self.fixed_special_ids:
            add_fixed_special_ids(w, files, self.hparams, self.fixed_special_ids)
        w.add_add_space_prefix(False)


@register
class Gemma2(Gemma):
    hf_architectures = ("Gemma2ForCausalLM",)
    model_types = ("gemma2",)
    gguf_arch = gguf.MODEL_ARCH.GEMMA2
    fixed_special_ids: Mapping[str, int] = {}

    def add_hparams(self, w: gguf.GGUFWriter, file_type: int) -> None:
        super().add_hparams(w, file_type)
        w.add_attn_logit_softcapping(self._required("attn_logit_softcapping"))
        w.add_final_logit_softcapping(self._required("final_logit_softcapping"))
        w.add_sliding_window(self._required("sliding_window"))


@register
class Gemma3(TextFamily):
    hf_architectures: ClassVar[tuple[str, ...]] = ("Gemma3ForCausalLM", "Gemma3ForConditionalGeneration")
    model_types: ClassVar[tuple[str, ...]] = ("gemma3", "gemma3_text")
    gguf_arch = gguf.MODEL_ARCH.GEMMA3

    def __init__(self, hparams, hf_arch):
        super().__init__(hparams, hf_arch)
        self._n_vocab: int | None = None
        self._files: Mapping[str, bytes] = {}

    def use_files(self, files: Mapping[str, bytes]) -> None:
        self._files = files

    # -- hyperparameters ------------------------------------------------------

    def add_hparams(self, w: gguf.GGUFWriter, file_type: int) -> None:
        super().add_hparams(w, file_type)
        hp = self.hparams
        again = lambda add, key, value: _add_again(w, add, key, value)  # noqa: E731
        again(w.add_context_length, K.LLM.CONTEXT_LENGTH, hp.get("max_position_embeddings", 131072))
        again(w.add_head_count, K.Attention.HEAD_COUNT, hp.get("num_attention_heads", 8))
        again(w.add_layer_norm_rms_eps, K.Attention.LAYERNORM_RMS_EPS, hp.get("rms_norm_eps", 1e-6))
        again(w.add_key_length, K.Attention.KEY_LENGTH, hp.get("head_dim", 256))
        again(w.add_value_length, K.Attention.VALUE_LENGTH, hp.get("head_dim", 256))
        theta = self.rope.get("full_attention", self.rope).get("rope_theta", 1_000_000.0)
        again(w.add_rope_freq_base, K.Rope.FREQ_BASE, theta)
        if hp.get("attn_logit_softcapping") is not None:
            # the reference asserts it away: Gemma 3 has no attention softcapping
            raise errors.UnsupportedArchitectureError(
                "config.json: attn_logit_softcapping is set, which Gemma 3 does not support")
        if final_cap := hp.get("final_logit_softcapping"):
            again(w.add_final_logit_softcapping, K.LLM.FINAL_LOGIT_SOFTCAPPING, final_cap)
        if hp.get("sliding_window_pattern") != 1:
            if "sliding_window" not in hp:
                raise errors.InvalidConfigError("config.json: sliding_window is not set")
            again(w.add_sliding_window, K.Attention.SLIDING_WINDOW, hp["sliding_window"])
        again(w.add_head_count_kv, K.Attention.HEAD_COUNT_KV, hp.get("num_key_value_heads", 4))

    # -- tensors --------------------------------------------------------------

    def convert(self, name: str, node: Node, bid: int | None) -> Iterator[tuple[str, Node]]:
        if "embed_tokens.weight" in name:
            n = self.real_vocab_size()
            if n < node.shape[0]:  # as a Python slice, a longer bound keeps every row
                node = SliceRows(node, 0, n)
        yield self.map_name(name), self.norm_shift(name, node)

    def norm_shift(self, name: str, node: Node) -> Node:
        """Gemma 3's norms scale by ``1 + w``; Gemma 3n's and 4's by ``w`` (they override this)."""
        return _norm_shift(name, node)

    def real_vocab_size(self) -> int:
        """The number of tokens the vocab holds, which the token embedding is cut to."""
        if self._n_vocab is None:
            self._n_vocab = _real_vocab_size(self._files, self.hparams)
        return self._n_vocab

    # -- vocab ----------------------------------------------------------------

    def add_vocab(self, w: gguf.GGUFWriter, files: Mapping[str, bytes], bpe_pre: str | None) -> None:
        from ..vocab import add_vocab

        hparams = self.vocab_hparams()
        if "tokenizer.model" in files:
            add_vocab(w, files, hparams, strategies=("spm",))
            w.add_add_space_prefix(False)
        else:
            add_vocab(w, files, hparams, strategies=("bpe",), bpe_pre=bpe_pre)

    def vocab_hparams(self) -> dict[str, Any]:
        """The hparams the vocab is built with (``vocab_size`` pads it)."""
        return dict(self.hparams)


def _add_again(w: gguf.GGUFWriter, add: Callable[[Any], None], key: str, value: Any) -> None:
    """A second ``add_*`` of a key, as the reference's writer takes it: a key already written keeps
    its place and takes the new value and type (e.g. Gemma 4's per-layer head_count_kv array over
    the number); a new key is appended. Nothing to do when the value is the same."""
    old = w.kv_data[0].get(key.format(arch=w.arch))
    if old is not None and old.value == value:
        return
    add(value)


# --- what Gemma 3n and Gemma 4 share --------------------------------------------------------------


def required(hparams: Mapping[str, Any], key: str) -> Any:
    """``hparams[key]``, or InvalidConfigError (where the reference stops with a KeyError)."""
    if key not in hparams:
        raise errors.InvalidConfigError(f"config.json: {key} is not set")
    return hparams[key]


_LAYER_NAME = re.compile(r"model\.layers\.(\d+)\.")


def check_layer_shapes(hparams: Mapping[str, Any], sources: Iterable[tuple[str, SourceTensor]],
                       model_rules: Sequence[ShapeRule], layer_rules: Sequence[ShapeRule],
                       layer_sizes: Callable[[int], Mapping[str, Any]],
                       sizes: Mapping[str, tuple[str, ...]] = SIZES) -> None:
    """Refuse a source tensor whose shape disagrees with config.json when layers differ in shape.

    ``model_rules`` are checked against ``hparams``; ``layer_rules`` against ``hparams`` updated with
    ``layer_sizes(i)`` for the tensors of layer ``i`` (e.g. ``{"global_head_dim": 512}`` on a
    full-attention layer, with ``sizes`` naming that key first for the head size), so the error
    names the config key the size comes from.
    """
    by_layer: dict[int, list[tuple[str, SourceTensor]]] = defaultdict(list)
    rest: list[tuple[str, SourceTensor]] = []
    for name, src in sources:
        m = _LAYER_NAME.match(name)
        (by_layer[int(m.group(1))] if m else rest).append((name, src))
    check_shapes(hparams, model_rules, sizes, rest)
    n_layer = hparams.get("num_hidden_layers")
    for i, items in sorted(by_layer.items()):
        if isinstance(n_layer, int) and i >= n_layer:
            raise errors.ConfigMismatchError(
                f"{items[0][1].file}: a tensor of layer {i} but config.json has {n_layer} layers (num_hidden_layers)")
        check_shapes({**hparams, **layer_sizes(i)}, layer_rules, sizes, items)


def kv_shared_layers(hparams: Mapping[str, Any], n_layer: int) -> int:
    """``num_kv_shared_layers``: how many of the last layers take their KV from earlier layers."""
    n = required(hparams, "num_kv_shared_layers")
    if type(n) is not int or not 0 <= n <= n_layer:
        raise errors.InvalidConfigError(f"config.json: num_kv_shared_layers must be an integer from 0 to {n_layer}")
    return n


def sliding_window_pattern(hparams: Mapping[str, Any], n_layer: int) -> list[bool]:
    """``layer_types`` as the per-layer SWA flags Gemma 3n and 4 write (one per layer)."""
    types = hparams.get("layer_types")
    if not isinstance(types, list) or len(types) != n_layer or not all(isinstance(t, str) for t in types):
        raise errors.InvalidConfigError(
            f"config.json: layer_types must name the attention of each of the {n_layer} layers")
    return [t == "sliding_attention" for t in types]


def _real_vocab_size(files: Mapping[str, bytes], hparams: Mapping[str, Any]) -> int:
    if "tokenizer.model" in files:
        # the SentencePiece vocab's length: vocab_size (padded with [PAD] tokens), else the model's size
        key = next((k for k in ("vocab_size_per_layer_input", "vocab_size") if k in hparams), None)
        size = hparams[key] if key is not None else None
        if size:
            if not isinstance(size, int) or size < 0:
                raise errors.InvalidConfigError(f"config.json: vocab_size must be a positive integer, not {size!r}")
            return size
        from sentencepiece import SentencePieceProcessor

        try:
            return SentencePieceProcessor(model_proto=bytes(files["tokenizer.model"])).vocab_size()
        except Exception as e:  # sentencepiece raises RuntimeError/OSError on a bad proto
            raise errors.UnsupportedTokenizerError(f"tokenizer.model: not a valid SentencePiece model ({e})") from None
    blob = files.get("tokenizer.json")
    if blob is None:
        raise errors.UnsupportedTokenizerError(
            "no usable tokenizer in the repo: expected tokenizer.model or tokenizer.json")
    tj = jsonfile.load(blob, "tokenizer.json")
    try:
        return len(tj["model"]["vocab"]) + len(tj["added_tokens"])
    except (KeyError, TypeError):
        raise errors.UnsupportedTokenizerError(
            "tokenizer.json: expected an object with model.vocab and added_tokens") from None
