"""hfstream's compiled K-quant encoders (hfstream/quant/_kquants.c): ggml's reference bytes for Q4_K, Q5_K
and Q6_K, with and without importance weights, for every input; the blocks they cannot promise go to ggml."""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gguf
import numpy as np
import pytest
import tomllib
from gguf import GGMLQuantizationType as QT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from hfstream.quant import encode, ggml
from hfstream.quant.floats import _cpu_flags
from hfstream.quant.imatrix import Weights

ROOT = Path(__file__).resolve().parents[1]
TYPES = (QT.Q4_K, QT.Q5_K, QT.Q6_K)
RNG = np.random.default_rng(20270110)


def _can_build_and_run_here() -> bool:
    return (platform.system() == "Linux" and platform.machine() == "x86_64" and shutil.which("cc") is not None
            and {"avx2", "f16c"} <= _cpu_flags())


@pytest.fixture
def kernel():
    k = encode._KQUANTS
    if k is None:
        if _can_build_and_run_here():
            pytest.fail("hfstream.quant._kquants was not built or does not run, on a machine that can build and run it")
        pytest.skip("no compiled K-quant encoder on this machine")
    if not encode.compiled_kquants():
        pytest.skip(f"ggml {ggml.version()} is not one whose K-quant code the encoder follows")
    return k


def _reference(x: np.ndarray, qt: QT, weights: np.ndarray | None) -> bytes:
    return encode._ggml_quantize(x, qt, weights).tobytes()


