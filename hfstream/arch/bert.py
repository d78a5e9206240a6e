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

from typing import Any, Mapping

import gguf

from .. import vocab
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
    hf_architectures = ("BertModel",)
    model_types = ("bert",)
    gguf_arch = gguf.MODEL_ARCH.BERT
    shape_rules = _SHAPES
    shape_sizes = _SIZES

    def __init__(self, hparams: Mapping[str, Any], hf_arch: str):
        super().__init__(hparams, hf_arch)
        labels = self.hparams.get("id2label") or None
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


def _phantom_space(token: str, kind: int) -> str:
    """A WordPiece token in llama.cpp's spelling: ``##x`` -> ``x``, ``x`` -> ``\u2581x``, control tokens as they are."""
    if kind == gguf.TokenType.CONTROL:
        return token
    return token[2:] if token.startswith("##") else _PHANTOM_SPACE + token
