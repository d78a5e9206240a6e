"""gpt-oss: the MXFP4 repack and the gate/up de-interleave as graph nodes, cut into units as the
pipeline cuts them, and what a llama-quantize type does to MXFP4 experts.

The end-to-end bytes and keys against the reference converter are the goldens' (``test_convert``,
``test_kquant``, ``test_llamacpp_decode``); here each piece is checked against arithmetic written
out independently: the MX format's definition (OCP Microscaling: per 32 values an E8M0 exponent
and 32 E2M1 codes, two a byte with the even value in the low nibble) and GGML's ``block_mxfp4``
(the exponent byte, then byte j holding values j and j + 16), decoded back by gguf-py.
"""

from __future__ import annotations

import hashlib

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as QT

import hfstream
from hfstream import cli, errors, execute
from hfstream.units import units_for
from hfstream.graph import (
    MXFP4,
    Bytes,
    Load,
    StrideCols,
    StrideRows,
    SwapLastAxes,
    repack_mxfp4,
)
from hfstream.plan import draft_plan
from hfstream.safetensors import SourceTensor, parse_header
from fixtures.build import snapshot_dir

from .conftest import golden
from .goldens.digest import diff_digests, digest_gguf
from .test_convert import comparable

MXFP4_REPO = "hfs-test/tiny-gpt-oss"
BF16_REPO = "hfs-test/tiny-gpt-oss-bf16"
#: OCP MX E2M1 code -> value
E2M1 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]


def _source(name: str, dtype: str, shape: tuple[int, ...], start: int = 0) -> SourceTensor:
    size = int(np.prod(shape)) * {"U8": 1, "F32": 4}[dtype]
    return SourceTensor(file="model.safetensors", name=name, dtype=dtype, shape=shape, start=start, end=start + size)


def _data(node, raw: bytes, r0: int, r1: int) -> dict:
    """The bytes of ``node.spans(r0, r1)``, cut from a file whose content is ``raw``: a unit gets no more."""
    return {s: raw[s.start:s.end] for s in node.spans(r0, r1)}


def _random_mx(rng, experts: int, rows: int, n_blocks: int):
    blocks = rng.integers(0, 256, size=(experts, rows, n_blocks, 16), dtype=np.uint8)
    scales = rng.integers(100, 140, size=(experts, rows, n_blocks), dtype=np.uint8)
    return blocks, scales


# --------------------------------------------------------------------------- the repack


