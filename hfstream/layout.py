"""The whole GGUF file laid out before any tensor data moves.

Header, metadata and tensor infos are serialized from the plan exactly as the ``gguf`` package's
writer (what llama.cpp's converter uses) writes them; the data section starts at the next
alignment boundary and every tensor sits at a padded offset. A split output is several
files in llama.cpp's gguf-split format, cut where gguf's writer cuts: all metadata in the first,
``split.*`` keys in each.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import gguf
import numpy as np
from gguf import GGUFValueType

from .kv import Entry, Metadata
from .plan import Plan, PlannedTensor

#: ``general.alignment``, which hfstream never sets: gguf's default
ALIGNMENT = gguf.GGUF_DEFAULT_ALIGNMENT


@dataclass(frozen=True)
class FileLayout:
    """One output file: its header bytes, where its data starts, its size."""

    header: bytes
    #: absolute offset of the data section (header padded to the alignment)
    data_offset: int
    total_size: int


@dataclass(frozen=True)
class Layout:
    """Every output file (one, or the shards of a split output) laid out."""

    files: tuple[FileLayout, ...]
    #: tensor name -> absolute offset of its data in its file
    offsets: dict[str, int]
    #: tensor name -> index of the file it is in
    file_of: dict[str, int]

    @property
    def header(self) -> bytes:
        return self.files[0].header

    @property
    def data_offset(self) -> int:
        return self.files[0].data_offset

    @property
    def total_size(self) -> int:
        """Bytes of all files together."""
        return sum(f.total_size for f in self.files)


#: packed arrays of a run's layouts, by the identity of the value (kept, so the identity stays its own)
PackedArrays = dict[int, tuple[Any, bytes]]


def layout(plan: Plan, packed: PackedArrays | None = None) -> Layout:
    """Every file's header and every tensor's offset. ``packed``: a cache of packed arrays shared by the
    layouts of one run's outputs, whose vocabulary is the very same lists (packed once, not per outtype)."""
    if plan.pending_vocab is not None:
        raise ValueError("a draft plan (vocabulary not built) has no layout")
    shards = shard_tensors(plan.tensors, plan.split_max_tensors, plan.split_max_size)
    files = []
    offsets: dict[str, int] = {}
    file_of: dict[str, int] = {}
    for i, shard in enumerate(shards):
        header = _serialize_header(_shard_kv(plan.metadata, shards, i), shard, packed)
        data_offset = _pad(len(header))
        pos = data_offset
        for t in shard:
            offsets[t.name] = pos
            file_of[t.name] = i
            pos += _pad(t.nbytes)
        files.append(FileLayout(header=header, data_offset=data_offset, total_size=pos))
    return Layout(files=tuple(files), offsets=offsets, file_of=file_of)


def shard_tensors(tensors: Sequence[PlannedTensor], max_tensors: int = 0, max_size: int = 0) -> list[list[PlannedTensor]]:
    """The tensors of each file of the output, cut as gguf's writer cuts a split output: a new file
    when the current one holds ``max_tensors`` already, or when the tensor would take its data past
    ``max_size`` bytes (unpadded); never an empty file. 0: no limit."""
    shards: list[list[PlannedTensor]] = [[]]
    size = 0
    for t in tensors:
        current = shards[-1]
        if current and ((max_tensors and len(current) >= max_tensors) or (max_size and size + t.nbytes > max_size)):
            shards.append([])
            size = 0
        shards[-1].append(t)
        size += t.nbytes
    return shards


