"""Qwen3-Next and Qwen3.5: the transforms against an independent computation of the reference's
tensor operations, MTP naming, block-wise evaluation of the real plans, and the refusals.
(The goldens check every byte of the five fixtures end to end.)"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from hfstream import errors
from hfstream.arch.qwen_next import Qwen3Next, Qwen35, Qwen35Moe
from hfstream.graph import GatherRows, Load, NegExp, PermuteCols, Reshape
from hfstream.units import units_for
from hfstream.plan import make_plan
from hfstream.safetensors import SourceTensor, parse_header
from fixtures.build import snapshot_dir

from .test_graph import FakeFile, whole

NAMES = ("tiny-qwen3-next", "tiny-qwen35", "tiny-qwen35-vlm", "tiny-qwen35-moe", "tiny-qwen35-moe-vlm")


def _hparams(**over) -> dict:
    hp = {"architectures": ["Qwen3_5ForCausalLM"], "hidden_size": 8, "num_hidden_layers": 4,
          "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 4, "vocab_size": 16,
          "linear_num_key_heads": 2, "linear_num_value_heads": 6, "linear_key_head_dim": 2,
          "linear_value_head_dim": 3, "linear_conv_kernel_dim": 4, "mtp_num_hidden_layers": 1,
          "layer_types": ["linear_attention"] * 3 + ["full_attention"],
          "rope_parameters": {"rope_theta": 1e7, "partial_rotary_factor": 0.25, "mrope_section": [1, 1, 0]}}
    return {**hp, **over}


def _one(family, name: str, f: FakeFile, values: np.ndarray, dtype: str = "F32"):
    """(output name, values) of the single tensor ``family.convert`` makes of a source tensor."""
    (out,) = family.convert(name, Load(f.add(name, values, dtype)), 0)
    return out[0], whole(f, out[1])


def _grouped_to_tiled(w: np.ndarray, axis: int, n_k: int, head_dim: int) -> np.ndarray:
    """The reference's reorder, done the way it does it: split the axis into (key head, value head of that
    key head, head_dim) and swap the first two."""
    shape = list(w.shape)
    per_k = shape[axis] // n_k // head_dim
    split = w.reshape(shape[:axis] + [n_k, per_k, head_dim] + shape[axis + 1:])
    return np.swapaxes(split, axis, axis + 1).reshape(shape)


def test_qwen3_next_regroups_qkvz_per_key_head_into_qkv_and_gate():
    fam = Qwen3Next(_hparams(architectures=["Qwen3NextForCausalLM"], linear_num_value_heads=4), "Qwen3NextForCausalLM")
    n_k, dk, dvg, hidden = 2, 2, 2 * 3, 8  # each key head: q 2, k 2, v 6, z 6 rows
    w = np.arange(n_k * (2 * dk + 2 * dvg) * hidden, dtype=np.float32).reshape(-1, hidden)
    f = FakeFile()
    outs = list(fam.convert("model.layers.1.linear_attn.in_proj_qkvz.weight", Load(f.add("qkvz", w)), 1))
    assert [n for n, _ in outs] == ["blk.1.attn_qkv.weight", "blk.1.attn_gate.weight"]
    # the reference: view the transposed weight as (hidden, key head, q+k+v+z) and split the last axis
    q, k, v, z = np.split(w.T.reshape(hidden, n_k, -1), [dk, 2 * dk, 2 * dk + dvg], axis=-1)
    qkv = np.concatenate([t.reshape(hidden, -1) for t in (q, k, v)], axis=-1).T
    assert np.array_equal(whole(f, outs[0][1]), qkv)
    assert np.array_equal(whole(f, outs[1][1]), z.reshape(hidden, -1).T)


def test_qwen35_tiles_value_heads_wherever_they_index():
    fam = Qwen35(_hparams(), "Qwen3_5ForCausalLM")
    n_k, dk, dv, n_v, hidden = 2, 2, 3, 6, 8
    rng = np.random.default_rng(1)
    p = "model.layers.0.linear_attn."
    f = FakeFile()

    qkv = rng.standard_normal((2 * n_k * dk + n_v * dv, hidden)).astype(np.float32)
    name, out = _one(fam, p + "in_proj_qkv.weight", f, qkv)
    expected = np.concatenate([qkv[:2 * n_k * dk], _grouped_to_tiled(qkv[2 * n_k * dk:], 0, n_k, dv)])
    assert name == "blk.0.attn_qkv.weight" and np.array_equal(out, expected)

    z = rng.standard_normal((n_v * dv, hidden)).astype(np.float32)
    assert np.array_equal(_one(fam, p + "in_proj_z.weight", f, z)[1], _grouped_to_tiled(z, 0, n_k, dv))
    for proj, gguf_name in (("in_proj_b", "ssm_beta"), ("in_proj_a", "ssm_alpha")):
        ba = rng.standard_normal((n_v, hidden)).astype(np.float32)
        name, out = _one(fam, p + f"{proj}.weight", f, ba)
        assert name == f"blk.0.{gguf_name}.weight" and np.array_equal(out, _grouped_to_tiled(ba, 0, n_k, 1))

    out_proj = rng.standard_normal((hidden, n_v * dv)).astype(np.float32)
    assert np.array_equal(_one(fam, p + "out_proj.weight", f, out_proj)[1], _grouped_to_tiled(out_proj, 1, n_k, dv))

    conv = rng.standard_normal((2 * n_k * dk + n_v * dv, 1, 4)).astype(np.float32)
    name, out = _one(fam, p + "conv1d.weight", f, conv, "BF16")
    squeezed = whole(f, Load(f.add("c", conv, "BF16")))[:, 0, :]  # the bf16 values, upcast
    expected = np.concatenate([squeezed[:2 * n_k * dk], _grouped_to_tiled(squeezed[2 * n_k * dk:], 0, n_k, dv)])
    assert name == "blk.0.ssm_conv1d.weight" and out.shape == (conv.shape[0], 4) and np.array_equal(out, expected)

    a_log = np.log(np.arange(1, n_v + 1, dtype=np.float32))
    name, out = _one(fam, p + "A_log", f, a_log)
    expected = np.array([np.float32(-math.exp(float(v))) for v in _grouped_to_tiled(a_log, 0, n_k, 1)])
    assert name == "blk.0.ssm_a" and np.array_equal(out, expected)
    dt = np.arange(n_v, dtype=np.float32)
    name, out = _one(fam, p + "dt_bias", f, dt)
    assert name == "blk.0.ssm_dt.bias" and list(out) == [0, 3, 1, 4, 2, 5]


def test_equal_key_and_value_heads_are_not_reordered():
    fam = Qwen35(_hparams(linear_num_value_heads=2), "Qwen3_5ForCausalLM")
    f = FakeFile()
    z = np.arange(2 * 3 * 8, dtype=np.float32).reshape(6, 8)
    (_, node), = fam.convert("model.layers.0.linear_attn.in_proj_z.weight", Load(f.add("z", z)), 0)
    assert isinstance(node, Load) and np.array_equal(whole(f, node), z)


def test_norms_get_one_added_except_the_gated_delta_net_norm():
    fam = Qwen35(_hparams(), "Qwen3_5ForCausalLM")
    f = FakeFile()
    w = np.array([0.5, -0.25, 0.0], dtype=np.float32)
    assert np.array_equal(_one(fam, "model.layers.3.self_attn.q_norm.weight", f, w)[1], w + 1)
    assert np.array_equal(_one(fam, "model.norm.weight", f, w)[1], w + 1)
    name, out = _one(fam, "model.layers.0.linear_attn.norm.weight", f, w)
    assert name == "blk.0.ssm_norm.weight" and np.array_equal(out, w)


def test_a_fused_expert_stack_is_cut_into_gate_and_up():
    fam = Qwen35Moe(_hparams(num_experts=3, moe_intermediate_size=2), "Qwen3_5MoeForCausalLM")
    w = np.arange(3 * 4 * 8, dtype=np.float32).reshape(3, 4, 8)
    f = FakeFile()
    outs = list(fam.convert("model.layers.2.mlp.experts.gate_up_proj", Load(f.add("gu", w)), 2))
    assert [n for n, _ in outs] == ["blk.2.ffn_gate_exps.weight", "blk.2.ffn_up_exps.weight"]
    assert np.array_equal(whole(f, outs[0][1]), w[:, :2]) and np.array_equal(whole(f, outs[1][1]), w[:, 2:])
    (name, node), = fam.convert("model.layers.2.mlp.experts.down_proj", Load(f.add("d", w)), 2)
    assert name == "blk.2.ffn_down_exps.weight" and isinstance(node, Load)


def test_mtp_tensors_become_the_layers_after_the_decoder():
    fam = Qwen35(_hparams(), "Qwen3_5ForConditionalGeneration")
    src = {"mtp.fc.weight": "model.layers.4.eh_proj.weight",
           "mtp.pre_fc_norm_embedding.weight": "model.layers.4.enorm.weight",
           "mtp.pre_fc_norm_hidden.weight": "model.layers.4.hnorm.weight",
           "mtp.norm.weight": "model.layers.4.shared_head.norm.weight",
           "mtp.layers.0.self_attn.q_proj.weight": "model.layers.4.self_attn.q_proj.weight",
           "model.language_model.layers.0.linear_attn.A_log": "model.layers.0.linear_attn.A_log",
           "model.visual.blocks.0.attn.qkv.weight": None}
    assert {k: fam.source_name(k) for k in src} == src
    assert fam.mtp_layers() == 1 and fam.block_count == 5
    gguf_names = [fam.map_name(n) for n in list(src.values())[:5]]
    assert gguf_names == ["blk.4.nextn.eh_proj.weight", "blk.4.nextn.enorm.weight", "blk.4.nextn.hnorm.weight",
                          "blk.4.nextn.shared_head_norm.weight", "blk.4.attn_q.weight"]


def test_qwen3_next_counts_the_mtp_layers_of_the_checkpoint():
    hp = _hparams(architectures=["Qwen3NextForCausalLM"], linear_num_value_heads=4)
    del hp["mtp_num_hidden_layers"]
    fam = Qwen3Next(hp, "Qwen3NextForCausalLM")
    for name in ("mtp.layers.0.input_layernorm.weight", "mtp.layers.1.input_layernorm.weight", "mtp.fc.weight"):
        fam.source_name(name)
    assert fam.mtp_layers() == 2 and fam.block_count == 6
    with pytest.raises(errors.UnsupportedArchitectureError, match="at most 64 MTP layers"):
        Qwen3Next(hp, "Qwen3NextForCausalLM").source_name("mtp.layers.99999999.input_layernorm.weight")


def test_layer_types_must_name_every_layer():
    with pytest.raises(errors.InvalidConfigError, match="layer_types has 3 entries"):
        Qwen35(_hparams(layer_types=["linear_attention"] * 3), "Qwen3_5ForCausalLM")
    with pytest.raises(errors.InvalidConfigError, match="linear_num_value_heads 5 is not a multiple"):
        Qwen35(_hparams(linear_num_value_heads=5), "Qwen3_5ForCausalLM")


# --------------------------------------------------------------------------- plans of the fixtures


def _repo(fixture_root, name: str):
    """(small files, headers, shards, snapshot dir) of a fixture repo's main commit, from disk."""
    snap = snapshot_dir(fixture_root / "hfs-test" / name)
    files = {p.relative_to(snap).as_posix(): p.read_bytes() for p in snap.rglob("*")
             if p.is_file() and p.suffix != ".safetensors"}
    shards = sorted(p.name for p in snap.glob("model*.safetensors"))
    headers = {}
    for s in shards:
        data = (snap / s).read_bytes()
        headers[s] = parse_header(s, data, len(data))
    return files, headers, shards, snap


