"""Command R, Command R7B, GLM-4, StarCoder2, Phi-3.5-MoE, InternLM3, StableLM 2 and GPT-NeoX: what their
goldens do not cover (config variants the fixtures do not have, refusals, the special-token hook).

The byte-for-byte comparison with the reference is ``tests/test_convert.py`` over the goldens of the
tiny-command-r, tiny-cohere2, tiny-glm4, tiny-starcoder2, tiny-phimoe, tiny-internlm3 and tiny-stablelm
fixtures; these tests plan (no network, no tensor bytes) or convert a local copy of a fixture.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import gguf
import pytest

from hfstream import arch, cli, errors
from hfstream.kv import KeyWriter, Metadata
from hfstream.plan import make_plan
from hfstream.safetensors import parse_header
from hfstream.vocab import SpecialTokens, add_vocab
from fixtures.build import snapshot_dir


def _repo(fixture_root, name: str):
    """(small files, headers, shards) of a fixture repo's main commit, from disk."""
    snap = snapshot_dir(fixture_root / "hfs-test" / name)
    files = {p.relative_to(snap).as_posix(): p.read_bytes() for p in snap.rglob("*")
             if p.is_file() and p.suffix != ".safetensors"}
    shards = sorted(p.name for p in snap.glob("model*.safetensors"))
    headers = {}
    for s in shards:
        blob = (snap / s).read_bytes()
        headers[s] = parse_header(s, blob, len(blob))
    return files, headers, shards


def _with_json(files, name: str, **changes):
    data = json.loads(files[name])
    for key, value in changes.items():
        if value is _DROP:
            data.pop(key, None)
        else:
            data[key] = value
    return {**files, name: json.dumps(data).encode()}


_DROP = object()


def _plan(files, headers, shards, **config_changes):
    if config_changes:
        files = _with_json(files, "config.json", **config_changes)
    return make_plan(repo_name="tiny", files=files, headers=headers, shards=shards, outtype="f16")


def _kv(plan) -> dict:
    return plan.metadata.values_by_key()


def _extra_tensor(headers, shards, like: str, name: str, shape: tuple[int, ...]):
    """The headers with one more tensor (the bytes of ``like``'s, reshaped: planning reads no data)."""
    (shard,) = shards
    src = next(t for t in headers[shard] if t.name == like)
    extra = dataclasses.replace(src, name=name, shape=shape)
    return {shard: [*headers[shard], extra]}


# --- Command R / Command R7B -----------------------------------------------------------------------


def test_command_r_context_length_is_model_max_length_else_max_position_embeddings(fixture_root):
    files, headers, shards = _repo(fixture_root, "tiny-command-r")
    assert _kv(_plan(files, headers, shards))["command-r.context_length"] == 131072
    # Aya 23 has no model_max_length
    assert _kv(_plan(files, headers, shards, model_max_length=_DROP))["command-r.context_length"] == 8192


def test_command_r_q_norm_must_be_heads_by_head_dim(fixture_root):
    files, headers, shards = _repo(fixture_root, "tiny-command-r")
    (shard,) = shards
    flat = [dataclasses.replace(t, shape=(64,)) if t.name == "model.layers.3.self_attn.q_norm.weight" else t
            for t in headers[shard]]
    with pytest.raises(errors.ConfigMismatchError, match=r"q_norm.*\[64\].*\[4, 16\]"):
        _plan(files, {shard: flat}, shards)


def test_command_r_per_head_norms_are_f32_matrices(fixture_root):
    files, headers, shards = _repo(fixture_root, "tiny-command-r")
    plan = _plan(files, headers, shards)
    norms = {t.name: t for t in plan.tensors if "attn_q_norm" in t.name or "attn_k_norm" in t.name}
    assert len(norms) == 2 * 64
    assert {(t.shape, t.qtype) for n, t in norms.items() if "_q_" in n} == {((4, 16), gguf.GGMLQuantizationType.F32)}
    assert {(t.shape, t.qtype) for n, t in norms.items() if "_k_" in n} == {((2, 16), gguf.GGMLQuantizationType.F32)}


def test_cohere2_rope_dimensions_come_from_rotary_pct(fixture_root):
    files, headers, shards = _repo(fixture_root, "tiny-cohere2")
    assert _kv(_plan(files, headers, shards, rotary_pct=0.5))["cohere2.rope.dimension_count"] == 8
    with pytest.raises(errors.InvalidConfigError, match="rotary_pct"):
        _plan(files, headers, shards, rotary_pct=_DROP)  # the reference stops with a KeyError