def test_repack_is_ggml_block_mxfp4_of_the_same_codes():
    rng = np.random.default_rng(1)
    blocks, scales = _random_mx(rng, 1, 5, 3)
    out = repack_mxfp4(blocks.reshape(5, 48), scales.reshape(5, 3))
    assert out.shape == (5, 3 * 17) and out.dtype == np.uint8
    for r in range(5):
        for b in range(3):
            code = [(blocks[0, r, b, k // 2] >> (4 * (k % 2))) & 0x0F for k in range(32)]  # value k's code
            want = [scales[0, r, b]] + [code[j] | (code[j + 16] << 4) for j in range(16)]
            assert out[r, b * 17:(b + 1) * 17].tolist() == want


def test_repacked_blocks_decode_to_the_mx_values():
    """gguf-py's MXFP4 decoder (ggml's arithmetic) gives the values the MX format defines: nothing rounded."""
    rng = np.random.default_rng(2)
    blocks, scales = _random_mx(rng, 1, 7, 4)
    codes = np.stack((blocks & 0x0F, blocks >> 4), axis=-1).reshape(7, 4, 32)
    want = np.array(E2M1, dtype=np.float64)[codes] * np.exp2(scales.reshape(7, 4, 1).astype(np.float64) - 127)
    got = gguf.quants.dequantize(repack_mxfp4(blocks.reshape(7, 64), scales.reshape(7, 4)), QT.MXFP4)
    np.testing.assert_array_equal(got.reshape(7, 128), want.reshape(7, 128).astype(np.float32))


# --------------------------------------------------------------------------- de-interleave, block by block


def _mx_nodes(experts=3, rows=8, n_blocks=2, seed=3):
    """gate and up MXFP4 nodes over a fake file holding the blocks then the scales."""
    blocks, scales = _random_mx(np.random.default_rng(seed), experts, rows, n_blocks)
    raw = blocks.tobytes() + scales.tobytes()
    b_src = _source("x.gate_up_proj_blocks", "U8", blocks.shape)
    s_src = _source("x.gate_up_proj_scales", "U8", scales.shape, start=b_src.end)
    codes = Bytes(b_src, (experts, rows, n_blocks * 16))
    exps = Bytes(s_src, (experts, rows, n_blocks))
    gate, up = (MXFP4(StrideRows(codes, i, 2), StrideRows(exps, i, 2)) for i in (0, 1))
    return gate, up, blocks, scales, raw


def test_gate_and_up_are_the_even_and_odd_rows_of_every_expert_for_any_block():
    gate, up, blocks, scales, raw = _mx_nodes()
    experts, rows, n_blocks, _ = blocks.shape
    assert gate.shape == up.shape == (experts, rows // 2, n_blocks * 32) and gate.encoded == QT.MXFP4
    for i, node in enumerate((gate, up)):
        want = repack_mxfp4(blocks[:, i::2].reshape(-1, n_blocks * 16), scales[:, i::2].reshape(-1, n_blocks))
        assert node.row_align() == 1
        for r0 in range(node.rows):
            for r1 in range(r0 + 1, node.rows + 1):  # blocks within an expert and across experts
                got = node.eval_rows(_data(node, raw, r0, r1), r0, r1)
                assert np.array_equal(got, want[r0:r1]), (i, r0, r1)


def test_gate_and_up_of_the_same_rows_read_the_same_bytes_once():
    gate, up, *_ = _mx_nodes()
    for r0, r1 in ((0, 4), (1, 3), (2, 9), (0, gate.rows)):
        assert gate.spans(r0, r1) == up.spans(r0, r1)
        # only the pairs of rows they need: 2 rows of blocks (32 bytes each) and of scales (2 each) a row
        assert sum(s.nbytes for s in gate.spans(r0, r1)) == (r1 - r0) * 2 * (32 + 2)


def test_bf16_experts_are_transposed_then_split_by_alternate_rows_one_expert_at_a_time():
    experts, hidden, ff2 = 3, 4, 6
    w = np.random.default_rng(4).standard_normal((experts, hidden, ff2)).astype(np.float32)
    raw = w.tobytes()
    src = Load(_source("x.gate_up_proj", "F32", w.shape))
    for i in (0, 1):
        node = StrideRows(SwapLastAxes(src), i, 2)
        want = w.transpose(0, 2, 1)[:, i::2, :]  # the reference: transpose(-1, -2), then [:, i::2, :]
        assert node.shape == want.shape and node.row_align() == ff2 // 2
        for e in range(experts):
            r0, r1 = e * ff2 // 2, (e + 1) * ff2 // 2
            spans = node.spans(r0, r1)
            assert spans == [s for s in src.spans(e * hidden, (e + 1) * hidden)]  # that expert, nothing else
            assert np.array_equal(node.eval_rows(_data(node, raw, r0, r1), r0, r1), want[e])
    down = SwapLastAxes(src)
    assert np.array_equal(down.eval_rows(_data(down, raw, 0, down.rows), 0, down.rows).reshape(down.shape),
                          w.transpose(0, 2, 1))


def test_fused_bias_splits_by_alternate_columns():
    b = np.arange(2 * 8, dtype=np.float32).reshape(2, 8)
    src = Load(_source("x.gate_up_proj_bias", "F32", b.shape))
    for i in (0, 1):
        node = StrideCols(src, i, 2)
        assert np.array_equal(node.eval_rows(_data(node, b.tobytes(), 1, 2), 1, 2), b[1:2, i::2])


# --------------------------------------------------------------------------- the plan and its units


def _plan(fixture_root, repo: str, outtype: str):
    snap = snapshot_dir(fixture_root / repo)
    files = {p.name: p.read_bytes() for p in snap.iterdir() if p.suffix != ".safetensors"}
    shards = sorted(p.name for p in snap.glob("model*.safetensors"))
    headers = {s: parse_header(s, (snap / s).read_bytes(), (snap / s).stat().st_size) for s in shards}
    # the draft: every tensor, type and key but the vocabulary (27 MB of tokenizer.json to build)
    return draft_plan(repo_name=repo.split("/")[1], files=files, headers=headers, shards=shards,
                      outtype=outtype), snap


@pytest.mark.parametrize("outtype", ["f32", "q8_0"])
def test_mxfp4_experts_in_row_blocks_smaller_than_an_expert_give_the_reference_bytes(fixture_root, outtype):
    """Each unit is fetched (from exactly its spans) and repacked on its own; together they are the
    reference's tensor, and no unit reads more than its own rows' pairs."""
    plan, snap = _plan(fixture_root, MXFP4_REPO, outtype)
    expected = {t["name"]: t for t in golden(f"tiny-gpt-oss.{outtype}")["tensors"]}
    shard_bytes = {p.name: p.read_bytes() for p in snap.glob("*.safetensors")}
    experts = [t for t in plan.tensors if isinstance(t.node, MXFP4)]
    assert [t.name for t in experts] == [t.name for t in plan.tensors[:6]]  # first in the file, as the reference
    assert {t.qtype for t in experts} == {QT.MXFP4}
    for t in experts:
        rows_per_expert = t.shape[1]
        target = 1000  # a few rows: blocks well inside one expert
        units = units_for(t, 0, target)
        assert len(units) > t.shape[0] and all(u.r1 - u.r0 < rows_per_expert for u in units)
        out = bytearray()
        for u in units:
            data = {s: shard_bytes[s.file][s.start:s.end] for s in u.spans}
            out += execute._encode_all([u], data)[0]
        assert hashlib.sha256(out).hexdigest() == expected[t.name]["sha256"], t.name


def test_bf16_expert_stacks_stream_one_expert_at_a_time(fresh_hub, fixture_root, tmp_path, monkeypatch):
    """The transposes need whole experts: each is fetched and evaluated alone, under a budget of
    two experts' worth, well under a stack; the output is the reference's."""
    plan, _ = _plan(fixture_root, BF16_REPO, "q8_0")
    stacks = [t for t in plan.tensors if isinstance(t.node, (SwapLastAxes, StrideRows))]
    assert len(stacks) == 3 * 2
    n_experts = stacks[0].shape[0]
    one_expert = max(units_for(t, 0, 1)[0].cost for t in stacks)  # target 1: the smallest unit
    whole = max(sum(u.cost for u in units_for(t, 0, 1)) for t in stacks)
    assert whole == n_experts * one_expert
    evaluated: list[tuple[int, int, int]] = []
    eval_rows = SwapLastAxes.eval_rows

    def recording_eval_rows(self, data, r0, r1):
        evaluated.append((r0, r1, self.shape[-2]))
        return eval_rows(self, data, r0, r1)

    monkeypatch.setattr(SwapLastAxes, "eval_rows", recording_eval_rows)
    budget = 2 * one_expert  # the gate and up halves of one expert, fetched together
    result = hfstream.convert(BF16_REPO, outtype="q8_0", outfile=tmp_path, max_memory=budget)
    assert len(evaluated) >= len(stacks) * n_experts
    assert all(r1 - r0 == per_expert and r0 % per_expert == 0 for r0, r1, per_expert in evaluated)
    assert 0 < result.peak_bytes_in_flight <= budget < whole
    assert diff_digests(comparable(golden("tiny-gpt-oss-bf16.q8_0")), comparable(digest_gguf(result.path))) == []


@pytest.mark.parametrize("outtype", ["f32", "f16", "bf16", "q8_0", "auto"])
def test_mxfp4_experts_keep_mxfp4_whatever_the_outtype(fixture_root, outtype):
    plan, _ = _plan(fixture_root, MXFP4_REPO, outtype)
    kv = {**plan.metadata.values_by_key(), **plan.after_vocab.values_by_key()}
    assert sum(t.qtype == QT.MXFP4 for t in plan.tensors) == 6
    mxfp4_moe = outtype != "q8_0"
    assert kv["general.file_type"] == (gguf.LlamaFileType.MOSTLY_MXFP4_MOE if mxfp4_moe
                                       else gguf.LlamaFileType.MOSTLY_Q8_0)
    assert plan.default_filename.endswith("-MXFP4_MOE.gguf" if mxfp4_moe else "-Q8_0.gguf")


def test_a_bf16_checkpoint_keeps_its_file_type(fixture_root):
    plan, _ = _plan(fixture_root, BF16_REPO, "f16")
    assert not any(t.qtype == QT.MXFP4 for t in plan.tensors)
    assert plan.metadata.values_by_key()["general.file_type"] == gguf.LlamaFileType.MOSTLY_F16


def test_a_llama_quantize_type_that_would_requantize_mxfp4_is_refused(fresh_hub, fixture_root, tmp_path, capsys):
    """llama-quantize stops on the reference's file ("requantizing from type mxfp4 is disabled"):
    refused before a tensor byte moves (only headers are read), nothing written."""
    rc = cli.main(["convert", MXFP4_REPO, "--outtype", "q4_k_m", "-o", str(tmp_path), "-q"])
    err = capsys.readouterr().err
    assert rc == errors.UnsupportedOptionError.exit_code
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "MXFP4" in lines[0] and "requantize" in lines[0]
    assert list(tmp_path.iterdir()) == []
    _, snap = _plan(fixture_root, MXFP4_REPO, "f32")
    for shard in snap.glob("*.safetensors"):
        raw = shard.read_bytes()
        header_end = 8 + int.from_bytes(raw[:8], "little")
        blob = "/lfs/" + hashlib.sha256(raw).hexdigest()
        for e in fresh_hub.log:
            if e["path"] == blob and e["range"]:
                a, b = (int(x) for x in e["range"].removeprefix("bytes=").split("-"))
                assert a == 0 or b < header_end, e  # the first header read, or the rest of the header


@pytest.mark.parametrize("repo, tensor, shape", [
    (BF16_REPO, "model.layers.0.mlp.experts.gate_up_proj", (4, 64, 255)),  # 2 * ffn is 256
    (MXFP4_REPO, "model.layers.1.mlp.experts.down_proj_scales", (4, 64, 3)),  # ffn 128 is 4 blocks of 32
    (MXFP4_REPO, "model.layers.0.self_attn.sinks", (8,)),  # one per head
])
def test_expert_and_sink_shapes_must_fit_the_config(fixture_root, repo, tensor, shape):
    snap = snapshot_dir(fixture_root / repo)
    files = {p.name: p.read_bytes() for p in snap.iterdir() if p.suffix != ".safetensors"}
    shards = sorted(p.name for p in snap.glob("model*.safetensors"))
    headers = {s: [t if t.name != tensor else SourceTensor(t.file, t.name, t.dtype, shape, t.start, t.end)
                   for t in parse_header(s, (snap / s).read_bytes(), (snap / s).stat().st_size)] for s in shards}
    with pytest.raises(errors.ConfigMismatchError, match=tensor.replace(".", r"\.")):
        draft_plan(repo_name="x", files=files, headers=headers, shards=shards, outtype="f16")
