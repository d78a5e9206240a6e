"""Lazy transforms: shapes known up front, values as the reference computes them."""

import numpy as np

from hfstream.graph import AddScalar, Load, PermuteHeads, SliceRows, Stack, Transpose, decode
from hfstream.safetensors import SourceTensor


def src(name, dtype, shape, start=0):
    size = int(np.prod(shape)) * {"F32": 4, "F16": 2, "BF16": 2}[dtype]
    return SourceTensor("f", name, dtype, tuple(shape), start, start + size)


def test_bf16_decodes_exactly_to_f32_and_f16_stays_f16():
    values = np.array([1.0, -2.5, 3.140625, 0.0], dtype=np.float32)
    bf16 = (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    out = decode(src("x", "BF16", [4]), bf16)
    assert out.dtype == np.float32 and np.array_equal(out, values)
    f16 = values.astype(np.float16)
    assert decode(src("y", "F16", [4]), f16.tobytes()).dtype == np.float16


def test_permute_heads_interleaves_the_halves_of_each_head():
    n_head, head_dim, cols = 2, 4, 3
    w = np.arange(n_head * head_dim * cols, dtype=np.float32).reshape(n_head * head_dim, cols)
    s = src("q", "F32", w.shape)
    out = PermuteHeads(Load(s), n_head).evaluate({s: w.tobytes()})
    # head h, rotary pair i: rows (i, i + head_dim/2) of the HF layout become rows (2i, 2i+1)
    for h in range(n_head):
        for i in range(head_dim // 2):
            assert np.array_equal(out[h * head_dim + 2 * i], w[h * head_dim + i])
            assert np.array_equal(out[h * head_dim + 2 * i + 1], w[h * head_dim + head_dim // 2 + i])


def test_shapes_are_known_without_data():
    a, b = src("a", "BF16", [3, 8]), src("b", "BF16", [3, 8], 48)
    assert Stack((Load(a), Load(b))).shape == (2, 3, 8)
    assert Transpose(Load(a)).shape == (8, 3)
    assert SliceRows(Load(a), 0, 2).shape == (2, 8)
    assert AddScalar(Load(a), 1.0).dtype == np.float32
    assert list(Stack((Load(a), Load(b))).leaves()) == [a, b]
