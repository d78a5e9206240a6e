"""Gemma family details the golden conversions do not reach.

The goldens (tiny-gemma, tiny-gemma2, tiny-gemma3, tiny-gemma3-vlm, tiny-gemma4, tiny-gemma4-vlm,
tiny-gemma3n, tiny-gemma3n-vlm) check whole files against the reference. Here: the embedding cut of
Gemma 3 when it really cuts, the stray ``lm_head.weight``, CodeGemma's fixed ids giving way to the
tokenizer's, keys written twice, the +1 on norms in each source dtype against torch (when
installed); Gemma 3n's AltUp stacks, zero padding and sparsity quantiles (against torch), Gemma 4's
per-layer keys, generated rope_freqs, visible chat tokens, and the refusals of both.
"""

from __future__ import annotations

import json
import math

import gguf
import numpy as np
import pytest

from hfstream import errors
from hfstream.arch.gemma import _add_again, _real_vocab_size
from hfstream.arch.gemma3n import normal_quantile_f32
from hfstream.graph import AddScalar, Load, SliceRows
from hfstream.kv import KeyWriter, Metadata
from hfstream.plan import draft_plan, make_plan
from hfstream.safetensors import SourceTensor, parse_header
from fixtures.build import snapshot_dir


def repo(fixture_root, name):
    """(small files, headers, shards, model.safetensors bytes) of a fixture repo, from disk."""
    snap = snapshot_dir(fixture_root / "hfs-test" / name)
    files = {p.name: p.read_bytes() for p in snap.iterdir() if p.suffix != ".safetensors"}
    data = (snap / "model.safetensors").read_bytes()
    headers = {"model.safetensors": parse_header("model.safetensors", data, len(data))}
    return files, headers, ["model.safetensors"], data


def plan_of(files, headers, shards, outtype="f32", **kw):
    return make_plan(repo_name="tiny", files=files, headers=headers, shards=shards, outtype=outtype, **kw)


def kv(plan, key):
    value = plan.metadata.get(key)
    return None if value is None else value.value


def tensor(plan, name):
    return next(t for t in plan.tensors if t.name == name)


def evaluate(node, blob):
    return node.evaluate({s: blob[s.start:s.end] for s in node.spans(0, node.rows)})


def test_gemma3_real_vocab_size_of_a_sentencepiece_vocab(fixture_root):
    """The SentencePiece vocab is padded to vocab_size (so, with the embedding checked against
    vocab_size, it never cuts); without vocab_size it is the model's size."""
    files, _, _, _ = repo(fixture_root, "tiny-gemma3")
    assert _real_vocab_size(files, {"vocab_size": 1088}) == 1088
    assert _real_vocab_size(files, {"vocab_size": None}) == 1024
    assert _real_vocab_size(files, {}) == 1024
    assert _real_vocab_size(files, {"vocab_size_per_layer_input": 1030, "vocab_size": 1088}) == 1030


def test_gemma3_without_tokenizer_model_cuts_to_tokenizer_json(fixture_root):
    """Without tokenizer.model the real vocab size is tokenizer.json's vocab plus its added tokens
    (the reference counts tokens listed in both twice, so real Gemma 3 files never cut)."""
    files, headers, shards, blob = repo(fixture_root, "tiny-gemma3-vlm")
    del files["tokenizer.model"]
    assert tensor(plan_of(files, headers, shards, bpe_pre="default"), "token_embd.weight").shape == (1088, 64)
    tj = json.loads(files["tokenizer.json"])
    tj["added_tokens"] = tj["added_tokens"][:10]
    files["tokenizer.json"] = json.dumps(tj).encode()
    embd = tensor(plan_of(files, headers, shards, bpe_pre="default"), "token_embd.weight")
    assert embd.shape == (1034, 64) and isinstance(embd.node, SliceRows)
    src = next(s for s in headers["model.safetensors"] if s.name == "language_model.model.embed_tokens.weight")
    assert np.array_equal(evaluate(embd.node, blob), evaluate(Load(src), blob)[:1034])
    del files["tokenizer.json"]
    with pytest.raises(errors.UnsupportedTokenizerError):
        plan_of(files, headers, shards)


