"""``hfconfig.normalize`` gives the hparams the reference converter sees: ``AutoConfig(...).to_dict()``.

hfstream reads config.json through transformers' own config classes, in a worker process. The
goldens (``tests/goldens/hfconfig/``, written by ``python -m tests.goldens.make_config_goldens``
with ``AutoConfig.from_pretrained`` on a directory, as the reference does) pin what transformers 5.23
gives; live tests compare with ``AutoConfig.from_pretrained`` itself on randomly mutated configs.
Comparisons are exact: values, types (1 vs 1.0 vs true), key order, int keys (``id2label``).
"""

from __future__ import annotations

import copy
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from hfstream import errors, hfconfig
from hfstream.hfconfig import NotReproducibleError
from tests.goldens import make_config_goldens as maker

ROOT = Path(__file__).resolve().parents[1]
GOLDENS = sorted(maker.GOLDENS_DIR.glob("*.json"))


def normalize(config: dict, **kw) -> dict:
    """``hfconfig.normalize`` of the config.json of a repo whose config is ``config``."""
    return hfconfig.normalize(json.dumps(config).encode(), **kw)


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


# --- against the committed goldens ----------------------------------------------------------------


@pytest.mark.parametrize("path", GOLDENS, ids=[p.stem for p in GOLDENS])
def test_matches_golden(path):
    g = golden(path)
    assert_same(normalize(g["config"]), decode(g["expected"]))


def test_goldens_cover_every_case_and_fixture():
    names = {p.stem for p in GOLDENS}
    wanted = set(maker.CASES) | set(maker.fixture_cases())
    assert names == wanted, f"regenerate: python -m tests.goldens.make_config_goldens (missing {wanted - names}, extra {names - wanted})"
    for path in GOLDENS:
        name = path.stem
        config = maker.CASES.get(name) or maker.fixture_cases()[name]
        assert golden(path)["config"] == json.loads(json.dumps(config)), f"{name}: golden input differs from the case"


def test_goldens_come_from_the_installed_transformers():
    assert {golden(p)["transformers_version"] for p in GOLDENS} == {hfconfig.transformers_version()}


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


def test_unknown_model_type_returned_unchanged():
    config = {"model_type": "foobar", "hidden_size": 8, "nested": {"a": [1]}}
    assert normalize(config) == config


def test_a_model_type_the_family_reads_but_transformers_lacks_is_refused():
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama-from-the-future", "hidden_size": 8}
    assert normalize(config, model_types=("llama",)) == config
    with pytest.raises(NotReproducibleError) as e:
        normalize(config, model_types=("llama-from-the-future",))
    assert "unknown to the installed transformers" in str(e.value) and e.value.exit_code == 20


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


def test_another_configuration_file_is_refused():
    with pytest.raises(NotReproducibleError):
        normalize(maker.variant(maker.LLAMA2_7B, configuration_files=["config.4.0.0.json"]))
    # a newer file than the installed transformers is not picked: config.json is read
    assert normalize(maker.variant(maker.LLAMA2_7B, configuration_files=["config.99.0.0.json"]))["head_dim"] == 128


# --- the worker ----------------------------------------------------------------------------------


def test_answers_are_memoized_and_handed_out_as_copies():
    first = normalize(maker.LLAMA2_7B)
    first["rope_parameters"]["rope_theta"] = 1.0
    assert normalize(maker.LLAMA2_7B)["rope_parameters"]["rope_theta"] == 10000.0


def test_the_worker_comes_back_after_it_dies():
    hfconfig.prepare()
    proc = hfconfig._WORKER._proc
    assert proc is not None
    proc.kill()
    proc.wait()
    assert normalize(maker.variant(maker.LLAMA2_7B, hidden_size=1024))["head_dim"] == 32


def test_a_worker_killed_before_answering_is_a_helper_error(monkeypatch):
    hfconfig._WORKER.version()  # started and ready
    proc = hfconfig._WORKER._proc
    real_frame_out = hfconfig._frame_out

    def kill_then_send(stream, payload):
        proc.kill()
        proc.wait()
        real_frame_out(stream, payload)

    monkeypatch.setattr(hfconfig, "_frame_out", kill_then_send)
    with pytest.raises(errors.HelperDiedError):
        normalize(maker.variant(maker.LLAMA2_7B, hidden_size=2048))


