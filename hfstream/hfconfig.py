"""config.json -> the hparams dict llama.cpp's converter sees, without transformers.

The reference converter does not read config.json as is: ``ModelBase.load_hparams`` loads
``AutoConfig.from_pretrained(dir, trust_remote_code=False).to_dict()`` and falls back to the raw
JSON only when that raises. The dict transformers gives holds class defaults and normalisations
(``head_dim``, ``rope_parameters`` with ``rope_theta`` 10000.0, ``num_key_value_heads``, ``dtype``
for ``torch_dtype``, ``layer_types``, ...) and the GGUF metadata depends on them.

:func:`normalize` reproduces that dict for the model types in :data:`SUPPORTED_MODEL_TYPES`:

* data (``data/config_defaults.json``, generated from transformers by
  ``tests/goldens/make_config_defaults.py``): each class's fields in order with defaults, types and
  validators, ``attribute_map``, rope defaults, sub-configs, and which behaviour each class uses;
* code (below): one small function per behaviour, each mirroring the transformers function named in
  the data (``LlamaConfig.__post_init__``, ``RotaryEmbeddingConfigMixin.standardize_rope_params``,
  ...), evaluated in the same order so values, types, key order and failures agree.

When transformers would raise (unknown ``model_type``, a failed type check, a missing rope key, an
architecture check), the reference uses config.json unchanged, and so does :func:`normalize`.
Never imports transformers or torch.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any, Callable

from . import errors

__all__ = ["normalize", "SUPPORTED_MODEL_TYPES", "NotReproducibleError", "is_supported"]

_DATA_PATH = Path(__file__).with_name("data") / "config_defaults.json"

#: model types whose AutoConfig dict is reproduced (ministral: a mistral config with layer_types;
#: siglip_vision_model: Gemma3's vision sub-config)
SUPPORTED_MODEL_TYPES = ("llama", "mistral", "ministral", "mixtral", "qwen2", "qwen3", "qwen2_moe", "qwen3_moe",
                         "gemma", "gemma2", "gemma3", "gemma3_text", "siglip_vision_model", "phi3", "gpt2",
                         "deepseek_v2", "deepseek_v3")

# keys PreTrainedConfig._remove_keys_not_serialized drops, at every depth
_NOT_SERIALIZED = ("_is_quantized", "_auto_class", "_commit_hash", "_attn_implementation_internal",
                   "_experts_implementation_internal", "_post_init_done", "ignore_keys_at_rope_validation",
                   "base_model_tp_plan", "base_model_pp_plan", "base_model_fsdp_plan", "distributed_config")
# class attributes a config.json key may shadow on the instance without changing what to_dict gives
_HARMLESS_CLASS_ATTRIBUTES = frozenset({
    "model_type", "keys_to_ignore_at_inference", "base_config_key", "base_model_tp_plan", "base_model_pp_plan",
    "base_model_ep_plan", "base_model_fsdp_plan", "_auto_class", "default_theta", "default_rope_type",
    "ignore_keys_at_rope_validation", "extra_files", "extra_config_files", "sub_configs_defaults",
    "has_no_defaults_at_init", "is_composition",
})


class NotReproducibleError(errors.UnsupportedArchitectureError):
    """config.json uses a transformers feature hfstream does not reproduce, so the hparams the
    reference converter would see are unknown."""


class _Fallback(Exception):
    """AutoConfig would raise here: the reference reads config.json as is."""


@functools.cache
def _data() -> dict:
    return json.loads(_DATA_PATH.read_text(encoding="utf-8"))


def is_supported(model_type: object) -> bool:
    """True when :func:`normalize` reproduces transformers for configs of this ``model_type``."""
    return isinstance(model_type, str) and model_type in _data()["classes"]


def normalize(config: dict, *, name_or_path: str | None = None, strict: bool = False) -> dict:
    """config.json as parsed -> the dict the reference converter sees: ``AutoConfig(...).to_dict()``
    (or config.json itself when AutoConfig fails), then ``load_hparams``' renames of nested configs
    (``llm_config``, ``lm_config``, ``thinker_config.text_config``, ``language_config``, ``lfm`` ->
    ``text_config``). ``text_config`` is not merged into the root: ``TextModel.__init__`` does that.

    ``_name_or_path`` (the reference's local directory) and ``transformers_version`` (the installed
    transformers) are left out of an AutoConfig dict; pass ``name_or_path`` to get the former.
    ``config`` is not modified.

    A ``model_type`` transformers does not know gives ``config`` unchanged, as in the reference.
    One it knows but hfstream does not emulate also gives ``config`` unchanged, or raises
    :class:`NotReproducibleError` when ``strict``. Features hfstream cannot reproduce at all
    (``per_layer_config``, ``configuration_files`` pointing elsewhere, keys that shadow config
    methods) raise :class:`NotReproducibleError`.
    """
    try:
        hparams = _auto_config_to_dict(copy.deepcopy(config))
    except NotReproducibleError:
        raise
    except _NotEmulated as e:
        if strict:
            raise NotReproducibleError(str(e)) from None
        hparams = copy.deepcopy(config)
    except Exception:  # the reference catches every exception of AutoConfig and reads config.json
        hparams = copy.deepcopy(config)
    else:
        hparams.pop("transformers_version", None)
        if name_or_path is None:
            hparams.pop("_name_or_path", None)
        else:
            hparams["_name_or_path"] = str(name_or_path)
    return _load_hparams_renames(hparams)


class _NotEmulated(Exception):
    """transformers knows this model type; hfstream does not emulate its config class."""


def _load_hparams_renames(config: dict) -> dict:
    # ModelBase.load_hparams, in its order
    if "llm_config" in config:
        config["text_config"] = config["llm_config"]
    if "lm_config" in config:
        config["text_config"] = config["lm_config"]
    if "thinker_config" in config:
        config["text_config"] = config["thinker_config"]["text_config"]
    if "language_config" in config:
        config["text_config"] = config["language_config"]
    if "lfm" in config:
        config["text_config"] = config["lfm"]
    return config


# --- AutoConfig.from_pretrained(dir).to_dict() ------------------------------------------------


def _auto_config_to_dict(config_dict: Any) -> dict:
    data = _data()
    known = data["known_model_types"]
    # PreTrainedConfig._dict_from_json_file
    config_dict = _decode_special_floats(config_dict)
    if not isinstance(config_dict, dict):
        raise _Fallback("config.json is not an object")
    # PreTrainedConfig.get_config_dict: a config may point to another file
    if "configuration_files" in config_dict:
        if _configuration_file(config_dict["configuration_files"], data["transformers_version"]) != "config.json":
            raise NotReproducibleError("config.json points to another configuration file (configuration_files)")
    # AutoConfig.from_pretrained with trust_remote_code=False
    has_remote_code = "auto_map" in config_dict and "AutoConfig" in config_dict["auto_map"]
    has_local_code = "model_type" in config_dict and config_dict["model_type"] in known
    if has_remote_code:
        class_ref = config_dict["auto_map"]["AutoConfig"]
        "--" in class_ref  # noqa: B015 - evaluated for its exceptions, as transformers does
        if not has_local_code:
            raise _Fallback("remote code needed")
    if "model_type" not in config_dict:
        raise _Fallback("no model_type")
    if config_dict["model_type"] == "mistral" and "layer_types" in config_dict:
        config_dict["model_type"] = "ministral"
    model_type = config_dict["model_type"]
    if model_type not in known:
        raise _Fallback(f"model type {model_type!r} unknown to transformers")
    if model_type not in data["classes"]:
        raise _NotEmulated(f"model type {model_type!r}: hfstream does not reproduce its transformers config")
    # PreTrainedConfig.from_dict(config_dict, name_or_path=dir)
    config_dict["name_or_path"] = ""
    config = _instantiate(model_type, config_dict)
    _repr_side_effects(config)
    config.set("name_or_path", "")
    return _to_dict(config)


def _repr_side_effects(c: _Config) -> None:
    """``from_dict`` logs ``f"Model config {config}"``: the f-string runs ``to_diff_dict`` whatever the
    log level, and that cleans the live ``quantization_config`` dict (``to_dict`` hands it out
    uncopied), which the final ``to_dict`` then returns."""
    quantization_config = c.get("quantization_config", None)
    if isinstance(quantization_config, dict):
        _dict_dtype_to_str(quantization_config)  # to_dict, inside to_diff_dict
        _remove_keys_not_serialized(quantization_config)
        _dict_dtype_to_str(quantization_config)


def _decode_special_floats(obj: Any) -> Any:
    if isinstance(obj, dict):
        if set(obj.keys()) == {"__float__"} and isinstance(obj["__float__"], str):
            tag = obj["__float__"]
            values = {"Infinity": float("inf"), "-Infinity": float("-inf"), "NaN": float("nan")}
            return values[tag] if tag in values else obj
        return {k: _decode_special_floats(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode_special_floats(v) for v in obj]
    return obj


def _configuration_file(configuration_files: Any, transformers_version: str) -> str:
    # configuration_utils.get_configuration_file
    versions = {}
    for file_name in configuration_files:
        if file_name.startswith("config.") and file_name.endswith(".json") and file_name != "config.json":
            versions[file_name.removeprefix("config.").removesuffix(".json")] = file_name
    chosen = "config.json"
    current = _version_key(transformers_version)
    for v in sorted(versions):
        if _version_key(v) <= current:
            chosen = versions[v]
        else:
            break
    return chosen


def _version_key(text: str) -> tuple:
    parts = []
    for piece in text.split("."):
        digits = "".join(c for c in piece if c.isdigit())
        if not digits or digits != piece:
            raise NotReproducibleError(f"configuration_files: cannot compare version {text!r}")
        parts.append(int(digits))
    return tuple(parts)


class _TorchDtype:
    """What ``getattr(torch, name)`` gives for a dtype name; ``str()`` is ``torch.<canonical name>``."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __str__(self) -> str:
        return f"torch.{self.name}"

    def __deepcopy__(self, memo):
        return self


