"""Llama 3.1 rope scaling (``rope_freqs.weight``) against the reference's formula.

The reference (``LlamaModel.generate_extra_tensors``) computes the base frequencies with a torch
float32 ``pow`` and the factors with 0-d float32 tensors mixed with Python numbers. The golden of
``tiny-llama31`` checks one configuration end to end; here: the released Llama 3.x configurations
(no torch needed), and with torch the formula itself over many configurations: every step after the
power bit for bit, the power within an ulp or two (torch's ``powf`` is not correctly rounded, and which
implementation runs depends on the CPU, so the reference itself is not the same everywhere).
"""

from __future__ import annotations

import math
from hashlib import sha256

import numpy as np
import pytest

from hfstream.arch.llama import llama3_rope_factors, rope_base_freqs

# sha256 of the float32 bytes the reference writes (computed with torch 2.13 on x86-64)
RELEASED = [
    # (theta, head_dim, factor, low_freq_factor, high_freq_factor, original context), sha256
    ((500000.0, 128, 8.0, 1.0, 4.0, 8192),  # Llama 3.1 8B, 70B, 405B
     "8b516af9cb5db26ed32831eb6f493dd620843d1cd69ca7bbad760c76061cd565"),
    ((500000.0, 64, 32.0, 1.0, 4.0, 8192),  # Llama 3.2 1B
     "d25a6d176d9313062b8f86440c88649f9e568d573ea66bfa4e85e2424cf35633"),
    ((500000.0, 128, 32.0, 1.0, 4.0, 8192),  # Llama 3.2 3B
     "af00a6286e9cba87733f6e5dd6b09a2bffd7326e6ac33d346f83f7c2f4857828"),
    ((500000.0, 16, 8.0, 1.0, 4.0, 8192),  # the tiny-llama31 fixture
     "74606f86276578ef0da1a6ca4b1c154aa332753bb09b6285453b774797a33865"),
]


def ours(theta, dim, factor, low, high, original) -> np.ndarray:
    return llama3_rope_factors(rope_base_freqs(theta, dim), factor=factor, low_freq_factor=low,
                               high_freq_factor=high, original_context=original)


@pytest.mark.parametrize("cfg, digest", RELEASED, ids=["llama3.1", "llama3.2-1b", "llama3.2-3b", "fixture"])
def test_released_configurations_are_bit_identical(cfg, digest):
    values = ours(*cfg)
    assert values.dtype == np.float32 and values.shape == (cfg[1] // 2,)
    assert sha256(values.tobytes()).hexdigest() == digest


def test_shape_of_the_factors():
    values = ours(500000.0, 128, 8.0, 1.0, 4.0, 8192)
    assert values[0] == 1.0 and values[-1] == 8.0
    assert np.all(np.diff(values) >= 0)  # longer wavelengths are scaled more


# --- against the reference's formula, run with torch ---------------------------------------------


def _reference_freqs(theta, dim):
    import torch

    return 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))


def _reference_factors(freqs, factor, low_freq_factor, high_freq_factor, old_context_len):
    """The reference's loop (as in conversion/llama.py), on torch float32 frequencies."""
    import torch

    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    rope_factors = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < high_freq_wavelen:
            rope_factors.append(1)
        elif wavelen > low_freq_wavelen:
            rope_factors.append(factor)
        else:
            smooth = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
            rope_factors.append(1 / ((1 - smooth) / factor + smooth))
    return torch.tensor(rope_factors, dtype=torch.float32).numpy()


def _configs(n, seed):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        low = float(rng.choice([1.0, rng.uniform(0.5, 3.0)]))
        yield (float(rng.choice([10000.0, 500000.0, 1e6, rng.uniform(1e3, 1e7)])),
               int(rng.choice([8, 16, 32, 64, 80, 96, 128, 256])),
               float(rng.choice([8.0, 32.0, rng.uniform(1.5, 64.0)])),
               low,
               float(rng.choice([4.0, low + rng.uniform(0.5, 8.0)])),
               int(rng.choice([2048, 8192, 32768])) if rng.random() < 0.5 else float(rng.uniform(1000.0, 20000.0)))


def test_scaling_is_bit_identical_to_the_reference_given_its_frequencies():
    pytest.importorskip("torch")
    for theta, dim, factor, low, high, original in _configs(400, seed=0):
        freqs = _reference_freqs(theta, dim)
        expected = _reference_factors(freqs, factor, low, high, original)
        got = llama3_rope_factors(freqs.numpy(), factor=factor, low_freq_factor=low, high_freq_factor=high,
                                  original_context=original)
        assert got.tobytes() == expected.tobytes(), (theta, dim, factor, low, high, original)


def test_base_frequencies_are_within_two_ulps_of_torch():
    """The power is at most one ulp off torch's; its reciprocal's rounding can make that two."""
    pytest.importorskip("torch")
    for theta in (10000.0, 500000.0, 1e6, 123456.7, 5e6):
        for dim in (16, 32, 64, 80, 96, 128, 256):
            expected = _reference_freqs(theta, dim).numpy()
            got = rope_base_freqs(theta, dim)
            ulps = np.abs(got.view(np.int32).astype(np.int64) - expected.view(np.int32).astype(np.int64))
            assert ulps.max() <= 2, (theta, dim)
            if theta == 500000.0 and dim in (64, 128):  # what released Llama 3 models use
                assert ulps.max() == 0


def test_released_configurations_match_torch_here():
    pytest.importorskip("torch")
    for (theta, dim, factor, low, high, original), _ in RELEASED:
        expected = _reference_factors(_reference_freqs(theta, dim), factor, low, high, original)
        assert ours(theta, dim, factor, low, high, original).tobytes() == expected.tobytes()
