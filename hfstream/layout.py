"""The whole GGUF file laid out before any tensor data moves.

Header, metadata and tensor infos are serialized exactly as the ``gguf`` package's writer
(what llama.cpp's converter uses) writes them; the data section starts at the next
alignment boundary and every tensor sits at a padded offset. A split output is several
files in llama.cpp's gguf-split format: all metadata in the first, ``split.*`` keys in each.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import gguf
import numpy as np
from gguf import GGUFValueType
from gguf.gguf_writer import GGUFValue
from gguf.gguf_writer import WriterState

from .plan import Plan


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


def layout(plan: Plan) -> Layout:
    if plan.pending_vocab is not None:
        raise ValueError("a draft plan (vocabulary not built) has no layout")
    w = plan.writer
    align = w.data_alignment
    files = []
    offsets: dict[str, int] = {}
    file_of: dict[str, int] = {}
    sizes = {t.name: t.nbytes for t in plan.tensors}
    for i, shard in enumerate(w.tensors):
        header = _serialize_header(w, i)
        data_offset = gguf.GGUFWriter.ggml_pad(len(header), align)
        pos = data_offset
        for name in shard:
            offsets[name] = pos
            file_of[name] = i
            pos += gguf.GGUFWriter.ggml_pad(sizes[name], align)
        files.append(FileLayout(header=header, data_offset=data_offset, total_size=pos))
    return Layout(files=tuple(files), offsets=offsets, file_of=file_of)


def _shard_kv(w: gguf.GGUFWriter, index: int) -> dict:
    """The KV pairs of one file: all of them in the first, and the split keys in every shard (as gguf-split)."""
    if len(w.tensors) == 1:
        return w.kv_data[0]
    kv = dict(w.kv_data[0]) if index == 0 else {}
    kv[gguf.Keys.Split.LLM_KV_SPLIT_NO] = GGUFValue(index, GGUFValueType.UINT16)
    kv[gguf.Keys.Split.LLM_KV_SPLIT_COUNT] = GGUFValue(len(w.tensors), GGUFValueType.UINT16)
    kv[gguf.Keys.Split.LLM_KV_SPLIT_TENSORS_COUNT] = GGUFValue(sum(len(t) for t in w.tensors), GGUFValueType.INT32)
    return kv


def _serialize_header(w: gguf.GGUFWriter, index: int = 0) -> bytes:
    """Magic, version, counts, KV pairs and tensor infos of file ``index``, byte for byte as ``GGUFWriter``.

    The KV block is packed here rather than by the writer's generic per-value ``_pack_val``: a
    128k-token vocabulary with 280k merges took seconds that way. Values of a shape this fast path
    does not know (nested arrays) go through the writer's own packer.
    """
    if w.endianess != gguf.GGUFEndian.LITTLE:
        raise ValueError("only little-endian GGUF is written")
    tensors, kv = w.tensors[index], _shard_kv(w, index)
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
        if sub_type == GGUFValueType.STRING:
            packed = _pack_str_array(value)
            if packed is not None:
                return head + packed
    return w._pack_val(value, vtype, add_vtype=False, sub_type=sub_type)


def _pack_str_array(value: list | tuple) -> bytes | None:
    """Strings (or bytes) each as a u64 byte length and its UTF-8 bytes; None for other items.

    In numpy rather than per item: a 128k-token vocabulary and its 280k merges are 400k strings.
    By chunks, as the per-character temporaries of 280k merges at once come to ~55 MB.
    """
    kinds = set(map(type, value))
    if not (kinds <= {bytes} or kinds <= {str}):
        return None
    return b"".join(_pack_strings(value[i:i + _PACK_CHUNK]) for i in range(0, len(value), _PACK_CHUNK))


_PACK_CHUNK = 16384


def _pack_strings(value: list | tuple) -> bytes:
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


def _serialize_header_with_writer(w: gguf.GGUFWriter) -> list[bytes]:
    """Every file's header through gguf's own writer (slow on big vocabularies); the tests compare the two."""
    import copy

    w = copy.copy(w)
    w.kv_data = [dict(w.kv_data[0])]
    bufs = [io.BytesIO() for _ in w.tensors]
    w.fout, w.state = bufs, WriterState.EMPTY
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    return [b.getvalue() for b in bufs]