def _torch_getattr(name: str) -> _TorchDtype:
    canonical = _data()["torch_dtypes"].get(name)
    if canonical is None:  # torch has no such attribute (or one that is not a dtype)
        raise AttributeError(f"module 'torch' has no dtype {name!r}")
    return _TorchDtype(canonical)


class _Config:
    """One transformers config instance: its ``__dict__`` (insertion-ordered, as Python keeps it) and
    its class data. ``set``/``get`` follow ``__setattr__``/``__getattribute__``: field validators by
    the name given, then ``attribute_map``, then properties."""

    def __init__(self, model_type: str):
        self.model_type = model_type
        self.cls = _data()["classes"][model_type]
        self.fields = {f["name"]: f for f in self.cls["fields"]}
        self.d: dict[str, Any] = {}

    # attribute access ------------------------------------------------------------------------

    def _key(self, name: str) -> str:
        return self.cls["attribute_map"].get(name, name)

    def set(self, name: str, value: Any) -> None:
        field = self.fields.get(name)
        if field is not None:
            if not _type_matches(value, field["type"]):
                raise TypeError(f"field {name!r}: {value!r} does not match {field['type']}")
            for validator in field["validators"]:
                _run_validator(validator, name, value)
        key = self._key(name)
        if key in self.cls["properties"]:
            self._set_property(key, value)
        else:
            self.d[key] = value

    def has(self, name: str) -> bool:
        try:
            self.get(name)
        except AttributeError:
            return False
        return True

    def get(self, name: str, *default: Any) -> Any:
        key = self._key(name)
        if key in self.cls["properties"]:
            try:
                return self._get_property(key)
            except AttributeError:
                if default:
                    return default[0]
                raise
        if key in self.d:
            return self.d[key]
        if key in _CLASS_ATTRIBUTES:
            return _CLASS_ATTRIBUTES[key](self)
        if default:
            return default[0]
        raise AttributeError(name)

    @property
    def num_labels(self) -> int | None:
        id2label = self.get("id2label")
        return len(id2label) if id2label is not None else None

    def _get_property(self, key: str) -> Any:
        if key == "num_labels":
            return self.num_labels
        if key == "output_attentions":
            return self.get("_output_attentions")
        if key == "_attn_implementation":
            return self.get("_attn_implementation_internal")
        if key == "_experts_implementation":
            return self.get("_experts_implementation_internal")
        if key == "rope_scaling":
            return self.get("rope_parameters")
        if key == "name_or_path":
            return self.get("_name_or_path", None)
        if key == "torch_dtype":
            return self.get("dtype")
        if key == "is_heterogeneous":
            return "_heterogeneity_spec" in self.d
        if key in ("allow_global_per_layer_attribute_access", "serialize_explicit_per_layer_config"):
            return self.d.get(key, False)
        raise NotReproducibleError(f"reading config property {key!r} is not emulated")

    def _set_property(self, key: str, value: Any) -> None:
        if not self.cls["properties"][key]:
            raise AttributeError(f"property {key!r} of a config has no setter")
        if key == "name_or_path":
            self.d["_name_or_path"] = str(value)
        elif key == "num_labels":
            if self.get("id2label") is None or self.num_labels != value:
                self.set("id2label", {i: f"LABEL_{i}" for i in range(value)})
                id2label = self.get("id2label")
                self.set("label2id", dict(zip(id2label.values(), id2label.keys())))
        elif key == "output_attentions":
            if value and self.get("_attn_implementation", None) is None:
                self.set("_attn_implementation", "eager")
            if value and self.get("_attn_implementation", None) != "eager":
                raise ValueError("output_attentions needs the eager attention implementation")
            self.d["_output_attentions"] = value
        elif key in ("_attn_implementation", "_experts_implementation"):
            current = self.get(key, None)
            self.d[key + "_internal"] = value if not isinstance(value, dict) else value.get("", current)
            # (set on sub-configs too in transformers; the internal value is never serialised)
        elif key == "torch_dtype":
            self.set("dtype", value)
        elif key == "rope_scaling":
            self.set("rope_parameters", value)
            if value is not None and self.get("_post_init_done", False):
                _STANDARDIZE_ROPE[self.cls["standardize_rope"]](self)
        elif key == "per_layer_config":
            if value is None:
                self.d.pop("_heterogeneity_spec", None)
            else:
                raise NotReproducibleError("per_layer_config (heterogeneous configs) is not reproduced")
        elif key in ("allow_global_per_layer_attribute_access", "serialize_explicit_per_layer_config"):
            self.d[key] = value
        else:
            raise NotReproducibleError(f"setting config property {key!r} is not emulated")


