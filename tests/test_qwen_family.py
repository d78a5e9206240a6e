"""Qwen families: what the goldens do not cover (refusals, incomplete expert sets, pooling configs)."""

from __future__ import annotations

import dataclasses
import json

import gguf
import pytest

from hfstream import errors
from hfstream.arch.base import sentence_transformers_pooling
from hfstream.plan import make_plan
from hfstream.safetensors import parse_header
from fixtures.build import snapshot_dir


def _repo(fixture_root, name: str):
    """(small files, headers, shards) of a fixture repo's main commit, from disk."""
    snap = snapshot_dir(fixture_root / "hfs-test" / name)
    files = {p.relative_to(snap).as_posix(): p.read_bytes() for p in snap.rglob("*")
             if p.is_file() and p.suffix != ".safetensors"}
    shards = sorted(p.name for p in snap.glob("model*.safetensors"))
    headers = {}
    for s in shards:
        data = (snap / s).read_bytes()
        headers[s] = parse_header(s, data, len(data))
    return files, headers, shards


def _plan(files, headers, shards, repo_name="tiny"):
    return make_plan(repo_name=repo_name, files=files, headers=headers, shards=shards, outtype="f16")


def test_moe_experts_are_stacked_down_gate_up_per_layer(fixture_root):
    plan = _plan(*_repo(fixture_root, "tiny-qwen2-moe"))
    names = [t.name for t in plan.tensors if "_exps" in t.name]
    assert names == [f"blk.{i}.ffn_{p}_exps.weight" for i in (0, 1) for p in ("down", "gate", "up")]
    by_name = {t.name: t for t in plan.tensors}
    assert by_name["blk.0.ffn_down_exps.weight"].shape == (4, 64, 32)
    assert by_name["blk.0.ffn_gate_inp_shexp.weight"].qtype == gguf.GGMLQuantizationType.F32


def test_an_incomplete_expert_set_is_refused(fixture_root):
    files, headers, shards = _repo(fixture_root, "tiny-qwen2-moe")
    (shard,) = shards
    headers = {shard: [t for t in headers[shard] if t.name != "model.layers.1.mlp.experts.3.up_proj.weight"]}
    with pytest.raises(errors.InvalidHeaderError, match="incomplete expert set"):
        _plan(files, headers, shards)


def test_already_stacked_experts_are_refused(fixture_root):
    files, headers, shards = _repo(fixture_root, "tiny-qwen2-moe")
    first = shards[0]
    renamed = [dataclasses.replace(t, name="model.layers.0.mlp.experts.gate_up_proj")
               if t.name == "model.layers.0.mlp.experts.0.gate_proj.weight" else t for t in headers[first]]
    with pytest.raises(errors.UnsupportedArchitectureError, match="fused expert tensor"):
        _plan(files, {**headers, first: renamed}, shards)


def test_qwen3_rerankers_are_refused_by_name_and_by_readme(fixture_root):
    files, headers, shards = _repo(fixture_root, "tiny-qwen3")
    with pytest.raises(errors.UnsupportedArchitectureError, match="reranker"):
        _plan(files, headers, shards, repo_name="Qwen3-Reranker-0.6B")
    files = {**files, "README.md": b"---\nlicense: apache-2.0\n---\n\n# Qwen3-Reranker-4B\n"}
    with pytest.raises(errors.UnsupportedArchitectureError, match="reranker"):
        _plan(files, headers, shards)


def _st_files(pooling: dict | None, path: str = "1_Pooling") -> dict[str, bytes]:
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": path, "type": "sentence_transformers.models.Pooling"}]
    files = {"modules.json": json.dumps(modules).encode()}
    if pooling is not None:
        files[f"{path}/config.json"] = json.dumps(pooling).encode()
    return files


@pytest.mark.parametrize("pooling, expected", [
    ({"pooling_mode_lasttoken": True}, gguf.PoolingType.LAST),
    ({"pooling_mode_mean_tokens": True, "pooling_mode_lasttoken": True}, gguf.PoolingType.MEAN),
    ({"pooling_mode_cls_token": True}, gguf.PoolingType.CLS),
    ({"pooling_mode": "lasttoken"}, gguf.PoolingType.LAST),
])
def test_sentence_transformers_pooling(pooling, expected):
    assert sentence_transformers_pooling(_st_files(pooling)) == expected


def test_no_pooling_without_modules_json_or_a_pooling_module():
    assert sentence_transformers_pooling({}) is None
    only_transformer = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]
    assert sentence_transformers_pooling({"modules.json": json.dumps(only_transformer).encode()}) is None


def test_pooling_configs_hfstream_cannot_read_are_refused():
    # hfstream fetches only 1_Pooling/config.json: another path was not read
    with pytest.raises(errors.UnsupportedArchitectureError, match="2_Pooling/config.json"):
        sentence_transformers_pooling(_st_files(None, path="2_Pooling"))
    with pytest.raises(errors.UnsupportedArchitectureError, match="only mean, CLS and last-token"):
        sentence_transformers_pooling(_st_files({"pooling_mode_max_tokens": True}))
    with pytest.raises(errors.InvalidConfigError, match="modules.json"):
        sentence_transformers_pooling({"modules.json": b"{not json"})
