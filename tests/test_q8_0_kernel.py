"""hfstream's compiled Q8_0 encoder (hfstream/quant/_q8_0.c): ggml's reference bytes, for every input."""

from __future__ import annotations

import platform
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from gguf import GGMLQuantizationType as QT

from hfstream.quant import encode
from hfstream.quant.floats import _cpu_flags


def _can_build_and_run_here() -> bool:
    return (platform.system() == "Linux" and platform.machine() == "x86_64" and shutil.which("cc") is not None
            and {"avx2", "f16c"} <= _cpu_flags())


@pytest.fixture
def kernel():
    k = encode._KERNEL
    if k is None:
        if _can_build_and_run_here():
            pytest.fail("hfstream.quant._q8_0 was not built or does not run, on a machine that can build and run it")
        pytest.skip("no compiled Q8_0 encoder on this machine")
    return k


def _reference(x: np.ndarray) -> bytes:
    return encode._ggml_quantize(x, QT.Q8_0).tobytes()


def _encode(kernel, x: np.ndarray) -> tuple[bytes, int]:
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty(x.size // 32 * 34, np.uint8)
    odd = kernel.quantize(x.reshape(-1), out)
    return out.tobytes(), odd


def _ties(x: np.ndarray) -> int:
    """How many values of ``x`` the reference scales to exactly n + 0.5 (where rounding modes differ)."""
    blocks = x.reshape(-1, 32).astype(np.float32)
    d = np.abs(blocks).max(axis=1, keepdims=True) / np.float32(127)
    with np.errstate(divide="ignore"):
        scale = np.where(d != 0, np.float32(1) / d, np.float32(0)).astype(np.float32)
    t = blocks * scale
    return int(np.count_nonzero(np.abs(t - np.trunc(t)) == 0.5))


def _bf16(values: np.ndarray) -> np.ndarray:
    """``values`` cut to bf16 precision, as a bf16 checkpoint decodes."""
    return (values.astype(np.float32).view(np.uint32) & 0xFFFF0000).view(np.float32)


RNG = np.random.default_rng(20261121)


def _half_multiples(n: int) -> np.ndarray:
    """Blocks whose max is 127 * 2^k, so that every value is scaled by a power of two: many exact halves."""
    x = (RNG.integers(-254, 255, (n, 32)) / 2).astype(np.float32)
    x[:, 0] = 127.0
    return x * np.float32(2.0) ** RNG.integers(-20, 20, (n, 1)).astype(np.float32)


def _halves_of_the_max(n: int) -> np.ndarray:
    """bf16 blocks where some values are exactly half the block's max (scaled to 63.5)."""
    x = _bf16(RNG.standard_normal((n, 32)) * 0.02)
    m = np.abs(x).max(axis=1)
    x[:, 5] = m / 2
    x[:, 9] = -m / 2
    return x


CASES = {
    "f32 weights": lambda: RNG.standard_normal((256, 4096)).astype(np.float32) * 0.02,
    "bf16 weights": lambda: _bf16(RNG.standard_normal((256, 4096)) * 0.02),
    "f16 weights": lambda: (RNG.standard_normal((64, 4096)) * 0.02).astype(np.float16).astype(np.float32),
    "max 127*2^k": lambda: _half_multiples(4096),
    "half the max": lambda: _halves_of_the_max(4096),
    "small integers": lambda: RNG.integers(-300, 300, (512, 256)).astype(np.float32),
    "huge: d overflows f16": lambda: RNG.standard_normal((64, 256)).astype(np.float32) * np.float32(1e37),
    "tiny: d is an f16 subnormal or zero": lambda: RNG.standard_normal((64, 256)).astype(np.float32) * np.float32(1e-9),
    "zeros and signed zeros": lambda: np.where(RNG.random((64, 256)) < 0.5, -0.0, 0.0).astype(np.float32),
    "one value per block": lambda: np.where(RNG.random((64, 256)) < 1 / 32, 1.5, 0.0).astype(np.float32),
}


@pytest.mark.parametrize("case", CASES)
def test_the_reference_bytes(kernel, case):
    x = CASES[case]()
    encoded, odd = _encode(kernel, x)
    assert odd == 0
    assert encoded == _reference(x)


def test_the_cases_hold_the_ties_a_round_half_to_even_encoder_gets_wrong():
    assert _ties(CASES["bf16 weights"]()) > 1000
    assert _ties(CASES["max 127*2^k"]()) > 10_000
    assert _ties(CASES["half the max"]()) > 4000


def test_every_float_near_a_half_integer_rounds_as_roundf(kernel):
    """A block with max 127 has the scale 1: each value is rounded as it is. Every float within
    64 ulps of n + 0.5 and of n, for every n the encoder can produce, both signs."""
    targets = np.concatenate([np.arange(0, 128, dtype=np.float32), np.arange(0, 127, dtype=np.float32) + 0.5])
    near = targets.view(np.int32)[:, None] + np.arange(-64, 65, dtype=np.int32)
    values = near.reshape(-1).view(np.float32)
    values = values[(values >= 0) & (values <= 127)]
    values = np.concatenate([values, -values])
    values = np.concatenate([values, np.zeros(-len(values) % 31, np.float32)]).reshape(-1, 31)
    x = np.concatenate([np.full((len(values), 1), 127, np.float32), values], axis=1)
    encoded, odd = _encode(kernel, x)
    assert odd == 0
    assert encoded == _reference(x)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e-37])