_CLASS_ATTRIBUTES: dict[str, Callable[[_Config], Any]] = {
    "default_theta": lambda c: c.cls["default_theta"],
    "default_rope_type": lambda c: c.cls["default_rope_type"],
    "ignore_keys_at_rope_validation": lambda c: set(c.cls["ignore_keys_at_rope_validation"]),
    "model_type": lambda c: c.model_type,
}


def _type_matches(value: Any, spec: Any) -> bool:
    """huggingface_hub.dataclasses.type_validator as a predicate."""
    if isinstance(spec, str):
        if spec in ("unchecked", "any"):
            return True
        if spec == "none":
            return value is None
        if spec == "int":
            return isinstance(value, int) and not isinstance(value, bool)
        if spec == "float":
            return isinstance(value, float)
        if spec == "str":
            return isinstance(value, str)
        if spec == "bool":
            return isinstance(value, bool)
        if spec == "typeddict":  # isinstance() on a TypedDict raises TypeError
            return False
        if spec == "config":
            return isinstance(value, _Config)
    elif "union" in spec:
        return any(_type_matches(value, s) for s in spec["union"])
    elif "list" in spec:
        return isinstance(value, list) and all(_type_matches(v, spec["list"]) for v in value)
    elif "dict" in spec:
        k_spec, v_spec = spec["dict"]
        return isinstance(value, dict) and all(_type_matches(k, k_spec) and _type_matches(v, v_spec)
                                               for k, v in value.items())
    elif "tuple" in spec or "tuple_of" in spec:
        return False  # JSON has no tuples
    elif "literal" in spec:
        args = spec["literal"]
        if isinstance(value, bool):
            return value in [a for a in args if isinstance(a, bool)]
        if isinstance(value, int):
            return value in [a for a in args if isinstance(a, int) and not isinstance(a, bool)]
        return value in args
    raise NotReproducibleError(f"unknown type spec {spec!r} in config_defaults.json")


def _run_validator(validator: dict, name: str, value: Any) -> None:
    if "interval" in validator:
        lo, hi, exclude_lo, exclude_hi = validator["interval"]
        lo = lo if lo is not None else float("-inf")
        hi = hi if hi is not None else float("inf")
        lo_ok = lo <= value if not exclude_lo else lo < value
        hi_ok = value <= hi if not exclude_hi else value < hi
        if not (lo_ok and hi_ok):
            raise ValueError(f"field {name!r}: {value!r} is outside [{lo}, {hi}]")
        return
    raise NotReproducibleError(f"unknown field validator {validator!r} in config_defaults.json")


def _instantiate(model_type: str, kwargs: dict) -> _Config:
    """``ConfigClass(**kwargs)``: fields in order, ``__post_init__`` with the rest, then validators."""
    c = _Config(model_type)
    for field in c.cls["fields"]:
        name = field["name"]
        c.set(name, kwargs[name] if name in kwargs else field["default"])
    extra = {k: v for k, v in kwargs.items() if k not in c.fields}
    # keyword arguments that collide with the parameters of the methods kwargs are passed to
    if "self" in extra or (c.cls["sub_configs"] and ("key" in extra or "subconfig" in extra)):
        raise TypeError("got multiple values for an argument")
    _POST_INIT[c.cls["post_init"]](c, extra)
    for name in c.cls["validators"]:
        _VALIDATORS[name](c)
    return c


# --- __post_init__ ----------------------------------------------------------------------------


