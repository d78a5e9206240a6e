"""A GGUF file's key/value metadata, owned by the plan, and the writer-like object families add keys through.

``Metadata`` holds the keys in file order with their GGUF value types, as gguf's ``GGUFWriter``
keeps them: a key added again keeps its first place and takes the new value. The plan builds it,
merges the vocabulary's keys into it and moves llama-quantize's keys to its end; ``layout``
serializes it. Nothing edits a writer's internals after the fact.

Families and the vocabulary add keys as the reference does, through ``GGUFWriter``'s ``add_*``
methods (``add_block_count``, ``add_token_list``, ... some two hundred of them, each knowing its
key and value type). ``KeyWriter`` gives them exactly those methods over a ``Metadata``: it is a
``GGUFWriter`` whose one storing method, ``add_key_value`` (every ``add_*`` ends in it), adds to
the metadata. So a family keeps calling ``w.add_*`` and the keys land in the plan as they are
added, in order, without a scratch writer copied out afterwards; code written against
``GGUFWriter`` (the vocabulary's, the tests') runs unchanged, ``w.kv_data[0]`` included for
reading what is already there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import gguf
from gguf import GGUFValueType

from .graph import same_value


@dataclass(frozen=True)
class Entry:
    """One key's value and GGUF value type (``sub_type``: an array's item type, when given)."""

    value: Any
    type: GGUFValueType
    sub_type: GGUFValueType | None = None


class Metadata(Mapping[str, Entry]):
    """GGUF keys in file order. Read as a mapping of ``Entry``; written by ``add``, ``add_last``, ``remove`` and ``merge`` only."""

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}

    def add(self, key: str, value: Any, vtype: GGUFValueType, sub_type: GGUFValueType | None = None) -> None:
        """Set ``key``; a key already there keeps its place and takes the new value (as GGUFWriter)."""
        self._entries[key] = Entry(value, vtype, sub_type)

    def add_last(self, key: str, value: Any, vtype: GGUFValueType) -> None:
        """Set ``key`` after every other key, wherever it was (llama-quantize's rewritten keys)."""
        self.remove(key)
        self.add(key, value, vtype)

    def remove(self, key: str) -> None:
        """Drop ``key`` if it is there."""
        self._entries.pop(key, None)

    def merge(self, other: Mapping[str, Entry]) -> None:
        """Add every entry of ``other`` in its order, as if its adds were made here."""
        for key, entry in other.items():
            self._entries[key] = entry

    def values_by_key(self) -> dict[str, Any]:
        """key -> plain value, for rules that read hyperparameters from the keys."""
        return {k: e.value for k, e in self._entries.items()}

    def __getitem__(self, key: str) -> Entry:
        return self._entries[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Metadata({len(self)} keys)"


def same_entries(a: Mapping[str, Entry], b: Mapping[str, Entry]) -> bool:
    """Whether two sets of keys are the same, in the same order, with values of the same types: they
    serialize to the same bytes."""
    return list(a) == list(b) and all(
        (x.type, x.sub_type) == (y.type, y.sub_type) and same_value(x.value, y.value)
        for x, y in zip(a.values(), b.values()))


class KeyWriter(gguf.GGUFWriter):
    """``GGUFWriter``'s ``add_*`` methods, adding to ``metadata``; for keys only (no tensors, no file)."""

    def __init__(self, metadata: Metadata, arch: str) -> None:
        # Not GGUFWriter.__init__: that prepares files and tensor lists and adds general.architecture.
        # The key methods read only ``arch`` and ``endianess`` and store through add_key_value.
        self.arch = arch
        self.endianess = gguf.GGUFEndian.LITTLE
        self.metadata = metadata
        self.kv_data = [metadata]  # type: ignore[list-item]  # read-only: GGUFWriter's view of the keys so far

    def add_key_value(self, key: str, val: Any, vtype: GGUFValueType, sub_type: GGUFValueType | None = None) -> None:
        self.metadata.add(key, val, vtype, sub_type)
