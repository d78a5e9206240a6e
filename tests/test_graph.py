"""Lazy transforms: shapes known up front, values as the reference computes them, block by block."""

import math

import numpy as np
import pytest

from hfstream.graph import (
    AddScalar,
    Constant,
    GatherRows,
    Load,
    NegExp,
    PadRows,
    PermuteCols,
    PermuteHeads,
    Reshape,
    Scale,
    Select,
    SliceRows,
    SliceStackRows,
    Softplus,
    Stack,
    SwapLastAxes,
    Transpose,
    decode,
    same_graph,
)
from hfstream.safetensors import SourceTensor


class FakeFile:
    """Source tensors laid out back to back in one byte string."""

    def __init__(self):
        self.blob = bytearray()

    def add(self, name, array: np.ndarray, dtype="F32") -> SourceTensor:
        if dtype == "BF16":
            raw = (array.astype(np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
        else:
            raw = array.astype({"F32": "<f4", "F16": "<f2"}[dtype]).tobytes()
        start = len(self.blob)
        self.blob += raw
        return SourceTensor("f", name, dtype, tuple(array.shape), start, start + len(raw))

    def data(self, node, r0, r1):
        return {s: bytes(self.blob[s.start:s.end]) for s in node.spans(r0, r1)}


def whole(f, node):
    return node.evaluate(f.data(node, 0, node.rows))


def test_bf16_decodes_exactly_to_f32_and_f16_stays_f16():
    values = np.array([1.0, -2.5, 3.140625, 0.0], dtype=np.float32)
    bf16 = (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    out = decode(SourceTensor("f", "x", "BF16", (4,), 0, 8), bf16)
    assert out.dtype == np.float32 and np.array_equal(out, values)
    f16 = values.astype(np.float16)
    assert decode(SourceTensor("f", "y", "F16", (4,), 0, 8), f16.tobytes()).dtype == np.float16


def test_permute_heads_interleaves_the_halves_of_each_head():
    n_head, head_dim, cols = 2, 4, 3
    w = np.arange(n_head * head_dim * cols, dtype=np.float32).reshape(n_head * head_dim, cols)
    f = FakeFile()
    out = whole(f, PermuteHeads(Load(f.add("q", w)), n_head))
    # head h, rotary pair i: rows (i, i + head_dim/2) of the HF layout become rows (2i, 2i+1)
    for h in range(n_head):
        for i in range(head_dim // 2):
            assert np.array_equal(out[h * head_dim + 2 * i], w[h * head_dim + i])
            assert np.array_equal(out[h * head_dim + 2 * i + 1], w[h * head_dim + head_dim // 2 + i])


def test_shapes_are_known_without_data():
    a = SourceTensor("f", "a", "BF16", (3, 8), 0, 48)
    b = SourceTensor("f", "b", "BF16", (3, 8), 48, 96)
    assert Stack((Load(a), Load(b))).shape == (2, 3, 8)
    assert Transpose(Load(a)).shape == (8, 3)
    assert SliceRows(Load(a), 0, 2).shape == (2, 8)
    assert AddScalar(Load(a), 1.0).dtype == np.float32
    assert list(Stack((Load(a), Load(b))).leaves()) == [a, b]


def test_pad_rows_appends_zero_rows_in_the_source_dtype_and_reads_nothing_for_them():
    rng = np.random.default_rng(1)
    f = FakeFile()
    w = rng.standard_normal((5, 8)).astype(np.float16)
    node = PadRows(Load(f.add("emb", w, "F16")), 7)
    assert node.shape == (7, 8) and node.dtype == np.float16
    out = whole(f, node)
    assert out.dtype == np.float16
    assert np.array_equal(out[:5], w) and not out[5:].any() and not np.signbit(out[5:]).any()
    assert node.spans(5, 7) == []
    assert node.spans(3, 7) == Load(node.x.src).spans(3, 5)
    tail = node.eval_rows(f.data(node, 4, 7), 4, 7)
    assert np.array_equal(tail, np.concatenate([w[4:5], np.zeros((2, 8), np.float16)]))


def _nodes():
    rng = np.random.default_rng(0)
    f = FakeFile()
    m = lambda *s: rng.standard_normal(s).astype(np.float32)
    q = f.add("q", m(16, 8), "BF16")
    experts = [f.add(f"e{i}", m(6, 8), "F16") for i in range(3)]
    emb = f.add("emb", m(10, 8))
    conv = f.add("conv", m(8, 12))
    norm = f.add("norm", m(8))
    conv3 = f.add("conv3", m(8, 1, 12), "BF16")
    fused = f.add("fused", m(3, 4, 8), "BF16")
    half = f.add("half", m(2, 8), "F16")
    patch = f.add("patch", m(6, 4 * 3), "BF16")
    conv3d = f.add("conv3d", m(4, 3, 2, 2, 5))
    bias = f.add("bias", m(12))
    scalar = f.add("scalar", np.float32(0.75).reshape(()), "BF16")
    return f, {
        "load": Load(emb),
        "permute": PermuteHeads(Load(q), 4),
        "stack": Stack(tuple(Load(e) for e in experts)),
        "stack-permuted": Stack((PermuteHeads(Load(q), 4), PermuteHeads(Load(q), 4))),
        "add": AddScalar(Load(norm), 1.0),
        "transpose": Transpose(Load(conv)),
        "slice": SliceRows(Load(emb), 2, 9),
        "pad": PadRows(Load(emb), 13),
        "pad-stacked": PadRows(Stack(tuple(Load(e) for e in experts)), 5),
        "constant": Constant(np.arange(12, dtype=np.float32).reshape(3, 4)),
        "reshape": Reshape(Load(conv3), (8, 12)),
        "reshape-rows": Reshape(Load(conv), (12, 8)),
        "gather": GatherRows(Load(emb), ((6, 2), (0, 3), (8, 2), (3, 1)), (8, 8)),
        "gather-experts": GatherRows(Load(fused), ((0, 2), (4, 2), (8, 2)), (3, 2, 8)),
        "gather-squeezed": GatherRows(Reshape(Load(conv3), (8, 12)), ((4, 4), (0, 4)), (8, 12)),
        "permute-cols": PermuteCols(Load(emb), (7, 6, 5, 4, 0, 1, 2, 3)),
        "negexp": NegExp(PermuteCols(Load(norm), (1, 0, 3, 2, 5, 4, 7, 6))),
        "negexp-f16": NegExp(Load(half)),
        "reshape-finer": Reshape(Load(emb), (20, 4)),
        "reshape-coarser": Reshape(Load(emb), (5, 16)),
        "reshape-uneven": Reshape(Load(emb), (16, 5)),
        "reshape-scalar": Reshape(Load(scalar), (1,)),
        "patch-kernel": Reshape(SwapLastAxes(Reshape(Load(patch), (6, 4, 3))), (6, 3, 2, 2)),
        "select": Select(Load(conv3d), 2, 1),
        "select-permuted": Select(Reshape(PermuteHeads(Load(q), 4), (4, 2, 2, 8)), 1, 0),
        "slice-1d": SliceRows(Load(bias), 4, 8),
        "softplus": Softplus(Load(norm)),
    }


@pytest.mark.parametrize("name", list(_nodes()[1]))
def test_blocks_of_rows_reassemble_the_whole_and_need_disjoint_bytes(name):
    f, nodes = _nodes()
    node = nodes[name]
    full = whole(f, node)
    assert full.shape == node.shape and full.dtype == node.dtype
    align = node.row_align()
    if align is None:
        return
    blocks, spans = [], []
    for r0 in range(0, node.rows, align):
        r1 = min(r0 + align, node.rows)
        blocks.append(node.eval_rows(f.data(node, r0, r1), r0, r1))
        spans += node.spans(r0, r1)
    assert np.array_equal(np.concatenate(blocks).reshape(node.shape), full)
    if name != "stack-permuted":  # that one reads the same source twice on purpose
        ordered = sorted((s.start, s.end) for s in spans)
        assert all(a[1] <= b[0] for a, b in zip(ordered, ordered[1:]))


def test_slice_stack_rows_cuts_the_same_rows_of_every_matrix_block_by_block():
    """GraniteMoE's fused gate/up: rows [start, stop) of each expert's matrix, fetched as exactly those bytes."""
    experts, rows, cols = 3, 6, 4
    w = np.arange(experts * rows * cols, dtype=np.float32).reshape(experts, rows, cols)
    f = FakeFile()
    src = f.add("input_linear", w, "F16")
    node = SliceStackRows(Load(src), 2, 5)
    assert node.shape == (3, 3, 4) and node.dtype == np.float16 and node.row_align() == 1
    expected = np.stack([w[e, 2:5] for e in range(experts)]).reshape(9, cols)
    for r0, r1 in ((0, 9), (0, 3), (2, 7), (4, 5), (8, 9)):
        assert np.array_equal(node.eval_rows(f.data(node, r0, r1), r0, r1), expected[r0:r1])
        # only the source rows of the block: expert e's rows 2..4 start at byte (e * 6 + 2) * 4 * 2
        wanted = set()
        for r in range(r0, r1):
            e, i = divmod(r, 3)
            start = src.start + (e * rows + 2 + i) * cols * 2
            wanted.update(range(start, start + cols * 2))
        assert set().union(*(range(s.start, s.end) for s in node.spans(r0, r1))) == wanted


def test_slice_stack_rows_of_a_stack_cut_only_by_whole_matrices_evaluates_it_whole():
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    b = -np.arange(8, dtype=np.float32).reshape(2, 4)
    f = FakeFile()
    stack = Stack((Transpose(Load(f.add("a", a))), Transpose(Load(f.add("b", b)))))  # (2, 4, 2), whole parts only
    assert stack.row_align() == 4
    node = SliceStackRows(stack, 1, 3)
    assert node.row_align() is None
    assert np.array_equal(whole(f, node), np.stack([a.T[1:3], b.T[1:3]]))
def test_gather_rows_picks_runs_of_rows_in_order():
    f = FakeFile()
    w = np.arange(10 * 3, dtype=np.float32).reshape(10, 3)
    out = whole(f, GatherRows(Load(f.add("w", w)), ((6, 2), (0, 3), (9, 1)), (6, 3)))
    assert np.array_equal(out, w[[6, 7, 0, 1, 2, 9]])


def test_gather_rows_of_a_block_reads_only_its_runs_joined_where_they_touch():
    f = FakeFile()
    src = f.add("w", np.zeros((10, 4), dtype=np.float32))
    node = GatherRows(Load(src), ((6, 2), (0, 3), (3, 3), (8, 2)), (10, 4))
    row = 4 * 4
    # output rows 1..5 are source rows 7, 0, 1, 2, 3: two spans, 0-4 joined
    assert [(s.start, s.end) for s in node.spans(1, 6)] == [(0, 4 * row), (7 * row, 8 * row)]
    assert [(s.start, s.end) for s in node.spans(0, 10)] == [(0, 10 * row)]  # a permutation of all: one span


def test_gather_rows_cuts_the_halves_of_a_fused_expert_stack():
    f = FakeFile()
    w = np.arange(3 * 4 * 2, dtype=np.float32).reshape(3, 4, 2)
    load = Load(f.add("gate_up", w))
    gate = whole(f, GatherRows(load, tuple((e * 4, 2) for e in range(3)), (3, 2, 2)))
    up = whole(f, GatherRows(load, tuple((e * 4 + 2, 2) for e in range(3)), (3, 2, 2)))
    assert np.array_equal(gate, w[:, :2, :]) and np.array_equal(up, w[:, 2:, :])


def test_gather_rows_refuses_runs_that_do_not_fit():
    src = SourceTensor("f", "w", "F32", (4, 2), 0, 32)
    with pytest.raises(ValueError):
        GatherRows(Load(src), ((3, 2),), (2, 2))  # past the last row
    with pytest.raises(ValueError):
        GatherRows(Load(src), ((0, 2),), (3, 2))  # fewer rows than the shape


def test_permute_cols_reorders_every_row():
    f = FakeFile()
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    out = whole(f, PermuteCols(Load(f.add("w", w)), (2, 0, 3, 1)))
    assert np.array_equal(out, np.stack([w[:, 2], w[:, 0], w[:, 3], w[:, 1]], axis=1))
    with pytest.raises(ValueError):
        PermuteCols(Load(SourceTensor("f", "v", "F32", (3,), 0, 12)), (0, 0, 1))


def test_reshape_squeezes_and_keeps_the_values():
    f = FakeFile()
    w = np.arange(12, dtype=np.float32).reshape(3, 1, 4)
    node = Reshape(Load(f.add("w", w)), (3, 4))
    assert node.row_align() == 1 and np.array_equal(whole(f, node), w.reshape(3, 4))
    # other rows: cut only where whole input rows end (4 rows of 3 = 3 rows of 4)
    assert Reshape(Load(f.add("v", w)), (4, 3)).row_align() == 4


def test_neg_exp_is_correctly_rounded_where_torch_is_not_known():
    import math

    # x = 1.0610006: float32 exp (numpy's) gives 0x4038_F9A4, the exact value rounds to 0x4038_F9A5
    values = np.array([1.0610005855560303, 0.9571602940559387, -2.7182817], dtype=np.float32)
    assert not (values.view(np.uint32) & 0xFFFF == 0).any()  # no bfloat16 among them
    f = FakeFile()
    out = whole(f, NegExp(Load(f.add("a_log", values))))
    expected = np.array([np.float32(-math.exp(float(v))) for v in values], dtype=np.float32)
    assert out.dtype == np.float32 and np.array_equal(out.view(np.uint32), expected.view(np.uint32))
    assert np.exp(values[0]) != -out[0]  # not float32 arithmetic
    half = whole(f, NegExp(Load(f.add("h", values, "F16"))))
    assert half.dtype == np.float16
    assert np.array_equal(half, np.array([-math.exp(float(v)) for v in values.astype(np.float16)], dtype=np.float16))


def test_neg_exp_of_a_bfloat16_value_is_torchs():
    # bf16 0.9765625: torch 2.13 (MKL) gives exp = 0x4029F0A5, one ulp below the correctly rounded 0x4029F0A6
    f = FakeFile()
    out = whole(f, NegExp(Load(f.add("a_log", np.array([0.9765625, 0.0, 1.0], dtype=np.float32), "BF16"))))
    assert list(out.view(np.uint32)) == [0xC029F0A5, 0xBF800000, 0xC02DF854]


def test_reference_exp_is_torchs_on_every_bfloat16_value():
    """The table against torch itself (the reference's environment)."""
    torch = pytest.importorskip("torch")
    from hfstream.graph import reference_exp

    x = (np.arange(1 << 16, dtype=np.uint32) << 16).view(np.float32)
    x = x[np.isfinite(x)]
    assert np.array_equal(reference_exp(x).view(np.uint32), torch.exp(torch.from_numpy(x.copy())).numpy().view(np.uint32))


def test_reshape_keeps_the_values_in_order_and_cuts_only_at_whole_input_rows():
    f, nodes = _nodes()
    emb = whole(f, Load(nodes["load"].src))
    assert np.array_equal(whole(f, nodes["reshape-uneven"]), emb.reshape(16, 5))
    # 16 rows of 5 from rows of 8: a cut every 8 output rows is a cut every 5 input rows
    assert nodes["reshape-uneven"].row_align() == 8 and nodes["reshape-coarser"].row_align() == 1
    assert nodes["reshape-finer"].row_align() == 2
    assert whole(f, nodes["reshape-scalar"]).tolist() == [0.75]
    with pytest.raises(ValueError):
        Reshape(Load(nodes["load"].src), (3, 3))


def test_patch_kernel_moves_the_channel_ahead_of_the_pixels():
    f, nodes = _nodes()
    flat = whole(f, Load(nodes["patch-kernel"].x.x.x.src))
    out = whole(f, nodes["patch-kernel"])
    for n in range(6):
        for c in range(3):
            for i in range(2):
                for j in range(2):
                    assert out[n, c, i, j] == flat[n, (i * 2 + j) * 3 + c]


def test_select_takes_one_time_step_of_a_conv3d_kernel():
    f, nodes = _nodes()
    node = nodes["select"]
    kernel = whole(f, Load(node.x.src))
    assert node.shape == (4, 3, 2, 5)
    assert np.array_equal(whole(f, node), kernel[:, :, 1])
    assert np.array_equal(whole(f, Select(Load(node.x.src), 2, 0)), kernel[:, :, 0])
    # a block of whole (out, in) channel pairs reads both time steps of them: each step reads the same bytes
    assert node.row_align() == 2 and Select(Load(node.x.src), 2, 0).spans(6, 12) == node.spans(6, 12)
    assert node.spans(6, 12) == Load(node.x.src).spans(12, 24)
    with pytest.raises(ValueError):
        Select(Load(node.x.src), 4, 0)  # the last axis is not selected from


def test_slice_rows_of_a_vector_takes_its_elements():
    f, nodes = _nodes()
    bias = whole(f, Load(nodes["slice-1d"].x.src))
    assert np.array_equal(whole(f, nodes["slice-1d"]), bias[4:8])


def test_softplus_is_log_one_plus_exp_correctly_rounded_and_x_above_twenty():
    xs = np.array([-30.0, -1.0, 0.0, 0.25, 1.0, 5.5, 19.5, 20.0, 20.5, 100.0], dtype=np.float32)
    out = Softplus(Constant(xs.reshape(1, -1))).eval_rows({}, 0, 1).ravel()
    assert out.dtype == np.float32
    for x, y in zip(xs.tolist(), out.tolist()):
        # two roundings to float32, as torch: exp, then log1p of the rounded exp
        want = x if x > 20 else float(np.float32(math.log1p(float(np.float32(math.exp(x))))))
        assert y == want, x


def test_same_graph_compares_structure_not_identity():
    """Two plans built apart (a provisional one and the real one) make equal, distinct nodes."""
    def build(n_head: int, factor: float, zero: float):
        src = SourceTensor("m.safetensors", "w", "F16", (8, 4), 0, 64)
        rope = Constant(np.array([1.0, zero], dtype=np.float32))
        return Stack((PermuteHeads(Load(src), n_head), Load(src))), Scale(Load(src), factor), rope

    a, b = build(2, 0.5, 0.0), build(2, 0.5, 0.0)
    assert all(x is not y and same_graph(x, y) for x, y in zip(a, b))
    assert not same_graph(build(4, 0.5, 0.0)[0], a[0])  # another head count: other rows
    assert not same_graph(build(2, 0.25, 0.0)[1], a[1])
    assert not same_graph(build(2, 0.5, -0.0)[2], a[2])  # equal as numbers, not bit for bit
    assert not same_graph(build(2, -0.0, 0.0)[1], build(2, 0.0, 0.0)[1])  # a scale too
    assert not same_graph(Load(SourceTensor("m.safetensors", "w", "F16", (8, 4), 64, 128)), Load(a[0].parts[1].src))