def _base_post_init(c: _Config, kwargs: dict) -> None:
    # PreTrainedConfig.__post_init__
    data = _data()
    for key, spec in c.cls["sub_configs"].items():
        sub = c.get(key)
        if sub is None and spec["optional"]:
            continue
        c.set(key, _create_subconfig(spec, sub))

    if (torch_dtype := kwargs.pop("torch_dtype", None)) is not None:
        c.set("dtype", c.get("dtype") if c.get("dtype") is not None else torch_dtype)
    if c.get("dtype") is not None and isinstance(c.get("dtype"), str):
        c.set("dtype", _torch_getattr(c.get("dtype")))

    if c.get("id2label") is None:
        c.set("num_labels", kwargs.get("num_labels", c.num_labels if c.num_labels is not None else 2))
    else:
        c.set("id2label", {int(key): value for key, value in c.get("id2label").items()})
    if c.get("problem_type") == "single_label_classification" and c.num_labels == 1:
        raise ValueError("single_label_classification needs num_labels > 1")

    if c.has("rope_parameters"):
        kwargs = _CONVERT_ROPE[c.cls["convert_rope"]](c, kwargs)
    elif kwargs.get("rope_scaling") and kwargs.get("rope_theta"):
        kwargs = _CONVERT_ROPE[c.cls["convert_rope"]](c, kwargs)

    for name in data["generation_parameters"]:
        kwargs.pop(name, None)

    c.set("_name_or_path", str(kwargs.pop("name_or_path", "")))
    kwargs.pop("_commit_hash", None)
    c.set("_output_attentions", kwargs.pop("output_attentions", False))
    c.set("_attn_implementation", kwargs.pop("attn_implementation", None))
    c.set("_experts_implementation", kwargs.pop("experts_implementation", None))
    per_layer_config = kwargs.pop("per_layer_config", None)

    members = set(data["class_members"]).union(c.cls["class_members"]) - _HARMLESS_CLASS_ATTRIBUTES
    for key, value in kwargs.items():
        if key in ("_attn_implementation_internal", "_experts_implementation_internal"):
            continue
        mapped = c._key(key)
        if mapped in members or (mapped.startswith("__") and mapped.endswith("__")):
            raise NotReproducibleError(f"config.json key {key!r} shadows a transformers config method or attribute")
        c.set(key, value)

    if per_layer_config is not None:
        c.set("per_layer_config", per_layer_config)

    remap = data["legacy_layer_type_remap"]
    for name in ("layer_types", "mtp_layer_types"):
        layer_types = c.get(name, None)
        if layer_types is not None:
            remapped = [remap.get(t, t) for t in layer_types]
            if remapped != layer_types:
                c.set(name, remapped)
    c.set("_post_init_done", True)


def _create_subconfig(spec: dict, sub: Any) -> _Config:
    # SubConfigSpec.create_subconfig
    if isinstance(sub, _Config):
        return sub
    if spec["auto"]:
        model_type = sub.get("model_type", spec["model_type"]) if sub is not None else spec["model_type"]
        if not model_type:
            raise ValueError("sub-config without model_type")
        if model_type not in _data()["known_model_types"]:
            raise ValueError(f"unknown sub-config model type {model_type!r}")
        if model_type not in _data()["classes"]:
            raise NotReproducibleError(f"sub-config model type {model_type!r} is not reproduced")
    else:
        model_type = spec["model_type"]
    if isinstance(sub, dict):
        pass
    elif sub is None:
        sub = spec["init_kwargs"]
    else:
        raise TypeError("a sub-config must be a dict or null")
    return _instantiate(model_type, dict(copy.deepcopy(sub)))


