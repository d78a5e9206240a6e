"""Property-based fuzz of the header parser: whatever the bytes, the only failure is InvalidHeaderError,
and a header that is accepted describes spans inside the file, apart, and of the size shape x dtype says.

Each property runs twice: ~300 examples in the default suite, 5,000 under ``-m slow``.
"""

from __future__ import annotations

import asyncio
import json
import math
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hfstream import errors
from hfstream.safetensors import DTYPE_SIZES, SourceTensor, parse_header, read_header
from hfstream.settings import FIRST_HEADER_READ, MAX_HEADER_BYTES

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DEEP = settings(max_examples=5_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def fuzz(*args, **kwargs):
    """Decorator: the property as a FAST test, plus ``{name}_deep`` with DEEP settings, marked slow."""
    def make(body):
        import inspect

        module = inspect.getmodule(body)
        deep = pytest.mark.slow(DEEP(given(*args, **kwargs)(body)))
        deep.__name__ = body.__name__ + "_deep"
        setattr(module, deep.__name__, deep)
        return FAST(given(*args, **kwargs)(body))
    return make


# --- what an accepted header must satisfy --------------------------------------------------------


def check_accepted(tensors: list[SourceTensor], blob: bytes, file_size: int | None) -> None:
    (n,) = struct.unpack("<Q", blob[:8])
    data_start = 8 + n
    names = [t.name for t in tensors]
    assert len(names) == len(set(names))
    for t in tensors:
        assert isinstance(t.name, str) and t.name.isprintable()
        assert t.dtype in DTYPE_SIZES
        assert all(type(d) is int and d >= 0 for d in t.shape)
        assert data_start <= t.start <= t.end
        if file_size is not None:
            assert t.end <= file_size
        assert t.end - t.start == math.prod(t.shape) * DTYPE_SIZES[t.dtype]
    spans = sorted((t.start, t.end) for t in tensors if t.end > t.start)
    for (_, e0), (s1, _) in zip(spans, spans[1:]):
        assert s1 >= e0


def parse_or_refuse(blob: bytes, file_size: int | None) -> list[SourceTensor] | None:
    """parse_header's answer; None when it refused with InvalidHeaderError (anything else fails the test)."""
    try:
        tensors = parse_header("f.safetensors", blob, file_size)
    except errors.InvalidHeaderError as e:
        assert "f.safetensors" in str(e) and "\n" not in str(e)
        return None
    check_accepted(tensors, blob, file_size)
    return tensors


# --- strategies ----------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12)

names = st.text(min_size=0, max_size=12)
shapes = st.lists(st.integers(0, 6), max_size=4)


@st.composite
def valid_files(draw):
    """(file bytes, expected (name, dtype, shape, start, end) per tensor) of a well-formed safetensors file:
    tensors laid out in any order, with gaps, the header padded with spaces, trailing bytes after the data."""
    entries = draw(st.lists(st.tuples(names, st.sampled_from(sorted(DTYPE_SIZES)), shapes), max_size=8,
                            unique_by=lambda e: e[0]))
    entries = [e for e in entries if e[0] != "__metadata__" and e[0].isprintable()]
    order = draw(st.permutations(range(len(entries))))
    offsets: dict[int, tuple[int, int]] = {}
    pos = 0
    for i in order:
        pos += draw(st.integers(0, 3))  # a gap
        size = math.prod(entries[i][2]) * DTYPE_SIZES[entries[i][1]]
        offsets[i] = (pos, pos + size)
        pos += size
    header: dict = {}
    if draw(st.booleans()):
        header["__metadata__"] = {"format": "pt"}
    for i, (name, dtype, shape) in enumerate(entries):
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": list(offsets[i])}
    raw = json.dumps(header).encode() + b" " * draw(st.integers(0, 7))
    data = draw(st.binary(min_size=pos, max_size=pos)) + draw(st.binary(max_size=4))
    blob = struct.pack("<Q", len(raw)) + raw + data
    start = 8 + len(raw)
    expected = [(name, dtype, tuple(shape), start + offsets[i][0], start + offsets[i][1])
                for i, (name, dtype, shape) in enumerate(entries)]
    return blob, expected


def _split(blob: bytes) -> tuple[bytes, bytes]:
    (n,) = struct.unpack("<Q", blob[:8])
    return blob[8:8 + n], blob[8 + n:]


def _join(raw: bytes, data: bytes) -> bytes:
    return struct.pack("<Q", len(raw)) + raw + data


@st.composite
def mutated_files(draw):
    """A valid file with one structural or byte-level change."""
    blob, _ = draw(valid_files())
    raw, data = _split(blob)
    header = json.loads(raw)
    tensor_names = [k for k in header if k != "__metadata__"]
    kind = draw(st.sampled_from([
        "field", "drop_field", "offsets", "shape", "duplicate", "metadata", "entry", "length",
        "flip_byte", "insert_bytes", "delete_bytes", "truncate", "data", "top_level",
    ]))
    if kind in ("field", "drop_field", "offsets", "shape", "duplicate", "entry") and not tensor_names:
        kind = "top_level"
    if kind == "field":
        name = draw(st.sampled_from(tensor_names))
        header[name][draw(st.sampled_from(["dtype", "shape", "data_offsets"]))] = draw(json_values)
    elif kind == "drop_field":
        name = draw(st.sampled_from(tensor_names))
        del header[name][draw(st.sampled_from(["dtype", "shape", "data_offsets"]))]
    elif kind == "offsets":
        name = draw(st.sampled_from(tensor_names))
        a, b = header[name]["data_offsets"]
        header[name]["data_offsets"] = [a + draw(st.integers(-8, 8)), b + draw(st.integers(-8, 8))]
    elif kind == "shape":
        name = draw(st.sampled_from(tensor_names))
        header[name]["shape"] = draw(st.lists(st.integers(-(2**65), 2**65), max_size=10))
    elif kind == "duplicate":
        name = draw(st.sampled_from(tensor_names))
        text = json.dumps(header)
        raw = (text[:-1] + f", {json.dumps(name)}: {json.dumps(header[name])}" + "}").encode()
        return _join(raw, data)
    elif kind == "metadata":
        header["__metadata__"] = draw(json_values)
    elif kind == "entry":
        header[draw(st.sampled_from(tensor_names))] = draw(json_values)
    elif kind == "top_level":
        raw = json.dumps(draw(json_values)).encode()
        return _join(raw, data)
    elif kind == "length":
        return struct.pack("<Q", draw(st.integers(0, 2**64 - 1))) + blob[8:]
    elif kind == "flip_byte" and raw:
        i = draw(st.integers(0, len(blob) - 1))
        return blob[:i] + bytes([blob[i] ^ draw(st.integers(1, 255))]) + blob[i + 1:]
    elif kind == "insert_bytes":
        i = draw(st.integers(0, len(raw)))
        raw2 = raw[:i] + draw(st.binary(min_size=1, max_size=6)) + raw[i:]
        # with the length fixed, or the old length now cutting the header short
        return _join(raw2, data) if draw(st.booleans()) else blob[:8] + raw2 + data
    elif kind == "delete_bytes" and raw:
        i = draw(st.integers(0, len(raw) - 1))
        j = draw(st.integers(i + 1, len(raw)))
        return _join(raw[:i] + raw[j:], data)
    elif kind == "truncate":
        return blob[:draw(st.integers(0, len(blob)))]
    elif kind == "data":
        return _join(raw, data[:draw(st.integers(0, len(data)))])
    return _join(json.dumps(header).encode(), data)


# --- the properties ------------------------------------------------------------------------------


@fuzz(st.binary(max_size=512), st.booleans())
def test_arbitrary_bytes_are_parsed_or_refused(blob, size_known):
    parse_or_refuse(blob, len(blob) if size_known else None)


@fuzz(st.binary(max_size=256), st.integers(0, 300), st.binary(max_size=64), st.booleans())
def test_arbitrary_header_text_with_a_plausible_length(text, length, data, size_known):
    blob = struct.pack("<Q", length) + text + data
    parse_or_refuse(blob, len(blob) if size_known else None)


@fuzz(json_values, st.binary(max_size=64))
def test_arbitrary_json_is_parsed_or_refused(value, data):
    blob = _join(json.dumps(value).encode(), data)
    parse_or_refuse(blob, len(blob))


@fuzz(valid_files(), st.booleans())
def test_valid_files_give_exactly_their_spans(file, size_known):
    blob, expected = file
    tensors = parse_header("f.safetensors", blob, len(blob) if size_known else None)
    check_accepted(tensors, blob, len(blob))
    assert sorted((t.name, t.dtype, t.shape, t.start, t.end) for t in tensors) == sorted(expected)


@fuzz(mutated_files(), st.booleans())
def test_mutated_headers_are_parsed_or_refused(blob, size_known):
    parse_or_refuse(blob, len(blob) if size_known else None)


# --- read_header over a byte source ----------------------------------------------------------------


class FakeSource:
    """A ByteSource over ``data``; ``served`` bytes of the file exist (a file shorter than it claims)."""

    def __init__(self, data: bytes, served: int | None = None):
        self.data = data if served is None else data[:served]
        self.reads: list[tuple[int, int]] = []

    async def read(self, path, start, length):
        self.reads.append((start, length))
        return self.data[start:start + length]

    async def get(self, path):
        return None


def _read(source: FakeSource, size: int | None):
    try:
        return asyncio.run(read_header(source, "f.safetensors", size))
    except errors.InvalidHeaderError as e:
        assert "f.safetensors" in str(e)
        return None


def _check_reads(source: FakeSource, size: int | None, blob: bytes) -> None:
    """At most two reads, inside the file: the first ~100 KB, then only the rest of a header that
    passed the length checks (never more than MAX_HEADER_BYTES)."""
    assert len(source.reads) <= 2
    for start, length in source.reads:
        assert start >= 0 and length > 0
        if size is not None:
            assert start + length <= size
    if source.reads:
        assert source.reads[0] == (0, FIRST_HEADER_READ if size is None else min(FIRST_HEADER_READ, size))
    if len(source.reads) == 2:
        (n,) = struct.unpack("<Q", blob[:8])
        start, length = source.reads[1]
        assert n <= MAX_HEADER_BYTES and start + length == 8 + n


@fuzz(st.one_of(mutated_files(), valid_files().map(lambda f: f[0]), st.binary(max_size=256)), st.booleans(),
      st.none() | st.integers(0, 400))
def test_read_header_agrees_with_parse_header(blob, size_known, served):
    size = len(blob) if size_known else None
    source = FakeSource(blob, served)
    got = _read(source, size)
    _check_reads(source, size, blob)
    if got is not None:
        tensors, head = got
        assert blob.startswith(head)
        check_accepted(tensors, blob, size)
        assert tensors == parse_header("f.safetensors", blob, size)


@fuzz(valid_files(), st.integers(0, 2_000))
def test_read_header_of_big_headers_takes_two_reads(file, pad):
    """A header past the first read: exactly one more read for the rest, whatever the sizes."""
    blob, expected = file
    raw, data = _split(blob)
    raw += b" " * (FIRST_HEADER_READ + pad - len(raw))
    big = _join(raw, data)
    source = FakeSource(big)
    tensors, head = asyncio.run(read_header(source, "f.safetensors", len(big)))
    assert len(source.reads) == 2 and len(head) == 8 + len(raw)
    shift = len(raw) - len(_split(blob)[0])
    assert sorted((t.name, t.start, t.end) for t in tensors) == sorted((e[0], e[3] + shift, e[4] + shift)
                                                                        for e in expected)
