"""OLMo, SmolLM3, Granite, Apertus, Seed-OSS, EXAONE 4 and ERNIE 4.5: what their goldens do not cover
(config variants the fixtures do not have, refusals, the xIELU values read before the plan)."""

from __future__ import annotations

import dataclasses
import json

import gguf
import numpy as np
import pytest

from hfstream import cli, errors
from hfstream.graph import SliceRows, SliceStackRows
from hfstream.plan import make_plan, value_sources
from hfstream.safetensors import parse_header
from fixtures.build import snapshot_dir

K = gguf.Keys


def _repo(fixture_root, name: str):
    """(small files, headers, shards) of a fixture repo's main commit, from disk."""
    snap = snapshot_dir(fixture_root / "hfs-test" / name)
    files = {p.relative_to(snap).as_posix(): p.read_bytes() for p in snap.rglob("*")
             if p.is_file() and p.suffix != ".safetensors"}
    shards = sorted(p.name for p in snap.glob("model*.safetensors"))
    headers, blobs = {}, {}
    for s in shards:
        blobs[s] = (snap / s).read_bytes()
        headers[s] = parse_header(s, blobs[s], len(blobs[s]))
    return files, headers, shards, blobs


def _plan(files, headers, shards, blobs=None, **config_changes):
    if config_changes:
        config = json.loads(files["config.json"])
        config.update(config_changes)
        files = {**files, "config.json": json.dumps(config).encode()}
    values = None
    if blobs is not None:
        values = {s: blobs[s.file][s.start:s.end] for s in value_sources(files, headers)}
    return make_plan(repo_name="tiny", files=files, headers=headers, shards=shards, outtype="f16", values=values)


def _kv(plan) -> dict:
    return plan.metadata.values_by_key()


# --- OLMo ----------------------------------------------------------------------------------------


