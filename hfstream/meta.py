"""``general.*`` metadata from the model card, config.json and generation_config.json (all in memory).

The heuristics themselves (name, basename, finetune, size label, base models, tags,
languages) are the ``gguf`` package's ``Metadata.apply_metadata_heuristic``, given the
repo name as the directory name a local clone would have.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import gguf
import yaml  # type: ignore[import-untyped]  # types-PyYAML is not a dependency

from . import errors, jsonfile


def model_card(readme: bytes | None) -> dict[str, Any]:
    """The YAML front matter of README.md, or {} (no card, no front matter, or not a mapping)."""
    if not readme:
        return {}
    lines = readme.decode("utf-8", errors="replace").splitlines()
    if not lines or lines[0] != "---":
        return {}
    body: list[str] = []
    for line in lines[1:]:
        if line == "---":
            break
        body.append(line)
    text = "\n".join(body) + "\n"
    # YAML 1.1 reads a bare `no` (Norwegian) as false; tabs are not YAML indentation.
    text = text.replace("- no\n", '- "no"\n').replace("\t", "  ")
    try:
        data = yaml.safe_load(text)
    except (yaml.YAMLError, ValueError, RecursionError):  # bad syntax, a bad date, nesting too deep
        return {}
    if not isinstance(data, dict):
        return {}
    _check_expansion(data)
    return data


#: values a model card may hold once YAML aliases are expanded; real cards hold a few thousand at most
MAX_CARD_VALUES = 100_000


def _check_expansion(card: dict) -> None:
    """Refuse a card whose aliases expand it past MAX_CARD_VALUES (a "billion laughs") or into a cycle.

    yaml.safe_load builds an alias bomb quickly (aliases share one object), but anything that walks
    the card afterwards (the metadata heuristics, the GGUF writer) would walk every expanded value.
    Counting stops at the limit, so this is quick whatever the card.
    """
    stack: list[object] = [card]
    count = 0
    while stack:
        value = stack.pop()
        count += 1
        if count > MAX_CARD_VALUES:
            raise errors.InvalidConfigError(
                f"README.md: the YAML front matter expands to over {MAX_CARD_VALUES} values "
                "through aliases (a billion-laughs card?)")
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend(value)


def _json(blob: bytes | None, name: str) -> dict[str, Any]:
    """The file as an object, or {} when it is absent or unusable: the reference reads these
    leniently ("not all models have valid generation_config.json"); config.json was checked before."""
    if not blob:
        return {}
    try:
        data = jsonfile.load(blob, name)
    except errors.HfstreamError:
        return {}
    return data if isinstance(data, dict) else {}


_SAMPLING_KEYS = (
    ("sampling_sequence", ("sequence",)),
    ("sampling_top_k", ("top_k",)),
    ("sampling_top_p", ("top_p",)),
    ("sampling_min_p", ("min_p",)),
    ("sampling_xtc_probability", ("xtc_probability",)),
    ("sampling_xtc_threshold", ("xtc_threshold",)),
    ("sampling_temp", ("temperature",)),
    ("sampling_penalty_last_n", ("penalty_last_n",)),
    ("sampling_penalty_repeat", ("penalty_repeat", "repetition_penalty")),
    ("sampling_mirostat", ("mirostat",)),
    ("sampling_mirostat_tau", ("mirostat_tau",)),
    ("sampling_mirostat_eta", ("mirostat_eta",)),
)


def build(repo_name: str, files: Mapping[str, bytes], total_params: int) -> gguf.Metadata:
    """The authorship and sampling metadata the reference derives for a local clone named ``repo_name``."""
    card = model_card(files.get("README.md"))
    hf_params = _json(files.get("config.json"), "config.json")
    md = gguf.Metadata.apply_metadata_heuristic(gguf.Metadata(), card, hf_params, Path(repo_name),
                                                total_params)
    gen = _json(files.get("generation_config.json"), "generation_config.json")
    for attr, keys in _SAMPLING_KEYS:
        for key in keys:
            if key in gen:
                setattr(md, attr, gen[key])
                break
    if md.name is None:
        md.name = repo_name
    return md
