"""Pre-quantized sources: FP8 weights times their block scales, and MLA's kv_b split, as the reference computes them.

The reference (``dequant_model``) repeats each scale over its block along the last two dimensions,
cuts the result to the weight's shape and multiplies in float32; ``expected_dequant`` below is that
arithmetic in numpy, written the reference's way (repeat, cut, multiply), against which the
block-by-block node must give the very same bits.
"""

from __future__ import annotations

import numpy as np
import pytest

from hfstream import errors
from hfstream.graph import FLOAT8_VALUES, BlockScale, HeadSlice, Load, Stack
from hfstream.prequant import source_nodes
from hfstream.safetensors import SourceTensor

NUMPY = {"F32": "<f4", "F16": "<f2", "F8_E4M3": "u1", "F8_E5M2": "u1"}


class FakeFile:
    """Source tensors back to back in byte strings, one per shard name."""

    def __init__(self):
        self.blobs: dict[str, bytearray] = {}

    def add(self, name: str, array: np.ndarray, dtype: str, shard: str = "a") -> SourceTensor:
        raw = np.ascontiguousarray(array).astype(NUMPY[dtype]).tobytes()
        blob = self.blobs.setdefault(shard, bytearray())
        start = len(blob)
        blob += raw
        return SourceTensor(shard, name, dtype, tuple(array.shape), start, start + len(raw))

    def data(self, node, r0, r1):
        return {s: bytes(self.blobs[s.file][s.start:s.end]) for s in node.spans(r0, r1)}


def f8_codes(rng, shape, dtype="F8_E4M3") -> np.ndarray:
    """Random FP8 bytes without NaN or infinity codes."""
    codes = rng.integers(0, 256, size=shape, dtype=np.uint8)
    return np.where(np.isfinite(FLOAT8_VALUES[dtype][codes]), codes, 0x38).astype(np.uint8)


def expected_dequant(codes: np.ndarray, dtype: str, scale: np.ndarray, block: tuple[int, int]) -> np.ndarray:
    """The reference's arithmetic: scale repeated per block on the last two dims, cut, times weight.float()."""
    s = scale.astype(np.float32)
    for axis, size in zip((-2, -1), block):
        s = np.repeat(s, size, axis=axis)
    s = s[tuple(slice(0, n) for n in codes.shape)]
    return FLOAT8_VALUES[dtype][codes] * s


def bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def test_float8_values_pinned():
    e4m3, e5m2 = FLOAT8_VALUES["F8_E4M3"], FLOAT8_VALUES["F8_E5M2"]
    assert e4m3[0x7E] == 448 and e4m3[0xFE] == -448 and e4m3[0x01] == 2.0 ** -9 and e4m3[0x38] == 1.0
    assert e4m3[0x08] == 2.0 ** -6 and e4m3[0x07] == 7 * 2.0 ** -9  # smallest normal, largest subnormal
    assert np.isnan(e4m3[0x7F]) and np.isnan(e4m3[0xFF]) and np.isfinite(np.delete(e4m3, [0x7F, 0xFF])).all()
    assert e5m2[0x7B] == 57344 and e5m2[0x01] == 2.0 ** -16 and e5m2[0x3C] == 1.0
    assert e5m2[0x7C] == np.inf and e5m2[0xFC] == -np.inf and np.isnan(e5m2[0x7D]) and np.isnan(e5m2[0xFF])
    assert np.signbit(e4m3[0x80]) and e4m3[0x80] == 0


@pytest.mark.parametrize("dtype,torch_dtype", [("F8_E4M3", "float8_e4m3fn"), ("F8_E5M2", "float8_e5m2")])
def test_float8_values_are_torchs(dtype, torch_dtype):
    torch = pytest.importorskip("torch")
    ref = torch.arange(256, dtype=torch.uint8).view(getattr(torch, torch_dtype)).float().numpy()
    mine = FLOAT8_VALUES[dtype]
    assert np.array_equal(np.isnan(mine), np.isnan(ref))
    assert np.array_equal(bits(mine)[~np.isnan(mine)], bits(ref)[~np.isnan(ref)])


# (rows, cols, block rows, block cols): whole blocks, partial edge blocks on one or both sides,
# a tensor smaller than one block, DeepSeek-V3's kv_a_proj shape scaled down (576 = 4.5 blocks)
SHAPES = [(32, 48, 16, 16), (37, 45, 16, 8), (20, 64, 16, 16), (5, 7, 16, 16), (72, 16, 16, 16), (9, 33, 4, 32)]


