"""One answer per tensor, before the layout: ``quant.plan_types``, and the types a model family forces.

The byte-for-byte checks of both paths are the goldens (tests/test_convert.py, tests/test_kquant.py);
here: what they cannot show yet, types forced by a family (no family forces one today), and the
shape of the answer.
"""

from __future__ import annotations


import pytest
from gguf import GGMLQuantizationType as QT
from gguf import GGUFValueType
from gguf import MODEL_TENSOR as MT

from hfstream import errors
from hfstream.arch.base import TextFamily
from hfstream.plan import make_plan
from hfstream.quant import OutputTensor, QuantOptions, outtype, plan_types
from hfstream.safetensors import parse_header
from fixtures.build import snapshot_dir

#: a one-layer MoE model, as the mix rules read it from the keys
KEYS = {"general.architecture": "llama", "llama.block_count": 1, "llama.attention.head_count": 4,
        "llama.attention.head_count_kv": 2, "llama.expert_count": 4}


def tensors(**forced: QT) -> list[OutputTensor]:
    shapes = {
        "token_embd.weight": ((256, 64), MT.TOKEN_EMBD),
        "blk.0.attn_norm.weight": ((64,), MT.ATTN_NORM),
        "blk.0.attn_q.weight": ((64, 64), MT.ATTN_Q),
        "blk.0.attn_v.weight": ((32, 64), MT.ATTN_V),
        "blk.0.ffn_gate_inp.weight": ((4, 64), MT.FFN_GATE_INP),
        "blk.0.ffn_up_exps.weight": ((4, 128, 256), MT.FFN_UP_EXP),
        "output.weight": ((256, 256), MT.OUTPUT),
    }
    return [OutputTensor(name, shape, kind, forced.get(name.split(".")[-2])) for name, (shape, kind) in shapes.items()]


def types(plan) -> dict[str, QT]:
    return {t.name: t.qtype for t in plan.tensors}


def test_converter_outtypes_keep_the_order_and_set_no_key_last():
    plan = plan_types(outtype("q8_0"), tensors(), KEYS)
    assert [t.name for t in plan.tensors] == [t.name for t in tensors()]
    assert types(plan)["blk.0.attn_q.weight"] == QT.Q8_0 and types(plan)["blk.0.ffn_gate_inp.weight"] == QT.F32
    assert plan.last_keys == () and all(t.weights is None for t in plan.tensors)


def test_a_mix_reorders_and_moves_its_keys_last():
    plan = plan_types(outtype("q4_k_m"), tensors(), KEYS)
    assert [t.name for t in plan.tensors][:2] == ["output.weight", "token_embd.weight"]  # non-block first
    assert types(plan)["output.weight"] == QT.Q6_K and types(plan)["blk.0.ffn_gate_inp.weight"] == QT.F32
    assert [(k, v, t) for k, v, t in plan.last_keys] == [
        ("general.quantization_version", 2, GGUFValueType.UINT32), ("general.file_type", 15, GGUFValueType.UINT32)]


def test_a_forced_type_under_the_converters_outtypes():
    for name in ("f32", "f16", "q8_0"):
        plan = plan_types(outtype(name), tensors(ffn_gate_inp=QT.F16, ffn_up_exps=QT.MXFP4), KEYS)
        assert types(plan)["blk.0.ffn_gate_inp.weight"] == QT.F16
        assert types(plan)["blk.0.ffn_up_exps.weight"] == QT.MXFP4


def test_a_mix_keeps_a_forced_type_it_does_not_quantize_or_would_pick_anyway():
    # the router: llama-quantize never quantizes it, so it keeps the type the converter wrote
    # the output: Q6_K is what q4_k_m picks for it, so llama-quantize copies it as it is
    plan = plan_types(outtype("q4_k_m"), tensors(ffn_gate_inp=QT.F16, output=QT.Q6_K), KEYS)
    assert types(plan)["blk.0.ffn_gate_inp.weight"] == QT.F16
    assert types(plan)["output.weight"] == QT.Q6_K


@pytest.mark.parametrize("forced, message", [
    (dict(ffn_up_exps=QT.MXFP4), "MXFP4 in the converter's output and llama-quantize does not requantize it"),
    (dict(attn_q=QT.F16), "F16 in the converter's output and quantizing from F16 is not supported"),
])
def test_a_mix_refuses_to_requantize_a_forced_type(forced, message):
    with pytest.raises(errors.UnsupportedOptionError, match=message):
        plan_types(outtype("q4_k_m"), tensors(**forced), KEYS)


def test_mix_options_are_refused_for_the_converters_outtypes():
    from hfstream.quant.mixes import Overrides

    with pytest.raises(errors.UnsupportedOptionError, match="--tensor-type"):
        plan_types(outtype("q8_0"), tensors(), KEYS, QuantOptions(overrides=Overrides(output=QT.F16)))


# --- through the plan: TextFamily.forced_type ------------------------------------------------


def mixtral(fixture_root):
    snap = snapshot_dir(fixture_root / "hfs-test" / "tiny-mixtral")
    files = {p.name: p.read_bytes() for p in snap.iterdir() if p.suffix != ".safetensors"}
    shards = sorted(p.name for p in snap.iterdir() if p.suffix == ".safetensors")
    headers = {}
    for shard in shards:
        data = (snap / shard).read_bytes()
        headers[shard] = parse_header(shard, data, len(data))
    return files, headers, shards


@pytest.mark.parametrize("out, router, experts", [
    ("q8_0", QT.F16, QT.Q8_0),
    ("q4_k_m", QT.F16, QT.Q5_0),  # Q4_K's fallback: rows of 64
])
def test_a_familys_forced_type_reaches_the_plan(fixture_root, monkeypatch, out, router, experts):
    seen = []

    def forced_type(self, gguf_name, bid, source_name):
        seen.append((gguf_name, bid, source_name))
        return QT.F16 if "ffn_gate_inp" in gguf_name else None

    monkeypatch.setattr(TextFamily, "forced_type", forced_type)
    files, headers, shards = mixtral(fixture_root)
    plan = make_plan(repo_name="tiny", files=files, headers=headers, shards=shards, outtype=out)
    planned = {t.name: t for t in plan.tensors}
    assert planned["blk.0.ffn_gate_inp.weight"].qtype == router
    assert planned["blk.0.ffn_gate_inp.weight"].nbytes == 2 * 4 * 64  # 4 experts x 64, two bytes each
    assert planned["blk.0.ffn_up_exps.weight"].qtype == experts
    assert ("blk.1.ffn_gate_inp.weight", 1, "model.layers.1.block_sparse_moe.gate.weight") in seen
    # an expert stack is made when its last source tensor arrives: that one is its source, as in the reference
    assert ("blk.1.ffn_up_exps.weight", 1, "model.layers.1.block_sparse_moe.experts.3.w3.weight") in seen
