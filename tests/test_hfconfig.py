"""``hfconfig.normalize`` gives the hparams the reference converter sees: ``AutoConfig(...).to_dict()``.

Fast tests compare against the committed goldens (``tests/goldens/hfconfig/``, written by
``python -m tests.goldens.make_config_defaults``), so they need no transformers. Where transformers
is importable the same configs, and randomly mutated ones, are also checked against it live.
Comparisons are exact: values, types (1 vs 1.0 vs true), key order, int keys (``id2label``).
"""

from __future__ import annotations

import copy
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from hfstream import hfconfig
from hfstream.hfconfig import NotReproducibleError, normalize
from tests.goldens import make_config_defaults as maker

ROOT = Path(__file__).resolve().parents[1]
GOLDENS = sorted(maker.GOLDENS_DIR.glob("*.json"))
DATA = json.loads((ROOT / "hfstream" / "data" / "config_defaults.json").read_text())


def golden(path: Path) -> dict:
    return json.loads(path.read_text())


def exact(obj) -> str:
    """A string equal for two objects only if values, types, key order and key types all agree."""
    return json.dumps(maker.encode(obj), allow_nan=True)


def assert_same(got: dict, expected: dict) -> None:
    if exact(got) == exact(expected):
        return
    diffs = [k for k in dict.fromkeys([*got, *expected]) if exact(got.get(k, "<absent>")) != exact(expected.get(k, "<absent>"))]
    detail = "; ".join(f"{k}: got {exact(got.get(k, '<absent>'))[:200]} want {exact(expected.get(k, '<absent>'))[:200]}"
                       for k in diffs[:5])
    if not diffs:
        detail = f"key order: got {list(got)} want {list(expected)}"
    pytest.fail(detail)


