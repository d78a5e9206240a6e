"""Gemma family details the golden conversions do not reach.

The goldens (tiny-gemma, tiny-gemma2, tiny-gemma3, tiny-gemma3-vlm) check whole files against the
reference. Here: the embedding cut of Gemma 3 when it really cuts, the stray ``lm_head.weight``,
CodeGemma's fixed ids giving way to the tokenizer's, keys written twice, and the +1 on norms in
each source dtype against torch (when installed).
"""

from __future__ import annotations

import json

import gguf
import numpy as np
import pytest

from hfstream import errors
from hfstream.arch.gemma import _add_again, _real_vocab_size
from hfstream.graph import AddScalar, Load, SliceRows
from hfstream.plan import make_plan
from hfstream.safetensors import SourceTensor, parse_header

def snapshot(fixture_root, name):
    info = json.loads((fixture_root / "hfs-test" / name / "repo.json").read_text())
    return fixture_root / "hfs-test" / name / "commits" / info["refs"]["main"]


def repo(fixture_root, name):
    """(small files, headers, shards, model.safetensors bytes) of a fixture repo, from disk."""
    snap = snapshot(fixture_root, name)
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
