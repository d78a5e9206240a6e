"""Phi-3 and GPT-2 cases the goldens cannot cover: inputs the reference fails on, and bad configs.

The goldens (tiny-phi3, tiny-phi3-128k, tiny-phi4-mini, tiny-gpt2) check normal conversions byte
for byte; plans here are made from those fixtures' files on disk with the headers edited.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from hfstream import errors
from hfstream.arch.phi3 import Phi3
from hfstream.plan import make_plan
from hfstream.safetensors import SourceTensor, parse_header
from fixtures.build import snapshot_dir

from .conftest import golden


def _snapshot(fixture_root, repo: str):
    snap = snapshot_dir(fixture_root / repo)
    files = {p.name: p.read_bytes() for p in snap.iterdir() if p.suffix != ".safetensors"}
    data = (snap / "model.safetensors").read_bytes()
    return files, parse_header("model.safetensors", data, len(data))


def _planned(plan) -> list[tuple[str, list[int], str]]:
    """(name, shape in GGUF order, type) of every planned tensor, as the goldens list them."""
    return [(t.name, list(reversed(t.shape)), t.qtype.name) for t in plan.tensors]


def _kv(plan) -> dict:
    return plan.metadata.values_by_key()


# --- GPT-2 ---------------------------------------------------------------------------------------


def test_gpt2_old_export_with_mask_buffers_converts_like_a_current_one(fixture_root):
    """openai-community/gpt2's safetensors has no ``transformer.`` prefix and keeps the ``attn.bias``
    causal-mask buffers; the reference stops on them ("Can not map tensor 'h.0.attn.bias'"). They are
    not weights: leaving them out gives the tensors of the same model saved by current transformers."""
    files, header = _snapshot(fixture_root, "hfs-test/tiny-gpt2")
    end = max(t.end for t in header)
    old = [SourceTensor(t.file, t.name.removeprefix("transformer."), t.dtype, t.shape, t.start, t.end)
           for t in header]
    for i in range(2):  # a (1, 1, n_positions, n_positions) lower-triangular mask and a scalar, per layer
        old.append(SourceTensor("model.safetensors", f"h.{i}.attn.bias", "F32", (1, 1, 1024, 1024), end,
                                end + 4 * 1024 * 1024))
        end += 4 * 1024 * 1024
        old.append(SourceTensor("model.safetensors", f"h.{i}.attn.masked_bias", "F32", (), end, end + 4))
        end += 4
    plan = make_plan(repo_name="tiny-gpt2", files=files, headers={"model.safetensors": old},
                     shards=["model.safetensors"], outtype="f16")
    expected = golden("tiny-gpt2.f16")
    assert _planned(plan) == [(t["name"], t["shape"], t["type"]) for t in expected["tensors"]]
    assert not any(s.name.endswith((".attn.bias", ".attn.masked_bias")) for s in plan.source_tensors)


def test_gpt2_config_without_n_ctx_takes_n_positions(fixture_root):
    """``n_ctx`` is not a GPT2Config field, so a config written from a fresh GPT2Config lacks it
    (the reference fails with KeyError 'n_ctx'); it always equalled ``n_positions``."""
    files, header = _snapshot(fixture_root, "hfs-test/tiny-gpt2")
    config = json.loads(files["config.json"])
    del config["n_ctx"]
    config["n_positions"] = 1024
    files["config.json"] = json.dumps(config).encode()
    plan = make_plan(repo_name="tiny-gpt2", files=files, headers={"model.safetensors": header},
                     shards=["model.safetensors"], outtype="f16")
    assert _kv(plan)["gpt2.context_length"] == 1024


def test_gpt2_conv1d_weights_are_transposed(fixture_root):
    files, header = _snapshot(fixture_root, "hfs-test/tiny-gpt2")
    plan = make_plan(repo_name="tiny-gpt2", files=files, headers={"model.safetensors": header},
                     shards=["model.safetensors"], outtype="f32")
    by_name = {t.name: t for t in plan.tensors}
    src = {s.name: s for s in header}
    for gguf_name, hf_name in (("blk.0.attn_qkv.weight", "transformer.h.0.attn.c_attn.weight"),
                               ("blk.0.ffn_up.weight", "transformer.h.0.mlp.c_fc.weight"),
                               ("blk.0.ffn_down.weight", "transformer.h.0.mlp.c_proj.weight")):
        assert by_name[gguf_name].shape == tuple(reversed(src[hf_name].shape))
    assert by_name["blk.0.attn_qkv.bias"].shape == src["transformer.h.0.attn.c_attn.bias"].shape
    assert "output.weight" not in by_name  # tied: llama.cpp reuses token_embd


# --- Phi-3 ---------------------------------------------------------------------------------------


def _phi3_config(fixture_root, **changes) -> dict:
    from hfstream.hfconfig import normalize

    files, _ = _snapshot(fixture_root, "hfs-test/tiny-phi3-128k")
    config = json.loads(files["config.json"])
    config.update(changes)
    return normalize(json.dumps(config).encode())


def test_phi3_longrope_tensors_and_attention_factor(fixture_root):
    family = Phi3(_phi3_config(fixture_root), "Phi3ForCausalLM")
    (long_name, long_node), (short_name, _) = family.extra_tensors()
    assert (long_name, short_name) == ("rope_factors_long.weight", "rope_factors_short.weight")
    assert long_node.evaluate({}).dtype == np.float32 and long_node.shape == (8,)
    import gguf

    w = gguf.GGUFWriter(path=None, arch="phi3")
    family.add_tensor_time_hparams(w)
    # 131072 / 4096 = 32: sqrt(1 + ln 32 / ln 4096)
    assert w.kv_data[0]["phi3.rope.scaling.attn_factor"].value == pytest.approx((1 + 5 / 12) ** 0.5)


def test_phi3_without_long_factors_generates_nothing(fixture_root):
    family = Phi3(_phi3_config(fixture_root, rope_scaling=None, max_position_embeddings=4096), "Phi3ForCausalLM")
    assert list(family.extra_tensors()) == []


@pytest.mark.parametrize("scaling, error", [
    ({"type": "longrope", "long_factor": [1.0] * 7, "short_factor": [1.0] * 7}, errors.InvalidConfigError),
    ({"type": "longrope", "long_factor": [1.0] * 8, "short_factor": [1.0] * 4}, errors.InvalidConfigError),
    ({"type": "dynamic", "long_factor": [1.0] * 8, "short_factor": [1.0] * 8}, errors.UnsupportedArchitectureError),
], ids=["wrong-length", "short-differs", "unknown-type"])
def test_phi3_bad_rope_scaling_is_refused(fixture_root, scaling, error):
    # raw config values (transformers itself would refuse these, and the reference then reads them as is)
    from hfstream.hfconfig import normalize

    files, _ = _snapshot(fixture_root, "hfs-test/tiny-phi3-128k")
    config = json.loads(files["config.json"])
    config["rope_scaling"] = scaling
    family = Phi3(normalize(json.dumps(config).encode()), "Phi3ForCausalLM")
    with pytest.raises(error):
        list(family.extra_tensors())


def test_phi3_added_token_past_the_vocab_is_refused(fixture_root):
    """The reference indexes its token list with the ids of added_tokens_decoder unchecked (an
    IndexError, or a negative id overwriting from the end); hfstream refuses the file."""
    files, header = _snapshot(fixture_root, "hfs-test/tiny-phi3")
    tok_config = json.loads(files["tokenizer_config.json"])
    tok_config["added_tokens_decoder"]["5000"] = {"content": "<|far|>", "special": True}
    files["tokenizer_config.json"] = json.dumps(tok_config).encode()
    with pytest.raises(errors.InvalidConfigError, match="5000"):
        make_plan(repo_name="tiny-phi3", files=files, headers={"model.safetensors": header},
                  shards=["model.safetensors"], outtype="f16")
