"""The pieces of the llama-quantize types: rule helpers, fallbacks, order, imatrix files, option errors.

The end-to-end comparison with llama-quantize's output is tests/test_kquant.py.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as QT

from hfstream import cli, errors
from hfstream.quant import Weights, imatrix, mixes, quantize
from hfstream.quant.ggml import library as ggml_library

from .goldens import imatrix_fixture

IMATRIX_DIR = Path(__file__).resolve().parent / "goldens" / "kquant" / "imatrix"


# --------------------------------------------------------------------------- rules


def test_categories_follow_llama_cpps_first_match():
    assert mixes.category("output.weight") == mixes.Cat.OUTPUT
    assert mixes.category("token_embd.weight") == mixes.Cat.TOKEN_EMBD
    assert mixes.category("blk.3.attn_qkv.weight") == mixes.Cat.ATTN_QKV
    assert mixes.category("blk.3.attn_v.weight") == mixes.Cat.ATTN_V
    assert mixes.category("blk.3.ffn_up_exps.weight") == mixes.Cat.FFN_UP
    assert mixes.category("blk.3.ffn_gate_inp.weight") == mixes.Cat.FFN_GATE  # kept F32 anyway
    assert mixes.category("blk.3.ffn_down_shexp.weight") == mixes.Cat.FFN_DOWN
    assert mixes.category("blk.3.attn_norm.weight") == mixes.Cat.OTHER


def test_what_llama_quantize_leaves_alone():
    assert not mixes.allows_quantization("blk.0.attn_norm.weight", (256,))
    assert not mixes.allows_quantization("blk.0.attn_q.bias", (256,))
    assert not mixes.allows_quantization("blk.0.ffn_gate_inp.weight", (256, 8))
    assert not mixes.allows_quantization("blk.0.ffn_gate_inp_shexp.weight", (256, 1))  # ggml_n_dims == 1
    assert not mixes.allows_quantization("position_embd.weight", (256, 1024))
    assert mixes.allows_quantization("blk.0.ffn_up_exps.weight", (256, 512, 8))


def test_fallbacks_for_rows_that_do_not_split_into_blocks():
    assert mixes.fallback(QT.Q4_K, 256) == QT.Q4_K
    assert mixes.fallback(QT.Q4_K, 64) == QT.Q5_0
    assert mixes.fallback(QT.Q5_K, 64) == QT.Q5_1
    assert mixes.fallback(QT.Q6_K, 64) == QT.Q8_0
    assert mixes.fallback(QT.Q2_K, 64) == QT.Q4_0
    assert mixes.fallback(QT.IQ2_XXS, 96) == QT.IQ4_NL
    assert mixes.fallback(QT.Q3_K, 48) == QT.F16  # Q4_0 does not fit either
    assert mixes.fallback(QT.Q4_0, 48) == QT.F16


def test_quantize_order_is_the_loaders_map_order():
    names = ["blk.10.attn_q.weight", "blk.2.ffn_up.weight", "token_embd.weight", "blk.2.Attn.weight",
             "output.weight", "rope_freqs.weight"]
    assert mixes.quantize_order(names) == ["output.weight", "rope_freqs.weight", "token_embd.weight",
                                           "blk.2.Attn.weight", "blk.2.ffn_up.weight", "blk.10.attn_q.weight"]


def _llama(n_layer: int, n_head: int, n_head_kv: int, n_expert: int = 0):
    facts = mixes.ModelFacts("llama", n_layer, n_head, n_head_kv, n_expert)
    tensors = [("token_embd.weight", (256, 1000)), ("output.weight", (256, 1000))]
    for i in range(n_layer):
        tensors += [(f"blk.{i}.attn_v.weight", (256, 256 * n_head_kv // n_head)),
                    (f"blk.{i}.ffn_down.weight", (256, 256))]
    return facts, tensors


def test_use_more_bits_pattern_for_q4_k_m():
    facts, tensors = _llama(32, 32, 8)
    types = {c.name: c.qtype for c in mixes.choose_types(mixes.MIXES["q4_k_m"], tensors, facts)}
    six = [i for i in range(32) if types[f"blk.{i}.ffn_down.weight"] == QT.Q6_K]
    # first and last eighth, and every third layer between
    assert six == [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]
    assert [i for i in range(32) if types[f"blk.{i}.attn_v.weight"] == QT.Q6_K] == six


def test_70b_models_get_q5_k_attn_v():
    facts, tensors = _llama(80, 64, 8)
    assert facts.is_70b
    types = {c.name: c.qtype for c in mixes.choose_types(mixes.MIXES["q4_k_m"], tensors, facts)}
    assert types["blk.11.attn_v.weight"] == QT.Q5_K  # Q4_K bumped
    assert types["blk.0.attn_v.weight"] == QT.Q6_K  # use_more_bits: Q6_K stays
    assert types["blk.11.ffn_down.weight"] == QT.Q4_K
    assert not mixes.ModelFacts("llama", 80, 64, 64).is_70b  # no GQA: llama.cpp calls it 65B
    assert mixes.ModelFacts("qwen2", 80, 64, 8).is_70b


def test_overrides_come_before_the_rules_and_the_first_pattern_wins():
    facts, tensors = _llama(8, 4, 1)
    ov = mixes.Overrides(tensor_types=(("BLK\\.1\\.", QT.Q8_0), ("ffn_down", QT.IQ4_NL)), output=QT.Q4_0)
    types = {c.name: c.qtype for c in mixes.choose_types(mixes.MIXES["q4_k_m"], tensors, facts, ov)}
    assert types["blk.1.attn_v.weight"] == QT.Q8_0 and types["blk.1.ffn_down.weight"] == QT.Q8_0
    assert types["blk.2.ffn_down.weight"] == QT.IQ4_NL
    assert types["output.weight"] == QT.Q4_0


def test_parsing_override_options():
    assert mixes.parse_tensor_type("attn_v=Q8_0") == ("attn_v", QT.Q8_0)
    assert mixes.parse_tensor_type(r"blk\.(1|2)\.ffn=iq4_xs") == (r"blk\.(1|2)\.ffn", QT.IQ4_XS)
    for bad in ("attn_v", "=q8_0", "attn_v=q9_9", "attn_v(=q8_0"):
        with pytest.raises(ValueError):
            mixes.parse_tensor_type(bad)


# --------------------------------------------------------------------------- imatrix files


@pytest.mark.parametrize("model", ["tiny-mixtral-k", "tiny-llama-spm"])
def test_both_imatrix_formats_load_to_the_same_values(model):
    a = imatrix.load(IMATRIX_DIR / f"{model}.imatrix.gguf")
    b = imatrix.load(IMATRIX_DIR / f"{model}.imatrix.dat")
    assert not a.legacy and b.legacy
    assert a.entries.keys() == b.entries.keys()
    for name in a.entries:
        assert a.entries[name].tobytes() == b.entries[name].tobytes(), name
    assert a.datasets == b.datasets == [imatrix_fixture.DATASET]
    assert a.chunk_count == b.chunk_count == imatrix_fixture.CHUNK_COUNT


def test_an_expert_without_tokens_weighs_every_column_1():
    im = imatrix.load(IMATRIX_DIR / "tiny-mixtral-k.imatrix.gguf")
    stacks = {n: v.reshape(8, -1) for n, v in im.entries.items() if "_exps" in n}
    zero = [(n, e) for n, v in stacks.items() for e in range(8) if (v[e] == 1.0).all()]
    assert len(zero) == 1
    w = im.weights_for(zero[0][0], (256, 256, 8))
    assert w.shape == (8, 256)


def test_imatrix_size_must_fit_the_tensor(tmp_path):
    entries = {"blk.0.attn_q.weight": imatrix_fixture.Entry(np.ones(64, np.float32), np.array([1])),
               "token_embd.weight": imatrix_fixture.Entry(np.ones(64, np.float32), np.array([1]))}
    path = tmp_path / "x.gguf"
    imatrix_fixture.write_gguf(path, entries)
    im = imatrix.load(path)
    assert im.weights_for("blk.0.attn_q.weight", (64, 64)).shape == (1, 64)
    assert im.weights_for("blk.0.attn_k.weight", (64, 64)) is None
    assert im.weights_for("token_embd.weight", (128, 1000)) is None  # ignored, as llama-quantize does
    with pytest.raises(errors.InvalidImatrixError, match="another model"):
        im.weights_for("blk.0.attn_q.weight", (128, 64))


def test_imatrix_keys_as_llama_quantize_records_them(tmp_path):
    path = tmp_path / ("a" * 200 + ".dat")
    imatrix_fixture.write_dat(path, {"w.weight": imatrix_fixture.Entry(np.ones(32, np.float32), np.array([512]))})
    kv = dict(imatrix.load(path).kv())
    assert len(kv[imatrix.KV_FILE].encode()) == 127  # strncpy into 128 bytes
    assert kv[imatrix.KV_DATASET] == imatrix_fixture.DATASET
    assert kv[imatrix.KV_N_ENTRIES] == 1 and kv[imatrix.KV_N_CHUNKS] == imatrix_fixture.CHUNK_COUNT


@pytest.mark.parametrize("content", [b"", b"\x00\x00\x00\x00", b"GGUF\x03\x00\x00\x00" + b"\x00" * 16,
                                     struct.pack("<ii", 1, 500) + b"x"])
def test_broken_imatrix_files_are_refused(tmp_path, content):
    path = tmp_path / "bad.imatrix"
    path.write_bytes(content)
    with pytest.raises(errors.InvalidImatrixError):
        imatrix.load(path)


def test_non_finite_imatrix_values_are_refused(tmp_path):
    path = tmp_path / "nan.dat"
    imatrix_fixture.write_dat(path, {"w.weight": imatrix_fixture.Entry(np.full(32, np.nan, np.float32), np.array([1]))})
    with pytest.raises(errors.InvalidImatrixError, match="finite"):
        imatrix.load(path)


# --------------------------------------------------------------------------- quantizing with weights


@pytest.mark.skipif(ggml_library() is None, reason="libggml-python is not installed")
def test_each_expert_block_uses_its_own_vector():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (3 * 8, 256)).astype(np.float32)  # 3 experts of 8 rows
    vecs = rng.uniform(0.1, 4, (3, 256)).astype(np.float32)
    w = Weights(vecs, rows_per_mat=8)
    whole = quantize(x, QT.Q4_K, weights=w).tobytes()
    per_expert = b"".join(quantize(x[8 * e:8 * e + 8], QT.Q4_K, weights=Weights(vecs[e:e + 1], 8)).tobytes()
                          for e in range(3))
    assert whole == per_expert
    # a block of rows 5..13 crosses from expert 0 into expert 1
    block = quantize(x[5:13], QT.Q4_K, weights=w, first_row=5).tobytes()
    row = len(whole) // 24
    assert block == whole[5 * row:13 * row]
    assert quantize(x, QT.Q4_K, weights=Weights(vecs[:1].repeat(3, 0), 8)).tobytes() != whole


def test_the_numpy_engine_refuses_what_it_cannot_encode():
    x = np.zeros((2, 256), np.float32)
    with pytest.raises(errors.UnsupportedOptionError, match="libggml"):
        quantize(x, QT.Q4_K, engine="numpy")


# --------------------------------------------------------------------------- command line


def _run(args, capsys):
    rc = cli.main(["convert", *args])
    err = capsys.readouterr().err.strip().splitlines()
    return rc, err


@pytest.mark.parametrize("args, code", [
    (["--outtype", "q4_k_m", "--tensor-type", "attn_v"], errors.UnsupportedOptionError.exit_code),
    (["--outtype", "q4_k_m", "--tensor-type", "attn_v=q9_9"], errors.UnsupportedOptionError.exit_code),
    (["--outtype", "q4_k_m", "--output-tensor-type", "int8"], errors.UnsupportedOptionError.exit_code),
    (["--outtype", "q4_k_m", "--imatrix", "/nonexistent/imatrix.gguf"], errors.InvalidImatrixError.exit_code),
])
def test_bad_options_fail_before_any_request(args, code, capsys, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: no request may be made
    rc, err = _run(["hfs-test/tiny-llama-spm", *args, "--dry-run"], capsys)
    assert rc == code and len(err) == 1 and err[0].startswith("hfstream: error: ")


def test_mix_options_with_a_converter_type_are_refused(fresh_hub, capsys):
    rc, err = _run(["hfs-test/tiny-llama-spm", "--outtype", "q8_0", "--tensor-type", "attn_v=q8_0", "--dry-run"], capsys)
    assert rc == errors.UnsupportedOptionError.exit_code and "llama-quantize types" in err[0]


def test_an_override_type_that_does_not_fit_the_rows_is_refused(fresh_hub, capsys):
    # 64-wide rows: Q6_K needs 256 (llama-quantize would write a broken tensor here)
    rc, err = _run(["hfs-test/tiny-llama-spm", "--outtype", "q4_k_m", "--output-tensor-type", "q6_k", "--dry-run"],
                   capsys)
    assert rc == errors.UnsupportedOptionError.exit_code and "output.weight" in err[0]


def test_an_imatrix_without_an_entry_the_type_needs_is_refused(fresh_hub, tmp_path, capsys):
    path = tmp_path / "partial.dat"
    imatrix_fixture.write_dat(path, {"blk.0.attn_q.weight": imatrix_fixture.Entry(np.ones(256, np.float32),
                                                                                  np.array([512]))})
    rc, err = _run(["hfs-test/tiny-qwen3-k", "--outtype", "iq2_xxs", "--imatrix", str(path), "--dry-run"], capsys)
    assert rc == errors.ImatrixRequiredError.exit_code and "no entry for" in err[0]