@pytest.mark.parametrize("dtype", ["F8_E4M3", "F8_E5M2"])
@pytest.mark.parametrize("rows,cols,br,bc", SHAPES)
def test_block_scale_matches_the_reference_whole_and_by_blocks(dtype, rows, cols, br, bc):
    rng = np.random.default_rng(rows * 1000 + cols)
    codes = f8_codes(rng, (rows, cols), dtype)
    scale = (rng.random((-(-rows // br), -(-cols // bc))) * 3e-3 + 1e-5).astype(np.float32)
    f = FakeFile()
    node = BlockScale(Load(f.add("w", codes, dtype)), Load(f.add("w_scale_inv", scale, "F32", shard="b")), (br, bc))
    want = expected_dequant(codes, dtype, scale, (br, bc))
    assert node.shape == (rows, cols) and node.dtype == np.float32
    assert np.array_equal(bits(node.evaluate(f.data(node, 0, rows))), bits(want))
    # block by block (the units the pipeline cuts), each needing only its own scale rows
    align = node.row_align()
    assert align == br
    got, scale_spans = [], []
    for r0 in range(0, rows, align):
        r1 = min(r0 + align, rows)
        got.append(node.eval_rows(f.data(node, r0, r1), r0, r1))
        scale_spans += [(s.start, s.end) for s in node.spans(r0, r1) if s.file == "b"]
    assert np.array_equal(bits(np.concatenate(got)), bits(want))
    assert len(scale_spans) == len(got) and all(a[1] == b[0] for a, b in zip(scale_spans, scale_spans[1:]))
    # any other cut gives the same rows too
    mid = rows // 3
    assert np.array_equal(bits(node.eval_rows(f.data(node, mid, rows), mid, rows)), bits(want[mid:]))


def test_scale_without_block_size_broadcasts_per_tensor_and_per_row():
    rng = np.random.default_rng(5)
    codes = f8_codes(rng, (6, 10))
    f = FakeFile()
    w = f.add("a.weight", codes, "F8_E4M3")
    per_tensor = f.add("a.weight_scale_inv", np.array([0.5], dtype=np.float32), "F32")
    hparams = {"quantization_config": {"quant_method": "fp8"}}
    ((name, node),) = source_nodes(hparams, [("a.weight", w), ("a.weight_scale_inv", per_tensor)])
    assert name == "a.weight" and node.block == (6, 10)
    assert np.array_equal(node.evaluate(f.data(node, 0, 6)), FLOAT8_VALUES["F8_E4M3"][codes] * np.float32(0.5))
    per_row_values = rng.random(6).astype(np.float32)
    per_row = f.add("a.weight_scale_inv", per_row_values, "F32")
    ((_, node),) = source_nodes(hparams, [("a.weight", w), ("a.weight_scale_inv", per_row)])
    assert node.block == (1, 10)
    assert np.array_equal(node.evaluate(f.data(node, 0, 6)), FLOAT8_VALUES["F8_E4M3"][codes] * per_row_values[:, None])


def test_fp8_checkpoint_keeps_order_drops_scales_and_takes_scales_from_other_shards():
    rng = np.random.default_rng(7)
    f = FakeFile()
    emb = f.add("model.embed_tokens.weight", rng.random((4, 8)).astype(np.float32), "F32")
    q = f.add("model.layers.0.q_proj.weight", f8_codes(rng, (20, 8)), "F8_E4M3")
    act = f.add("model.layers.0.q_proj.activation_scale", np.ones(1, np.float32), "F32")
    norm = f.add("model.layers.0.norm.weight", np.ones(8, np.float32), "F32")
    q_scale = f.add("model.layers.0.q_proj.weight_scale_inv", np.ones((2, 1), np.float32), "F32", shard="b")
    sources = [(t.name, t) for t in (emb, q, act, norm, q_scale)]
    hparams = {"quantization_config": {"quant_method": "fp8", "weight_block_size": [16, 16]}}
    nodes = source_nodes(hparams, sources)
    assert [n for n, _ in nodes] == ["model.embed_tokens.weight", "model.layers.0.q_proj.weight",
                                     "model.layers.0.norm.weight"]
    node = nodes[1][1]
    assert isinstance(node, BlockScale) and {s.file for s in node.spans(0, 20)} == {"a", "b"}
    assert list(node.leaves()) == [q, q_scale]
    assert all(isinstance(n, Load) for _, n in (nodes[0], nodes[2]))
    # without a quantization_config, an F8 tensor is just decoded (the reference's .to(float32))
    plain = source_nodes({}, sources)
    assert [n for n, _ in plain] == [t.name for t in (emb, q, act, norm, q_scale)]


@pytest.mark.parametrize("config,message", [
    ({"quant_method": "gptq", "bits": 4}, "'gptq' is not supported by hfstream yet"),
    ({"quant_method": "awq"}, "'awq' is not supported (nor by llama.cpp's converter)"),
])
def test_other_quant_methods_are_refused_naming_the_method(config, message):
    with pytest.raises(errors.UnsupportedQuantizationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        source_nodes({"quantization_config": config}, [])


def _ct(fmt="float-quantized", groups=1, **weights) -> dict:
    w = {"block_structure": None, "group_size": None, "num_bits": 8, "strategy": "channel", "type": "float", **weights}
    return {"quantization_config": {"quant_method": "compressed-tensors", "format": fmt,
                                    "config_groups": {f"group_{i}": {"weights": w} for i in range(groups)}}}


def test_compressed_tensors_weight_scale_per_channel_and_per_block():
    rng = np.random.default_rng(9)
    codes = f8_codes(rng, (40, 24))
    f = FakeFile()
    w = f.add("a.weight", codes, "F8_E4M3")
    per_channel = rng.random((40, 1)).astype(np.float32)
    s = f.add("a.weight_scale", per_channel, "F32")
    ((name, node),) = source_nodes(_ct(), [("a.weight", w), ("a.weight_scale", s)])
    assert name == "a.weight" and node.block == (1, 24)
    want = FLOAT8_VALUES["F8_E4M3"][codes] * per_channel
    assert np.array_equal(bits(node.evaluate(f.data(node, 0, 40))), bits(want))
    blocks = rng.random((3, 2)).astype(np.float32)
    s = f.add("a.weight_scale", blocks, "F32")
    ((_, node),) = source_nodes(_ct(strategy="block", block_structure=[16, 16]), [("a.weight", w), ("a.weight_scale", s)])
    assert np.array_equal(bits(node.evaluate(f.data(node, 0, 40))), bits(expected_dequant(codes, "F8_E4M3", blocks, (16, 16))))


@pytest.mark.parametrize("config,message", [
    (_ct(groups=2), "2 config groups is not supported"),
    (_ct("pack-quantized", type="int", num_bits=4, strategy="group", group_size=128), "'pack-quantized' is not supported by hfstream yet"),
    (_ct("nvfp4-pack-quantized"), "(NVFP4) is not supported by hfstream yet"),
    (_ct(strategy="group", group_size=128), "strategy 'group' and group_size 128 is not supported"),
    (_ct("marlin-24"), "format 'marlin-24' is not supported"),
])
def test_compressed_tensors_the_reference_does_not_convert_are_refused(config, message):
    with pytest.raises(errors.UnsupportedQuantizationError) as e:
        source_nodes(config, [])
    assert message in str(e.value)


def test_a_scale_that_does_not_fit_its_weight_is_refused():
    f = FakeFile()
    w = f.add("a.weight", np.zeros((20, 8), np.uint8), "F8_E4M3")
    s = f.add("a.weight_scale_inv", np.ones((3, 1), np.float32), "F32")
    with pytest.raises(errors.ConfigMismatchError, match=r"scale 'a.weight_scale_inv' has shape \[3, 1\]"):
        source_nodes({"quantization_config": {"quant_method": "fp8", "weight_block_size": [16, 16]}},
                     [("a.weight", w), ("a.weight_scale_inv", s)])
    with pytest.raises(errors.InvalidHeaderError, match="has no weight 'b.weight'"):
        source_nodes({"quantization_config": {"quant_method": "fp8"}}, [("b.weight_scale_inv", s)])


def test_a_stack_of_fp8_experts_evaluates_expert_by_expert():
    rng = np.random.default_rng(11)
    f = FakeFile()
    parts, want = [], []
    for x in range(3):
        codes = f8_codes(rng, (20, 24))
        scale = rng.random((2, 2)).astype(np.float32)
        parts.append(BlockScale(Load(f.add(f"e{x}", codes, "F8_E4M3")), Load(f.add(f"s{x}", scale, "F32", "b")), (16, 16)))
        want.append(expected_dequant(codes, "F8_E4M3", scale, (16, 16)))
    stack = Stack(tuple(parts))
    assert stack.row_align() == 20  # a partial block ends each expert: whole experts
    for x in range(3):
        r0, r1 = 20 * x, 20 * (x + 1)
        assert {(s.src.name) for s in stack.spans(r0, r1)} == {f"e{x}", f"s{x}"}
        assert np.array_equal(bits(stack.eval_rows(f.data(stack, r0, r1), r0, r1)), bits(want[x]))


# -- MLA: kv_b_proj -> attn_k_b (transposed per head) and attn_v_b ----------------------------------------


def expected_mla(kv_b: np.ndarray, n_head: int, nope: int, v: int) -> tuple[np.ndarray, np.ndarray]:
    """The reference: view (heads, nope + v, rank), split [nope, v] on dim 1, k_b transposed (1, 2)."""
    heads = kv_b.reshape(n_head, nope + v, kv_b.shape[-1])
    return heads[:, :nope].transpose(0, 2, 1), heads[:, nope:]


@pytest.mark.parametrize("n_head,nope,v,rank", [(4, 8, 6, 12), (2, 16, 16, 32), (3, 5, 7, 9)])
def test_mla_split_whole_and_head_by_head(n_head, nope, v, rank):
    rng = np.random.default_rng(n_head)
    kv_b = rng.standard_normal((n_head * (nope + v), rank)).astype(np.float32)
    f = FakeFile()
    src = Load(f.add("kv_b", kv_b, "F32"))
    k_want, v_want = expected_mla(kv_b, n_head, nope, v)
    for node, want in ((HeadSlice(src, n_head, 0, nope, transpose=True), k_want), (HeadSlice(src, n_head, nope, nope + v), v_want)):
        assert node.shape == want.shape
        assert np.array_equal(node.evaluate(f.data(node, 0, node.rows)), want)
        per_head = node.row_align()
        blocks = [node.eval_rows(f.data(node, r0, r0 + per_head), r0, r0 + per_head) for r0 in range(0, node.rows, per_head)]
        assert np.array_equal(np.concatenate(blocks).reshape(want.shape), want)
        # a head needs only its own rows of the source
        (span,) = node.spans(0, per_head)
        assert span.nbytes <= (nope + v) * rank * 4


def test_mla_split_of_an_fp8_kv_b_dequantizes_first():
    rng = np.random.default_rng(3)
    n_head, nope, v, rank = 4, 12, 8, 24  # head boundaries (20 rows) cross scale blocks (16 rows)
    codes = f8_codes(rng, (n_head * (nope + v), rank))
    scale = rng.random((5, 2)).astype(np.float32)
    f = FakeFile()
    kv_b = BlockScale(Load(f.add("kv_b", codes, "F8_E4M3")), Load(f.add("kv_b_scale_inv", scale, "F32")), (16, 16))
    k_want, v_want = expected_mla(expected_dequant(codes, "F8_E4M3", scale, (16, 16)), n_head, nope, v)
    for node, want in ((HeadSlice(kv_b, n_head, 0, nope, transpose=True), k_want), (HeadSlice(kv_b, n_head, nope, nope + v), v_want)):
        per_head = node.row_align()
        blocks = [node.eval_rows(f.data(node, r0, r0 + per_head), r0, r0 + per_head) for r0 in range(0, node.rows, per_head)]
        assert np.array_equal(bits(np.concatenate(blocks).reshape(want.shape)), bits(want))


def test_a_refused_quant_method_fetches_no_weight_byte(tmp_path, monkeypatch, capsys):
    """Refused while planning: the weights file is read up to its header's first range, no further."""
    import hashlib

    from fixtures.hostile import CASES_BY_NAME, base_files, write_repo
    from fixtures.hub import FixtureHub
    from hfstream import cli

    case = CASES_BY_NAME["quant-method-awq"]
    files = case.make(base_files())
    write_repo(tmp_path / "repos", case.repo_id, files)
    with FixtureHub(tmp_path / "repos") as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
        monkeypatch.delenv("HF_TOKEN", raising=False)
        rc = cli.main(["convert", case.repo_id, "-o", str(tmp_path / "out.gguf")])
        log = hub.log
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == errors.UnsupportedQuantizationError.exit_code
    assert len(err) == 1 and "'awq'" in err[0]
    weights = "/lfs/" + hashlib.sha256(files["model.safetensors"]).hexdigest()
    assert len(files["model.safetensors"]) > 100_000
    assert [e["range"] for e in log if e["path"] == weights] == ["bytes=0-99999"]  # the header read, nothing more
    assert not (tmp_path / "out.gguf").exists()
