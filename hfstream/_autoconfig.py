"""The worker process behind ``hfconfig.normalize``: config.json read through transformers' AutoConfig.

Started by ``hfconfig`` as a script (never imported by hfstream itself), it imports transformers
once and then answers requests on stdin with answers on stdout, each one frame: a 4-byte
little-endian length and a pickle of plain values (the parent unpickles with no classes allowed).

    request: (config.json text, name_or_path)
    answer:  ("dict", AutoConfig(...).to_dict())     transformers read it
             ("fallback", reason)                   AutoConfig raised: the reference reads config.json as is
             ("unknown_type", model_type)           AutoConfig raised as it does not know the model type
             ("other_file", file name)              config.json's ``configuration_files`` points elsewhere
             ("error", message)                     something else went wrong here

Why a process of its own: transformers imports torch whenever torch is installed (about 8 s here,
against 2 s without), and config classes never need it. Marking torch absent in ``sys.modules``
makes transformers take it for not installed; that is only safe in a process that runs nothing else.

One thing torch does change: the reference always runs with torch, and with torch a config's
``dtype``/``torch_dtype`` string becomes ``getattr(torch, name)`` (``"half"`` -> ``torch.float16``,
written back as ``"float16"``; a name torch lacks, e.g. ``"auto"`` or ``"bf16"``, makes AutoConfig
raise, so the reference reads config.json as is). ``_TorchDtypes`` stands in for torch at exactly
that step, with torch's dtype names (``TORCH_DTYPES``, checked against torch by the tests).
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import sys
import types
from typing import Any, BinaryIO


#: every dtype attribute of torch 2.13 -> the name ``str(dtype)`` gives after "torch."
TORCH_DTYPES = {
    "bfloat16": "bfloat16", "bit": "uint1", "bits16": "bits16", "bits1x8": "bits1x8", "bits2x4": "bits2x4",
    "bits4x2": "bits4x2", "bits8": "bits8", "bool": "bool", "cdouble": "complex128", "cfloat": "complex64",
    "chalf": "complex32", "complex128": "complex128", "complex32": "complex32", "complex64": "complex64",
    "double": "float64", "float": "float32", "float16": "float16", "float32": "float32",
    "float4_e2m1fn_x2": "float4_e2m1fn_x2", "float64": "float64", "float8_e4m3fn": "float8_e4m3fn",
    "float8_e4m3fnuz": "float8_e4m3fnuz", "float8_e5m2": "float8_e5m2", "float8_e5m2fnuz": "float8_e5m2fnuz",
    "float8_e8m0fnu": "float8_e8m0fnu", "half": "float16", "int": "int32", "int1": "int1", "int16": "int16",
    "int2": "int2", "int3": "int3", "int32": "int32", "int4": "int4", "int5": "int5", "int6": "int6",
    "int64": "int64", "int7": "int7", "int8": "int8", "long": "int64", "qint32": "qint32", "qint8": "qint8",
    "quint2x4": "quint2x4", "quint4x2": "quint4x2", "quint8": "quint8", "short": "int16", "uint1": "uint1",
    "uint16": "uint16", "uint2": "uint2", "uint3": "uint3", "uint32": "uint32", "uint4": "uint4", "uint5": "uint5",
    "uint6": "uint6", "uint64": "uint64", "uint7": "uint7", "uint8": "uint8",
}


class _Dtype:
    """What ``getattr(torch, name)`` gives for a dtype name, as far as a config sees it: its ``str``."""

    def __init__(self, canonical: str):
        self._text = f"torch.{canonical}"

    def __str__(self) -> str:
        return self._text

    __repr__ = __str__


class _TorchDtypes(types.ModuleType):
    """The torch that ``PreTrainedConfig.__post_init__`` imports to turn a dtype string into a dtype.

    Any other name raises AttributeError, as a name torch lacks would; names torch has that are not
    dtypes (``"Tensor"``, ``"nn"``) raise too, where the reference would write nonsense: such a config
    is read as config.json is, a difference only a hostile config can show.
    """

    def __getattr__(self, name: str) -> _Dtype:
        if name in TORCH_DTYPES:
            return _Dtype(TORCH_DTYPES[name])
        raise AttributeError(f"module 'torch' has no attribute {name!r}")


def _stand_in_for_torch_dtypes() -> None:
    import transformers.configuration_utils as configuration_utils

    sys.modules["torch"] = _TorchDtypes("torch")
    configuration_utils.is_torch_available = lambda: True  # type: ignore[attr-defined]


def read_frame(stream: BinaryIO) -> bytes | None:
    """One length-prefixed frame, or None at the end of the stream."""
    head = stream.read(4)
    if len(head) < 4:
        return None
    (size,) = struct.unpack("<I", head)
    body = stream.read(size)
    return body if len(body) == size else None


def write_frame(stream: BinaryIO, payload: bytes) -> None:
    stream.write(struct.pack("<I", len(payload)) + payload)
    stream.flush()


def auto_config_to_dict(text: str, name_or_path: str) -> tuple[str, Any]:
    """What ``AutoConfig.from_pretrained(dir, trust_remote_code=False).to_dict()`` gives for a directory
    ``name_or_path`` holding this config.json, as an answer tuple (see the module docstring).

    The steps of transformers' ``AutoConfig.from_pretrained`` and ``PreTrainedConfig.get_config_dict``
    for a local directory, on text already in memory instead of a file, with transformers' own pieces.
    """
    from transformers.configuration_utils import PreTrainedConfig, get_configuration_file
    from transformers.dynamic_module_utils import resolve_trust_remote_code
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    from transformers.utils.generic import is_timm_config_dict

    try:
        config_dict = PreTrainedConfig._decode_special_floats(json.loads(text))
        if "model_type" not in config_dict and is_timm_config_dict(config_dict):
            config_dict["model_type"] = "timm_wrapper"
        if "configuration_files" in config_dict:
            chosen = get_configuration_file(config_dict["configuration_files"])
            if chosen != "config.json":
                return "other_file", chosen
        has_remote_code = "auto_map" in config_dict and "AutoConfig" in config_dict["auto_map"]
        has_local_code = "model_type" in config_dict and config_dict["model_type"] in CONFIG_MAPPING
        if has_remote_code:
            class_ref = config_dict["auto_map"]["AutoConfig"]
            upstream_repo = class_ref.split("--")[0] if "--" in class_ref else None
            # positional, as AutoConfig passes them; with False this only raises or returns False
            resolve_trust_remote_code(False, name_or_path, has_local_code, has_remote_code, upstream_repo)
        if "model_type" not in config_dict:
            return "fallback", "config.json has no model_type"
        if config_dict["model_type"] == "mistral" and "layer_types" in config_dict:
            config_dict["model_type"] = "ministral"
        if config_dict["model_type"] not in CONFIG_MAPPING:
            return "unknown_type", config_dict["model_type"]
        config_class = CONFIG_MAPPING[config_dict["model_type"]]
        config = config_class.from_dict(config_dict, name_or_path=name_or_path)
        return "dict", config.to_dict()
    except Exception as e:  # noqa: BLE001 - the reference catches every exception of AutoConfig
        return "fallback", f"{type(e).__name__}: {e}"[:500]


def _serve(stdin: BinaryIO, stdout: BinaryIO) -> None:
    while (frame := read_frame(stdin)) is not None:
        text, name_or_path = pickle.loads(frame)
        try:
            answer = auto_config_to_dict(text, name_or_path)
            payload = pickle.dumps(answer, protocol=4)
        except Exception as e:  # noqa: BLE001 - reported to the parent, which names it in one line
            payload = pickle.dumps(("error", f"{type(e).__name__}: {e}"[:500]), protocol=4)
        write_frame(stdout, payload)


def main() -> None:
    sys.modules["torch"] = None  # type: ignore[assignment]  # transformers: "PyTorch was not found"
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ["HF_HUB_OFFLINE"] = "1"
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing transformers prints can corrupt the frames
    try:
        import transformers.configuration_utils  # noqa: F401 - the slow part, before the first request
        import transformers.models.auto.configuration_auto  # noqa: F401
        _stand_in_for_torch_dtypes()
    except Exception as e:  # noqa: BLE001
        write_frame(stdout, pickle.dumps(("error", f"cannot import transformers: {type(e).__name__}: {e}"[:500])))
        return
    write_frame(stdout, pickle.dumps(("ready", transformers_version())))
    _serve(stdin, stdout)


def transformers_version() -> str:
    import transformers

    return str(transformers.__version__)


if __name__ == "__main__":
    main()