def _encode(kernel, x: np.ndarray, qt: QT, weights: np.ndarray | None) -> tuple[bytes, np.ndarray]:
    """(bytes, the flags of the blocks handed back)"""
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty(gguf.quant_shape_to_byte_shape(x.shape, qt), np.uint8)
    odd = np.zeros(x.size // 256, np.uint8)
    count = kernel.quantize(int(qt), x.reshape(-1), out.reshape(-1), x.shape[-1], weights, odd)
    assert count == int(odd.sum())
    return out.tobytes(), odd


def _bf16(values: np.ndarray) -> np.ndarray:
    """``values`` cut to bf16 precision, as a bf16 checkpoint decodes."""
    return (values.astype(np.float32).view(np.uint32) & 0xFFFF0000).view(np.float32)


def _normal(rows: int, width: int = 4096) -> np.ndarray:
    return RNG.standard_normal((rows, width)).astype(np.float32) * np.float32(0.02)


def _with_extremes(x: np.ndarray, m: float) -> np.ndarray:
    """``x`` with -m and m in every 16 values: the searches' trial scales are then ratios of small integers,
    and many values land exactly halfway between two quants."""
    x = x.astype(np.float32)
    x[:, 0::16], x[:, 1::16] = -m, m
    return x


def _constant_sub_blocks(rows: int) -> np.ndarray:
    """Every 16 or 32 values equal (max == min: the searches give up at once), some zero, some negative."""
    levels = RNG.integers(-3, 4, (rows, 4096 // 32)).astype(np.float32) * np.float32(0.01)
    return np.repeat(levels, 32, axis=1)


def _quiet_sub_blocks(rows: int) -> np.ndarray:
    """One sub-block of each block ~1e-4 of the others: its 6- or 8-bit scale rounds to zero, and the
    reference keeps the quants its search left there."""
    x = _normal(rows)
    blocks = x.reshape(rows, -1, 256)
    blocks[:, :, 64:96] *= np.float32(1e-4)
    blocks[:, :, 160:176] = np.float32(0)
    return x


def _mixed_magnitudes(rows: int) -> np.ndarray:
    """Blocks of either sign clustered around magnitudes from 1e-17 to 1e17, with outliers."""
    n = rows * 16
    base = RNG.choice([-1.0, 1.0], (n, 1)) * np.exp(RNG.uniform(-40, 40, (n, 1)))
    x = base * (1 + np.exp(RNG.uniform(-30, 0, (n, 1))) * RNG.standard_normal((n, 256)))
    outliers = RNG.random((n, 256)) < 0.05
    x = np.where(outliers, base * RNG.uniform(-3, 3, (n, 256)), x)
    return x.astype(np.float32).reshape(rows, 4096)


CASES = {
    "f32 weights": lambda: _normal(64),
    "bf16 weights": lambda: _bf16(_normal(64)),
    "f16 weights": lambda: _normal(32).astype(np.float16).astype(np.float32),
    "heavy tails": lambda: (RNG.standard_t(2, (32, 4096)) * 0.02).astype(np.float32),
    "all positive": lambda: np.abs(_normal(16)),
    "all negative": lambda: -np.abs(_normal(16)),
    "small integers (ties)": lambda: _with_extremes(RNG.integers(-8, 9, (32, 1024)), 8),
    "quarters (ties)": lambda: _with_extremes(RNG.integers(-16, 17, (32, 1024)) / 4, 4),
    "zeros and signed zeros": lambda: np.where(RNG.random((8, 1024)) < 0.5, -0.0, 0.0).astype(np.float32),
    "one value per block": lambda: np.where(RNG.random((16, 1024)) < 1 / 256, 1.5, 0.0).astype(np.float32),
    "constant sub-blocks": lambda: _constant_sub_blocks(8),
    "sub-blocks whose scale rounds to zero": lambda: _quiet_sub_blocks(8),
    "tiny: 1e-38, sums underflow": lambda: _normal(8, 1024) * np.float32(5e-37),
    "subnormal values": lambda: _normal(8, 1024) * np.float32(5e-41),
    "huge: 1e30, squares overflow": lambda: _normal(8, 1024) * np.float32(5e31),
    "huge: 1e37": lambda: RNG.standard_normal((8, 1024)).astype(np.float32) * np.float32(1e37),
    "mixed magnitudes": lambda: _mixed_magnitudes(16),
}

IMATRIX = {
    "none": lambda n: None,
    "imatrix": lambda n: (RNG.random(n) * 3).astype(np.float32),
    "imatrix with zeros and a wide range": lambda n: np.where(
        RNG.random(n) < 0.2, 0, np.exp(RNG.uniform(-30, 30, n))).astype(np.float32),
}


@pytest.mark.parametrize("qt", TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("imatrix", IMATRIX)
@pytest.mark.parametrize("case", CASES)
def test_the_reference_bytes(kernel, case, imatrix, qt):
    x = CASES[case]()
    weights = IMATRIX[imatrix](x.shape[-1])
    with np.errstate(over="ignore", under="ignore"):
        encoded, odd = _encode(kernel, x, qt, weights)
    assert not odd.any()
    assert encoded == _reference(x, qt, weights)


def _first_trial_ties(x: np.ndarray, nmax: int = 15) -> int:
    """How many values the first trial scale of ggml's Q4_K search (nmax / (max - min) per 32 values, min
    at most 0) puts exactly halfway between two quants: where a rounding other than the reference's
    (half to even, through nearest_int) picks another quant. float32 steps, as the reference's."""
    sub = x.reshape(-1, 32).astype(np.float32)
    low = np.minimum(sub.min(axis=1, keepdims=True), np.float32(0))
    with np.errstate(divide="ignore", invalid="ignore"):
        iscale = np.float32(nmax) / (sub.max(axis=1, keepdims=True) - low)
        t = iscale * (sub - low)
    return int(np.count_nonzero(np.abs(t - np.trunc(t)) == np.float32(0.5)))


def test_the_cases_hold_ties_and_zero_scales():
    """What the cases are for: values exactly halfway between two quants, and sub-blocks whose final scale
    rounds to zero (there the reference keeps the quants its search left)."""
    for case in ("small integers (ties)", "quarters (ties)"):
        x = CASES[case]()
        assert _first_trial_ties(x) > x.size // 40, case
    x = CASES["sub-blocks whose scale rounds to zero"]()
    blocks = np.frombuffer(_reference(x, QT.Q4_K, None), np.uint8).reshape(-1, 144)
    assert np.count_nonzero(blocks[:, 4:8] & 63 == 0) + np.count_nonzero(blocks[:, 12:16] & 0xF == 0) >= len(blocks)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(qt=st.sampled_from(TYPES), weighted=st.booleans(), exponent=st.integers(-60, 60),
       x=hnp.arrays(np.float32, 256, elements=st.floats(-4, 4, width=32)),
       w=hnp.arrays(np.float32, 256, elements=st.floats(0, 1e6, width=32)))
def test_any_block_of_finite_values(kernel, qt, weighted, exponent, x, w):
    """Any block, any importance weights: what hypothesis finds (repeats, zeros, extremes) at any scale."""
    x = (x * np.float32(2.0) ** exponent).astype(np.float32).reshape(1, 256)
    weights = w if weighted else None
    with np.errstate(over="ignore", under="ignore"):
        encoded, odd = _encode(kernel, x, qt, weights)
    assert not odd.any()
    assert encoded == _reference(x, qt, weights)


@pytest.mark.parametrize("qt", TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_blocks_holding_nan_or_infinity_are_handed_to_ggml(kernel, qt, bad, monkeypatch):
    x = _bf16(_normal(4, 1024))
    x[1, 300] = bad  # row 1, block 1
    x[3, 1023] = bad  # row 3, block 3
    _, odd = _encode(kernel, x, qt, None)
    assert np.flatnonzero(odd).tolist() == [5, 15]
    weights = (RNG.random(1024) * 3).astype(np.float32)
    weights[520] = bad  # every row's block 2
    _, odd = _encode(kernel, x, qt, weights)
    assert np.flatnonzero(odd).tolist() == [2, 5, 6, 10, 14, 15]

    ggml_blocks = []
    real = encode._ggml_quantize

    def counting(array, qt, imatrix=None):
        ggml_blocks.append(array.size // 256)
        return real(array, qt, imatrix)

    monkeypatch.setattr(encode, "_ggml_quantize", counting)
    with np.errstate(invalid="ignore", over="ignore"):
        for w in (None, weights):
            assert encode.quantize(x, qt, engine="ggml", weights=None if w is None else Weights(w[None], 4)).tobytes() \
                == real(x, qt, w).tobytes()
    assert ggml_blocks == [1] * (2 + 6)  # the flagged blocks, one by one


def test_quantize_uses_it_for_the_k_quants_under_ggml_only(kernel, monkeypatch):
    calls = []

    class Counting:
        @staticmethod
        def quantize(qtype, src, dst, n_per_row, weights, odd):
            calls.append((qtype, len(src), n_per_row, weights is not None))
            return kernel.quantize(qtype, src, dst, n_per_row, weights, odd)

    monkeypatch.setattr(encode, "_KQUANTS", Counting)
    x = _bf16(_normal(4, 512))
    for qt in TYPES:
        assert encode.quantize(x, qt, engine="ggml").tobytes() == _reference(x, qt, None)
        half = x.astype(np.float16)
        assert encode.quantize(half, qt, engine="ggml").tobytes() == _reference(half, qt, None)
    assert calls == [(int(qt), 2048, 512, False) for qt in TYPES for _ in range(2)]
    calls.clear()
    # an expert stack: rows 3.. of a tensor whose experts have 2 rows each, each row with its expert's weights
    vectors = (RNG.random((4, 512)) * 3).astype(np.float32)
    weights = Weights(vectors, 2)
    for qt in TYPES:
        expected = b"".join(_reference(x[i:i + 1], qt, vectors[(3 + i) // 2]) for i in range(4))
        assert encode.quantize(x, qt, engine="ggml", weights=weights, first_row=3).tobytes() == expected
    assert calls == [(int(qt), n, 512, True) for qt in TYPES for n in (512, 1024, 512)]
    calls.clear()
    encode.quantize(x, QT.Q4_0, engine="ggml")
    encode.quantize(x, QT.Q3_K, engine="ggml")
    assert calls == []


def test_another_ggml_encodes_the_k_quants_itself(kernel, monkeypatch):
    """A ggml whose K-quant code has not been checked against the encoder's is left to encode them."""
    low, high = encode.KQUANT_GGML_VERSIONS
    assert low <= ggml.version_tuple() <= high
    monkeypatch.setattr(ggml, "version_tuple", lambda: (high[0], high[1] + 1, 0))
    assert not encode.compiled_kquants()
    monkeypatch.setattr(ggml, "version_tuple", lambda: None)
    assert not encode.compiled_kquants()


_BOTH_GGMLS = """
import hashlib, sys
import numpy as np
from hfstream.quant import encode
from hfstream.quant.ggml import _open, _package_library

paths = [_package_library("libggml", ("lib64", "lib", "bin")), _package_library("llama_cpp", ("lib",))]
if None in paths:
    sys.exit(3)
x, weights = np.load(sys.argv[1]), np.load(sys.argv[2])
for path in paths:
    lib = _open(path)
    version = tuple(int(p) for p in lib.ggml_version().decode().split("."))
    assert encode.KQUANT_GGML_VERSIONS[0] <= version <= encode.KQUANT_GGML_VERSIONS[1], version
    for qt, size in ((12, 144), (13, 176), (14, 210)):
        for w in (None, weights):
            out = np.empty(x.size // 256 * size, np.uint8)
            lib.ggml_quantize_chunk(qt, x.ctypes.data, out.ctypes.data, 0, x.shape[0], x.shape[1],
                                    None if w is None else w.ctypes.data)
            print(path, qt, w is not None, hashlib.sha256(out.tobytes()).hexdigest())
"""


def test_both_ggmls_write_the_encoders_bytes(kernel, tmp_path):
    """The two ggml builds hfstream may load, libggml-python's 0.20.2 and llama-cpp-python's 0.25.3, write
    the encoder's bytes (in a child process: two libggml-base in this one could confuse llama.cpp's loading)."""
    import hashlib
    import sys

    x = _mixed_magnitudes(8)
    weights = (RNG.random(4096) * 3).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "w.npy", weights)
    run = subprocess.run([sys.executable, "-c", _BOTH_GGMLS, str(tmp_path / "x.npy"), str(tmp_path / "w.npy")],
                         capture_output=True, text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT)})
    if run.returncode == 3:
        pytest.skip("only one of libggml-python and llama-cpp-python installed")
    assert run.returncode == 0, run.stderr
    digests: dict[tuple[int, bool], set[str]] = {}
    libraries = set()
    for line in run.stdout.splitlines():
        path, qt, weighted, digest = line.split()
        libraries.add(path)
        digests.setdefault((int(qt), weighted == "True"), set()).add(digest)
    assert len(libraries) == 2 and len(digests) == 6
    for qt in TYPES:
        for w in (None, weights):
            ours = hashlib.sha256(_encode(kernel, x, qt, w)[0]).hexdigest()
            assert digests[(int(qt), w is not None)] == {ours}, qt.name


def test_mismatched_buffers_are_refused(kernel):
    def call(src=8192, dst=32 * 144, n_per_row=4096, weights=None, odd=32, qtype=12):
        return kernel.quantize(qtype, np.zeros(src, np.float32), np.zeros(dst, np.uint8), n_per_row,
                               weights, np.zeros(odd, np.uint8))

    assert call() == 0
    assert call(weights=np.ones(4096, np.float32)) == 0
    for bad in (dict(dst=32 * 144 + 1), dict(n_per_row=4000), dict(src=8192 + 256, dst=33 * 144, odd=33),
                dict(odd=31), dict(weights=np.zeros(4095, np.float32)), dict(n_per_row=0)):
        with pytest.raises(ValueError, match="do not match"):
            call(**bad)
    with pytest.raises(ValueError, match="not Q4_K"):
        call(qtype=2)
    with pytest.raises(TypeError):
        kernel.quantize(12, np.zeros(256, np.float32), bytes(144), 256, None, np.zeros(1, np.uint8))  # read-only


def test_threads_encode_at_once(kernel):
    x = _bf16(_normal(32))
    weights = (RNG.random(4096) * 3).astype(np.float32)
    jobs = [(qt, w) for qt in TYPES for w in (None, weights)]
    expected = [_reference(x, qt, w) for qt, w in jobs]
    start = threading.Barrier(len(jobs))

    def one(job):
        start.wait()
        return _encode(kernel, x, *job)[0]

    with ThreadPoolExecutor(len(jobs)) as pool:
        assert list(pool.map(one, jobs)) == expected


def test_the_build_never_fuses_a_multiply_and_an_add():
    """The reference rounds every product: the extension is declared with -ffp-contract=off, and its
    machine code holds no fused multiply-add (when objdump can say)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (ext,) = [e for e in config["tool"]["setuptools"]["ext-modules"] if e["name"] == "hfstream.quant._kquants"]
    assert "-ffp-contract=off" in ext["extra-compile-args"]
    if encode._kquants is None or shutil.which("objdump") is None:
        pytest.skip("no built extension or no objdump")
    code = subprocess.run(["objdump", "-d", encode._kquants.__file__], capture_output=True, text=True, check=True).stdout
    assert "vdivps" in code  # it is the encoder
    assert not re.search(r"\bv?f(n?m(add|sub)|madd|msub)\w*", code)


def test_a_q4_k_m_conversion_goes_through_it_with_llama_quantizes_bytes(kernel, fresh_hub, tmp_path, capsys, monkeypatch):
    """q4_k_m without and with an importance matrix (a MoE: one vector per expert): every Q4_K, Q5_K and
    Q6_K value through the encoder, none to ggml, and llama-quantize's bytes."""
    from .test_kquant import GOLDENS, check_case

    values = {}
    ggml_calls = []

    class Counting:
        @staticmethod
        def quantize(qtype, src, dst, n_per_row, weights, odd):
            values[qtype] = values.get(qtype, 0) + len(src)
            return kernel.quantize(qtype, src, dst, n_per_row, weights, odd)

    real = encode._ggml_quantize
    monkeypatch.setattr(encode, "_KQUANTS", Counting)
    monkeypatch.setattr(encode, "_ggml_quantize", lambda a, qt, im=None: ggml_calls.append(qt) or real(a, qt, im))
    for model, cid, fmt in (("tiny-llama-k", "q4_k_m", "gguf"), ("tiny-mixtral-k", "q4_k_m+imatrix", "dat")):
        values.clear()
        (tmp_path / cid).mkdir()
        path = check_case(model, cid, tmp_path / cid, capsys, monkeypatch, imatrix_format=fmt)
        monkeypatch.chdir(ROOT)
        golden = GOLDENS[model]
        k_values = {}
        for (_, shape), qtype in zip(golden["tensors"], golden["cases"][cid]["types"]):
            if QT[qtype] in TYPES:
                k_values[int(QT[qtype])] = k_values.get(int(QT[qtype]), 0) + int(np.prod(shape))
        assert set(k_values) >= {int(QT.Q4_K), int(QT.Q6_K)}
        assert values == k_values, path
    assert not set(ggml_calls) & set(TYPES)


@pytest.mark.slow
@pytest.mark.parametrize("qt", TYPES, ids=lambda t: t.name)
def test_many_weights_of_every_kind(kernel, qt):
    """16M values a type: bf16-, f16- and f32-valued weights at the scales of real models, heavy-tailed ones and
    mixed magnitudes, with and without importance weights."""
    for seed in range(16):
        rng = np.random.default_rng(seed)
        scale = np.float32(10.0 ** rng.uniform(-3, 0))
        x = rng.standard_normal((256, 4096), dtype=np.float32) * scale
        x = [_bf16(x), x.astype(np.float16).astype(np.float32), x,
             (rng.standard_t(3, (256, 4096)) * scale).astype(np.float32)][seed % 4]
        if seed % 5 == 4:
            x = _mixed_magnitudes(256)
        weights = None if seed % 2 else (rng.random(4096) ** 4 * 10).astype(np.float32)
        with np.errstate(over="ignore", under="ignore"):
            encoded, odd = _encode(kernel, x, qt, weights)
        assert not odd.any()
        assert encoded == _reference(x, qt, weights), seed
