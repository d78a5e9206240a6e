"""Every tensor a family needs is there, and every source tensor is used (or left out on purpose);
the layer count config.json claims is bounded by the weights, not by a cap.

The hostile corpus (``fixtures/hostile.py``: ``tensor-*``, ``config-layers-*``) checks the lines the
command prints; these check the rules themselves on synthetic tensor sets, and the cost of a model
with more layers than the old cap (4,096).
"""

from __future__ import annotations

import json
import re
import shutil

import gguf
import pytest

import hfstream
from hfstream import errors
from hfstream.arch import families, family_for
from hfstream.arch.llama import Llama
from hfstream.graph import Load
from hfstream.safetensors import SourceTensor

LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 192,
         "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": 1000,
         "rms_norm_eps": 1e-5, "max_position_embeddings": 512, "num_local_experts": 2}

DENSE = ("input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
         "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
MOE = ("input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
       "post_attention_layernorm", "block_sparse_moe.gate")


def _sources(layers: list[tuple[str, ...]], *, extra: tuple[str, ...] = (), drop: tuple[str, ...] = ()):
    names = ["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight", *extra]
    names += [f"model.layers.{bid}.{part}.weight" for bid, parts in enumerate(layers) for part in parts]
    return [(n, SourceTensor("model.safetensors", n, "F16", (4,), 8 * i, 8 * i + 8))
            for i, n in enumerate(sorted(set(names) - set(drop)))]


def _plan(family, sources):
    """What ``plan.draft_plan`` does with a family's tensors, without the rest of a plan."""
    outputs = {}
    for name, src in sources:
        for out, node in family.convert(name, Load(src), None):
            outputs[out] = node
    family.check_tensors(outputs, sources)
    return outputs


def test_a_complete_model_passes():
    assert len(_plan(family_for(LLAMA), _sources([DENSE, DENSE]))) == 3 + 2 * 9


@pytest.mark.parametrize("drop, says", [
    ("model.norm.weight", "tensor output_norm.weight, which is missing (model.norm.weight is not in model.safetensors)"),
    ("model.embed_tokens.weight", "tensor token_embd.weight, which is missing (model.embed_tokens.weight"),
    ("model.layers.1.mlp.up_proj.weight", "tensor blk.1.ffn_up.weight, which is missing "
                                          "(model.layers.1.mlp.up_proj.weight is not in model.safetensors; "
                                          "config.json counts 2 layers)"),
    ("model.layers.0.self_attn.o_proj.weight", "tensor blk.0.attn_output.weight, which is missing "
                                               "(model.layers.0.self_attn.o_proj.weight"),
])
def test_a_missing_tensor_is_named_with_the_source_tensor_it_comes_from(drop, says):
    with pytest.raises(errors.MissingTensorError) as e:
        _plan(family_for(LLAMA), _sources([DENSE, DENSE], drop=(drop,)))
    assert says in e.value.message and e.value.exit_code == 35


def test_a_required_tensor_missing_from_every_layer_is_named_too():
    """No layer has an attention norm: no other layer shows what is missing, the family's rule does."""
    with pytest.raises(errors.MissingTensorError, match=r"blk\.0\.attn_norm\.weight, which is missing "
                                                        r"\(model\.layers\.0\.input_layernorm\.weight"):
        _plan(family_for(LLAMA), _sources([DENSE[1:], DENSE[1:]]))


def test_a_layer_config_counts_without_any_tensor_is_missing():
    with pytest.raises(errors.MissingTensorError, match=r"blk\.2\.attn_norm\.weight.*config\.json counts 3 layers"):
        _plan(family_for({**LLAMA, "num_hidden_layers": 3}), _sources([DENSE, DENSE]))


def test_layers_of_two_kinds_are_refused_unless_the_family_declares_what_some_lack():
    """Strict by default: a tensor in one layer is expected in all. A family with dense and MoE layers
    says which tensors a layer may lack (``optional_tensors``)."""
    layers = [DENSE, MOE]
    with pytest.raises(errors.MissingTensorError, match=r"tensor blk\.0\.ffn_gate_inp\.weight, which is missing "
                                                        r"\(model\.layers\.0\.block_sparse_moe\.gate\.weight"):
        _plan(family_for(LLAMA), _sources(layers))

    class DenseThenMoe(Llama):
        hf_architectures = ("DenseThenMoeForTest",)
        optional_tensors = (gguf.MODEL_TENSOR.FFN_GATE, gguf.MODEL_TENSOR.FFN_UP, gguf.MODEL_TENSOR.FFN_DOWN,
                            gguf.MODEL_TENSOR.FFN_GATE_INP)

    outputs = _plan(DenseThenMoe(LLAMA, "DenseThenMoeForTest"), _sources(layers))
    assert "blk.1.ffn_gate_inp.weight" in outputs and "blk.1.ffn_up.weight" not in outputs


def test_a_source_tensor_the_family_drops_without_saying_so_is_refused():
    class Forgetful(Llama):
        hf_architectures = ("ForgetfulForTest",)

        def convert(self, name, node, bid):
            if name != "lm_head.weight":  # dropped here, not by source_name: a silent loss
                yield from super().convert(name, node, bid)

    with pytest.raises(errors.UnusedTensorError, match=r"model\.safetensors: tensor 'lm_head\.weight' is not used "
                                                       r"by the ForgetfulForTest conversion"):
        _plan(Forgetful(LLAMA, "ForgetfulForTest"), _sources([DENSE, DENSE]))

    class Deliberate(Llama):
        hf_architectures = ("DeliberateForTest",)

        def source_name(self, name):
            return None if name == "lm_head.weight" else super().source_name(name)

    family = Deliberate(LLAMA, "DeliberateForTest")
    kept = [(family.source_name(n), s) for n, s in _sources([DENSE, DENSE])]
    assert "output.weight" not in _plan(family, [(n, s) for n, s in kept if n is not None])


def test_a_tensor_without_a_llama_cpp_name_is_its_own_error():
    with pytest.raises(errors.UnusedTensorError, match="cannot map tensor 'model.layers.0.mlp.extra.weight'"):
        _plan(family_for(LLAMA), _sources([DENSE, DENSE], extra=("model.layers.0.mlp.extra.weight",)))


@pytest.mark.parametrize("blocks", [1, 3, 5])
def test_names_mapped_one_at_a_time_are_gguf_s_names(blocks):
    """``map_name`` uses gguf's map for one block and puts the block number back: for every name gguf
    knows (of any block), the answer is that of gguf's map for ``blocks`` blocks, None included."""
    checked = 0
    for family in families():
        full = gguf.get_tensor_name_map(family.gguf_arch, blocks)
        instance = object.__new__(family)
        instance.block_count, instance.gguf_arch = blocks, family.gguf_arch
        for key in gguf.get_tensor_name_map(family.gguf_arch, 7).mapping:
            for name in (key, key + ".weight", key + ".bias"):
                assert instance._lookup(name) == full.get_name(name, try_suffixes=(".weight", ".bias")), name
                checked += 1
    assert checked > 10_000


def test_a_model_with_more_layers_than_the_old_cap_plans_in_time_linear_in_its_tensors(tmp_path):
    """4,500 layers (the cap was 4,096): the plan is made, one tensor map entry per tensor; gguf's
    own map for that many blocks would be 1.2M entries."""
    from fixtures.hostile import base_files

    files = base_files(config={"num_hidden_layers": 4500, "hidden_size": 8, "num_attention_heads": 2,
                               "num_key_value_heads": 2, "intermediate_size": 8})
    repo = tmp_path / "deep"
    repo.mkdir()
    for name, blob in files.items():
        (repo / name).write_bytes(blob)
    result = hfstream.convert(str(repo), outtype="q8_0", dry_run=True)
    assert result.tensor_count == 3 + 4500 * 9
    assert json.loads((repo / "config.json").read_text())["num_hidden_layers"] == 4500


def test_config_claims_beyond_the_weights_are_refused_before_transformers_reads_them(tmp_path, monkeypatch):
    """A billion layers in config.json: refused from the headers' layer numbers, before the config is
    normalized (a config class may build a list per layer)."""
    from fixtures.hostile import base_files
    from hfstream import plan

    files = base_files()
    files["config.json"] = json.dumps({**json.loads(files["config.json"]), "num_hidden_layers": 10**9}).encode()
    repo = tmp_path / "claims"
    repo.mkdir()
    for name, blob in files.items():
        (repo / name).write_bytes(blob)
    asked = []
    monkeypatch.setattr(plan, "normalize", lambda *a, **k: asked.append(a))
    with pytest.raises(errors.MissingTensorError, match=r"config\.json: num_hidden_layers is 1000000000 but "
                                                        r"model\.safetensors hold\(s\) no tensor of layer 2 "
                                                        r"\(such as model\.layers\.2\."):
        hfstream.convert(str(repo), dry_run=True)
    assert asked == []


#: (fixture, source tensor taken out of its header, the output tensor then named missing): each kind of
#: layer of the hybrid and dense-then-MoE families is held to its own tensors (``layer_kind``)
KIND_CASES = [
    ("tiny-lfm2", "model.layers.2.self_attn.out_proj.weight", "blk.2.attn_output.weight"),
    ("tiny-lfm2", "model.layers.3.conv.out_proj.weight", "blk.3.shortconv.out_proj.weight"),
    ("tiny-qwen3-next", "model.layers.1.linear_attn.out_proj.weight", "blk.1.ssm_out.weight"),
    ("tiny-nemotron-h", "backbone.layers.3.mixer.o_proj.weight", "blk.3.attn_output.weight"),
    ("tiny-nemotron-h", "backbone.layers.4.mixer.gate.weight", "blk.4.ffn_gate_inp.weight"),
    ("tiny-granite4", "model.layers.2.mamba.out_proj.weight", "blk.2.ssm_out.weight"),
    ("tiny-glm4-moe", "model.layers.2.mlp.gate.weight", "blk.2.ffn_gate_inp.weight"),
    ("tiny-llama4", "language_model.model.layers.3.feed_forward.router.weight", "blk.3.ffn_gate_inp.weight"),
    ("tiny-ernie4_5-moe", "model.layers.1.mlp.gate.weight", "blk.1.ffn_gate_inp.weight"),
]


@pytest.mark.parametrize("fixture, dropped, missing", KIND_CASES, ids=[f"{f}:{m}" for f, _, m in KIND_CASES])
def test_each_kind_of_layer_is_held_to_its_own_tensors(fixture, dropped, missing, fixture_root, tmp_path, monkeypatch):
    """The fixture plans as it is; without one tensor of a layer (the index too), that tensor is named,
    also where its layer is the only one of its kind."""
    from hfstream import pipeline
    from tests.conftest import golden

    model_dir = tmp_path / fixture
    shutil.copytree(fixture_root / "hfs-test" / fixture / "commits" / golden(f"{fixture}.f32")["commit"], model_dir)
    assert hfstream.convert(str(model_dir), outtype="f32", dry_run=True).tensor_count > 0
    index = model_dir / "model.safetensors.index.json"
    if index.exists():
        blob = json.loads(index.read_text())
        del blob["weight_map"][dropped]
        index.write_text(json.dumps(blob))
    read_header = pipeline.read_header

    async def without(source, file, size, check=None):  # the header as if written without it
        tensors, head = await read_header(source, file, size)
        tensors = [t for t in tensors if t.name != dropped]
        if check is not None:
            check(file, [t.name for t in tensors])
        return tensors, head

    monkeypatch.setattr(pipeline, "read_header", without)
    with pytest.raises(errors.MissingTensorError, match=rf"needs tensor {re.escape(missing)}, which is missing"):
        hfstream.convert(str(model_dir), outtype="f32", dry_run=True)