def test_this_process_imports_neither_transformers_nor_torch():
    code = ("import sys, json, hfstream.hfconfig as h; h.normalize(json.dumps({'model_type': 'llama'}).encode()); "
            "bad = [m for m in ('transformers', 'torch') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_worker_imports_no_torch():
    pytest.importorskip("torch")  # only meaningful where torch is installed
    script = ROOT / "hfstream" / "_autoconfig.py"
    code = ("import runpy, sys; m = runpy.run_path(sys.argv[1]); "
            "sys.modules['torch'] = None; m['auto_config_to_dict']('{\"model_type\": \"llama\"}', 'x'); "
            "print(sorted(k for k, v in sys.modules.items() if k.startswith('torch') and v is not None))")
    proc = subprocess.run([sys.executable, "-c", code, str(script)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr


# --- live, against transformers' AutoConfig.from_pretrained ----------------------------------------


@pytest.fixture(scope="module")
def transformers():
    module = pytest.importorskip("transformers")
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("transformers").setLevel(logging.CRITICAL)
    module.utils.logging.set_verbosity(logging.CRITICAL)
    return module


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
        except NotReproducibleError:  # configuration_files naming another file
            continue
        expected = maker.reference_hparams(config)
        if exact(got) != exact(expected):
            assert_same(got, expected)  # fails with the details
            pytest.fail(f"differs for {json.dumps(config)[:2000]}")
        checked += 1
    assert checked > 100


def test_the_dtype_stand_in_knows_torch_s_dtype_names():
    """The worker's stand-in for ``getattr(torch, name)`` (see ``_autoconfig``) against torch itself."""
    torch = pytest.importorskip("torch")
    from hfstream._autoconfig import TORCH_DTYPES

    names = {n for n in dir(torch) if isinstance(getattr(torch, n), torch.dtype)}
    assert set(TORCH_DTYPES) == names
    assert {n: str(getattr(torch, n)).split(".", 1)[1] for n in names} == TORCH_DTYPES


def test_answers_now_once_the_worker_is_ready():
    """The pipeline plans by config.json as written only while this says False: once transformers is
    imported (or this config was read before) normalize answers without waiting."""
    hfconfig.transformers_version()  # waits for the worker's import
    assert hfconfig.answers_now(b'{"model_type": "llama"}')


def test_answers_now_is_false_while_the_worker_has_said_nothing():
    """A worker still importing has written nothing on its pipe: False, without waiting. Once it has
    written (here: it ended, and normalize would report that at once), True."""
    worker = hfconfig._Worker()
    assert not worker.answers_now(b"{}", "")  # not started
    silent = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE)
    try:
        worker._proc, worker._pid_owner = silent, os.getpid()
        assert not worker.answers_now(b"{}", "")
        silent.stdin.close()  # it reads to the end and exits: its stdout ends
        silent.wait(timeout=60)
        assert worker.answers_now(b"{}", "")
    finally:
        worker._proc = None
        if silent.poll() is None:
            silent.kill()
        silent.stdout.close()


def test_recorded_reads_note_every_way_a_mapping_is_read():
    from hfstream.hfconfig import RecordedReads

    hp = RecordedReads({"vocab_size": 32000, "rope": {"theta": 1e4}, "flag": True})
    assert hp["vocab_size"] == 32000 and hp.get("absent") is None and "flag" in hp
    assert hp.get("rope") == {"theta": 1e4}
    assert hp.reads.values == {"vocab_size": "32000", "absent": None, "flag": "True", "rope": "{'theta': 10000.0}"}
    assert hp.reads.keys is None
    with pytest.raises(KeyError):
        hp["missing"]
    assert hp.reads.values["missing"] is None
    assert dict(hp) == {"vocab_size": 32000, "rope": {"theta": 1e4}, "flag": True}  # walks the keys
    assert hp.reads.keys == ("vocab_size", "rope", "flag")
    with pytest.raises(TypeError):
        hp["vocab_size"] = 1  # type: ignore[index]  # a view: a write is not something it can note


def test_hparam_reads_agree_only_with_the_same_answers():
    from hfstream.hfconfig import RecordedReads

    hp = RecordedReads({"vocab_size": 32000, "eps": 1e-5})
    hp.get("vocab_size"), hp.get("pad_token_id")
    reads = hp.reads
    assert reads.agree({"vocab_size": 32000, "eps": 2.0, "other": 1})  # what was not read may differ
    assert not reads.agree({"vocab_size": 32001})
    assert not reads.agree({"vocab_size": 32000.0})  # same number, other type: 1, 1.0 and True differ
    assert not reads.agree({"vocab_size": 32000, "pad_token_id": None})  # read as absent, now present
    assert not reads.agree({})
    len(hp)  # the key list, read
    assert hp.reads.agree({"vocab_size": 32000, "eps": 1e-5})
    assert not hp.reads.agree({"eps": 1e-5, "vocab_size": 32000})  # the same keys, in another order
