"""The per-tensor type rules of the reference converter, and the ggml that quantizes."""

import pytest
from gguf import GGMLQuantizationType as QT
from gguf import MODEL_TENSOR as MT

from hfstream import errors
from hfstream.quant import auto_outtype, nbytes, outtype
from hfstream.quant.rules import OutputTensor, converter_type


@pytest.mark.parametrize("name, kind, shape, ot, expected", [
    ("blk.0.attn_q.weight", MT.ATTN_Q, (64, 64), "q8_0", QT.Q8_0),
    ("blk.0.attn_norm.weight", MT.ATTN_NORM, (64,), "q8_0", QT.F32),
    ("blk.0.attn_q.bias", None, (64,), "f16", QT.F32),
    ("blk.0.ffn_down.weight", MT.FFN_DOWN, (64, 48), "q8_0", QT.F16),  # 48 % 32 != 0
    ("token_embd.weight", MT.TOKEN_EMBD, (100, 64), "q8_0", QT.Q8_0),
    ("output.weight", MT.OUTPUT, (100, 64), "bf16", QT.BF16),
    ("blk.0.ffn_gate_inp.weight", MT.FFN_GATE_INP, (8, 64), "f16", QT.F32),
    ("blk.0.attn_k.weight", MT.ATTN_K, (32, 64), "f32", QT.F32),
])
def test_type_rules(name, kind, shape, ot, expected):
    assert converter_type(outtype(ot), OutputTensor(name, shape, kind)) == expected


@pytest.mark.parametrize("name, kind, shape, forced, ot, expected", [
    ("blk.0.ffn_up_exps.weight", MT.FFN_UP_EXP, (4, 64, 64), QT.MXFP4, "f16", QT.MXFP4),
    ("blk.0.ffn_up_exps.weight", MT.FFN_UP_EXP, (4, 64, 64), QT.MXFP4, "q8_0", QT.MXFP4),
    ("v.patch_embd.weight", None, (64, 3, 14, 14), QT.F16, "q8_0", QT.F16),
    ("blk.0.ffn_gate_inp.weight", MT.FFN_GATE_INP, (8, 64), QT.F16, "f32", QT.F16),  # forced beats always-F32
    ("blk.0.attn_q.bias", None, (64, 2), QT.Q8_0, "f16", QT.F16),  # forced Q8_0 on a short row: F16
    ("blk.0.attn_norm.weight", MT.ATTN_NORM, (64, 64), QT.F16, "f16", QT.F32),  # norms stay F32 even so
    ("blk.0.attn_q.weight", MT.ATTN_Q, (64,), QT.Q8_0, "q8_0", QT.F32),  # and 1-D tensors
])
def test_a_forced_type_wins_where_the_reference_lets_it(name, kind, shape, forced, ot, expected):
    assert converter_type(outtype(ot), OutputTensor(name, shape, kind, forced)) == expected


def test_auto_picks_bf16_only_for_bf16_checkpoints():
    assert auto_outtype("BF16").name == "bf16"
    assert auto_outtype("F16").name == "f16"
    assert auto_outtype(None).name == "f16"


def test_sizes():
    assert nbytes(QT.Q8_0, (2, 64)) == 2 * 2 * 34
    assert nbytes(QT.F16, (3, 5)) == 30
    assert nbytes(QT.F32, (7,)) == 28


def test_unknown_outtype_is_a_clear_error():
    with pytest.raises(errors.UnsupportedOptionError, match="q8_0"):
        outtype("q9_9")


# --- the two quantization engines -----------------------------------------------

import numpy as np  # noqa: E402

from hfstream.quant import ggml, quantize  # noqa: E402

ENGINE_TYPES = [QT.Q8_0, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1, QT.BF16, QT.F16, QT.F32]


@pytest.mark.skipif(ggml.library() is None, reason="libggml-python is not installed")
@pytest.mark.parametrize("qt", ENGINE_TYPES, ids=[t.name for t in ENGINE_TYPES])
@pytest.mark.parametrize("src_dtype", [np.float32, np.float16])
def test_ggml_and_numpy_engines_give_the_same_bytes(qt, src_dtype):
    rng = np.random.default_rng(int(qt))
    x = (rng.standard_normal((96, 256)) * rng.choice([1e-3, 0.05, 3.0])).astype(src_dtype)
    x[0, :8] = [0.0, -0.0, 1e-30, -1e-30, 65504.0, -65504.0, 1.0, -1.0]
    a = quantize(x, qt, engine="ggml")
    b = quantize(x, qt, engine="numpy")
    assert a.tobytes() == b.tobytes()


