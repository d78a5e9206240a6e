"""Llama 4's fused experts as graph nodes, cut into blocks as the pipeline cuts them.

The end-to-end bytes and keys against the reference converter are the goldens' (``test_convert``,
``test_kquant``, ``test_llamacpp_decode``); here the split is checked against numpy written out as
the reference's arithmetic reads: ``gate_up_proj.transpose(-1, -2).split(ff, dim=-2)``.
"""

from __future__ import annotations

import numpy as np
import pytest

from hfstream.graph import Load, SliceCols, SwapLastAxes
from hfstream.safetensors import SourceTensor


def _source(name: str, shape: tuple[int, ...]) -> SourceTensor:
    size = int(np.prod(shape)) * 4
    return SourceTensor(file="model.safetensors", name=name, dtype="F32", shape=shape, start=0, end=size)


def _data(node, raw: bytes, r0: int, r1: int) -> dict:
    """The bytes of ``node.spans(r0, r1)`` cut from the file: a unit gets no more."""
    return {s: raw[s.start:s.end] for s in node.spans(r0, r1)}


def test_gate_and_up_are_the_transposed_column_halves_one_expert_at_a_time():
    experts, hidden, ff = 3, 4, 5
    w = np.random.default_rng(7).standard_normal((experts, hidden, 2 * ff)).astype(np.float32)
    raw = w.tobytes()
    src = Load(_source("x.experts.gate_up_proj", w.shape))
    halves = np.split(w.transpose(0, 2, 1), 2, axis=1)  # the reference: transpose(-1, -2), split on dim -2
    for (start, stop), want in zip(((0, ff), (ff, 2 * ff)), halves):
        node = SwapLastAxes(SliceCols(src, start, stop))
        assert node.shape == want.shape == (experts, ff, hidden) and node.row_align() == ff
        for e in range(experts):
            r0, r1 = e * ff, (e + 1) * ff
            assert node.spans(r0, r1) == src.spans(e * hidden, (e + 1) * hidden)  # that expert's rows only
            assert np.array_equal(node.eval_rows(_data(node, raw, r0, r1), r0, r1), want[e])


def test_column_slice_of_any_block_of_rows():
    w = np.arange(6 * 8, dtype=np.float32).reshape(6, 8)
    node = SliceCols(Load(_source("x", w.shape)), 2, 7)
    assert node.shape == (6, 5) and node.row_align() == 1
    for r0 in range(6):
        for r1 in range(r0 + 1, 7):
            got = node.eval_rows(_data(node, w.tobytes(), r0, r1), r0, r1)
            assert got.flags.c_contiguous and np.array_equal(got, w[r0:r1, 2:7])


@pytest.mark.parametrize("start, stop", [(3, 3), (-1, 2), (0, 9)])
def test_a_column_slice_outside_the_row_is_refused(start, stop):
    with pytest.raises(ValueError):
        SliceCols(Load(_source("x", (2, 8))), start, stop)
