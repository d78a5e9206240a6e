"""The encoder (embedding) families' own rules, with expected values written out by hand."""

from __future__ import annotations

import gguf

from hfstream.arch.bert import Bert, _phantom_space

CONTROL, NORMAL = int(gguf.TokenType.CONTROL), int(gguf.TokenType.NORMAL)


def test_phantom_space_spelling():
    assert _phantom_space("hello", NORMAL) == "\u2581hello"
    assert _phantom_space("##ing", NORMAL) == "ing"
    assert _phantom_space("[CLS]", CONTROL) == "[CLS]"
    assert _phantom_space("##", NORMAL) == ""  # a bare continuation marker loses it too, as in the reference


def _bert(**extra) -> Bert:
    config = {"architectures": ["BertModel"], "model_type": "bert", "hidden_size": 64, "num_attention_heads": 4,
              "num_hidden_layers": 2, "intermediate_size": 192, "vocab_size": 100, **extra}
    return Bert(config, "BertModel")


def test_bert_classifier_labels():
    assert _bert(id2label={0: "LABEL_0", 1: "LABEL_1"}).labels is None  # AutoConfig's default pair
    assert _bert(id2label={0: "LABEL_0"}).labels == {0: "LABEL_0"}  # bge's single label is kept
    assert _bert(id2label={1: "positive", 0: "negative"}).labels == {1: "positive", 0: "negative"}


def test_bert_leaves_out_the_pooler_and_heads():
    bert = _bert()
    assert bert.source_name("pooler.dense.weight") is None
    assert bert.source_name("bert.pooler.dense.bias") is None
    assert bert.source_name("cls.predictions.decoder.weight") is None
    assert bert.source_name("embeddings.position_ids") is None
    assert bert.source_name("bert.encoder.layer.0.output.LayerNorm.gamma") == "encoder.layer.0.output.LayerNorm.weight"
    assert bert.source_name("encoder.layer.1.output.LayerNorm.beta") == "encoder.layer.1.output.LayerNorm.bias"