def _pad(n: int) -> int:
    return -(-n // ALIGNMENT) * ALIGNMENT


def _shard_kv(metadata: Metadata, shards: Sequence[Sequence[PlannedTensor]], index: int) -> Mapping[str, Entry]:
    """The KV pairs of one file: all of them in the first, and the split keys in every shard (as gguf-split)."""
    if len(shards) == 1:
        return metadata
    kv: dict[str, Entry] = dict(metadata) if index == 0 else {}
    kv[gguf.Keys.Split.LLM_KV_SPLIT_NO] = Entry(index, GGUFValueType.UINT16)
    kv[gguf.Keys.Split.LLM_KV_SPLIT_COUNT] = Entry(len(shards), GGUFValueType.UINT16)
    kv[gguf.Keys.Split.LLM_KV_SPLIT_TENSORS_COUNT] = Entry(sum(len(s) for s in shards), GGUFValueType.INT32)
    return kv


def _serialize_header(kv: Mapping[str, Entry], tensors: Sequence[PlannedTensor],
                      packed: PackedArrays | None = None) -> bytes:
    """Magic, version, counts, KV pairs and tensor infos of one file, byte for byte as ``GGUFWriter``.

    The KV block is packed here rather than value by value as the writer does: a 128k-token
    vocabulary with 280k merges took seconds that way.
    """
    parts = [struct.pack("<IIQQ", gguf.GGUF_MAGIC, gguf.GGUF_VERSION, len(tensors), len(kv))]
    for key, v in kv.items():
        parts.append(_pack_str(key))
        parts.append(struct.pack("<I", v.type))
        if packed is not None and v.type == GGUFValueType.ARRAY and len(v.value) >= _SHARED_ARRAY:
            held = packed.get(id(v.value))
            if held is None or held[0] is not v.value:
                held = packed[id(v.value)] = (v.value, _pack_value(v.value, v.type, v.sub_type))
            parts.append(held[1])
        else:
            parts.append(_pack_value(v.value, v.type, v.sub_type))
    offset = 0
    for t in tensors:
        dims = list(reversed([int(d) for d in t.shape]))
        parts.append(_pack_str(t.name))
        parts.append(struct.pack(f"<I{len(dims)}QIQ", len(dims), *dims, int(t.qtype), offset))
        offset += _pad(t.nbytes)
    return b"".join(parts)


#: arrays at least this long are worth sharing between the layouts of one run (tokens, scores, merges)
_SHARED_ARRAY = 1024

_SCALAR = {
    GGUFValueType.UINT8: "B", GGUFValueType.INT8: "b", GGUFValueType.UINT16: "H", GGUFValueType.INT16: "h",
    GGUFValueType.UINT32: "I", GGUFValueType.INT32: "i", GGUFValueType.FLOAT32: "f",
    GGUFValueType.UINT64: "Q", GGUFValueType.INT64: "q", GGUFValueType.FLOAT64: "d", GGUFValueType.BOOL: "?",
}


def _pack_str(value: str | bytes) -> bytes:
    raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    return struct.pack("<Q", len(raw)) + raw


def _pack_value(value: Any, vtype: GGUFValueType, sub_type: GGUFValueType | None = None) -> bytes:
    """One value as gguf's writer packs it (without its type field)."""
    fmt = _SCALAR.get(vtype)
    if fmt is not None:
        return struct.pack("<" + fmt, value)
    if vtype == GGUFValueType.STRING:
        return _pack_str(value)
    if vtype != GGUFValueType.ARRAY:
        raise ValueError(f"a GGUF value of type {vtype!r} cannot be written")
    if not isinstance(value, Sequence) or len(value) == 0:
        raise ValueError("a GGUF array must be a non-empty sequence")
    if sub_type is None:
        if isinstance(value, bytes):
            sub_type = GGUFValueType.UINT8
        else:
            one_of_each_class = dict(zip(map(type, value), value)).values()  # in C: 400k-item arrays are common
            item_types = {GGUFValueType.get_type(v) for v in one_of_each_class}
            if len(item_types) != 1:
                raise ValueError("all items of a GGUF array must have one type")
            (sub_type,) = item_types
    head = struct.pack("<IQ", sub_type, len(value))
    fmt = _SCALAR.get(sub_type)
    if fmt is not None:
        return head + struct.pack(f"<{len(value)}{fmt}", *value)
    if sub_type == GGUFValueType.STRING:
        packed = _pack_str_array(value)
        if packed is not None:
            return head + packed
    # mixed str and bytes, nested arrays: item by item, each typed by itself
    return head + b"".join(_pack_value(v, sub_type) for v in value)


def _pack_str_array(value: Sequence[Any]) -> bytes | None:
    """Strings (or bytes) each as a u64 byte length and its UTF-8 bytes; None for other items.

    In numpy rather than per item: a 128k-token vocabulary and its 280k merges are 400k strings.
    By chunks, as the per-character temporaries of 280k merges at once come to ~55 MB.
    """
    kinds = set(map(type, value))
    if not (kinds <= {bytes} or kinds <= {str}):
        return None
    return b"".join(_pack_strings(value[i:i + _PACK_CHUNK]) for i in range(0, len(value), _PACK_CHUNK))


_PACK_CHUNK = 16384


def _pack_strings(value: Sequence[Any]) -> bytes:
    if isinstance(value[0], bytes):
        blob, lengths = b"".join(value), np.fromiter(map(len, value), dtype=np.int64, count=len(value))
    else:
        text = "".join(value)
        blob = text.encode("utf-8")
        chars = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
        # UTF-8 width of every character, summed per string
        width = 1 + (chars >= 0x80).astype(np.int64) + (chars >= 0x800) + (chars >= 0x10000)
        ends = np.cumsum(np.fromiter(map(len, value), dtype=np.int64, count=len(value)))
        upto = np.concatenate(([0], np.cumsum(width)))
        lengths = np.diff(upto[np.concatenate(([0], ends))])
    n = len(value)
    out = np.empty(8 * n + len(blob), dtype=np.uint8)
    # each string's length field starts after the fields and strings before it
    starts = 8 * np.arange(n, dtype=np.int64) + np.concatenate(([0], np.cumsum(lengths)[:-1]))
    is_text = np.ones(out.size, dtype=bool)
    fields = (starts[:, None] + np.arange(8)).ravel()
    is_text[fields] = False
    out[fields] = lengths.astype("<u8").view(np.uint8)
    out[is_text] = np.frombuffer(blob, dtype=np.uint8)
    return out.tobytes()