@pytest.mark.parametrize("name, kept", [("tiny-gemma", False), ("tiny-gemma2", False), ("tiny-gemma3", True)])
def test_a_stray_lm_head_is_dropped_by_gemma_1_and_2_only(fixture_root, name, kept):
    files, headers, shards, _ = repo(fixture_root, name)
    embd = next(s for s in headers["model.safetensors"] if s.name == "model.embed_tokens.weight")
    end = max(s.end for s in headers["model.safetensors"])
    head = SourceTensor("model.safetensors", "lm_head.weight", embd.dtype, embd.shape, end, end + embd.nbytes)
    headers = {"model.safetensors": [*headers["model.safetensors"], head]}
    names = [t.name for t in plan_of(files, headers, shards).tensors]
    assert ("output.weight" in names) is kept


def test_codegemma_ids_give_way_to_the_tokenizer_config(fixture_root):
    files, headers, shards, _ = repo(fixture_root, "tiny-gemma")
    assert kv(plan_of(files, headers, shards), "tokenizer.ggml.eot_token_id") == 107
    config = json.loads(files["tokenizer_config.json"])
    config["eot_token"] = "<start_of_turn>"
    files["tokenizer_config.json"] = json.dumps(config).encode()
    plan = plan_of(files, headers, shards)
    assert kv(plan, "tokenizer.ggml.eot_token_id") == 106
    assert kv(plan, "tokenizer.ggml.add_space_prefix") is False
    assert not any(k.startswith(("tokenizer.ggml.prefix", "tokenizer.ggml.fsep")) for k in plan.metadata)


def test_gemma3_refuses_attention_softcapping(fixture_root):
    files, headers, shards, _ = repo(fixture_root, "tiny-gemma3")
    config = json.loads(files["config.json"])
    config["attn_logit_softcapping"] = 50.0
    files["config.json"] = json.dumps(config).encode()
    with pytest.raises(errors.UnsupportedArchitectureError):
        plan_of(files, headers, shards)


def test_a_key_added_again_keeps_its_place():
    w = gguf.GGUFWriter(path=None, arch="gemma3")
    w.add_context_length(10)
    w.add_head_count(4)
    _add_again(w, w.add_context_length, gguf.Keys.LLM.CONTEXT_LENGTH, 10)
    _add_again(w, w.add_sliding_window, gguf.Keys.Attention.SLIDING_WINDOW, 16)
    _add_again(w, w.add_context_length, gguf.Keys.LLM.CONTEXT_LENGTH, 20)
    kv_data = w.kv_data[0]
    assert list(kv_data) == ["general.architecture", "gemma3.context_length", "gemma3.attention.head_count",
                             "gemma3.attention.sliding_window"]
    assert kv_data["gemma3.context_length"].value == 20


