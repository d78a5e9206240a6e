"""The encoder (embedding) families' own rules, with expected values written out by hand."""

from __future__ import annotations

import json

import gguf
import pytest

from hfstream import errors, vocab
from hfstream.arch.bert import Bert, ModernBert, XLMRoberta, _phantom_space
from hfstream.arch.gemma_embedding import EmbeddingGemma

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


def test_sentencepiece_model_spec_read_from_the_wire():
    # ModelProto: pieces (1), trainer_spec (2) {model_type (3): BPE = 2},
    # normalizer_spec (3) {precompiled_charsmap (2): b"abc", add_dummy_prefix (3): 0, remove_extra_whitespaces (4): 1}
    trainer = b"\x18\x02"
    normalizer = b"\x12\x03abc" + b"\x18\x00" + b"\x20\x01"
    model = b"\x0a\x00" + b"\x12" + bytes([len(trainer)]) + trainer + b"\x1a" + bytes([len(normalizer)]) + normalizer
    assert vocab._spm_model_spec(model, "m") == (2, False, True, b"abc")
    # absent fields take the proto's defaults: unigram, dummy prefix, whitespace removal, no charsmap
    assert vocab._spm_model_spec(b"\x0a\x00", "m") == (1, True, True, b"")
    with pytest.raises(errors.UnsupportedTokenizerError, match="malformed"):
        vocab._spm_model_spec(b"\x1a\x09abc", "m")  # a field longer than the message


def test_xlm_roberta_position_offset():
    config = {"architectures": ["XLMRobertaModel"], "model_type": "xlm-roberta", "hidden_size": 64,
              "num_attention_heads": 4, "num_hidden_layers": 2, "intermediate_size": 192, "vocab_size": 100,
              "max_position_embeddings": 514, "pad_token_id": 1}
    family = XLMRoberta(config, "XLMRobertaModel")
    assert family.position_offset == 2 and family.hparams["max_position_embeddings"] == 512
    assert family.source_name("roberta.embeddings.word_embeddings.weight") == "embeddings.word_embeddings.weight"
    with pytest.raises(errors.UnsupportedArchitectureError, match="jina-embeddings-v3"):
        XLMRoberta({**config, "lora_adaptations": ["retrieval.query"]}, "XLMRobertaModel")


def _embeddinggemma(**extra) -> EmbeddingGemma:
    config = {"architectures": ["Gemma3TextModel"], "model_type": "gemma3_text", "hidden_size": 64,
              "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 32, "num_hidden_layers": 2,
              "intermediate_size": 192, "vocab_size": 100, "sliding_window": 32, **extra}
    return EmbeddingGemma(config, "Gemma3TextModel")


def test_embeddinggemma_reads_the_bare_names_as_the_decoder_ones():
    family = _embeddinggemma()
    assert family.source_name("layers.0.self_attn.q_proj.weight") == "model.layers.0.self_attn.q_proj.weight"
    assert family.source_name("embed_tokens.weight") == "model.embed_tokens.weight"
    assert family.source_name("norm.weight") == "model.norm.weight"
    assert family.map_name("model.layers.1.mlp.down_proj.weight") == "blk.1.ffn_down.weight"


def test_embeddinggemma_takes_the_sliding_window_of_config_json():
    family = _embeddinggemma()  # hparams as transformers gives them: 32
    family.use_files({"config.json": json.dumps({"sliding_window": 33}).encode()})
    assert family._sliding_window == 33
    with pytest.raises(errors.InvalidConfigError, match="sliding_window"):
        _embeddinggemma().use_files({"config.json": b"{}"})


def test_modernbert_keys_after_berts(tmp_path):
    config = {"architectures": ["ModernBertModel"], "model_type": "modernbert", "hidden_size": 64,
              "num_attention_heads": 4, "num_hidden_layers": 3, "intermediate_size": 96, "vocab_size": 100,
              "local_attention": 128, "global_attn_every_n_layers": 3, "hidden_activation": "gelu"}
    family = ModernBert(config, "ModernBertModel")
    assert family.source_name("model.layers.0.attn.Wqkv.weight") == "layers.0.attn.Wqkv.weight"
    w = gguf.GGUFWriter(tmp_path / "x.gguf", "modern-bert")
    family.add_hparams(w, 1)
    keys = list(w.kv_data[0])
    tail = keys[keys.index("general.file_type"):]
    assert tail == ["general.file_type", "modern-bert.attention.causal", "modern-bert.attention.sliding_window",
                    "modern-bert.attention.sliding_window_pattern", "modern-bert.rope.scaling.type",
                    "modern-bert.vocab_size", "modern-bert.hidden_activation"]
    assert w.kv_data[0]["modern-bert.hidden_activation"].value == "gelu"
    with pytest.raises(errors.InvalidConfigError, match="local_attention"):
        ModernBert({k: v for k, v in config.items() if k != "local_attention"}, "ModernBertModel").add_hparams(w, 1)


def test_bad_labels_and_pad_id_are_refused_in_one_line():
    with pytest.raises(errors.InvalidConfigError, match="id2label"):
        _bert(id2label=["LABEL_0"])
    with pytest.raises(errors.InvalidConfigError, match="id2label"):
        _bert(id2label={"first": "a"})
    config = {"architectures": ["XLMRobertaModel"], "model_type": "xlm-roberta", "hidden_size": 64,
              "num_attention_heads": 4, "num_hidden_layers": 2, "intermediate_size": 192, "vocab_size": 100,
              "max_position_embeddings": 514, "pad_token_id": "1"}
    with pytest.raises(errors.InvalidConfigError, match="pad_token_id"):
        XLMRoberta(config, "XLMRobertaModel")


def test_reranker_head_is_cls_and_cls_output():
    config = {"architectures": ["XLMRobertaForSequenceClassification"], "model_type": "xlm-roberta",
              "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2, "intermediate_size": 192,
              "vocab_size": 100, "max_position_embeddings": 514, "pad_token_id": 1, "id2label": {0: "LABEL_0"}}
    family = XLMRoberta(config, "XLMRobertaForSequenceClassification")
    assert family.labels == {0: "LABEL_0"}
    assert family.source_name("roberta.encoder.layer.1.output.dense.weight") == "encoder.layer.1.output.dense.weight"
    assert family.map_name(family.source_name("classifier.dense.weight")) == "cls.weight"
    assert family.map_name(family.source_name("classifier.out_proj.bias")) == "cls.output.bias"