def _plan(files, headers, shards, outtype="f32"):
    return make_plan(repo_name="tiny", files=files, headers=headers, shards=shards, outtype=outtype)


@pytest.mark.parametrize("name", NAMES)
def test_row_blocks_of_every_transformed_tensor_give_the_whole(fixture_root, name):
    """Each reordered, split or computed tensor of the real plan, cut into units as the pipeline cuts
    it under a tight budget: the blocks, evaluated from their own spans only, are the whole tensor."""
    files, headers, shards, snap = _repo(fixture_root, name)
    plan = _plan(files, headers, shards)
    blobs = {s: (snap / s).read_bytes() for s in shards}
    checked = 0
    for t in plan.tensors:
        if not isinstance(t.node, (GatherRows, PermuteCols, NegExp, Reshape)):
            continue
        full = t.node.evaluate({s: blobs[s.file][s.start:s.end] for s in t.node.spans(0, t.node.rows)})
        units = units_for(t, 0, target=max(64, t.nbytes // 5))
        blocks = [t.node.eval_rows({s: blobs[s.file][s.start:s.end] for s in u.spans}, u.r0, u.r1) for u in units]
        assert np.array_equal(np.concatenate(blocks).reshape(t.shape), full), t.name
        checked += 1
    assert checked >= 3


def test_without_mtp_tensors_the_mtp_layers_the_config_counts_are_left_out(fixture_root):
    """A text model transformers saved (no mtp.*, mtp_num_hidden_layers still 1): as the reference's --no-mtp."""
    plan = _plan(*_repo(fixture_root, "tiny-qwen35-moe")[:3])
    kv = plan.metadata.values_by_key()
    assert kv["qwen35moe.block_count"] == 4 and "qwen35moe.nextn_predict_layers" not in kv
    assert kv["qwen35moe.attention.recurrent_layers"] == [True, True, True, False]
    assert not any(t.name.startswith("blk.4.") for t in plan.tensors)


def test_mtp_tensors_without_an_mtp_layer_are_refused_as_the_reference_does(fixture_root):
    files, headers, shards, _ = _repo(fixture_root, "tiny-qwen3-next")  # its config does not count MTP layers
    headers = {s: [t for t in ts if not t.name.startswith("mtp.layers.")] for s, ts in headers.items()}
    files = {k: v for k, v in files.items() if k != "model.safetensors.index.json"}
    with pytest.raises(errors.UnsupportedArchitectureError, match="mtp.. tensors but no MTP layer"):
        _plan(files, headers, shards)


def test_a_projection_that_disagrees_with_config_is_refused_before_any_fetch(fixture_root):
    files, headers, shards, _ = _repo(fixture_root, "tiny-qwen3-next")
    first = shards[0]
    name = "model.layers.0.linear_attn.in_proj_qkvz.weight"
    changed = [dataclasses.replace(t, shape=(t.shape[0] - 2, t.shape[1]), end=t.end - 2 * t.shape[1] * 2)
               if t.name == name else t for t in headers[first]]
    with pytest.raises(errors.ConfigMismatchError, match="in_proj_qkvz"):
        _plan(files, {**headers, first: changed}, shards)


def test_negexp_of_a_source_tensor_knows_its_bytes():
    src = SourceTensor("f", "a", "F32", (6,), 0, 24)
    node = NegExp(PermuteCols(Load(src), (1, 0, 2, 3, 5, 4)))
    assert node.row_align() == 1 and node.spans(0, 1)[0].nbytes == 24
