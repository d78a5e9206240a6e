"""The whole GGUF file laid out before any tensor data moves.

Header, metadata and tensor infos are serialized by the ``gguf`` package's writer
(so their bytes are exactly what llama.cpp's converter writes); the data section
starts at the next alignment boundary and every tensor sits at a padded offset.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import gguf
from gguf import GGUFValueType
from gguf.gguf_writer import WriterState

from .plan import Plan


@dataclass(frozen=True)
class Layout:
    header: bytes
    #: absolute offset of the data section (header padded to the alignment)
    data_offset: int
    #: tensor name -> absolute offset of its data in the file
    offsets: dict[str, int]
    total_size: int


def layout(plan: Plan) -> Layout:
    w = plan.writer
    header = _serialize_header(w)
    align = w.data_alignment
    data_offset = gguf.GGUFWriter.ggml_pad(len(header), align)
    offsets: dict[str, int] = {}
    pos = data_offset
    for t in plan.tensors:
        offsets[t.name] = pos
        pos += gguf.GGUFWriter.ggml_pad(t.nbytes, align)
    return Layout(header=header, data_offset=data_offset, offsets=offsets, total_size=pos)


def _serialize_header(w: gguf.GGUFWriter) -> bytes:
    """Magic, version, counts, KV pairs and tensor infos, byte for byte as ``GGUFWriter`` writes them.

    The KV block is packed here rather than by the writer's generic per-value ``_pack_val``: a
    128k-token vocabulary with 280k merges took seconds that way. Values of a shape this fast path
    does not know (nested arrays) go through the writer's own packer.
    """
    if len(w.tensors) != 1 or len(w.kv_data) != 1:
        raise ValueError("split outputs are laid out per shard")
    if w.endianess != gguf.GGUFEndian.LITTLE:
        raise ValueError("only little-endian GGUF is written")
    tensors, kv = w.tensors[0], w.kv_data[0]
    parts = [struct.pack("<IIQQ", gguf.GGUF_MAGIC, gguf.GGUF_VERSION, len(tensors), len(kv))]
    for key, v in kv.items():
        parts.append(_pack_str(key))
        parts.append(struct.pack("<I", v.type))
        parts.append(_pack_value(w, v.value, v.type, v.sub_type))
    offset = 0
    for name, ti in tensors.items():
        dims = list(reversed([int(d) for d in ti.shape]))
        parts.append(_pack_str(name))
        parts.append(struct.pack(f"<I{len(dims)}QIQ", len(dims), *dims, int(ti.dtype), offset))
        offset += gguf.GGUFWriter.ggml_pad(ti.nbytes, w.data_alignment)
    return b"".join(parts)


_SCALAR = {
    GGUFValueType.UINT8: "B", GGUFValueType.INT8: "b", GGUFValueType.UINT16: "H", GGUFValueType.INT16: "h",
    GGUFValueType.UINT32: "I", GGUFValueType.INT32: "i", GGUFValueType.FLOAT32: "f",
    GGUFValueType.UINT64: "Q", GGUFValueType.INT64: "q", GGUFValueType.FLOAT64: "d", GGUFValueType.BOOL: "?",
}


def _pack_str(value: str | bytes) -> bytes:
    raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    return struct.pack("<Q", len(raw)) + raw


def _pack_value(w: gguf.GGUFWriter, value, vtype: GGUFValueType, sub_type: GGUFValueType | None) -> bytes:
    fmt = _SCALAR.get(vtype)
    if fmt is not None:
        return struct.pack("<" + fmt, value)
    if vtype == GGUFValueType.STRING:
        return _pack_str(value)
    if vtype == GGUFValueType.ARRAY and isinstance(value, (list, tuple)) and value:
        if sub_type is None:
            sub_type = GGUFValueType.get_type(value[0])
        head = struct.pack("<IQ", sub_type, len(value))
        fmt = _SCALAR.get(sub_type)
        if fmt is not None:
            return head + struct.pack(f"<{len(value)}{fmt}", *value)
        if sub_type == GGUFValueType.STRING and all(isinstance(x, (str, bytes, bytearray)) for x in value):
            encoded = [x.encode("utf-8") if isinstance(x, str) else bytes(x) for x in value]
            lengths = struct.pack(f"<{len(encoded)}Q", *map(len, encoded))
            return head + b"".join(lengths[8 * i:8 * i + 8] + e for i, e in enumerate(encoded))
    return w._pack_val(value, vtype, add_vtype=False, sub_type=sub_type)


def _serialize_header_with_writer(w: gguf.GGUFWriter) -> bytes:
    """The same bytes through gguf's own writer (slow on big vocabularies); the tests compare the two."""
    buf = io.BytesIO()
    saved = (w.fout, w.state)
    w.fout, w.state = [buf], WriterState.EMPTY
    try:
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
    finally:
        w.fout, w.state = saved
    return buf.getvalue()
