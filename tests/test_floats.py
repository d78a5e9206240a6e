"""bf16/f16 <-> f32 through ggml-cpu: numpy's bits for every input, and used only where it can run."""

from __future__ import annotations

import numpy as np
import pytest

from hfstream.quant import floats


@pytest.fixture
def fast():
    if floats.engine() != "ggml-cpu":
        pytest.skip("ggml-cpu's conversions are not usable on this machine")
    return floats


@pytest.fixture
def reload_floats(monkeypatch):
    """Forget which library was chosen, before and after the test."""
    monkeypatch.setattr(floats, "_TRIED", False)
    monkeypatch.setattr(floats, "_LIB", None)
    yield
    floats._TRIED, floats._LIB = False, None


def _bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.uint32 if a.dtype.itemsize == 4 else np.uint16)


def test_every_bf16_value_widens_to_numpys_bits(fast):
    raw = np.arange(2**16, dtype=np.uint32).astype("<u2")
    expected = np.left_shift(raw, 16, out=np.empty(raw.shape, np.uint32), dtype=np.uint32)
    assert np.array_equal(_bits(fast.bf16_to_f32(raw)), expected)


def test_every_f16_value_widens_as_numpy_does_nans_included(fast):
    halves = np.arange(2**16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    assert np.array_equal(_bits(fast.f16_to_f32(halves)), _bits(halves.astype(np.float32)))
    finite = halves[np.isfinite(halves)]  # the path without the NaN redo
    assert np.array_equal(_bits(fast.f16_to_f32(finite)), _bits(finite.astype(np.float32)))


def test_f32_to_f16_rounds_as_numpy_does(fast):
    rng = np.random.default_rng(7)
    patterns = rng.integers(0, 2**32, 2**22, dtype=np.uint64).astype(np.uint32).view(np.float32)
    finite = patterns[np.isfinite(patterns)]
    edges = np.array([0.0, -0.0, 65504.0, 65519.99, 65520.0, 1e30, -1e30, np.inf, -np.inf, 5.96e-8, 2.9802322e-08,
                      2.98e-8, 1.00048828125, 1.000732421875, 6.1035156e-05, 6.1e-05, 3.0517578e-05], np.float32)
    for values in (finite, edges, (rng.standard_normal(100_003) * 0.02).astype(np.float32)):
        with np.errstate(over="ignore"):
            expected = values.astype(np.float16)
        assert np.array_equal(_bits(fast.f32_to_f16(values)), _bits(expected))
    # NaN payloads (signalling ones too) come out as numpy makes them
    with_nans = np.concatenate([finite[:1000], np.array([0x7F800001, 0xFFC00123, 0x7FBFFFFF], np.uint32).view(np.float32)])
    with np.errstate(over="ignore"):
        assert np.array_equal(_bits(fast.f32_to_f16(with_nans)), _bits(with_nans.astype(np.float16)))


def test_non_contiguous_input(fast):
    x = np.arange(64, dtype=np.float32).reshape(8, 8).T
    assert np.array_equal(fast.f32_to_f16(x), x.astype(np.float16))
    assert fast.f32_to_f16(x).shape == (8, 8)


def test_numpy_when_the_quant_engine_is_numpy(reload_floats, monkeypatch):
    monkeypatch.setenv("HFSTREAM_QUANT_ENGINE", "numpy")
    assert floats.engine() == "numpy"
    halves = np.array([1.5, -2.25], np.float16)
    assert np.array_equal(floats.f16_to_f32(halves), halves.astype(np.float32))


def test_not_used_on_a_cpu_without_what_the_library_was_built_for(reload_floats, monkeypatch):
    if floats.engine() != "ggml-cpu":
        pytest.skip("ggml-cpu's conversions are not usable on this machine")
    real = floats._cpu_flags()
    lib = floats._lib()
    built_with = [floats._X86_FLAGS[n] for n in floats._X86_FLAGS
                  if getattr(lib, f"ggml_cpu_has_{n}", None) is not None and getattr(lib, f"ggml_cpu_has_{n}")()]
    assert "avx2" in built_with
    # a CPU without any one of them: AVX2/FMA/F16C are refused before loading, BMI2/SSSE3 after
    for flag in built_with:
        floats._TRIED, floats._LIB = False, None
        monkeypatch.setattr(floats, "_cpu_flags", lambda: real - {flag})
        assert floats.engine() == "numpy", flag
