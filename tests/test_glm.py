"""GLM-4.5's vocabulary: four special tokens looked up by content in the added vocabulary.

The end-to-end bytes and keys against the reference converter are the goldens' (``test_convert``,
``test_kquant``, ``test_llamacpp_decode``, fixture ``tiny-glm4-moe``); here the two rules the
reference's ``_set_vocab_glm`` follows and the fixture does not exercise: a type the tokenizer files
already name keeps that id (gguf-py's ``_set_special_token`` sets a type only once), and a tokenizer
without one of the four tokens is refused in one line (the reference stops with a KeyError).
"""

from __future__ import annotations

import json

import gguf
import pytest

from fixtures.build import tokenizer_files
from hfstream import errors
from hfstream.arch import family_for
from hfstream.kv import KeyWriter, Metadata

HPARAMS = {"architectures": ["Glm4MoeForCausalLM"], "model_type": "glm4_moe", "num_hidden_layers": 2,
           "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
           "vocab_size": 50304}


def _vocab_keys(files: dict[str, bytes]) -> dict:
    metadata = Metadata()
    family_for(HPARAMS).add_vocab(KeyWriter(metadata, "glm4moe"), files, None)
    return metadata.values_by_key()


def test_the_four_named_tokens_are_looked_up_in_the_added_vocabulary():
    keys = _vocab_keys(tokenizer_files("glm-gpt2"))
    ids = {k.rpartition(".")[2]: v for k, v in keys.items() if k.endswith("_token_id")}
    # [gMASK], <|endoftext|> (also the config's EOS), <|user|>, <|observation|> in glm-gpt2's ids
    assert ids == {"eos_token_id": 50256, "padding_token_id": 50256, "bos_token_id": 50258,
                   "eot_token_id": 50263, "unknown_token_id": 50256, "eom_token_id": 50265}
    assert keys["tokenizer.ggml.tokens"][50258] == "[gMASK]"


def test_a_type_the_tokenizer_files_name_keeps_their_id():
    files = tokenizer_files("glm-gpt2")
    config = json.loads(files["tokenizer_config.json"])
    files["tokenizer_config.json"] = json.dumps({**config, "bos_token": "<sop>"}).encode()
    keys = _vocab_keys(files)
    assert keys[gguf.Keys.Tokenizer.BOS_ID] == 50260  # <sop>, not [gMASK]
    assert keys[gguf.Keys.Tokenizer.EOT_ID] == 50263


def test_a_tokenizer_without_gmask_is_refused_in_one_line():
    files = tokenizer_files("gpt2")  # GPT-2's vocabulary alone: no GLM tokens
    with pytest.raises(errors.UnsupportedTokenizerError, match=r"no added token '\[gMASK\]'.*bos token"):
        _vocab_keys(files)