def test_blocks_it_cannot_promise_are_counted_and_quantize_falls_back_to_ggml(kernel, bad):
    x = _bf16(RNG.standard_normal((8, 256)) * 0.02)
    x[3, 64:96] = RNG.standard_normal(32) * np.float32(1e-37)  # d subnormal: x*id may leave int8
    x[5, 7] = bad
    _, odd = _encode(kernel, x)
    assert odd == 1 + (not np.isfinite(bad))  # the tiny block, and the block holding `bad` unless finite
    with np.errstate(invalid="ignore"):
        assert encode.quantize(x, QT.Q8_0, engine="ggml").tobytes() == _reference(x)


def test_quantize_uses_it_for_q8_0_under_ggml_only(kernel, monkeypatch):
    calls = []

    class Counting:
        @staticmethod
        def quantize(src, dst):
            calls.append(len(src))
            return kernel.quantize(src, dst)

    monkeypatch.setattr(encode, "_KERNEL", Counting)
    x = _bf16(RNG.standard_normal((4, 64)))
    assert encode.quantize(x, QT.Q8_0, engine="ggml").tobytes() == _reference(x)
    assert encode.quantize(x.astype(np.float16), QT.Q8_0, engine="ggml").tobytes() == _reference(x.astype(np.float16))
    assert calls == [256, 256]
    encode.quantize(x, QT.Q8_0, engine="numpy")
    encode.quantize(x, QT.Q4_0, engine="ggml")
    assert len(calls) == 2


def test_mismatched_buffers_are_refused(kernel):
    with pytest.raises(ValueError, match="do not match"):
        kernel.quantize(np.zeros(64, np.float32), np.zeros(67, np.uint8))
    with pytest.raises(ValueError, match="do not match"):
        kernel.quantize(np.zeros(33, np.float32), np.zeros(34, np.uint8))
    with pytest.raises(TypeError):
        kernel.quantize(np.zeros(32, np.float32), bytes(34))  # read-only output


def test_threads_encode_at_once(kernel):
    x = _bf16(RNG.standard_normal((64, 4096)))
    expected = _reference(x)
    start = threading.Barrier(4)

    def one(_):
        start.wait()
        return _encode(kernel, x)[0]

    with ThreadPoolExecutor(4) as pool:
        assert all(r == expected for r in pool.map(one, range(4)))


@pytest.mark.slow
def test_every_float_of_the_encoders_range_rounds_as_roundf(kernel):
    """All 2.1 billion floats in [-127, 127], each at scale 1 (blocks whose max is 127)."""
    top = int(np.float32(127).view(np.int32))
    step = 31 * (1 << 21)
    for start in range(0, top + 1, step):
        bits = np.arange(start, min(start + step, top + 1), dtype=np.int32)
        for sign in (0, np.int32(-(2**31))):
            values = (bits | sign).view(np.float32)
            values = np.concatenate([values, np.zeros(-len(values) % 31, np.float32)]).reshape(-1, 31)
            x = np.concatenate([np.full((len(values), 1), 127, np.float32), values], axis=1)
            encoded, odd = _encode(kernel, x)
            assert odd == 0
            assert encoded == _reference(x), f"floats from bits {start:#x}, sign {sign}"


def test_a_q8_0_conversion_goes_through_it_with_the_reference_converters_bytes(
        kernel, fresh_hub, tmp_path, capsys, monkeypatch):
    from .goldens.cases import cases
    from .goldens.digest import diff_digests, digest_gguf
    from .test_convert import comparable, convert

    (case,) = [c for c in cases() if c.repo_id.endswith("/tiny-llama-sharded") and c.outtype == "q8_0"
               and c.revision == "main"]
    values = []

    class Counting:
        @staticmethod
        def quantize(src, dst):
            values.append(len(src))  # float32 values
            return kernel.quantize(src, dst)

    monkeypatch.setattr(encode, "_KERNEL", Counting)
    rc, _, err = convert([case.repo_id, "--outtype", "q8_0", "-o", str(tmp_path), "-q"], capsys)
    assert rc == 0, err
    (written,) = tmp_path.glob("*.gguf")
    ours = digest_gguf(written)
    assert diff_digests(comparable(case.golden()), comparable(ours)) == []
    q8_values = sum(int(np.prod(t["shape"])) for t in ours["tensors"] if t["type"] == "Q8_0")
    assert q8_values > 0 and sum(values) == q8_values