def _default_head_dim(c: _Config) -> None:
    if c.get("head_dim") is None:
        c.set("head_dim", c.get("hidden_size") // c.get("num_attention_heads"))


def _default_kv_heads(c: _Config) -> None:
    if c.get("num_key_value_heads") is None:
        c.set("num_key_value_heads", c.get("num_attention_heads"))


def _post_init_llama(c: _Config, kwargs: dict) -> None:
    _default_head_dim(c)
    _default_kv_heads(c)
    _base_post_init(c, kwargs)


def _post_init_mistral(c: _Config, kwargs: dict) -> None:
    c.set("head_dim", c.get("head_dim") if c.get("head_dim") is not None
          else c.get("hidden_size") // c.get("num_attention_heads"))
    _default_kv_heads(c)
    _base_post_init(c, kwargs)


def _post_init_kv_heads(c: _Config, kwargs: dict) -> None:
    # Mixtral, Phi3
    _default_kv_heads(c)
    _base_post_init(c, kwargs)


def _post_init_ministral(c: _Config, kwargs: dict) -> None:
    _default_kv_heads(c)
    if c.get("layer_types") is None:
        kind = "sliding_attention" if c.get("sliding_window") is not None else "full_attention"
        c.set("layer_types", [kind] * c.get("num_hidden_layers"))
    _base_post_init(c, kwargs)


def _post_init_qwen2(c: _Config, kwargs: dict) -> None:
    # Qwen2, Qwen3: sliding window only with use_sliding_window, from layer max_window_layers on
    c.set("sliding_window", c.get("sliding_window") if c.get("use_sliding_window") else None)
    _default_kv_heads(c)
    if c.get("layer_types") is None:
        c.set("layer_types", [
            "sliding_attention" if c.get("sliding_window") is not None and i >= c.get("max_window_layers")
            else "full_attention"
            for i in range(c.get("num_hidden_layers"))
        ])
    _base_post_init(c, kwargs)


def _post_init_qwen2_moe(c: _Config, kwargs: dict) -> None:
    c.set("mlp_only_layers", [] if c.get("mlp_only_layers") is None else c.get("mlp_only_layers"))
    c.set("sliding_window", c.get("sliding_window") if c.get("use_sliding_window") else 0)
    if c.get("layer_types") is None:
        c.set("layer_types", [
            "sliding_attention"
            if bool((i + 1) % 2) and i < c.get("max_window_layers") and c.get("use_sliding_window")
            else "full_attention"
            for i in range(c.get("num_hidden_layers"))
        ])
    _base_post_init(c, kwargs)


def _post_init_qwen3_moe(c: _Config, kwargs: dict) -> None:
    c.set("sliding_window", c.get("sliding_window") if c.get("use_sliding_window") else None)
    c.set("mlp_only_layers", [] if c.get("mlp_only_layers") is None else c.get("mlp_only_layers"))
    _base_post_init(c, kwargs)


def _post_init_gemma(c: _Config, kwargs: dict) -> None:
    if c.get("hidden_act") == "gelu":  # legacy value of the official releases, meant as the tanh approximation
        c.set("hidden_act", "gelu_pytorch_tanh")
    _base_post_init(c, kwargs)


def _post_init_gemma2(c: _Config, kwargs: dict) -> None:
    if c.get("layer_types") is None:
        c.set("layer_types", ["sliding_attention" if bool((i + 1) % 2) else "full_attention"
                              for i in range(c.get("num_hidden_layers"))])
    _base_post_init(c, kwargs)


def _post_init_gemma3_text(c: _Config, kwargs: dict) -> None:
    if c.get("use_bidirectional_attention"):
        c.set("sliding_window", (c.get("sliding_window") // 2) + 1)
    c.set("_sliding_window_pattern", kwargs.get("sliding_window_pattern", 6))
    if c.get("layer_types") is None:
        pattern = c.get("_sliding_window_pattern")
        c.set("layer_types", ["sliding_attention" if bool((i + 1) % pattern) else "full_attention"
                              for i in range(c.get("num_hidden_layers"))])
    _base_post_init(c, kwargs)


def _post_init_deepseek_v2(c: _Config, kwargs: dict) -> None:
    # MLA: qk_head_dim = nope + rope, and head_dim is the rotary part
    c.set("qk_head_dim", c.get("qk_nope_head_dim") + c.get("qk_rope_head_dim"))
    c.set("head_dim", c.get("qk_rope_head_dim"))
    _default_head_dim(c)
    _default_kv_heads(c)
    _base_post_init(c, kwargs)


def _post_init_deepseek_v3(c: _Config, kwargs: dict) -> None:
    _default_kv_heads(c)
    c.set("qk_head_dim", c.get("qk_nope_head_dim") + c.get("qk_rope_head_dim"))
    c.set("head_dim", c.get("qk_rope_head_dim"))
    _base_post_init(c, kwargs)


_POST_INIT: dict[str, Callable[[_Config, dict], None]] = {
    "PreTrainedConfig.__post_init__": _base_post_init,
    "LlamaConfig.__post_init__": _post_init_llama,
    "MistralConfig.__post_init__": _post_init_mistral,
    "MinistralConfig.__post_init__": _post_init_ministral,
    "MixtralConfig.__post_init__": _post_init_kv_heads,
    "Phi3Config.__post_init__": _post_init_kv_heads,
    "Qwen2Config.__post_init__": _post_init_qwen2,
    "Qwen3Config.__post_init__": _post_init_qwen2,
    "Qwen2MoeConfig.__post_init__": _post_init_qwen2_moe,
    "Qwen3MoeConfig.__post_init__": _post_init_qwen3_moe,
    "GemmaConfig.__post_init__": _post_init_gemma,
    "Gemma2Config.__post_init__": _post_init_gemma2,
    "Gemma3TextConfig.__post_init__": _post_init_gemma3_text,
    "DeepseekV2Config.__post_init__": _post_init_deepseek_v2,
    "DeepseekV3Config.__post_init__": _post_init_deepseek_v3,
}


# --- rope parameters --------------------------------------------------------------------------


def _nested_rope_keys(c: _Config, rope_parameters: dict) -> list:
    # RotaryEmbeddingConfigMixin.nested_rope_parameter_keys: keys named after declared layer types
    labels = c.get("_rope_type_labels", None) or c.get("layer_types", None) or ()
    return [key for key in rope_parameters if key in labels]


def _convert_rope_base(c: _Config, kwargs: dict) -> dict:
    # RotaryEmbeddingConfigMixin.convert_rope_params_to_dict
    rope_scaling = kwargs.pop("rope_scaling", None)
    c.set("rope_parameters", rope_scaling or c.get("rope_parameters"))
    c.set("rope_parameters", c.get("rope_parameters") if c.get("rope_parameters") is not None else {})

    rope_theta = kwargs.pop("rope_theta", c.get("rope_theta", c.get("default_theta")))
    partial_rotary_factor = kwargs.pop("partial_rotary_factor", c.get("partial_rotary_factor", None))

    rope_parameters = c.get("rope_parameters")
    nested_keys = _nested_rope_keys(c, rope_parameters)
    nested = [rope_parameters[key] for key in nested_keys] or [rope_parameters]
    for params in nested:
        if params is None:
            continue
        params.setdefault("rope_theta", rope_theta)
        if partial_rotary_factor is not None:
            params.setdefault("partial_rotary_factor", partial_rotary_factor)
    if partial_rotary_factor is not None:
        ignore = c.get("ignore_keys_at_rope_validation")
        c.set("ignore_keys_at_rope_validation", set(ignore or []) | {"partial_rotary_factor"})

    _STANDARDIZE_ROPE[c.cls["standardize_rope"]](c)
    return kwargs


def _convert_rope_phi3(c: _Config, kwargs: dict) -> dict:
    # Phi3Config.convert_rope_params_to_dict: partial_rotary_factor 1.0 in the dict; su/yarn -> longrope.
    # Its signature (self, default_theta=10_000.0, ignore_keys=None, **kwargs) takes those two
    # config.json keys as arguments.
    default_theta = kwargs.pop("default_theta", 10_000.0)
    kwargs.pop("ignore_keys", None)
    rope_scaling = kwargs.pop("rope_scaling", None)
    c.set("rope_parameters", rope_scaling or c.get("rope_parameters"))
    c.set("rope_parameters", c.get("rope_parameters") if c.get("rope_parameters") is not None else {})
    c.get("rope_parameters").setdefault("rope_theta", kwargs.pop("rope_theta", default_theta))
    c.get("rope_parameters").setdefault("partial_rotary_factor", kwargs.get("partial_rotary_factor", 1.0))
    _STANDARDIZE_ROPE[c.cls["standardize_rope"]](c)
    rope_type = c.get("rope_parameters").get("rope_type", None)
    if rope_type is not None and rope_type in ["su", "yarn"]:
        c.get("rope_parameters")["rope_type"] = "longrope"
    return kwargs


def _convert_rope_gemma3_text(c: _Config, kwargs: dict) -> dict:
    # Gemma3TextConfig.convert_rope_params_to_dict: one dict per layer type; rope_scaling applies to
    # full attention; rope_theta (global) and rope_local_base_freq (sliding) become their rope_theta
    rope_scaling = kwargs.pop("rope_scaling", None)
    default_rope_params = {
        "sliding_attention": {"rope_type": "default"},
        "full_attention": {"rope_type": "default"},
    }
    c.set("rope_parameters", c.get("rope_parameters") if c.get("rope_parameters") is not None
          else default_rope_params)
    if rope_scaling is not None:
        c.get("rope_parameters")["full_attention"].update(rope_scaling)
    if c.get("rope_parameters").get("full_attention") is None:
        c.get("rope_parameters")["full_attention"] = {"rope_type": "default"}
    c.get("rope_parameters")["full_attention"].setdefault(
        "rope_theta", kwargs.pop("rope_theta", c.get("default_theta")["global"]))
    if c.get("rope_parameters").get("sliding_attention") is None:
        c.get("rope_parameters")["sliding_attention"] = {"rope_type": "default"}
    c.get("rope_parameters")["sliding_attention"].setdefault(
        "rope_theta", kwargs.pop("rope_local_base_freq", c.get("default_theta")["local"]))
    _STANDARDIZE_ROPE[c.cls["standardize_rope"]](c)
    return kwargs


_CONVERT_ROPE: dict[str, Callable[[_Config, dict], dict]] = {
    "RotaryEmbeddingConfigMixin.convert_rope_params_to_dict": _convert_rope_base,
    "Phi3Config.convert_rope_params_to_dict": _convert_rope_phi3,
    "Gemma3TextConfig.convert_rope_params_to_dict": _convert_rope_gemma3_text,
}

_SCALED_ROPE_TYPES = ["llama3", "yarn", "longrope"]  # these carry original_max_position_embeddings


def _standardize_rope(c: _Config) -> None:
    # RotaryEmbeddingConfigMixin.standardize_rope_params
    rope_theta = c.get("rope_theta", None)
    partial_rotary_factor = c.get("partial_rotary_factor", None)
    rope_parameters = c.get("rope_parameters", None) or {}
    nested_keys = _nested_rope_keys(c, rope_parameters)
    default_rope_type = c.get("default_rope_type")

    if not (rope_parameters or rope_theta):
        return
    elif not nested_keys:
        rope_parameters.setdefault("rope_type", rope_parameters.get("type", "default"))
        rope_parameters.setdefault("rope_theta", rope_theta)
        if partial_rotary_factor is not None:
            rope_parameters.setdefault("partial_rotary_factor", partial_rotary_factor)
        if default_rope_type != "default" and rope_parameters["rope_type"] == "default":
            rope_parameters["rope_type"] = default_rope_type
        if rope_parameters["rope_type"] in _SCALED_ROPE_TYPES:
            # the live attribute, which is rope_parameters unless that was empty
            if c.has("original_max_position_embeddings"):
                c.get("rope_parameters")["original_max_position_embeddings"] = c.get("original_max_position_embeddings")
            else:
                c.get("rope_parameters").setdefault("original_max_position_embeddings",
                                                    c.get("max_position_embeddings"))
    else:
        for layer_type in nested_keys:
            if rope_parameters[layer_type] is None:
                continue
            params = rope_parameters[layer_type]
            params.setdefault("rope_type", params.get("type", "default"))
            params.setdefault("rope_theta", rope_theta)
            if partial_rotary_factor is not None:
                params.setdefault("partial_rotary_factor", partial_rotary_factor)
            if params["rope_type"] in _SCALED_ROPE_TYPES:
                c.get("rope_parameters")[layer_type].setdefault("original_max_position_embeddings",
                                                               c.get("max_position_embeddings"))
            if default_rope_type != "default" and params["rope_type"] == "default":
                params["rope_type"] = default_rope_type
    c.set("rope_parameters", rope_parameters)


_STANDARDIZE_ROPE: dict[str, Callable[[_Config], None]] = {
    "RotaryEmbeddingConfigMixin.standardize_rope_params": _standardize_rope,
}


# --- validators (only what can raise: transformers' warnings change nothing) ------------------


def _check_received_keys(rope_type, received: set, required: set, optional: set | None = None,
                         ignore: set | None = None) -> None:
    if "type" in received:
        received -= {"type"}
        required.add("rope_type")
    optional = optional or set()
    optional.add("partial_rotary_factor")
    if ignore is not None:
        received -= set(ignore)
    missing = required - received
    if missing:
        raise KeyError(f"rope_parameters for rope_type {rope_type!r} lack {sorted(missing)}")


def _validate_rope_default(c: _Config, rp: dict, ignore) -> None:
    _check_received_keys(rp["rope_type"], set(rp.keys()), {"rope_type"}, {"rope_theta"}, ignore)


def _validate_rope_linear(c: _Config, rp: dict, ignore) -> None:  # linear and dynamic
    _check_received_keys(rp["rope_type"], set(rp.keys()), {"rope_type", "factor"}, {"rope_theta"}, ignore)


def _validate_rope_yarn(c: _Config, rp: dict, ignore) -> None:
    optional = {"rope_theta", "attention_factor", "beta_fast", "beta_slow", "mscale", "mscale_all_dim", "truncate"}
    _check_received_keys(rp["rope_type"], set(rp.keys()), {"rope_type", "factor", "original_max_position_embeddings"},
                         optional, ignore)
    beta_fast, beta_slow = rp.get("beta_fast"), rp.get("beta_slow")
    (beta_fast or 32) < (beta_slow or 1)  # noqa: B015 - may raise, as in transformers
    c.get("max_position_embeddings") / rp["original_max_position_embeddings"]


def _validate_rope_longrope(c: _Config, rp: dict, ignore) -> None:
    _check_received_keys(rp["rope_type"], set(rp.keys()),
                         {"rope_type", "short_factor", "long_factor", "original_max_position_embeddings"},
                         {"rope_theta", "attention_factor", "factor"}, ignore)
    partial_rotary_factor = rp.get("partial_rotary_factor", 1.0)
    fallback = c.get("hidden_size") // c.get("num_attention_heads")  # getattr's default is evaluated first
    head_dim = c.get("head_dim", fallback)
    dim = int(head_dim * partial_rotary_factor)
    len(rp.get("short_factor")) != dim // 2  # noqa: B015
    len(rp.get("long_factor")) != dim // 2  # noqa: B015


def _validate_rope_llama3(c: _Config, rp: dict, ignore) -> None:
    required = {"rope_type", "factor", "original_max_position_embeddings", "low_freq_factor", "high_freq_factor",
                "rope_theta"}
    _check_received_keys(rp["rope_type"], set(rp.keys()), required, ignore=ignore)
    rp["high_freq_factor"] <= rp["low_freq_factor"]  # noqa: B015
    rp["original_max_position_embeddings"] >= c.get("max_position_embeddings")  # noqa: B015


def _validate_rope_proportional(c: _Config, rp: dict, ignore) -> None:
    _check_received_keys(rp["rope_type"], set(rp.keys()), {"rope_type", "rope_theta"}, ignore=ignore)


_ROPE_TYPE_VALIDATORS = {
    "_validate_axial_rope_parameters": _validate_rope_default,
    "_validate_default_rope_parameters": _validate_rope_default,
    "_validate_linear_rope_parameters": _validate_rope_linear,
    "_validate_dynamic_rope_parameters": _validate_rope_linear,
    "_validate_yarn_rope_parameters": _validate_rope_yarn,
    "_validate_longrope_rope_parameters": _validate_rope_longrope,
    "_validate_llama3_rope_parameters": _validate_rope_llama3,
    "_validate_proportional_rope_parameters": _validate_rope_proportional,
}


def _validate_rope(c: _Config) -> None:
    # RotaryEmbeddingConfigMixin.validate_rope
    rope_parameters = c.get("rope_parameters", None)
    if not rope_parameters:
        return
    nested_keys = _nested_rope_keys(c, rope_parameters)
    if nested_keys:
        by_layer = {key: rope_parameters[key] for key in nested_keys}
    else:
        by_layer = {"full_attention": rope_parameters}
    head_dim = c.get("head_dim", None)
    for layer_type, params in by_layer.items():
        if params is None:
            continue
        rope_type = params.get("rope_type", params.get("type", "default"))
        params["rope_type"] = rope_type
        validator = _ROPE_TYPE_VALIDATORS.get(f"_validate_{rope_type}_rope_parameters")
        if validator is not None:
            validator(c, params, c.get("ignore_keys_at_rope_validation"))
        partial_rotary_factor = params.get("partial_rotary_factor", 1.0)
        if head_dim is not None and head_dim > 4 and head_dim % 2 and int(head_dim * partial_rotary_factor) == head_dim:
            raise ValueError(f"odd rotary dimension {head_dim} for {layer_type}")


def _validate_rope_phi3(c: _Config) -> None:
    # Phi3Config.validate_rope: only default or longrope, factor lists of the rotary half-dimension
    _validate_rope(c)
    rope_parameters = c.get("rope_parameters")
    if not isinstance(rope_parameters, dict):
        raise ValueError("rope_parameters must be a dict")
    rope_type = rope_parameters.get("rope_type", None)
    short_factor = rope_parameters.get("short_factor", None)
    long_factor = rope_parameters.get("long_factor", None)
    rotary_ndims = int(c.get("hidden_size") // c.get("num_attention_heads") * rope_parameters["partial_rotary_factor"])
    if rope_type not in ["default", "longrope"]:
        raise ValueError(f"phi3 rope_type must be longrope, got {rope_type!r}")
    for factors in (short_factor, long_factor):
        if factors is not None:
            if not (isinstance(factors, list) and all(isinstance(x, (int, float)) for x in factors)):
                raise ValueError("phi3 rope factors must be a list of numbers")
            if not len(factors) == rotary_ndims // 2:
                raise ValueError(f"phi3 rope factors must have length {rotary_ndims // 2}")


def _validate_architecture_base(c: _Config) -> None:
    if c.get("is_heterogeneous"):
        raise NotReproducibleError("heterogeneous configs are not reproduced")
    if (c.has("head_dim") and c.has("num_heads") and c.has("embed_dim")
            and c.get("head_dim") * c.get("num_heads") != c.get("embed_dim")):
        raise ValueError("embed_dim is not head_dim * num_heads")


def _validate_architecture_heads(c: _Config) -> None:
    # Llama, Gemma2, Gemma3Text, DeepseekV2
    if c.get("hidden_size") % c.get("num_attention_heads") != 0:
        raise ValueError("hidden_size is not a multiple of num_attention_heads")


def _validate_layer_type(c: _Config) -> None:
    data = _data()
    for allowed, name in zip([data["allowed_attn_layer_types"], data["allowed_mlp_layer_types"]],
                             ["layer_types", "mlp_layer_types"]):
        layers = c.get(name, None)
        if not (layers is not None and c.has("num_hidden_layers")):
            return
        if not all(layer_type in allowed for layer_type in layers):
            raise ValueError(f"{name} has entries outside {allowed}")
        elif c.get("num_hidden_layers") is not None and c.get("num_hidden_layers") != len(layers):
            raise ValueError(f"num_hidden_layers differs from the length of {name}")


def _validate_output_attentions(c: _Config) -> None:
    if c.get("output_attentions") and c.get("_attn_implementation") not in ["eager", None]:
        raise ValueError("output_attentions needs the eager attention implementation")


def _validate_token_ids(c: _Config) -> None:
    # PreTrainedConfig.validate_token_ids only warns, but finding the text config and comparing
    # can raise
    names = [n for n in ("decoder", "generator", "text_config") if c.get(n, None) is not None]
    if len(names) > 1:
        raise ValueError(f"several text configs: {names}")
    text_config = c.get(names[0]) if names else c
    # (a flat encoder-decoder config is copied and renamed there first; assumed not to raise)
    vocab_size = text_config.get("vocab_size", None) if isinstance(text_config, _Config) else None
    if vocab_size is not None:
        for name, value in text_config.d.items():
            if name.endswith("_token_id") and isinstance(value, int):
                0 <= value < vocab_size  # noqa: B015


_VALIDATORS: dict[str, Callable[[_Config], None]] = {
    "PreTrainedConfig.validate_architecture": _validate_architecture_base,
    "LlamaConfig.validate_architecture": _validate_architecture_heads,
    "DeepseekV2Config.validate_architecture": _validate_architecture_heads,
    "Gemma2Config.validate_architecture": _validate_architecture_heads,
    "Gemma3TextConfig.validate_architecture": _validate_architecture_heads,
    "PreTrainedConfig.validate_layer_type": _validate_layer_type,
    "PreTrainedConfig.validate_output_attentions": _validate_output_attentions,
    "PreTrainedConfig.validate_token_ids": _validate_token_ids,
    "RotaryEmbeddingConfigMixin.validate_rope": _validate_rope,
    "Phi3Config.validate_rope": _validate_rope_phi3,
}


# --- to_dict ----------------------------------------------------------------------------------


def _to_dict(c: _Config) -> dict:
    # PreTrainedConfig.to_dict
    memo = {id(v): v for v in c.d.values() if isinstance(v, _Config)}  # sub-configs serialise themselves
    output = copy.deepcopy(c.d, memo)
    output["model_type"] = c.model_type
    output["transformers_version"] = _data()["transformers_version"]
    output.pop("kwargs", None)
    for key, value in output.items():
        if isinstance(value, _Config):
            value = _to_dict(value)
            del value["transformers_version"]
        elif isinstance(value, tuple):
            value = _to_list(value)
        output[key] = value
    _remove_keys_not_serialized(output)
    if c.has("quantization_config"):
        quantization_config = c.get("quantization_config")
        if not isinstance(quantization_config, dict) and quantization_config is not None:
            raise AttributeError("quantization_config has no to_dict")
        output["quantization_config"] = quantization_config
    _dict_dtype_to_str(output)
    if c.cls["to_dict"] == "Gemma3TextConfig.to_dict" and c.get("use_bidirectional_attention", False):
        output["sliding_window"] = (c.get("sliding_window") - 1) * 2
    return output


def _to_list(value: Any) -> Any:
    if isinstance(value, tuple):
        value = [_to_list(item) for item in value]
    return value


def _remove_keys_not_serialized(d: dict) -> None:
    for key in _NOT_SERIALIZED:
        d.pop(key, None)
    if "_output_attentions" in d:
        d["output_attentions"] = d.pop("_output_attentions")
    for value in d.values():
        if isinstance(value, dict):
            _remove_keys_not_serialized(value)


def _dict_dtype_to_str(d: dict) -> None:
    if d.get("dtype") is not None:
        if isinstance(d["dtype"], dict):
            d["dtype"] = {k: str(v).split(".")[-1] for k, v in d["dtype"].items()}
        elif not isinstance(d["dtype"], (str, int)):
            d["dtype"] = str(d["dtype"]).split(".")[1]
    for value in d.values():
        if isinstance(value, dict):
            _dict_dtype_to_str(value)


# --- reading config.json, and the sanity of what families read from it ----------------------------

#: deeper than any real config.json (they nest 2-4 levels); deeper ones would overflow the recursion
#: of copy.deepcopy and of the JSON encoder later
MAX_CONFIG_DEPTH = 32


def load_config(blob: bytes, name: str = "config.json") -> dict:
    """config.json bytes -> the parsed object; every way it can be unusable is an InvalidConfigError.

    Duplicate keys keep the last value, as ``json.load`` (and so transformers) does.
    """
    try:
        config = json.loads(blob)
    except UnicodeDecodeError as e:
        raise errors.InvalidConfigError(f"{name} is not valid UTF-8 (byte {e.start})") from None
    except RecursionError:
        raise errors.InvalidConfigError(f"{name} is not valid JSON (nested too deeply)") from None
    except ValueError as e:  # JSONDecodeError, and ints longer than Python's int_max_str_digits
        reason = f"{e.msg} at line {e.lineno}" if isinstance(e, json.JSONDecodeError) else "a number is too long"
        raise errors.InvalidConfigError(f"{name} is not valid JSON ({reason})") from None
    if not isinstance(config, dict):
        raise errors.InvalidConfigError(f"{name} is not a JSON object")
    if _depth(config) > MAX_CONFIG_DEPTH:
        raise errors.InvalidConfigError(f"{name} is nested more than {MAX_CONFIG_DEPTH} levels deep")
    return config


def _depth(value: Any) -> int:
    """Nesting depth of parsed JSON, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            v = list(v.values())
        if isinstance(v, list):
            deepest = max(deepest, d)
            stack.extend((item, d + 1) for item in v)
    return deepest


#: Integer hyperparameters families read, by meaning: (the config.json spellings, smallest, largest).
#: Every spelling present is checked. The bounds lie far outside any real model; they keep a hostile
#: config.json from making hfstream build a billion-layer tensor map or divide by zero.
INT_HPARAMS: dict[str, tuple[tuple[str, ...], int, int]] = {
    "block count": (("num_hidden_layers", "n_layers", "n_layer", "num_layers"), 1, 4096),
    "embedding length": (("hidden_size", "n_embd", "dim"), 1, 1 << 20),
    "head count": (("num_attention_heads", "n_head", "n_heads"), 1, 1 << 12),
    "head count kv": (("num_key_value_heads", "n_kv_heads", "n_head_kv"), 1, 1 << 12),
    "head size": (("head_dim",), 1, 1 << 16),
    "feed forward length": (("intermediate_size", "n_inner", "moe_intermediate_size",
                             "shared_expert_intermediate_size"), 1, 1 << 22),
    "vocab size": (("vocab_size",), 1, 1 << 24),
    "context length": (("max_position_embeddings", "n_positions", "n_ctx"), 1, 1 << 32),
    "expert count": (("num_local_experts", "num_experts", "n_routed_experts"), 0, 1 << 16),
    "experts used": (("num_experts_per_tok", "num_experts_per_token"), 0, 1 << 16),
}
#: Float hyperparameters: must be finite numbers above zero when set.
FLOAT_HPARAMS: tuple[str, ...] = ("rms_norm_eps", "layer_norm_eps", "layer_norm_epsilon", "norm_eps", "rope_theta")
#: (a, b, unless): hyperparameter a must be a multiple of b, unless the config sets ``unless``
#: (meanings of INT_HPARAMS; each side is the first spelling present).
DIVISIBLE_HPARAMS: tuple[tuple[str, str, str | None], ...] = (
    ("head count", "head count kv", None),  # grouped-query attention: whole groups
    ("embedding length", "head count", "head size"),  # the head size is hidden / heads unless head_dim says
)


def check_hparams(hparams: dict, *, ints: dict = INT_HPARAMS, floats: tuple[str, ...] = FLOAT_HPARAMS,
                  divisible: tuple = DIVISIBLE_HPARAMS, name: str = "config.json") -> None:
    """Refuse hyperparameters that are present but insane (wrong type, out of bounds, indivisible).

    Families call this on the hparams they read (``text_config`` merged in) before using any of
    them; a family with keys of its own passes its own tables. Absent keys and ``null`` are left to
    the family (which knows its defaults). Raises InvalidConfigError naming the key and the value.
    """
    first: dict[str, tuple[str, int]] = {}
    for meaning, (keys, low, high) in ints.items():
        for key in keys:
            value = hparams.get(key)
            if value is None:
                continue
            if type(value) is not int or not low <= value <= high:
                shown = value if type(value) is int and abs(value) < 10**30 else _short_repr(value)
                raise errors.InvalidConfigError(
                    f"{name}: {key} is {shown}; expected an integer from {low} to {high}")
            first.setdefault(meaning, (key, value))
    for key in floats:
        value = hparams.get(key)
        if value is None:
            continue
        if type(value) not in (int, float) or not 0 < value < float("inf"):
            raise errors.InvalidConfigError(f"{name}: {key} is {_short_repr(value)}; expected a positive number")
    for a, b, unless in divisible:
        if a in first and b in first and (unless is None or unless not in first) and first[a][1] % first[b][1]:
            (ka, va), (kb, vb) = first[a], first[b]
            raise errors.InvalidConfigError(f"{name}: {ka} {va} is not a multiple of {kb} {vb}")


def _short_repr(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
