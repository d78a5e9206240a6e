"""The whole GGUF file laid out before any tensor data moves.

Header, metadata and tensor infos are serialized by the ``gguf`` package's writer
(so their bytes are exactly what llama.cpp's converter writes); the data section
starts at the next alignment boundary and every tensor sits at a padded offset.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import gguf
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
    """Magic, version, counts, KV pairs and tensor infos, as ``GGUFWriter`` writes them."""
    if len(w.tensors) != 1:
        raise ValueError("split outputs are laid out per shard")
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
