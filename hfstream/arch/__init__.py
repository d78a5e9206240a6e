"""Model families, one module each, registered by the HF ``architectures[0]`` they convert."""

from __future__ import annotations

from typing import Any, Mapping

from .. import errors

_REGISTRY: dict[str, type] = {}


def register(family: type) -> type:
    """Class decorator: make ``family`` convert each of its ``hf_architectures``."""
    for name in family.hf_architectures:
        _REGISTRY[name] = family
    return family


def supported() -> list[str]:
    return sorted(_REGISTRY)


def family_for(hparams: Mapping[str, Any]):
    """An instance of the family for this config.json, or UnsupportedArchitectureError."""
    archs = hparams.get("architectures")
    if not isinstance(archs, list) or not archs or not isinstance(archs[0], str):
        raise errors.InvalidConfigError("config.json: 'architectures' must be a non-empty list of names")
    cls = _REGISTRY.get(archs[0])
    if cls is None:
        raise errors.UnsupportedArchitectureError(
            f"architecture {archs[0]} is not supported; supported: {', '.join(supported())}")
    return cls(hparams, archs[0])


# Importing a family module registers it.
from . import llama  # noqa: E402,F401
from . import qwen  # noqa: E402,F401
from . import gemma  # noqa: E402,F401
from . import phi3  # noqa: E402,F401
from . import gpt2  # noqa: E402,F401
from . import deepseek  # noqa: E402,F401
