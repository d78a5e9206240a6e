"""BERT-style encoders for embeddings: no LM head, bidirectional attention, a pooling type.

llama.cpp runs these with ``embedding=True``: it tokenizes, runs the encoder without a causal mask
and pools (CLS, mean, last token) as the GGUF says, which the reference reads from the
sentence-transformers files (``modules.json`` and ``1_Pooling/config.json``). Everything maps one to
one through gguf's tensor-name map; the pooler and the masked-LM head are left out, as the
reference leaves them. The vocab is WordPiece written in llama.cpp's "phantom space" spelling
(model ``bert``): a word-initial piece gains a leading U+2581, a ``##`` continuation loses its
``##``, control tokens stay as they are.
"""

from __future__ import annotations

from typing import Any, ClassVar, Iterator, Mapping

import gguf

from .. import errors, vocab
from ..graph import Node, SliceRows
from . import register
from .base import ShapeRule, TextFamily

_LAYER = r"encoder\.layer\.\d+\."
_SHAPES: tuple[ShapeRule, ...] = (
    (r"embeddings\.word_embeddings\.weight", ("vocab", "hidden")),
    (r"embeddings\.position_embeddings\.weight", ("positions", "hidden")),
    (r"embeddings\.token_type_embeddings\.weight", ("token_types", "hidden")),
    (_LAYER + r"attention\.self\.(query|key|value)\.weight", ("hidden", "hidden")),
    (_LAYER + r"attention\.output\.dense\.weight", ("hidden", "hidden")),
    (_LAYER + r"intermediate\.dense\.weight", ("ffn", "hidden")),
    (_LAYER + r"output\.dense\.weight", ("hidden", "ffn")),
)
_SIZES: Mapping[str, tuple[str, ...]] = {
    "vocab": ("vocab_size",),
    "hidden": ("hidden_size",),
    "ffn": ("intermediate_size",),
    "positions": ("max_position_embeddings",),
    "token_types": ("type_vocab_size",),
}
#: source tensors the reference drops: the pooler (llama.cpp pools by itself) and old position ids
_DROPPED = ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias")
_PHANTOM_SPACE = "\u2581"


@register
class Bert(TextFamily):
    hf_architectures: ClassVar[tuple[str, ...]] = ("BertModel",)
    model_types: ClassVar[tuple[str, ...]] = ("bert",)
    gguf_arch = gguf.MODEL_ARCH.BERT
    #: an encoder: no output norm; the embeddings' LayerNorm instead
    required_tensors: ClassVar[tuple[gguf.MODEL_TENSOR, ...]] = (
        gguf.MODEL_TENSOR.TOKEN_EMBD, gguf.MODEL_TENSOR.TOKEN_EMBD_NORM, gguf.MODEL_TENSOR.ATTN_OUT)
    shape_rules = _SHAPES
    shape_sizes = _SIZES

    def __init__(self, hparams: Mapping[str, Any], hf_arch: str):
        super().__init__(hparams, hf_arch)
        labels = self.hparams.get("id2label") or None
        if labels is not None and (not isinstance(labels, dict) or not all(
                str(k).isdigit() and isinstance(v, str) for k, v in labels.items())):
            raise errors.InvalidConfigError("config.json: id2label must map label numbers to names")
        # AutoConfig's default two labels are no classifier; a single LABEL_0 (bge's config) is kept,
        # as the reference keeps it
        if labels and len(labels) == 2 and labels.get(0, labels.get("0")) == "LABEL_0":
            labels = None
        self.labels: Mapping[Any, str] | None = labels

    def use_files(self, files: Mapping[str, bytes]) -> None:
        self.read_pooling(files)

    def add_hparams(self, w: gguf.GGUFWriter, file_type: int) -> None:
        super().add_hparams(w, file_type)
        w.add_causal_attention(False)
        self.add_pooling(w)
        if self.labels:
            w.add_classifier_output_labels([v for _, v in sorted(self.labels.items(), key=lambda kv: int(kv[0]))])

    def source_name(self, name: str) -> str | None:
        name = name.removeprefix("bert.")
        if name.endswith(".gamma"):  # LayerNorm parameters of old TF-converted checkpoints
            name = name[:-len(".gamma")] + ".weight"
        elif name.endswith(".beta"):
            name = name[:-len(".beta")] + ".bias"
        if name in _DROPPED or name.startswith(("cls.predictions", "cls.seq_relationship")):
            return None
        return super().source_name(name)

    def add_vocab(self, w: gguf.GGUFWriter, files: Mapping[str, bytes], bpe_pre: str | None) -> None:
        tokens, types, pre = vocab.base_vocab(files, self.hparams, bpe_pre=bpe_pre)
        # llama.cpp checks the token-type embedding against this (it feeds type 0 everywhere)
        w.add_token_type_count(self.hparams.get("type_vocab_size", 1))
        w.add_tokenizer_model("bert")
        w.add_tokenizer_pre(pre)
        w.add_token_list([_phantom_space(t, k) for t, k in zip(tokens, types)])
        w.add_token_types(types)
        vocab.add_special_vocab(w, files, self.hparams, n_vocab=len(tokens))


