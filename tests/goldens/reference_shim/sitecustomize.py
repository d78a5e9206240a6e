"""Golden time only: on the reference converter's path (``run_reference`` puts this directory first on
PYTHONPATH), for one known gap between the reference and the transformers installed here.

DeepSeek-V3.2: the reference stops unless ``AutoTokenizer(...).add_bos_token`` is true. transformers 5
loads a ByteLevel ``tokenizer.json`` as ``TokenizersBackend`` and drops ``add_bos_token`` from
tokenizer_config.json on the way (BOS is still added, by the tokenizer's post-processor), so the
attribute is False for every DeepSeek-V3.2 repo and the reference cannot convert one; transformers 4
kept the config's value. Here the attribute gets tokenizer_config.json's value back for a
``DeepseekV32ForCausalLM`` directory, nothing else: the tokenizer, its ids and every other
architecture are untouched.
"""

import json
import os

_ARCHITECTURES = ("DeepseekV32ForCausalLM",)


def _json(path):
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _patch():
    import transformers

    load = transformers.AutoTokenizer.from_pretrained.__func__

    def from_pretrained(cls, path, *args, **kwargs):
        tokenizer = load(cls, path, *args, **kwargs)
        directory = str(path)
        if (_json(os.path.join(directory, "config.json")).get("architectures") or [None])[0] in _ARCHITECTURES:
            value = _json(os.path.join(directory, "tokenizer_config.json")).get("add_bos_token")
            if value is not None:
                object.__setattr__(tokenizer, "_add_bos_token", value)
        return tokenizer

    transformers.AutoTokenizer.from_pretrained = classmethod(from_pretrained)


if os.environ.get("HFSTREAM_REFERENCE_SHIM") == "1":
    try:
        _patch()
    except ImportError:  # a run without transformers (the converter will say so itself)
        pass