@pytest.mark.parametrize("dtype", ["F16", "BF16", "F32"])
def test_norm_plus_one_is_computed_as_torch_does(dtype):
    """F16 stays F16 for the addition (rounded once to F16), BF16 and F32 add in F32."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.normal(0, 1, 2000), rng.normal(0, 1e-4, 500), rng.uniform(-3000, 3000, 500),
                             [2.0 ** -24, -2.0 ** -24, 2.0 ** -14, 0.9995, -0.99951171875, 1.0, 2047.0]])
    if dtype == "F16":
        raw = values.astype("<f2").tobytes()
        t = torch.frombuffer(bytearray(raw), dtype=torch.float16)
    elif dtype == "BF16":
        raw = (values.astype(np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
        t = torch.frombuffer(bytearray(raw), dtype=torch.bfloat16).to(torch.float32)
    else:
        raw = values.astype("<f4").tobytes()
        t = torch.frombuffer(bytearray(raw), dtype=torch.float32)
    src = SourceTensor("f", "model.norm.weight", dtype, (len(values),), 0, len(raw))
    ours = AddScalar(Load(src), 1.0)
    got = ours.evaluate({s: raw[s.start:s.end] for s in ours.spans(0, ours.rows)})
    want = (t + 1).numpy()
    assert got.dtype == want.dtype and got.tobytes() == want.tobytes()


# --- Gemma 3n and Gemma 4 --------------------------------------------------------------------------

def test_a_key_added_again_with_another_type_takes_it_in_place():
    """Gemma 4's per-layer head_count_kv array over Gemma 3's number: the number's place, the array's type."""
    w = KeyWriter(Metadata(), "gemma4")
    w.add_head_count_kv(2)
    w.add_sliding_window(16)
    _add_again(w, w.add_head_count_kv, gguf.Keys.Attention.HEAD_COUNT_KV, [2, 2, 1])
    assert list(w.metadata) == ["gemma4.attention.head_count_kv", "gemma4.attention.sliding_window"]
    assert w.metadata["gemma4.attention.head_count_kv"].value == [2, 2, 1]
    assert w.metadata["gemma4.attention.head_count_kv"].type == gguf.GGUFValueType.ARRAY


@pytest.mark.parametrize("p, want", [(0.95, 1.6448535919189453), (0.0, -math.inf), (1.0, math.inf), (0.5, 0.0),
                                     (0, -math.inf)])
def test_sparsity_scale_of_known_values(p, want):
    """Values torch 2.13 gives for Normal(0, 1).icdf(tensor(p, float32)) (0.95 is what gemma-3n uses)."""
    assert normal_quantile_f32(p) == want


def test_sparsity_scale_is_torchs_float32_normal_quantile():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    ps = np.concatenate([rng.random(3000), rng.random(300) * 1e-6, 1 - rng.random(300) * 1e-6,
                         np.linspace(0, 1, 101)])
    normal = torch.distributions.normal.Normal(0, 1)
    for p in ps.tolist():
        want = normal.icdf(torch.tensor(p, dtype=torch.float32)).item()
        assert normal_quantile_f32(p) == want, p


@pytest.mark.parametrize("bad", [-0.1, 1.5, "0.9", None, True])
def test_sparsity_pattern_values_outside_0_1_are_refused(bad):
    with pytest.raises(errors.InvalidConfigError):
        normal_quantile_f32(bad)


def with_config(files, edit):
    config = json.loads(files["config.json"])
    edit(config.get("text_config", config))
    files["config.json"] = json.dumps(config).encode()
    return files


def test_gemma3n_stacks_the_altup_projections_and_pads_the_embeddings_with_zeros(fixture_root):
    files, headers, shards, blob = repo(fixture_root, "tiny-gemma3n")
    plan = plan_of(files, headers, shards)
    src = {s.name: s for s in headers["model.safetensors"]}
    for out, kind in (("altup_proj.weight", "altup_projections"),
                      ("altup_unembd_proj.weight", "altup_unembed_projections")):
        want = np.stack([evaluate(Load(src[f"model.{kind}.{i}.weight"]), blob) for i in range(3)])
        got = evaluate(tensor(plan, out).node, blob)
        assert got.shape == (3, 64, 64) and got.dtype == np.float16 and np.array_equal(got, want)
    per_layer = evaluate(tensor(plan, "per_layer_token_embd.weight").node, blob)
    assert per_layer.shape == (1088, 4 * 256) and per_layer.dtype == np.float16
    assert np.array_equal(per_layer[:1024], evaluate(Load(src["model.embed_tokens_per_layer.weight"]), blob))
    assert not per_layer[1024:].any()
    assert tensor(plan, "token_embd.weight").shape == (1088, 64)  # already vocab_size rows: as it is


def test_gemma3n_refuses_a_missing_altup_projection_and_other_stream_counts(fixture_root):
    files, headers, shards, _ = repo(fixture_root, "tiny-gemma3n")
    gone = "model.altup_projections.1.weight"
    short = {"model.safetensors": [s for s in headers["model.safetensors"] if s.name != gone]}
    with pytest.raises(errors.InvalidHeaderError, match="altup_projections.1"):
        plan_of(files, short, shards)
    config = json.loads(files["config.json"])
    config["altup_num_inputs"] = 2
    files["config.json"] = json.dumps(config).encode()
    with pytest.raises(errors.UnsupportedArchitectureError, match="AltUp"):
        plan_of(files, headers, shards)


def test_gemma3n_checks_each_layer_against_its_own_mlp_width(fixture_root):
    files, headers, shards, _ = repo(fixture_root, "tiny-gemma3n-vlm")
    with_config(files, lambda c: c.update(intermediate_size=[128, 128, 128, 256, 128]))
    with pytest.raises(errors.ConfigMismatchError, match=r"layers\.3\.mlp.*intermediate_size 256"):
        plan_of(files, headers, shards)


def test_gemma4_writes_what_its_two_kinds_of_layers_need(fixture_root):
    files, headers, shards, _ = repo(fixture_root, "tiny-gemma4")
    plan = plan_of(files, headers, shards)
    assert kv(plan, "gemma4.attention.head_count_kv") == [2, 2, 2, 1]
    assert (kv(plan, "gemma4.attention.key_length"), kv(plan, "gemma4.attention.key_length_swa")) == (32, 16)
    assert kv(plan, "gemma4.attention.sliding_window_pattern") == [True, True, True, False]
    assert kv(plan, "gemma4.expert_feed_forward_length") == 32
    assert plan.tensors[0].name == "rope_freqs.weight"
    freqs = plan.tensors[0].node.evaluate({})
    assert freqs.tolist() == [1.0] * 4 + [np.float32(1e30)] * 12  # a quarter of 32 rotates: 4 of 16 pairs
    names = [t.name for t in plan.tensors]
    assert {"blk.0.ffn_gate_inp.scale", "blk.0.ffn_down_exps.scale", "blk.0.ffn_gate_up_exps.weight",
            "blk.0.layer_output_scale.weight"} <= set(names)
    assert "blk.3.attn_v.weight" not in names and "blk.2.attn_v.weight" in names  # k = v on the full layer
    assert tensor(plan, "blk.0.ffn_gate_up_exps.weight").shape == (4, 64, 64)


def test_gemma4_double_wide_mlps_of_the_kv_sharing_layers(fixture_root):
    files, headers, shards, _ = repo(fixture_root, "tiny-gemma4-vlm")
    plan = plan_of(files, headers, shards)
    assert kv(plan, "gemma4.feed_forward_length") == [96, 96, 96, 192, 192]
    assert kv(plan, "gemma4.attention.shared_kv_layers") == 2
    assert kv(plan, "gemma4.attention.head_count_kv") == 1  # no num_global_key_value_heads: one number
    assert kv(plan, "gemma4.embedding_length_per_layer_input") == 32
    assert not any(t.name.startswith(("v.", "a.", "mm.")) for t in plan.tensors)


def test_gemma4_checks_full_layers_against_their_own_head_size(fixture_root):
    files, headers, shards, _ = repo(fixture_root, "tiny-gemma4")
    with_config(files, lambda c: c.update(global_head_dim=64))
    with pytest.raises(errors.ConfigMismatchError, match=r"layers\.3\.self_attn.*global_head_dim 64"):
        plan_of(files, headers, shards)


def test_gemma4_refuses_full_layers_with_the_sliding_head_size(fixture_root):
    """transformers leaves such a head size out of per_layer_config and the reference stops (assert)."""
    files, headers, shards, _ = repo(fixture_root, "tiny-gemma4")
    with_config(files, lambda c: c.update(global_head_dim=16))
    with pytest.raises(errors.UnsupportedArchitectureError, match="global_head_dim = head_dim"):
        plan_of(files, headers, shards)


def test_gemma4_refuses_full_attention_rope_other_than_proportional(fixture_root):
    files, headers, shards, _ = repo(fixture_root, "tiny-gemma4")
    with_config(files, lambda c: c["rope_parameters"]["full_attention"].update(rope_type="default"))
    with pytest.raises(errors.UnsupportedArchitectureError, match="proportional"):
        plan_of(files, headers, shards)


def test_gemma4_vocab_shows_the_chat_parser_tokens_and_keeps_merges(fixture_root):
    files, headers, shards, _ = repo(fixture_root, "tiny-gemma4")
    plan = plan_of(files, headers, shards)
    tokens, types = kv(plan, "tokenizer.ggml.tokens"), kv(plan, "tokenizer.ggml.token_type")
    kind = {t: types[tokens.index(t.encode() if isinstance(tokens[0], bytes) else t)] for t in
            ("<|tool_call>", '<|"|>', "<|channel>", "<|turn>", "<|think|>", "[multimodal]", "<|video|>")}
    user, control, normal = int(gguf.TokenType.USER_DEFINED), int(gguf.TokenType.CONTROL), int(gguf.TokenType.NORMAL)
    assert kind == {"<|tool_call>": user, '<|"|>': user, "<|channel>": user, "<|turn>": control,
                    "<|think|>": control, "[multimodal]": normal, "<|video|>": control}
    assert kv(plan, "tokenizer.ggml.model") == "gemma4" and kv(plan, "tokenizer.ggml.pre") is None
    assert len(kv(plan, "tokenizer.ggml.merges")) > 0
    assert kv(plan, "tokenizer.ggml.add_bos_token") is True and kv(plan, "tokenizer.ggml.add_space_prefix") is False
    # a *_token key of tokenizer_config.json is what makes <|think|> special (transformers 5)
    config = json.loads(files["tokenizer_config.json"])
    del config["think_token"]
    files["tokenizer_config.json"] = json.dumps(config).encode()
    plan = plan_of(files, headers, shards)
    tokens, types = kv(plan, "tokenizer.ggml.tokens"), kv(plan, "tokenizer.ggml.token_type")
    assert types[98] == normal


#: google/gemma-4-26B-A4B-it's text config (from its model card and config.json)
GEMMA4_26B_A4B = {
    "architectures": ["Gemma4ForCausalLM"], "model_type": "gemma4_text", "attention_bias": False,
    "attention_k_eq_v": True, "enable_moe_block": True, "final_logit_softcapping": 30.0, "global_head_dim": 512,
    "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 2816, "hidden_size_per_layer_input": 0,
    "intermediate_size": 2112, "layer_types": (["sliding_attention"] * 5 + ["full_attention"]) * 5,
    "max_position_embeddings": 262144, "moe_intermediate_size": 704, "num_attention_heads": 16, "num_experts": 128,
    "num_global_key_value_heads": 2, "num_hidden_layers": 30, "num_key_value_heads": 8, "num_kv_shared_layers": 0,
    "rms_norm_eps": 1e-06, "sliding_window": 1024, "tie_word_embeddings": True, "top_k_experts": 8,
    "rope_parameters": {"full_attention": {"partial_rotary_factor": 0.25, "rope_theta": 1000000.0,
                                           "rope_type": "proportional"},
                        "sliding_attention": {"rope_theta": 10000.0, "rope_type": "default"}},
    "use_bidirectional_attention": "vision", "use_double_wide_mlp": False, "vocab_size": 262144,
    "vocab_size_per_layer_input": 262144,
}
#: the gemma4.* keys llama.cpp's own conversion of gemma-4-26B-A4B-it holds, in its order
#: (models/ggml-vocab-gemma-4.gguf in llama.cpp, the sdist of llama-cpp-python 0.3.36)
GEMMA4_26B_A4B_KEYS = [
    ("block_count", 30), ("context_length", 262144), ("embedding_length", 2816), ("feed_forward_length", 2112),
    ("attention.head_count", 16), ("attention.head_count_kv", [8, 8, 8, 8, 8, 2] * 5),
    ("rope.freq_base", 1000000.0), ("rope.freq_base_swa", 10000.0), ("attention.layer_norm_rms_epsilon", 1e-06),
    ("expert_count", 128), ("expert_used_count", 8), ("attention.key_length", 512), ("attention.value_length", 512),
    ("final_logit_softcapping", 30.0), ("attention.sliding_window", 1024), ("attention.shared_kv_layers", 0),
    ("embedding_length_per_layer_input", 0), ("attention.sliding_window_pattern", ([True] * 5 + [False]) * 5),
    ("attention.key_length_swa", 256), ("attention.value_length_swa", 256), ("expert_feed_forward_length", 704),
    ("rope.dimension_count", 512), ("rope.dimension_count_swa", 256),
]


def test_gemma4_26b_a4b_gives_the_keys_of_llama_cpps_own_conversion():
    """The real model's config and tensor shapes (no data: the plan needs headers only) give the
    gemma4.* keys, values and order of the conversion llama.cpp ships as its Gemma 4 vocab file."""
    from fixtures.layouts.gemma import gemma4_text_tensors

    tensors, offset = [], 0
    for name, shape in gemma4_text_tensors(GEMMA4_26B_A4B):
        n = 2 * math.prod(shape)
        tensors.append(SourceTensor("model.safetensors", name, "BF16", shape, offset, offset + n))
        offset += n
    # the embedding is cut to tokenizer.json's size: the real one has a token per row
    vocab = {"model": {"vocab": {f"t{i}": i for i in range(262144)}}, "added_tokens": []}
    files = {"config.json": json.dumps(GEMMA4_26B_A4B).encode(), "tokenizer.json": json.dumps(vocab).encode()}
    plan = draft_plan(repo_name="gemma-4-26B-A4B-it", files=files, headers={"model.safetensors": tensors},
                      shards=["model.safetensors"], outtype="bf16")
    ours = [(k.removeprefix("gemma4."), v.value) for k, v in plan.metadata.items() if k.startswith("gemma4.")]
    assert [k for k, _ in ours] == [k for k, _ in GEMMA4_26B_A4B_KEYS]
    for (key, got), (_, value) in zip(ours, GEMMA4_26B_A4B_KEYS):
        assert got == (pytest.approx(value, rel=1e-7) if isinstance(value, float) else value), key
    freqs = tensor(plan, "rope_freqs.weight").node.evaluate({})
    assert freqs.shape == (256,) and (freqs[:64] == 1).all() and (freqs[64:] == np.float32(1e30)).all()
    assert tensor(plan, "blk.5.attn_k.weight").shape == (2 * 512, 2816)
    assert not any(t.name == "blk.5.attn_v.weight" for t in plan.tensors)
    assert tensor(plan, "blk.0.ffn_gate_up_exps.weight").shape == (128, 2 * 704, 2816)


def test_a_layer_past_num_hidden_layers_is_refused_before_its_sizes_are_asked(fixture_root):
    files, headers, shards, _ = repo(fixture_root, "tiny-gemma4")
    q = next(s for s in headers["model.safetensors"] if s.name == "model.layers.0.self_attn.q_proj.weight")
    extra = SourceTensor(q.file, "model.layers.7.self_attn.q_proj.weight", q.dtype, q.shape, q.start, q.end)
    with pytest.raises(errors.ConfigMismatchError, match="layer 7 but config.json has 4 layers"):
        plan_of(files, {"model.safetensors": [*headers["model.safetensors"], extra]}, shards)
