"""Model families, one module each, registered by the HF ``architectures[0]`` they convert.

Every module of this package is a family (or a few close ones) and is imported when the package
is: adding a family is adding its module (plus its fixture and goldens), nothing else. A module
registers its classes with ``@register``; ``base.py`` holds what they share.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from .. import errors
from .base import ProjectorFamily, TextFamily

_REGISTRY: dict[str, type[TextFamily]] = {}
#: vision projectors (``--mmproj``), by the same HF architecture names
_PROJECTORS: dict[str, type[ProjectorFamily]] = {}
#: architectures refused on purpose, with why (``refuse``)
_REFUSED: dict[str, str] = {}
_SHARED_MODULES = frozenset({"base"})


def register(family: type[TextFamily]) -> type[TextFamily]:
    """Class decorator: make ``family`` convert each of its ``hf_architectures``."""
    if not family.hf_architectures:
        raise TypeError(f"{family.__name__} names no hf_architectures")
    for name in family.hf_architectures:
        if name in _REGISTRY and _REGISTRY[name] is not family:
            raise TypeError(f"{name} is registered by both {_REGISTRY[name].__name__} and {family.__name__}")
        _REGISTRY[name] = family
    return family


def register_projector(family: type[ProjectorFamily]) -> type[ProjectorFamily]:
    """Class decorator: make ``family`` the vision projector (``--mmproj``) of its ``hf_architectures``."""
    if not family.hf_architectures:
        raise TypeError(f"{family.__name__} names no hf_architectures")
    for name in family.hf_architectures:
        if name in _PROJECTORS and _PROJECTORS[name] is not family:
            raise TypeError(f"{name}'s projector is both {_PROJECTORS[name].__name__} and {family.__name__}")
        _PROJECTORS[name] = family
    return family


def supported_projectors() -> list[str]:
    """Every HF architecture whose vision projector hfstream converts, sorted."""
    return sorted(_PROJECTORS)


@cache
def reference_projectors() -> frozenset[str]:
    """The architecture names llama.cpp's reference converter registers projectors (``--mmproj``) for."""
    path = Path(__file__).resolve().parents[1] / "data" / "reference_architectures.json"
    return frozenset(json.loads(path.read_text(encoding="utf-8"))["mmproj"])


def projector_class(config: Mapping[str, Any]) -> type[ProjectorFamily]:
    """The vision projector family for this config.json, or UnsupportedArchitectureError."""
    archs = config.get("architectures")
    if not isinstance(archs, list) or not archs or not isinstance(archs[0], str):
        raise errors.InvalidConfigError("config.json: 'architectures' must be a non-empty list of names")
    cls = _PROJECTORS.get(archs[0])
    if cls is None:
        name = archs[0] if len(archs[0]) <= 80 else archs[0][:80] + "..."
        by_reference = ("; llama.cpp's convert_hf_to_gguf.py --mmproj converts it, hfstream does not yet"
                        if archs[0] in reference_projectors() else "")
        raise errors.UnsupportedArchitectureError(
            f"{name} has no vision projector hfstream converts{by_reference}; projectors: "
            f"{', '.join(supported_projectors())}")
    return cls

def refuse(hf_arch: str, why: str) -> None:
    """Refuse ``hf_arch`` with ``why`` instead of the generic line (e.g. the reference itself stops on
    it, so there is no output to match); it stays out of ``supported()``."""
    if hf_arch in _REGISTRY:
        raise TypeError(f"{hf_arch} is registered by {_REGISTRY[hf_arch].__name__} and refused")
    _REFUSED[hf_arch] = why


def supported() -> list[str]:
    """Every HF architecture name hfstream converts, sorted."""
    return sorted(_REGISTRY)


def families() -> list[type[TextFamily]]:
    """Every family class, once each, in registration order."""
    return list(dict.fromkeys(_REGISTRY.values()))


@cache
def reference_architectures() -> frozenset[str]:
    """The architecture names llama.cpp's reference converter registers for text models (data file
    written by ``tests/goldens/make_reference_architectures.py``)."""
    path = Path(__file__).resolve().parents[1] / "data" / "reference_architectures.json"
    return frozenset(json.loads(path.read_text(encoding="utf-8"))["text"])


def family_class(config: Mapping[str, Any]) -> type[TextFamily]:
    """The family for this config.json (parsed, not yet normalized), or UnsupportedArchitectureError."""
    archs = config.get("architectures")
    if not isinstance(archs, list) or not archs or not isinstance(archs[0], str):
        raise errors.InvalidConfigError("config.json: 'architectures' must be a non-empty list of names")
    cls = _REGISTRY.get(archs[0])
    if cls is None and archs[0] in _REFUSED:
        raise errors.UnsupportedArchitectureError(f"architecture {archs[0]} is not supported: {_REFUSED[archs[0]]}")
    if cls is None:
        name = archs[0] if len(archs[0]) <= 80 else archs[0][:80] + "..."
        by_reference = ("; llama.cpp's convert_hf_to_gguf.py converts it, hfstream does not yet"
                        if archs[0] in reference_architectures() else "")
        raise errors.UnsupportedArchitectureError(
            f"architecture {name} is not supported{by_reference}; hfstream supports: {', '.join(supported())}")
    return cls


def family_for(hparams: Mapping[str, Any]) -> TextFamily:
    """An instance of the family for this (normalized) config, or UnsupportedArchitectureError."""
    cls = family_class(hparams)
    return cls(hparams, hparams["architectures"][0])


def _import_families() -> None:
    for module in pkgutil.iter_modules(__path__):
        if module.name not in _SHARED_MODULES and not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


_import_families()
