"""The validation functions behind the hostile-input corpus, one by one, without the network.

End to end, through the CLI, the same failures are in ``tests/test_hostile_input.py``.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from hfstream import errors, meta
from hfstream.arch import family_for
from hfstream.arch.base import DECODER_SHAPES, SIZES
from hfstream.arch.base import check_shapes as _check_shapes
from hfstream.hfconfig import check_hparams, load_config, normalize
from hfstream.plan import weight_files, weight_map
from hfstream.safetensors import SourceTensor, parse_header

LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "num_attention_heads": 4,
         "num_key_value_heads": 2, "num_hidden_layers": 2, "intermediate_size": 192, "vocab_size": 1000}


# --- config.json -------------------------------------------------------------------------------------


@pytest.mark.parametrize("blob, message", [
    (b"{", "not valid JSON"),
    (b'{"a": "\xff"}', "UTF-8"),
    (b"[1]", "not a JSON object"),
    (b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested more than 32 levels deep"),
    (b'{"a": ' + b"9" * 5000 + b"}", "number is too long"),
    (b'{"a": ' + b"[" * 40 + b"]" * 40 + b"}", "nested more than"),
])
def test_load_config_refuses(blob, message):
    with pytest.raises(errors.InvalidConfigError, match=message):
        load_config(blob)


def test_load_config_keeps_the_last_of_duplicate_keys_as_transformers_does():
    assert load_config(b'{"a": 1, "a": 2}') == {"a": 2}


@pytest.mark.parametrize("change, message", [
    ({"num_hidden_layers": 0}, "num_hidden_layers is 0"),
    ({"num_hidden_layers": -1}, "num_hidden_layers is -1"),
    ({"num_hidden_layers": 2**32}, "num_hidden_layers is 4294967296; expected an integer from 1 to 4294967295"),
    ({"num_hidden_layers": 2.0}, "num_hidden_layers is 2.0"),
    ({"num_hidden_layers": True}, "num_hidden_layers is True"),
    ({"num_attention_heads": 0}, "num_attention_heads is 0"),
    ({"num_key_value_heads": 0}, "num_key_value_heads is 0"),
    ({"vocab_size": 10**30}, "vocab_size is"),
    ({"hidden_size": "64"}, "hidden_size is '64'"),
    ({"num_attention_heads": 5, "num_key_value_heads": 5}, "hidden_size 64 is not a multiple of num_attention_heads 5"),
    ({"num_key_value_heads": 3}, "num_attention_heads 4 is not a multiple of num_key_value_heads 3"),
    ({"rms_norm_eps": -1e-5}, "rms_norm_eps"),
    ({"rope_theta": float("inf")}, "rope_theta"),
    ({"rope_theta": "10000"}, "rope_theta"),
])
def test_insane_hparams_are_refused(change, message):
    with pytest.raises(errors.InvalidConfigError, match=message):
        check_hparams({**LLAMA, **change})


def test_sane_hparams_pass_and_head_dim_lifts_the_divisibility_rule():
    check_hparams(LLAMA)
    check_hparams({**LLAMA, "num_attention_heads": 5, "num_key_value_heads": 5, "head_dim": 16})
    check_hparams({**LLAMA, "num_key_value_heads": None, "head_dim": None})  # null: the family's default


def test_families_check_hparams_before_using_them():
    with pytest.raises(errors.InvalidConfigError, match="num_hidden_layers is 0"):
        family_for({**LLAMA, "num_hidden_layers": 0})


def test_a_billion_layers_cost_nothing_until_the_weights_say_how_many_there_are():
    """No cap on the layer count: names are mapped one at a time (gguf's map for a billion blocks is
    never built), and the weights bound what config.json may claim (see test_tensor_set.py)."""
    family = family_for({**LLAMA, "num_hidden_layers": 10**9})
    assert family.map_name("model.layers.999999999.self_attn.q_proj.weight") == "blk.999999999.attn_q.weight"
    assert "tensor_map" not in vars(family)


# --- every fixture repo passes the checks (no false refusal) ------------------------------------------


def _fixture_snapshots(root: Path):
    for config in sorted(root.glob("*/*/commits/*/config.json")):
        yield config.parent


def test_every_fixture_repo_passes_the_hparam_and_shape_checks(fixture_root):
    checked = 0
    for snap in _fixture_snapshots(fixture_root):
        raw = load_config((snap / "config.json").read_bytes())
        if raw.get("architectures") == ["FooBarForCausalLM"]:
            continue
        family = family_for(normalize((snap / "config.json").read_bytes(), name_or_path=snap.parts[-3]))
        # as the plan does: the repo's small files first (DeepSeek-V4 reads config.json's raw keys there)
        family.use_files({str(f.relative_to(snap)): f.read_bytes() for f in snap.rglob("*")
                          if f.is_file() and f.suffix != ".safetensors"})
        sources = []
        for f in sorted(snap.glob("*.safetensors")):
            blob = f.read_bytes()
            for t in parse_header(f.name, blob, len(blob)):
                if (name := family.source_name(t.name)) is not None:
                    sources.append((name, t))
        family.check_shapes(sources)
        checked += 1
    assert checked >= 10


# --- tensor shapes vs config.json ------------------------------------------------------------------


def check_shapes(hparams, sources):
    """The shape check every decoder family starts from (``TextFamily.shape_rules``)."""
    _check_shapes(hparams, DECODER_SHAPES, SIZES, sources)


def _t(name: str, shape: tuple[int, ...]) -> tuple[str, SourceTensor]:
    return name, SourceTensor("model.safetensors", name, "F16", shape, 0, 0)


@pytest.mark.parametrize("name, shape, words", [
    ("model.layers.0.self_attn.q_proj.weight", (60, 64), ["[60, 64]", "[64, 64]", "num_attention_heads 4"]),
    ("model.layers.0.self_attn.k_proj.weight", (64, 64), ["[32, 64]", "num_key_value_heads 2"]),
    ("model.layers.1.mlp.down_proj.weight", (192, 64), ["[64, 192]", "intermediate_size 192"]),
    ("model.embed_tokens.weight", (1001, 64), ["vocab_size 1000"]),
    ("lm_head.weight", (900, 64), ["vocab_size 1000"]),
    ("model.norm.weight", (65,), ["hidden_size 64"]),
    ("model.layers.0.block_sparse_moe.experts.3.w1.weight", (191, 64), ["intermediate_size 192"]),
])
def test_shapes_that_disagree_with_config_are_refused(name, shape, words):
    with pytest.raises(errors.ConfigMismatchError) as e:
        check_shapes(LLAMA, [_t(name, shape)])
    for w in ["model.safetensors", name, *words]:
        assert w in str(e.value)


def test_names_without_a_rule_and_sizes_the_config_lacks_are_not_checked():
    check_shapes(LLAMA, [_t("model.layers.0.self_attn.qkv_proj.weight", (1, 2, 3))])
    check_shapes({k: v for k, v in LLAMA.items() if k != "vocab_size"}, [_t("lm_head.weight", (7, 64))])


# --- model.safetensors.index.json -------------------------------------------------------------------


@pytest.mark.parametrize("blob, message", [
    (b'{"weight_map": {"a": "model-1.safetensors", "a": "model-2.safetensors"}}', "names the key 'a' twice"),
    (b'{"weight_map": {}}', "empty"),
    (b'{"weight_map": []}', "no 'weight_map'"),
    (b'{"weight_map": {"a": "../model.safetensors"}}', "not a plain file name"),
    (b'{"weight_map": {"a": "C:model.safetensors"}}', "not a plain file name"),
    (b'{"weight_map": {"a": "model\\u0000.safetensors"}}', "not a plain file name"),
    (b'{"weight_map": {"a": "model.bin"}}', "not a plain file name"),
    (b'{"weight_map": ' + b"[" * 100_000, "nested more than"),
    (b'{"weight_map": ', "not valid JSON"),
])
def test_bad_indexes_are_refused(blob, message):
    with pytest.raises(errors.InvalidIndexError, match=message):
        weight_map(blob)


def test_a_listed_weight_file_name_that_is_not_text_is_refused():
    with pytest.raises(errors.ProtocolError, match="not valid text"):
        weight_files(["config.json", "model-\udcff.safetensors"], None)


# --- safetensors headers -----------------------------------------------------------------------------


def _blob(text: bytes, data: bytes = b"") -> bytes:
    return struct.pack("<Q", len(text)) + text + data


@pytest.mark.parametrize("text, message", [
    (b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, '
     b'"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}', "the key 'a' twice"),
    (b'{"a": {"dtype": "F32", "dtype": "F16", "shape": [1], "data_offsets": [0, 4]}}', "the key 'dtype' twice"),
    (b'{"a": {"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]}}', "unknown dtype"),
    (b'{"a\\ud800": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}', "not printable"),
    (b'{"a": {"dtype": "F32", "shape": [1, 1, 1, 1, 1, 1, 1, 1, 1], "data_offsets": [0, 4]}}', "9 dimensions"),
    (b'{"a": {"dtype": "F32", "shape": [0, 9223372036854775808], "data_offsets": [0, 0]}}', "dimension over"),
    (b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, ' + b"9" * 5000 + b"]}}", "number is too long"),
    (b'{"\xff": 1}', "not valid UTF-8"),
])
def test_hostile_headers_are_refused(text, message):
    blob = _blob(text, bytes(8))
    with pytest.raises(errors.InvalidHeaderError, match=message):
        parse_header("x.safetensors", blob, len(blob))


def test_an_error_line_stays_short_whatever_the_name():
    name = "n" * 100_000
    blob = _blob(json.dumps({name: {"dtype": "F99", "shape": [1], "data_offsets": [0, 4]}}).encode(), bytes(4))
    with pytest.raises(errors.InvalidHeaderError) as e:
        parse_header("x.safetensors", blob, len(blob))
    assert len(str(e.value)) < 200


# --- README.md front matter ---------------------------------------------------------------------------


def _card(yaml_text: str) -> bytes:
    return f"---\n{yaml_text}\n---\n# card\n".encode()


def test_a_yaml_billion_laughs_is_refused_quickly():
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    with pytest.raises(errors.InvalidConfigError, match="README.md"):
        meta.model_card(_card("\n".join(lines + ["tags: *a8"])))


def test_a_self_referencing_card_is_refused():
    with pytest.raises(errors.InvalidConfigError, match="README.md"):
        meta.model_card(_card("tags: &t [a, *t]"))


@pytest.mark.parametrize("yaml_text", ["date: 2023-13-45", "a: " + "[" * 5000 + "]" * 5000, "a: [unclosed"])
def test_front_matter_that_does_not_load_is_ignored_as_before(yaml_text):
    assert meta.model_card(_card(yaml_text)) == {}


def test_a_benign_alias_is_fine():
    assert meta.model_card(_card("base: &b [x, y]\ntags: *b"))["tags"] == ["x", "y"]


# --- the refusal of an architecture ---------------------------------------------------------------


def test_an_unsupported_architecture_is_named_with_what_the_reference_does_and_what_hfstream_supports():
    from hfstream.arch import family_class, supported

    with pytest.raises(errors.UnsupportedArchitectureError) as e:
        family_class({"architectures": ["BloomForCausalLM"]})  # the reference converts Bloom
    message = str(e.value)
    assert message.startswith("architecture BloomForCausalLM is not supported; llama.cpp's convert_hf_to_gguf.py "
                              "converts it, hfstream does not yet; hfstream supports: ")
    assert all(name in message for name in supported())
    with pytest.raises(errors.UnsupportedArchitectureError) as e:
        family_class({"architectures": ["FooBarForCausalLM"]})  # nobody does
    assert "llama.cpp" not in str(e.value) and "LlamaForCausalLM" in str(e.value)
    assert "\n" not in str(e.value)


def test_every_family_module_registers_itself_with_what_it_reads():
    from hfstream.arch import families

    for family in families():
        assert family.hf_architectures and family.model_types, family.__name__
        assert family.__module__.startswith("hfstream.arch."), family.__name__