def test_cohere2_bias_tensors_are_refused_before_anything_is_fetched(fixture_root):
    """The reference drops them after checking each is all zero; that reads values, which hfstream does not."""
    files, headers, shards = _repo(fixture_root, "tiny-cohere2")
    headers = _extra_tensor(headers, shards, "model.layers.0.input_layernorm.weight",
                            "model.layers.0.self_attn.o_proj.bias", (64,))
    with pytest.raises(errors.UnsupportedArchitectureError, match=r"o_proj\.bias.*all zero"):
        _plan(files, headers, shards)


# --- GLM-4 -----------------------------------------------------------------------------------------


def test_glm4_takes_eot_bos_unk_from_its_added_tokens_unless_the_files_name_them(fixture_root):
    files, headers, shards = _repo(fixture_root, "tiny-glm4")
    kv = _kv(_plan(files, headers, shards))
    assert (kv["tokenizer.ggml.eos_token_id"], kv["tokenizer.ggml.eot_token_id"]) == (50256, 50263)
    assert (kv["tokenizer.ggml.bos_token_id"], kv["tokenizer.ggml.unknown_token_id"]) == (50256, 50256)
    named = _with_json(files, "tokenizer_config.json", bos_token="<sop>")
    assert _kv(_plan(named, headers, shards))["tokenizer.ggml.bos_token_id"] == 50260


def test_glm4_without_the_user_token_is_refused(fixture_root):
    files, headers, shards = _repo(fixture_root, "tiny-glm4")
    tok_config = json.loads(files["tokenizer_config.json"])
    del tok_config["added_tokens_decoder"]["50263"]
    tok_config["additional_special_tokens"].remove("<|user|>")
    tokenizer = json.loads(files["tokenizer.json"])
    tokenizer["added_tokens"] = [t for t in tokenizer["added_tokens"] if t["content"] != "<|user|>"]
    files = {**files, "tokenizer_config.json": json.dumps(tok_config).encode(),
             "tokenizer.json": json.dumps(tokenizer).encode()}
    with pytest.raises(errors.UnsupportedTokenizerError, match=r"no added token .<\|user\|>."):
        _plan(files, headers, shards)


def test_glm4_tokenizer_code_in_the_repo_is_refused(fixture_root):
    files, headers, shards = _repo(fixture_root, "tiny-glm4")
    files = _with_json(files, "tokenizer_config.json",
                       auto_map={"AutoTokenizer": ["tokenization_chatglm.ChatGLM4Tokenizer", None]})
    with pytest.raises(errors.UnsupportedTokenizerError, match="auto_map.*never runs"):
        _plan(files, headers, shards)


def test_glm4_rope_dimensions_are_half_a_head_by_default(fixture_root):
    files, headers, shards = _repo(fixture_root, "tiny-glm4")
    assert _kv(_plan(files, headers, shards))["glm4.rope.dimension_count"] == 8
    assert _kv(_plan(files, headers, shards, partial_rotary_factor=0.25))["glm4.rope.dimension_count"] == 4


# --- InternLM3 -------------------------------------------------------------------------------------


def test_internlm3_eos_moves_to_im_end_only_when_it_is_special(fixture_root):
    files, headers, shards = _repo(fixture_root, "tiny-internlm3")
    kv = _kv(_plan(files, headers, shards))
    assert kv["tokenizer.ggml.eos_token_id"] == 1001  # <|im_end|>, not </s> (2)
    keys = list(kv)
    assert keys.index("tokenizer.ggml.token_type") < keys.index("tokenizer.ggml.add_space_prefix") \
        < keys.index("tokenizer.ggml.bos_token_id")
    assert kv["tokenizer.ggml.add_space_prefix"] is False

    tok_config = json.loads(files["tokenizer_config.json"])
    tok_config["added_tokens_decoder"]["1001"]["special"] = False
    del tok_config["add_prefix_space"]
    files = {**files, "tokenizer_config.json": json.dumps(tok_config).encode()}
    kv = _kv(_plan(files, headers, shards))
    assert kv["tokenizer.ggml.eos_token_id"] == 2
    assert "tokenizer.ggml.add_space_prefix" not in kv


def test_internlm3_has_no_rope_freqs_and_leaves_vision_tensors_out(fixture_root):
    files, headers, shards = _repo(fixture_root, "tiny-internlm3")
    headers = _extra_tensor(headers, shards, "model.norm.weight", "vision_model.embeddings.norm.weight", (64,))
    plan = _plan(files, headers, shards, rope_scaling={"rope_type": "llama3", "factor": 8.0})
    names = [t.name for t in plan.tensors]
    assert not any(n.startswith(("rope_freqs", "v.")) or "vision" in n for n in names)


# --- Phi-3.5-MoE -----------------------------------------------------------------------------------