@register
class XLMRoberta(Bert):
    """XLM-RoBERTa encoders (BAAI/bge-m3, multilingual-e5): BERT's graph with RoBERTa's position ids,
    which start after the padding id (the first ``pad_token_id + 1`` rows of the position table are
    never used: the reference cuts them and shortens the context by as much), and a SentencePiece
    unigram vocabulary (``sentencepiece.bpe.model``, written as llama.cpp's ``t5``/UGM).

    The cross-encoder rerankers (BAAI/bge-reranker-v2-m3: ``XLMRobertaForSequenceClassification``)
    keep the encoder under ``roberta.`` and add a classification head over the first token
    (``classifier.dense`` -> ``cls``, ``classifier.out_proj`` -> ``cls.output``) and its labels; they
    have no sentence-transformers pooling, llama.cpp runs them with ``--pooling rank``."""

    hf_architectures = ("XLMRobertaModel", "XLMRobertaForSequenceClassification")
    model_types = ("xlm-roberta",)
    # the position table is checked against the offset in ``convert``
    shape_sizes = {k: v for k, v in _SIZES.items() if k != "positions"}

    def __init__(self, hparams: Mapping[str, Any], hf_arch: str):
        super().__init__(hparams, hf_arch)
        if self.hparams.get("lora_adaptations"):
            # jina-embeddings-v3: the reference writes a jina-bert-v3 model and a LoRA file per task
            raise errors.UnsupportedArchitectureError(
                "XLMRobertaModel with lora_adaptations (jina-embeddings-v3) is not supported")
        pad = self.hparams.get("pad_token_id")
        if pad is not None and (type(pad) is not int or pad < 0):
            raise errors.InvalidConfigError(f"config.json: pad_token_id must be a token id, not {pad!r}")
        self.position_offset = None if pad is None else 1 + pad
        if self.position_offset is not None and "max_position_embeddings" in self.hparams:
            self.hparams["max_position_embeddings"] -= self.position_offset

    def source_name(self, name: str) -> str | None:
        return super().source_name(name.removeprefix("roberta."))

    def convert(self, name: str, node: Node, bid: int | None) -> Iterator[tuple[str, Node]]:
        if name == "embeddings.position_embeddings.weight" and self.position_offset is not None:
            rows = node.shape[0]
            if rows <= self.position_offset:
                raise errors.ConfigMismatchError(
                    f"{name} has {rows} rows, not more than the {self.position_offset} that pad_token_id skips")
            node = SliceRows(node, self.position_offset, rows)
        yield from super().convert(name, node, bid)

    def add_vocab(self, w: gguf.GGUFWriter, files: Mapping[str, bytes], bpe_pre: str | None) -> None:
        vocab.add_xlm_roberta_vocab(w, files, self.hparams)


_MODERN_LAYER = r"layers\.\d+\."
_MODERN_SHAPES: tuple[ShapeRule, ...] = (
    (r"embeddings\.tok_embeddings\.weight", ("vocab", "hidden")),
    (_MODERN_LAYER + r"attn\.Wo\.weight", ("hidden", "hidden")),
    (_MODERN_LAYER + r"mlp\.Wo\.weight", ("hidden", "ffn")),
)


@register
class ModernBert(Bert):
    """ModernBERT encoders (nomic-ai/modernbert-embed-base, gte-modernbert, granite-embedding-r2):
    fused qkv, a GLU input projection kept whole (llama.cpp splits it), rotary positions with a
    global and a local theta, local attention (``local_attention`` wide) except every
    ``global_attn_every_n_layers``-th layer; a byte-level BPE vocab whose CLS/SEP the reference
    marks as added (its later special vocab may say otherwise, in place)."""

    hf_architectures = ("ModernBertModel",)
    model_types = ("modernbert",)
    gguf_arch = gguf.MODEL_ARCH.MODERN_BERT
    required_tensors = (gguf.MODEL_TENSOR.TOKEN_EMBD, gguf.MODEL_TENSOR.TOKEN_EMBD_NORM, gguf.MODEL_TENSOR.OUTPUT_NORM,
                        gguf.MODEL_TENSOR.ATTN_OUT)

    def layer_kind(self, bid: int) -> str:
        return "first" if bid == 0 else ""  # the first layer's attention norm is an identity (no weight)
    shape_rules = _MODERN_SHAPES

    def source_name(self, name: str) -> str | None:
        return super().source_name(name.removeprefix("model."))

    def add_hparams(self, w: gguf.GGUFWriter, file_type: int) -> None:
        super().add_hparams(w, file_type)
        window = self.hparams.get("local_attention")
        if window is None:
            raise errors.InvalidConfigError("config.json: local_attention is not set")
        w.add_sliding_window(window)
        if (pattern := self.hparams.get("global_attn_every_n_layers")) is not None:
            w.add_sliding_window_pattern(pattern)
        w.add_rope_scaling_type(gguf.RopeScalingType.NONE)
        w.add_vocab_size(self.find(("vocab_size",)))
        # GeGLU for ModernBERT, SwiGLU for some derivatives: llama.cpp picks the graph's activation by it
        if act := self.hparams.get("hidden_activation"):
            w.add_string(f"{w.arch}.hidden_activation", act)  # gguf 0.19 has no add_hidden_act

    def add_vocab(self, w: gguf.GGUFWriter, files: Mapping[str, bytes], bpe_pre: str | None) -> None:
        w.add_add_bos_token(True)
        w.add_add_eos_token(True)
        w.add_add_sep_token(True)
        vocab.add_vocab(w, files, self.hparams, strategies=("bpe",), bpe_pre=bpe_pre)


def _phantom_space(token: str, kind: int) -> str:
    """A WordPiece token in llama.cpp's spelling: ``##x`` -> ``x``, ``x`` -> ``\u2581x``, control tokens as they are."""
    if kind == gguf.TokenType.CONTROL:
        return token
    return token[2:] if token.startswith("##") else _PHANTOM_SPACE + token
