"""Safetensors headers: read by Range, parse, and validate every field.

Layout: 8-byte little-endian header length N, N bytes of JSON
(``{"__metadata__": {...}, name: {"dtype", "shape", "data_offsets": [a, b]}}``),
then the data; offsets are relative to the end of the header. Nothing in a header
is trusted: every span is checked against its shape, the file size and the others.

A header may hold hundreds of thousands of entries, so a tensor is kept small (slots, the dtype
shared, ~200 bytes with its name) and a caller that knows which names a file must hold (the shard
index) checks them right after the JSON is parsed, before any entry is built.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from . import errors, jsonfile
from .source import ByteSource
from .settings import FIRST_HEADER_READ, MAX_HEADER_BYTES

#: the most dimensions a tensor may have (GGUF/ggml: 4; safetensors itself sets no limit, 8 is generous)
MAX_DIMS = 8
#: the largest dimension or offset accepted: GGUF stores dimensions as int64
MAX_DIM = 2**63 - 1

#: safetensors dtype -> bytes per element
DTYPE_SIZES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
    "U16": 2, "U32": 4, "U64": 8,
    "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
}


#: the dtype strings, one object each, shared by every tensor of that dtype
_DTYPE_NAMES = {name: name for name in DTYPE_SIZES}


@dataclass(frozen=True, slots=True)
class SourceTensor:
    """One tensor of a safetensors file: where its bytes are, and what they mean."""

    file: str
    name: str
    dtype: str
    shape: tuple[int, ...]
    #: absolute byte offsets in the file, end exclusive
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start


#: called with a header's file and tensor names once its JSON is parsed; raises to refuse them
NameCheck = Callable[[str, Iterable[str]], None]


def parse_header(file: str, blob: bytes, file_size: int | None, check_names: NameCheck | None = None) -> list[SourceTensor]:
    """Parse and validate a complete header (``blob`` = the 8 length bytes + the JSON).

    Returns the tensors in the order of the JSON object. Raises InvalidHeaderError
    with a message naming the file and the problem, or what ``check_names`` raises.
    """
    if len(blob) < 8:
        raise errors.InvalidHeaderError(f"{file}: too short to be a safetensors file")
    (n,) = struct.unpack("<Q", blob[:8])
    _check_header_length(file, n, file_size)
    if len(blob) < 8 + n:
        raise errors.InvalidHeaderError(f"{file}: header truncated ({len(blob) - 8} of {n} bytes)")
    header = jsonfile.load(blob[8:8 + n], f"{file}: header", jsonfile.HEADER, expect=dict)
    if check_names is not None:
        check_names(file, (name for name in header if name != "__metadata__"))

    data_start = 8 + n
    data_size = None if file_size is None else file_size - data_start
    tensors: list[SourceTensor] = []
    for name, entry in header.items():
        if name == "__metadata__":
            if entry is not None and not isinstance(entry, dict):
                raise errors.InvalidHeaderError(f"{file}: __metadata__ is not an object")
            continue
        tensors.append(_parse_entry(file, name, entry, data_start, data_size))

    # spans must not overlap (zero-length tensors may sit anywhere)
    spans = sorted((t.start, t.end, t.name) for t in tensors if t.end > t.start)
    for (s0, e0, n0), (s1, e1, n1) in zip(spans, spans[1:]):
        if s1 < e0:
            raise errors.InvalidHeaderError(f"{file}: tensors {_short(n0)} and {_short(n1)} overlap")
    return tensors


def _check_header_length(file: str, n: int, file_size: int | None) -> None:
    if n < 2:
        raise errors.InvalidHeaderError(f"{file}: header length {n} is too small")
    if n > MAX_HEADER_BYTES:
        raise errors.InvalidHeaderError(f"{file}: header length {n} exceeds the {MAX_HEADER_BYTES} byte limit")
    if file_size is not None and 8 + n > file_size:
        raise errors.InvalidHeaderError(f"{file}: header length {n} runs past the end of the file ({file_size} bytes)")


def _parse_entry(file: str, name: str, entry: object, data_start: int, data_size: int | None) -> SourceTensor:
    where = f"{file}: tensor {_short(name)}"
    if not name.isprintable():  # control characters, or lone surrogates from a "\udc80" escape
        raise errors.InvalidHeaderError(f"{where}: the name is not printable Unicode")
    if not isinstance(entry, dict):
        raise errors.InvalidHeaderError(f"{where}: entry is not an object")
    dtype = entry.get("dtype")
    if not isinstance(dtype, str) or dtype not in DTYPE_SIZES:
        raise errors.InvalidHeaderError(f"{where}: unknown dtype {_short(dtype)}")
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise errors.InvalidHeaderError(f"{where}: shape must be a list of non-negative integers")
    if len(shape) > MAX_DIMS:
        raise errors.InvalidHeaderError(f"{where}: shape has {len(shape)} dimensions, more than {MAX_DIMS}")
    if any(d > MAX_DIM for d in shape):
        raise errors.InvalidHeaderError(f"{where}: shape {_short(shape)} has a dimension over {MAX_DIM}")
    offsets = entry.get("data_offsets")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(type(o) is int and o >= 0 for o in offsets) or offsets[0] > offsets[1]):
        raise errors.InvalidHeaderError(f"{where}: data_offsets must be two ascending non-negative integers")
    begin, end = offsets
    if end > MAX_DIM:
        raise errors.InvalidHeaderError(f"{where}: data_offsets {_short(end)} is too large")
    expected = math.prod(shape) * DTYPE_SIZES[dtype]
    if end - begin != expected:
        raise errors.InvalidHeaderError(
            f"{where}: data span is {end - begin} bytes but shape {shape} x {dtype} needs {expected}")
    if data_size is not None and end > data_size:
        raise errors.InvalidHeaderError(f"{where}: data ends at {end}, past the end of the file data ({data_size})")
    return SourceTensor(file=file, name=name, dtype=_DTYPE_NAMES[dtype], shape=tuple(shape),
                        start=data_start + begin, end=data_start + end)


def _short(value: object, limit: int = 60) -> str:
    """repr of a value from the file, cut so a hostile one cannot flood the error line."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


async def read_header(source: ByteSource, file: str, file_size: int | None,
                      check_names: NameCheck | None = None) -> tuple[list[SourceTensor], bytes]:
    """Read one header with a ~100 KB first range, then the exact remainder if needed.

    Returns the tensors and every byte read from offset 0: on a small file the first
    range also holds tensor data, which the caller can use instead of fetching it again.
    """
    first = FIRST_HEADER_READ if file_size is None else min(FIRST_HEADER_READ, file_size)
    if file_size is not None and file_size < 8:
        raise errors.InvalidHeaderError(f"{file}: {file_size} bytes is too short to be a safetensors file")
    blob = bytes(await source.read(file, 0, first))
    if len(blob) < 8:
        raise errors.InvalidHeaderError(f"{file}: too short to be a safetensors file")
    (n,) = struct.unpack("<Q", blob[:8])
    _check_header_length(file, n, file_size)
    if 8 + n > len(blob):
        blob += await source.read(file, len(blob), 8 + n - len(blob))
    return parse_header(file, blob, file_size, check_names), blob