def test_rows_encode_independently():
    x = np.random.default_rng(1).standard_normal((64, 128)).astype(np.float32)
    whole = quantize(x, QT.Q8_0).tobytes()
    parts = b"".join(quantize(x[i:i + 16], QT.Q8_0).tobytes() for i in range(0, 64, 16))
    assert whole == parts


# --- which ggml quantizes ------------------------------------------------------------

def _choose_ggml(monkeypatch, *, llama_cpp_lib, shipped_version):
    """Run the library choice afresh with llama-cpp-python's copy at ``llama_cpp_lib`` (None: not
    installed) and libggml-python at ``shipped_version``; returns the chosen origin."""
    import ctypes

    real = ggml._package_library
    if real("llama_cpp", ("lib",)):
        # the real copy first, so a later `import llama_cpp` binds to its own ggml whatever we load here
        ctypes.CDLL(real("llama_cpp", ("lib",)))
    monkeypatch.delenv("HFSTREAM_GGML_LIB", raising=False)
    monkeypatch.delenv("HFSTREAM_QUANT_ENGINE", raising=False)
    monkeypatch.setattr(ggml, "_LIB", None)
    monkeypatch.setattr(ggml, "_TRIED", False)
    monkeypatch.setattr(ggml, "_ORIGIN", None)
    monkeypatch.setattr(ggml, "_PATH", None)
    monkeypatch.setattr(ggml, "_package_library",
                        lambda pkg, dirs: llama_cpp_lib if pkg == "llama_cpp" else real(pkg, dirs))
    monkeypatch.setattr(ggml, "_distribution_version", lambda name: shipped_version)
    return ggml.origin()


def _shipped_library():
    return ggml._package_library("libggml", ("lib64", "lib", "bin"))


needs_shipped = pytest.mark.skipif(_shipped_library() is None, reason="libggml-python is not installed")


@needs_shipped
def test_a_llama_cpp_ggml_at_least_as_new_as_the_shipped_one_is_preferred(monkeypatch):
    import ctypes

    shipped = _shipped_library()
    lib = ctypes.CDLL(shipped)
    lib.ggml_version.restype = ctypes.c_char_p
    same = lib.ggml_version().decode()
    # llama-cpp-python's copy stands in as the very same library: equal versions prefer it
    assert _choose_ggml(monkeypatch, llama_cpp_lib=shipped, shipped_version=same + ".post1") == "llama-cpp-python"
    assert _choose_ggml(monkeypatch, llama_cpp_lib=shipped, shipped_version="99.0.0") == "libggml-python"
    assert _choose_ggml(monkeypatch, llama_cpp_lib=None, shipped_version=same) == "libggml-python"


@needs_shipped
def test_an_unloadable_llama_cpp_ggml_falls_back_to_the_shipped_one(monkeypatch, tmp_path):
    bogus = tmp_path / "libggml-base.so"
    bogus.write_bytes(b"not a library")
    assert _choose_ggml(monkeypatch, llama_cpp_lib=str(bogus), shipped_version="0.1.0") == "libggml-python"
    from hfstream import quant

    assert ggml.library_path() == _shipped_library()
    x = np.random.default_rng(3).standard_normal((4, 64)).astype(np.float32)
    assert quantize(x, QT.Q8_0).tobytes() == quantize(x, QT.Q8_0, engine="numpy").tobytes()
    assert quant.default_engine() == "ggml"


@needs_shipped
def test_hfstream_ggml_lib_wins_and_a_bad_one_is_one_clear_error(monkeypatch, tmp_path):
    _choose_ggml(monkeypatch, llama_cpp_lib=None, shipped_version="0.1.0")
    monkeypatch.setattr(ggml, "_TRIED", False)
    monkeypatch.setenv("HFSTREAM_GGML_LIB", _shipped_library())
    assert ggml.origin() == "HFSTREAM_GGML_LIB"
    monkeypatch.setattr(ggml, "_TRIED", False)
    monkeypatch.setenv("HFSTREAM_GGML_LIB", str(tmp_path / "missing.so"))
    with pytest.raises(errors.UnsupportedOptionError, match="HFSTREAM_GGML_LIB"):
        ggml.origin()


def test_version_names_the_quantization_engine():
    import subprocess
    import sys

    from hfstream import quant

    out = subprocess.run([sys.executable, "-m", "hfstream", "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    if quant.default_engine() == "ggml":
        assert f"ggml {quant.ggml_version()} from {quant.ggml_origin()}" in out.stdout
        assert ("Q8_0 by hfstream's AVX2 encoder" in out.stdout) == quant.compiled_q8_0()
        assert ("Q4_K, Q5_K and Q6_K by hfstream's AVX2 encoders" in out.stdout) == quant.compiled_kquants()
    else:
        assert "numpy" in out.stdout