def test_phimoe_writes_the_expert_counts_after_phi3s_keys(fixture_root):
    files, headers, shards = _repo(fixture_root, "tiny-phimoe")
    keys = list(_kv(_plan(files, headers, shards)))
    assert keys.index("phimoe.attention.sliding_window") < keys.index("phimoe.expert_used_count") \
        < keys.index("phimoe.expert_count")


def test_phimoe_with_an_expert_missing_is_refused(fixture_root):
    files, headers, shards = _repo(fixture_root, "tiny-phimoe")
    (shard,) = shards
    short = [t for t in headers[shard] if t.name != "model.layers.1.block_sparse_moe.experts.3.w2.weight"]
    with pytest.raises(errors.InvalidHeaderError, match="expert"):
        _plan(files, {shard: short}, shards)


# --- StableLM 2 ------------------------------------------------------------------------------------


def test_stablelm_per_head_qk_norms_are_refused(fixture_root):
    """StableLM 2 12B: the reference stops on them ("Unprocessed norms"), so there is nothing to match."""
    files, headers, shards = _repo(fixture_root, "tiny-stablelm")
    headers = _extra_tensor(headers, shards, "model.norm.weight",
                            "model.layers.0.self_attn.q_layernorm.norms.0.weight", (16,))
    with pytest.raises(errors.UnsupportedArchitectureError, match="q_layernorm.*no reference output"):
        _plan(files, headers, shards, qk_layernorm=True)


def test_stablelm_without_tokenizer_json_is_refused(fixture_root):
    files, headers, shards = _repo(fixture_root, "tiny-stablelm")
    files = {k: v for k, v in files.items() if k != "tokenizer.json"}
    with pytest.raises(errors.UnsupportedTokenizerError, match="repo's own code"):
        _plan(files, headers, shards)


def test_stablelm_parallel_residual_defaults_to_true(fixture_root):
    files, headers, shards = _repo(fixture_root, "tiny-stablelm")
    assert _kv(_plan(files, headers, shards))["stablelm.use_parallel_residual"] is False
    assert _kv(_plan(files, headers, shards, use_parallel_residual=True))["stablelm.use_parallel_residual"] is True


# --- GPT-NeoX --------------------------------------------------------------------------------------


def test_gpt_neox_is_refused_with_one_line_saying_why(fixture_root, tmp_path, capsys):
    repo = tmp_path / "pythia-like"
    shutil.copytree(snapshot_dir(fixture_root / "hfs-test" / "tiny-stablelm"), repo)
    config = {"architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox", "hidden_size": 64,
              "num_attention_heads": 4, "num_hidden_layers": 2, "intermediate_size": 256, "rotary_pct": 0.25,
              "rotary_emb_base": 10000, "max_position_embeddings": 2048, "layer_norm_eps": 1e-05,
              "use_parallel_residual": True, "vocab_size": 50304}
    (repo / "config.json").write_text(json.dumps(config))
    rc = cli.main(["convert", str(repo), "--outtype", "f16", "-o", str(tmp_path / "out.gguf"), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == errors.UnsupportedArchitectureError.exit_code
    assert len(err) == 1 and "GPTNeoXForCausalLM" in err[0] and "rotary_pct" in err[0]
    assert not list(tmp_path.glob("out.gguf*"))
    assert "GPTNeoXForCausalLM" not in arch.supported()


def test_a_refused_architecture_cannot_also_be_registered():
    with pytest.raises(TypeError):
        arch.refuse("LlamaForCausalLM", "no")


# --- the special-token hook of the vocab -----------------------------------------------------------


def test_special_tokens_hook_sets_defaults_and_replaces_in_place(fixture_root):
    files, _, _ = _repo(fixture_root, "tiny-glm4")
    hparams = json.loads(files["config.json"])
    seen = {}

    def hook(writer, special: SpecialTokens):
        seen["before"] = dict(special.ids)
        special.set_default("eos", 7)  # named by tokenizer_config.json: kept
        special.set_default("eot", special.added["<|observation|>"])
        special.replace("eos", 5)
        with pytest.raises(KeyError):
            special.replace("sep", 1)

    metadata = Metadata()
    add_vocab(KeyWriter(metadata, "glm4"), files, hparams, strategies=("bpe",), special=hook)
    kv = metadata.values_by_key()
    assert seen["before"] == {"eos": 50256, "pad": 50256}
    ids = [k for k in kv if k.endswith("_token_id")]
    assert ids == ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.padding_token_id", "tokenizer.ggml.eot_token_id"]
    assert (kv[ids[0]], kv[ids[2]]) == (5, 50265)