def decode(obj):
    """Inverse of ``maker.encode``."""
    if isinstance(obj, dict):
        if set(obj) == {"__items__"}:
            return {k: decode(v) for k, v in obj["__items__"]}
        return {k: decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [decode(v) for v in obj]
    return obj


# --- against the committed goldens (no transformers) ------------------------------------------


@pytest.mark.parametrize("path", GOLDENS, ids=[p.stem for p in GOLDENS])
def test_matches_golden(path):
    g = golden(path)
    config = copy.deepcopy(g["config"])
    assert_same(normalize(config), decode(g["expected"]))
    assert config == g["config"], "normalize modified its argument"


def test_goldens_cover_every_case_and_fixture():
    names = {p.stem for p in GOLDENS}
    wanted = set(maker.CASES) | set(maker.fixture_cases())
    assert names == wanted, f"regenerate: python -m tests.goldens.make_config_defaults (missing {wanted - names}, extra {names - wanted})"
    for path in GOLDENS:
        name = path.stem
        config = maker.CASES.get(name) or maker.fixture_cases()[name]
        assert golden(path)["config"] == json.loads(json.dumps(config)), f"{name}: golden input differs from the case"


def test_goldens_come_from_the_data_version():
    assert {golden(p)["transformers_version"] for p in GOLDENS} == {DATA["transformers_version"]}


def test_every_supported_model_type_is_covered_through_autoconfig():
    seen = set()
    for path in GOLDENS:
        expected = decode(golden(path)["expected"])
        if "output_attentions" in expected:  # an AutoConfig dict, not the raw fallback
            seen.add(expected["model_type"])
            if isinstance(expected.get("text_config"), dict):
                seen.add(expected["text_config"]["model_type"])
            if isinstance(expected.get("vision_config"), dict):
                seen.add(expected["vision_config"]["model_type"])
    assert set(hfconfig.SUPPORTED_MODEL_TYPES) <= seen
    assert set(DATA["classes"]) == set(hfconfig.SUPPORTED_MODEL_TYPES)


def test_llama2_gains_what_the_reference_reads():
    hp = normalize(maker.LLAMA2_7B)
    assert hp["head_dim"] == 128 and type(hp["head_dim"]) is int
    assert hp["rope_parameters"] == {"rope_theta": 10000.0, "rope_type": "default"}
    assert type(hp["rope_parameters"]["rope_theta"]) is float
    assert hp["dtype"] == "float16" and "torch_dtype" not in hp and "rope_scaling" not in hp
    assert "_name_or_path" not in hp and "transformers_version" not in hp


def test_llama31_rope_scaling_moves_into_rope_parameters():
    rp = normalize(maker.LLAMA31_8B)["rope_parameters"]
    assert rp == {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 8192, "rope_type": "llama3", "rope_theta": 500000.0}


def test_int_rope_theta_stays_int():
    hp = normalize(maker.variant(maker.LLAMA31_8B, rope_theta=500000, rope_scaling=None))
    assert type(hp["rope_parameters"]["rope_theta"]) is int


def test_phi3_longrope_and_gemma3_nested_text_config():
    rp = normalize(maker.PHI3_MINI_128K)["rope_parameters"]
    assert rp["rope_type"] == "longrope" and rp["original_max_position_embeddings"] == 4096
    assert rp["partial_rotary_factor"] == 1.0
    hp = normalize(maker.GEMMA3_4B_IT)
    text = hp["text_config"]
    assert text["model_type"] == "gemma3_text" and text["head_dim"] == 256
    assert text["rope_parameters"] == {
        "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
        "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
    }
    assert hp["vision_config"]["model_type"] == "siglip_vision_model"


def test_qwen3_moe_num_experts_becomes_num_local_experts():
    hp = normalize(maker.QWEN3_MOE)
    assert "num_experts" not in hp and hp["num_local_experts"] == 128


def test_autoconfig_failures_give_config_json_unchanged():
    for config in (maker.variant(maker.LLAMA2_7B, num_attention_heads=30),  # hidden_size % heads
                   maker.variant(maker.LLAMA2_7B, rope_scaling={"type": "linear"}),  # factor missing
                   maker.variant(maker.LLAMA2_7B, max_position_embeddings=4096.0),  # float for an int field
                   maker.variant(maker.LLAMA2_7B, model_type="foobar"),  # unknown to transformers
                   maker.variant(maker.LLAMA2_7B, drop=("model_type",)),
                   maker.variant(maker.PHI3_MINI_128K, rope_scaling={**maker.PHI3_MINI_128K["rope_scaling"], "type": "su"})):
        assert_same(normalize(config), config)


def test_unknown_model_type_returned_unchanged_and_copied():
    config = {"model_type": "foobar", "hidden_size": 8, "nested": {"a": [1]}}
    out = normalize(config)
    assert out == config and out is not config and out["nested"] is not config["nested"]


def test_known_but_not_emulated_model_type():
    config = {"model_type": "falcon", "hidden_size": 64}
    assert normalize(config) == config
    with pytest.raises(NotReproducibleError):
        normalize(config, strict=True)
    assert not hfconfig.is_supported("falcon") and hfconfig.is_supported("llama")


def test_renames_of_load_hparams_apply_to_raw_configs():
    out = normalize({"model_type": "foobar", "llm_config": {"hidden_size": 8}})
    assert out["text_config"] == {"hidden_size": 8}
    out = normalize({"model_type": "foobar", "thinker_config": {"text_config": {"a": 1}}, "lfm": {"b": 2}})
    assert out["text_config"] == {"b": 2}


def test_name_or_path_is_kept_where_transformers_puts_it():
    hp = normalize(maker.LLAMA2_7B, name_or_path="/tmp/Llama-2-7b-hf")
    assert hp["_name_or_path"] == "/tmp/Llama-2-7b-hf"
    keys = list(hp)
    assert keys.index("head_dim") < keys.index("_name_or_path") < keys.index("model_type")


def test_unreproducible_features_raise():
    with pytest.raises(NotReproducibleError):
        normalize(maker.variant(maker.LLAMA2_7B, per_layer_config={"0": {"intermediate_size": 8}}))
    with pytest.raises(NotReproducibleError):
        normalize(maker.variant(maker.LLAMA2_7B, to_dict=1))
    with pytest.raises(NotReproducibleError):
        normalize(maker.variant(maker.LLAMA2_7B, configuration_files=["config.4.0.0.json"]))
    # a newer file than the installed transformers is not picked: config.json is read
    assert normalize(maker.variant(maker.LLAMA2_7B, configuration_files=["config.99.0.0.json"]))["head_dim"] == 128


def test_every_behaviour_named_in_the_data_is_implemented():
    tables = {"post_init": hfconfig._POST_INIT, "convert_rope": hfconfig._CONVERT_ROPE,
              "standardize_rope": hfconfig._STANDARDIZE_ROPE}
    for model_type, cls in DATA["classes"].items():
        for kind, table in tables.items():
            assert cls[kind] in table, (model_type, kind)
        assert cls["to_dict"] in ("PreTrainedConfig.to_dict", "Gemma3TextConfig.to_dict")
        assert cls["nested_rope_keys"] == "RotaryEmbeddingConfigMixin.nested_rope_parameter_keys"
        for name in cls["validators"]:
            assert name in hfconfig._VALIDATORS, (model_type, name)


def test_runtime_does_not_import_transformers_or_torch():
    code = ("import sys, hfstream.hfconfig as h; h.normalize({'model_type': 'llama'}); "
            "bad = [m for m in ('transformers', 'torch') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- live, against transformers -----------------------------------------------------------------


@pytest.fixture(scope="module")
def transformers():
    module = pytest.importorskip("transformers")
    pytest.importorskip("torch")  # the reference environment has torch: dtype names go through it
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("transformers").setLevel(logging.CRITICAL)
    module.utils.logging.set_verbosity(logging.CRITICAL)
    return module


@pytest.mark.parametrize("path", GOLDENS, ids=[p.stem for p in GOLDENS])
def test_matches_transformers(transformers, path):
    config = golden(path)["config"]
    assert_same(normalize(config), maker.reference_hparams(config))


def test_data_is_what_transformers_gives(transformers):
    if transformers.__version__ != DATA["transformers_version"]:
        pytest.skip(f"data from transformers {DATA['transformers_version']}, {transformers.__version__} installed")
    assert maker.dump(maker.build_data()) == (ROOT / "hfstream" / "data" / "config_defaults.json").read_text(), \
        "regenerate: python -m tests.goldens.make_config_defaults"


_VALUES = [None, 0, 1, 2, -1, 3, 8, 16, 64, 1.0, 0.5, 1.5, 4096.0, 1e6, True, False, "x", "default", "linear", "yarn",
           "llama3", "longrope", "dynamic", "su", "gelu", "bfloat16", "half", "auto", "eager", [], {}, [1, 2],
           ["full_attention"], ["sliding_attention", "full_attention"], {"a": 1}, {"0": "A", "1": "B"},
           {"rope_type": "yarn", "factor": 4.0}, {"type": "linear", "factor": 2.0}, {"rope_type": "default"},
           {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192},
           {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 1024, "beta_fast": 32, "beta_slow": 1},
           {"rope_type": "longrope", "short_factor": [1.0] * 64, "long_factor": [2.0] * 64}, {"factor": 2.0},
           {"full_attention": {"rope_type": "default", "rope_theta": 1e6},
            "sliding_attention": {"rope_type": "linear", "factor": 2.0}},
           {"full_attention": None}, {"__float__": "NaN"}, {"AutoConfig": "x.Y"},
           {"model_type": "siglip_vision_model", "hidden_size": 32}, {"model_type": "foo"},
           {"model_type": "gemma3_text", "num_hidden_layers": 2},
           {"quant_method": "x", "_output_attentions": 1, "dtype": 1.5, "sub": {"dtype": {"a": "t.b"}, "_commit_hash": 1}}]
_KEYS = ["rope_scaling", "rope_theta", "partial_rotary_factor", "head_dim", "layer_types", "sliding_window",
         "use_sliding_window", "torch_dtype", "dtype", "num_labels", "id2label", "attn_implementation",
         "_attn_implementation", "output_attentions", "original_max_position_embeddings", "rope_local_base_freq",
         "sliding_window_pattern", "use_bidirectional_attention", "quantization_config", "max_window_layers",
         "mlp_only_layers", "num_experts", "hidden_size", "n_embd", "num_attention_heads", "num_key_value_heads",
         "num_hidden_layers", "max_position_embeddings", "rope_parameters", "problem_type", "hidden_act",
         "vocab_size", "bos_token_id", "pad_token_id", "text_config", "vision_config", "model_type", "max_length",
         "auto_map", "_name_or_path", "kwargs", "is_encoder_decoder", "initializer_range", "rms_norm_eps",
         "default_theta", "ignore_keys", "decoder", "_post_init_done", "rope_type", "type", "factor"]


def _mutate(rng: random.Random, config: dict, depth: int = 0) -> dict:
    config = copy.deepcopy(config)
    for _ in range(rng.randint(1, 4)):
        r, keys = rng.random(), list(config)
        if r < 0.25 and keys:
            config.pop(rng.choice(keys))
        elif r < 0.7:
            config[rng.choice(_KEYS)] = copy.deepcopy(rng.choice(_VALUES))
        elif r < 0.85 and keys:
            key = rng.choice(keys)
            nested = isinstance(config[key], dict) and depth < 2
            config[key] = _mutate(rng, config[key], depth + 1) if nested else copy.deepcopy(rng.choice(_VALUES))
        else:
            config["rope_scaling"] = copy.deepcopy(rng.choice([v for v in _VALUES if isinstance(v, dict)]))
    return config


@pytest.mark.parametrize("seed", range(4))
def test_mutated_configs_match_transformers(transformers, seed):
    """Realistic configs with random keys dropped, added or given odd values: same dict, same
    fallback to config.json, as transformers."""
    rng = random.Random(seed)
    bases = list(maker.CASES.values())
    checked = 0
    for _ in range(150):
        config = _mutate(rng, rng.choice(bases))
        try:
            got = normalize(config)
        except NotReproducibleError:
            continue
        expected = maker.reference_hparams(config)
        if exact(got) != exact(expected):
            assert_same(got, expected)  # fails with the details
            pytest.fail(f"differs for {json.dumps(config)[:2000]}")
        checked += 1
    assert checked > 100
