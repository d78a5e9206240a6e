"""The hybrid and Mistral 3 families at the plan level: what the reference decides from the config
(architecture, refusals, per-layer keys) and the shapes config.json fixes. The bytes and keys against
the reference converter are the goldens' (``test_convert``, ``test_kquant``, ``test_llamacpp_decode``)."""

from __future__ import annotations

import json

import pytest

from hfstream import errors
from hfstream.plan import draft_plan
from hfstream.safetensors import SourceTensor, parse_header
from fixtures.build import snapshot_dir


def _inputs(fixture_root, name: str, config_change=None, tensor_shapes=None):
    repo = f"hfs-test/{name}"
    snap = snapshot_dir(fixture_root / repo)
    files = {p.name: p.read_bytes() for p in snap.iterdir() if p.suffix != ".safetensors"}
    if config_change is not None:
        config = json.loads(files["config.json"])
        config_change(config)
        files["config.json"] = json.dumps(config).encode()
    shards = sorted(p.name for p in snap.glob("model*.safetensors"))
    shapes = tensor_shapes or {}
    headers = {s: [t if t.name not in shapes else SourceTensor(t.file, t.name, t.dtype, shapes[t.name], t.start, t.end)
                   for t in parse_header(s, (snap / s).read_bytes(), (snap / s).stat().st_size)] for s in shards}
    return {"repo_name": name, "files": files, "headers": headers, "shards": shards}


def _draft(fixture_root, name, outtype="f16", **kw):
    return draft_plan(outtype=outtype, **_inputs(fixture_root, name, **kw))


def _value(plan, key):
    return plan.metadata[key].value


def test_nemotron_h_moe_layers_get_feed_forward_lengths_and_attention_layers_kv_heads(fixture_root):
    plan = _draft(fixture_root, "tiny-nemotron-h")
    assert plan.arch == "nemotron_h_moe"
    # pattern MEM*E
    assert list(_value(plan, "nemotron_h_moe.feed_forward_length")) == [0, 32, 0, 0, 32]
    assert list(_value(plan, "nemotron_h_moe.attention.head_count_kv")) == [0, 0, 0, 2, 0]
    names = [t.name for t in plan.tensors]
    assert "blk.1.ffn_up_exps.weight" in names and "blk.1.exp_probs_b.bias" in names
    assert "blk.0.ssm_a" in names and "blk.3.attn_q.weight" in names


def test_dense_nemotron_h_is_refused_as_the_reference_writes_it_unloadable(fixture_root):
    def dense(config):
        config["hybrid_override_pattern"] = "M-M*-"

    with pytest.raises(errors.UnsupportedArchitectureError, match="dense MLP layers"):
        _draft(fixture_root, "tiny-nemotron-h", config_change=dense)


def test_nemotron_h_with_mtp_layers_is_refused(fixture_root):
    def mtp(config):
        config["num_nextn_predict_layers"] = 1

    with pytest.raises(errors.UnsupportedArchitectureError, match="multi-token prediction"):
        _draft(fixture_root, "tiny-nemotron-h", config_change=mtp)


def test_granite_hybrid_reads_config_json_as_written(fixture_root):
    # transformers' GraniteMoeHybridConfig would supply defaults; the reference's Mamba-2 class does not
    # read it, so a key config.json lacks stays absent: no attention.layer_norm_epsilon, no rope theta default
    plan = _draft(fixture_root, "tiny-granite4", config_change=lambda c: c.pop("rope_theta"))
    assert "granitehybrid.rope.freq_base" not in plan.metadata
    assert list(_value(plan, "granitehybrid.attention.head_count_kv")) == [0, 2, 0, 0]
    assert _value(plan, "granitehybrid.context_length") == 2**20  # no rope: the Mamba-2 layers carry position


def test_granite_without_mamba_layers_is_refused(fixture_root):
    def all_attention(config):
        config["layer_types"] = ["attention"] * 4

    with pytest.raises(errors.UnsupportedArchitectureError, match="without Mamba-2 layers"):
        _draft(fixture_root, "tiny-granite4", config_change=all_attention)