def test_olmoe_writes_its_rms_epsilon_again_as_1e5_in_place(fixture_root):
    files, headers, shards, _ = _repo(fixture_root, "tiny-olmoe")
    plan = _plan(files, headers, shards, rms_norm_eps=1e-6)
    keys = list(_kv(plan))
    assert _kv(plan)["olmoe.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-5)
    assert keys.index("olmoe.attention.layer_norm_rms_epsilon") < keys.index("general.file_type")


def test_olmo_q_k_norms_must_be_as_wide_as_their_projections(fixture_root):
    files, headers, shards, _ = _repo(fixture_root, "tiny-olmo2")
    (shard,) = shards
    per_head = [dataclasses.replace(t, shape=(16,)) if t.name == "model.layers.1.self_attn.k_norm.weight" else t
                for t in headers[shard]]
    with pytest.raises(errors.ConfigMismatchError, match=r"k_norm.*\[16\].*\[32\]"):
        _plan(files, {shard: per_head}, shards)


def test_olmo2_with_a_sliding_window_and_no_layer_types_makes_every_fourth_layer_global(fixture_root):
    files, headers, shards, _ = _repo(fixture_root, "tiny-olmo2")
    kv = _kv(_plan(files, headers, shards, sliding_window=128))
    assert kv["olmo2.attention.sliding_window"] == 128
    assert list(kv["olmo2.attention.sliding_window_pattern"]) == [True, True]  # layers 0 and 1 of 2: both local
    assert "olmo2.attention.sliding_window" not in _kv(_plan(files, headers, shards))


# --- Granite -------------------------------------------------------------------------------------


def test_granite_drops_head_dim_and_writes_only_the_multipliers_that_are_set(fixture_root):
    files, headers, shards, _ = _repo(fixture_root, "tiny-granite")
    kv = _kv(_plan(files, headers, shards, head_dim=16, residual_multiplier=0.0))
    assert "granite.attention.key_length" not in kv and "granite.attention.value_length" not in kv
    assert kv["granite.rope.dimension_count"] == 16
    assert kv["granite.attention.scale"] == 0.015625 and kv["granite.embedding_scale"] == 12.0
    assert "granite.residual_scale" not in kv  # 0 counts as not set, as in the reference


def test_granite_4_vision_language_models_are_refused(fixture_root):
    files, headers, shards, _ = _repo(fixture_root, "tiny-granite")
    with pytest.raises(errors.UnsupportedArchitectureError, match="Granite 4 Vision"):
        _plan(files, headers, shards, deepstack_layer_map=[[0, 1]])


def test_granite_moe_splits_the_fused_gate_up_experts_into_two_stacks(fixture_root):
    files, headers, shards, _ = _repo(fixture_root, "tiny-granite-moe")
    by_name = {t.name: t for t in _plan(files, headers, shards).tensors}
    gate, up = by_name["blk.1.ffn_gate_exps.weight"].node, by_name["blk.1.ffn_up_exps.weight"].node
    assert isinstance(gate, SliceStackRows) and (gate.start, gate.stop) == (0, 32)
    assert isinstance(up, SliceStackRows) and (up.start, up.stop) == (32, 64)
    (src,) = gate.leaves()
    assert src.name == "model.layers.1.block_sparse_moe.input_linear.weight" and gate.shape == (4, 32, 64)


def test_granite_moe_fused_experts_must_hold_twice_intermediate_size_rows(fixture_root):
    files, headers, shards, _ = _repo(fixture_root, "tiny-granite-moe")
    (shard,) = shards
    short = [dataclasses.replace(t, shape=(4, 48, 64), end=t.start + 4 * 48 * 64 * 2)
             if t.name == "model.layers.1.block_sparse_moe.input_linear.weight" else t for t in headers[shard]]
    with pytest.raises(errors.ConfigMismatchError, match=r"\[4, 48, 64\].*2 x intermediate_size 32"):
        _plan(files, {shard: short}, shards)


# --- Apertus: the xIELU scalars --------------------------------------------------------------------


def test_apertus_xielu_scalars_become_keys_right_after_the_architecture(fixture_root):
    files, headers, shards, blobs = _repo(fixture_root, "tiny-apertus")
    wanted = value_sources(files, headers)
    assert sorted(s.name for s in wanted) == sorted(f"model.layers.{i}.mlp.act_fn.{k}"
                                                    for i in (0, 1) for k in ("alpha_n", "alpha_p", "beta", "eps"))
    plan = _plan(files, headers, shards, blobs)
    keys = list(_kv(plan))
    assert keys[:6] == ["general.architecture", "xielu.alpha_n", "xielu.alpha_p",
                        "xielu.beta", "xielu.eps", "general.type"]
    # each value is the stored bf16 number, widened to f32, per layer in layer order
    by_name = {s.name: s for s in wanted}
    for kind in ("alpha_n", "alpha_p", "beta", "eps"):
        expected = []
        for i in (0, 1):
            s = by_name[f"model.layers.{i}.mlp.act_fn.{kind}"]
            bits = int.from_bytes(blobs[s.file][s.start:s.end], "little") << 16
            expected.append(float(np.array([bits], dtype=np.uint32).view(np.float32)[0]))
        assert [float(v) for v in _kv(plan)[f"xielu.{kind}"]] == expected
    assert not any("act_fn" in t.name for t in plan.tensors)


def test_a_value_tensor_holding_more_than_one_number_is_refused_before_reading_it(fixture_root):
    files, headers, shards, _ = _repo(fixture_root, "tiny-apertus")
    (shard,) = shards
    big = [dataclasses.replace(t, shape=(1 << 20,), end=t.start + (2 << 20)) if t.name.endswith("0.mlp.act_fn.beta")
           else t for t in headers[shard]]
    with pytest.raises(errors.InvalidHeaderError, match=r"act_fn.beta.*one number.*\[1048576\]"):
        value_sources(files, {shard: big})


def test_a_dry_run_reads_the_headers_and_the_xielu_scalars_only(fixture_root, fresh_hub, capsys):
    files, headers, _, _ = _repo(fixture_root, "tiny-apertus")
    rc = cli.main(["convert", "hfs-test/tiny-apertus", "--outtype", "f16", "--dry-run"])
    assert rc == 0, capsys.readouterr().err
    past_header = sorted(e["range"] for e in fresh_hub.log
                         if e["origin"] == "storage" and e["range"] and not e["range"].startswith("bytes=0-"))
    scalars = sorted(f"bytes={s.start}-{s.end - 1}" for s in value_sources(files, headers))
    assert len(scalars) == 8 and past_header == scalars


# --- EXAONE 4 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("pattern, expected", [("LLG", [True, True, False, True]), (2, [True, False, True, False])])
def test_exaone4_sliding_window_pattern_without_layer_types(fixture_root, pattern, expected):
    files, headers, shards, _ = _repo(fixture_root, "tiny-exaone4")
    config = json.loads(files["config.json"])
    config["sliding_window_pattern"] = pattern
    plan = _plan({**files, "config.json": json.dumps(config).encode()}, headers, shards)
    # transformers fills layer_types in from an int pattern (every n-th global); from a string it needs them given
    assert list(_kv(plan)["exaone4.attention.sliding_window_pattern"]) == expected


# --- ERNIE 4.5 -----------------------------------------------------------------------------------


def test_ernie_fused_qkv_and_up_gate_projections_are_split_by_rows(fixture_root):
    files, headers, shards, _ = _repo(fixture_root, "tiny-ernie4_5")
    (shard,) = shards
    fused = []
    for t in headers[shard]:
        # layer 0 stored as ERNIE's fused checkpoints are: q, k, v one tensor, gate and up one tensor
        if t.name == "model.layers.0.self_attn.q_proj.weight":
            fused.append(dataclasses.replace(t, name="ernie.layers.0.self_attn.qkv_proj.weight",
                                             shape=(128 + 64 + 64, 64), end=t.start + 256 * 64 * 2))
        elif t.name == "model.layers.0.mlp.gate_proj.weight":
            fused.append(dataclasses.replace(t, name="ernie.layers.0.mlp.up_gate_proj.weight", shape=(384, 64),
                                             end=t.start + 384 * 64 * 2))
        elif not t.name.startswith(("model.layers.0.self_attn.k_proj", "model.layers.0.self_attn.v_proj",
                                    "model.layers.0.mlp.up_proj")):
            fused.append(t)
    by_name = {t.name: t.node for t in _plan(files, {shard: fused}, shards).tensors}
    expected = {"blk.0.attn_q.weight": (0, 128), "blk.0.attn_k.weight": (128, 192), "blk.0.attn_v.weight": (192, 256),
                "blk.0.ffn_gate.weight": (0, 192), "blk.0.ffn_up.weight": (192, 384)}
    for name, (start, stop) in expected.items():
        node = by_name[name]
        assert isinstance(node, SliceRows) and (node.start, node.stop) == (start, stop), name


def test_ernie_add_prefix_space_comes_after_the_special_tokens(fixture_root):
    files, headers, shards, _ = _repo(fixture_root, "tiny-ernie4_5")
    config = json.loads(files["tokenizer_config.json"])
    config["add_prefix_space"] = False
    files = {**files, "tokenizer_config.json": json.dumps(config).encode()}
    keys = list(_kv(_plan(files, headers, shards)))
    assert keys[-1] == "tokenizer.ggml.add_space_prefix"
    assert _kv(_plan(files, headers, shards))["tokenizer.ggml.add_space_prefix"] is False
    config["add_prefix_space"] = None
    files = {**files, "tokenizer_config.json": json.dumps(config).encode()}
    with pytest.raises(errors.InvalidConfigError, match="add_prefix_space"):
        _plan(files, headers, shards)


def test_ernie_moe_leaves_out_the_mtp_block_and_checks_its_moe_keys(fixture_root):
    files, headers, shards, _ = _repo(fixture_root, "tiny-ernie4_5-moe")
    plan = _plan(files, headers, shards)
    assert [t.name for t in plan.tensors if "_exps" in t.name] == [
        "blk.1.ffn_gate_exps.weight", "blk.1.ffn_up_exps.weight", "blk.1.ffn_down_exps.weight"]
    assert not any(t.name.startswith("blk.2") for t in plan.tensors)
    assert any(s.name.startswith("model.mtp_block.0.") for s in headers[shards[0]])
    with pytest.raises(errors.InvalidConfigError, match="moe_k is 0"):
        _plan(files, headers, shards, moe_k=0)
