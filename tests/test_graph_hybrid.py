"""The nodes the hybrid families need (Mamba-2, short convolutions, muP multipliers, fused experts):
values as the reference computes them with torch, checked against values worked out here by hand."""

import math

import numpy as np
import pytest

from hfstream.graph import Load, NegExp, Reshape, Scale, ScaleRowBlocks, SliceInner
from tests.test_graph import FakeFile, whole


def test_negexp_is_minus_e_to_the_x_correctly_rounded_in_f32():
    x = np.array([0.0, 1.0, -1.0, 2.5, 0.6931471805599453], dtype=np.float32)
    f = FakeFile()
    out = whole(f, NegExp(Load(f.add("A_log", x))))
    assert out.dtype == np.float32
    # math.exp is double precision; one rounding to f32, then the sign
    assert [float(v) for v in out] == [-float(np.float32(math.exp(float(v)))) for v in x]
    assert out[0] == -1.0 and out[1] == np.float32(-2.7182817)


def test_negexp_of_f16_stays_f16():
    x = np.array([0.5, 3.0], dtype=np.float16)
    f = FakeFile()
    out = whole(f, NegExp(Load(f.add("A_log", x, "F16"))))
    assert out.dtype == np.float16
    assert list(out) == [np.float16(-math.exp(0.5)), np.float16(-math.exp(3.0))]


def test_scale_rounds_the_multiplier_to_f32_first():
    # 5.656854249492381 (Falcon-H1's embedding multiplier) is not an f32: torch multiplies by its f32 rounding
    c = 5.656854249492381
    x = np.array([[1.0, 3.0], [0.1, -7.5]], dtype=np.float32)
    f = FakeFile()
    out = whole(f, Scale(Load(f.add("w", x)), c))
    c32 = np.float32(c)
    assert out.dtype == np.float32
    assert [float(v) for v in out.ravel()] == [float(np.float32(float(v) * float(c32))) for v in x.ravel()]
    assert out[0, 0] == c32  # exactly the rounded multiplier, not the double


def test_scale_of_f16_is_computed_in_f32_and_rounded_once():
    x = np.array([[0.3333, 1.5]], dtype=np.float16)
    f = FakeFile()
    out = whole(f, Scale(Load(f.add("w", x, "F16")), 0.1))
    assert out.dtype == np.float16
    expected = [np.float16(np.float32(float(v) * float(np.float32(0.1)))) for v in x.ravel()]
    assert list(out.ravel()) == expected


def test_scale_row_blocks_multiplies_each_block_by_its_factor_and_blocks_of_rows_agree():
    x = np.arange(1, 13, dtype=np.float32).reshape(6, 2)
    f = FakeFile()
    node = ScaleRowBlocks(Load(f.add("in_proj", x)), ((2, 10.0), (3, 0.5), (6, -1.0)))
    out = whole(f, node)
    assert out.tolist() == [[10, 20], [30, 40], [2.5, 3], [-7, -8], [-9, -10], [-11, -12]]
    # any block of rows gives the same rows as the whole
    for r0, r1 in ((0, 1), (1, 4), (2, 3), (4, 6)):
        assert np.array_equal(node.eval_rows(f.data(node, r0, r1), r0, r1), out[r0:r1])


def test_scale_row_blocks_must_cover_the_rows():
    f = FakeFile()
    with pytest.raises(ValueError):
        ScaleRowBlocks(Load(f.add("w", np.zeros((4, 2), np.float32))), ((2, 1.0), (3, 1.0)))


def test_slice_inner_takes_rows_of_each_matrix_and_reads_whole_matrices():
    # Granite's input_linear [E, 2 ff, h]: gate = rows [0, ff) of each expert, up = rows [ff, 2 ff)
    e, ff, h = 3, 2, 4
    x = np.arange(e * 2 * ff * h, dtype=np.float32).reshape(e, 2 * ff, h)
    f = FakeFile()
    src = Load(f.add("input_linear", x))
    gate, up = SliceInner(src, 0, ff), SliceInner(src, ff, 2 * ff)
    assert gate.shape == up.shape == (e, ff, h)
    assert np.array_equal(whole(f, gate), np.stack([x[i, :ff] for i in range(e)]))
    assert np.array_equal(whole(f, up), np.stack([x[i, ff:] for i in range(e)]))
    # expert 1's up half reads exactly its rows [ff, 2 ff): the bytes of no other half
    (span,) = up.spans(ff, 2 * ff)
    row = h * 4
    assert (span.start, span.end) == (src.src.start + (2 * ff + ff) * row, src.src.start + 4 * ff * row)
    assert np.array_equal(up.eval_rows(f.data(up, ff, 2 * ff), ff, 2 * ff), x[1, ff:])
    # a block across experts: one range per expert, the gate and up halves of all experts disjoint
    assert np.array_equal(gate.eval_rows(f.data(gate, 1, 5), 1, 5), np.concatenate([x[0, 1:ff], x[1, :ff], x[2, :1]]))
    halves = sorted((sp.start, sp.end) for node in (gate, up) for sp in node.spans(0, node.rows))
    assert all(a[1] <= b[0] for a, b in zip(halves, halves[1:]))
    assert sum(b - a for a, b in halves) == x.nbytes


def test_reshape_squeezes_a_conv_weight_row_for_row_and_makes_columns_whole():
    conv = np.arange(24, dtype=np.float32).reshape(6, 1, 4)  # [C, 1, K]
    f = FakeFile()
    squeezed = Reshape(Load(f.add("conv1d", conv)), (6, 4))
    assert squeezed.row_align() == 1
    assert np.array_equal(whole(f, squeezed), conv[:, 0, :])
    a = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    column = Reshape(Load(f.add("A", a)), (3, 1))  # Mamba-2's A and D as [n, 1]
    assert column.row_align() == 3  # a block holds the whole input row: all 3 output rows
    assert whole(f, column).tolist() == [[1.0], [2.0], [3.0]]
    assert column.eval_rows(f.data(column, 0, 3), 0, 3).tolist() == [[1.0], [2.0], [3.0]]
    with pytest.raises(ValueError):
        Reshape(Load(f.add("n", a)), (2, 2))