@pytest.mark.parametrize("name, tensor, shape", [
    ("tiny-granite4", "model.layers.0.mamba.norm.weight", (64,)),  # mamba_expand * hidden is 128
    ("tiny-granite4", "model.layers.1.block_sparse_moe.input_linear.weight", (4, 32, 64)),  # 2 x ffn is 64
    ("tiny-falcon-h1", "model.layers.1.mamba.A_log", (4,)),  # one per head: 8
    ("tiny-nemotron-h", "backbone.layers.2.mixer.norm.weight", (96,)),  # 8 heads x 16
    ("tiny-lfm2", "model.layers.0.conv.conv.weight", (64, 1, 4)),  # conv_L_cache is 3
])
def test_mixer_shapes_must_fit_the_config(fixture_root, name, tensor, shape):
    with pytest.raises(errors.ConfigMismatchError, match=tensor.replace(".", r"\.")):
        _draft(fixture_root, name, tensor_shapes={tensor: shape})


def test_falcon_h1_needs_its_multipliers(fixture_root):
    with pytest.raises(errors.InvalidConfigError, match="ssm_multipliers"):
        _draft(fixture_root, "tiny-falcon-h1", config_change=lambda c: c.update(ssm_multipliers=[1.0, 1.0]))


def test_lfm2_writes_kv_heads_per_layer_type_and_the_adjusted_feed_forward_length(fixture_root):
    plan = _draft(fixture_root, "tiny-lfm2")
    assert list(_value(plan, "lfm2.attention.head_count_kv")) == [0, 0, 2, 0]
    assert _value(plan, "lfm2.feed_forward_length") == 192  # int(2 * 256 / 3) = 170, up to a multiple of 32
    conv = next(t for t in plan.tensors if t.name == "blk.0.shortconv.conv.weight")
    assert conv.shape == (64, 3)


def test_ministral3_writes_its_yarn_keys_and_mistral_small_does_not(fixture_root):
    ministral = _draft(fixture_root, "tiny-ministral3")
    assert ministral.arch == "mistral3"
    assert _value(ministral, "mistral3.rope.scaling.yarn_log_multiplier") == 1.0
    assert _value(ministral, "mistral3.attention.temperature_scale") == pytest.approx(0.1)
    small = _draft(fixture_root, "tiny-mistral3")
    assert small.arch == "mistral3" and "mistral3.attention.temperature_scale" not in small.metadata
    assert not any("vision" in t.name or "mm" in t.name for t in small.tensors)


def test_mistral4_text_is_refused(fixture_root):
    def mistral4(config):
        config["text_config"]["model_type"] = "mistral4"

    with pytest.raises(errors.UnsupportedArchitectureError, match="mistral4"):
        _draft(fixture_root, "tiny-mistral3", config_change=mistral4)


@pytest.mark.parametrize("checkpoint_name, converted", [
    # transformers 4.5x's save_pretrained (Mistral Small 3.1/3.2, Magistral)
    ("language_model.model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.q_proj.weight"),
    ("language_model.lm_head.weight", "lm_head.weight"),
    ("vision_tower.transformer.layers.0.attention.q_proj.weight", None),
    ("multi_modal_projector.patch_merger.merging_layer.weight", None),
    # transformers 5's module names (Ministral 3, Devstral Small 2)
    ("model.language_model.layers.0.mlp.down_proj.weight", "model.layers.0.mlp.down_proj.weight"),
    ("model.language_model.embed_tokens.weight", "model.embed_tokens.weight"),
    ("model.vision_tower.patch_conv.weight", None),
    ("model.multi_modal_projector.linear_1.weight", None),
])
def test_mistral3_keeps_the_text_model_under_either_naming(fixture_root, checkpoint_name, converted):
    from hfstream.arch import family_for
    from hfstream.hfconfig import normalize

    files = _inputs(fixture_root, "tiny-mistral3")["files"]
    family = family_for(normalize(files["config.json"], model_types=("mistral3",)))
    assert family.source_name(checkpoint_name) == converted


def test_a_mistral_format_repo_is_refused_in_one_line(tmp_path):
    import subprocess
    import sys

    model = tmp_path / "Ministral-3-3B-Instruct-2512"
    model.mkdir()
    (model / "params.json").write_text(json.dumps({"dim": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2,
                                                   "vocab_size": 1000, "norm_eps": 1e-5}))
    (model / "tekken.json").write_text("{}")
    (model / "consolidated.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run([sys.executable, "-m", "hfstream", "convert", str(model), "-o", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == errors.UnsupportedArchitectureError.exit_code, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "Mistral's format" in line and "params.json" in line and "config.json" in line
    assert list(out.iterdir()) == []
