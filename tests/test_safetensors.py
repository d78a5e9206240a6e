"""Header parsing: valid headers give exact spans; every kind of bad header is one clear error."""

import asyncio
import json
import struct

import pytest

from hfstream import errors
from hfstream.safetensors import parse_header, read_header


def blob(header: dict, data: bytes = b"", pad_to: int | None = None) -> bytes:
    text = json.dumps(header).encode()
    if pad_to:
        text += b" " * (pad_to - len(text))
    return struct.pack("<Q", len(text)) + text + data


def test_parses_spans_relative_to_the_end_of_the_header():
    h = {"__metadata__": {"format": "pt"},
         "b": {"dtype": "F16", "shape": [2, 3], "data_offsets": [16, 28]},
         "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}
    raw = blob(h, bytes(28))
    tensors = parse_header("m.safetensors", raw, len(raw))
    n = len(raw) - 28
    assert [(t.name, t.dtype, t.shape, t.start, t.end) for t in tensors] == [
        ("b", "F16", (2, 3), n + 16, n + 28), ("a", "F32", (4,), n, n + 16)]


@pytest.mark.parametrize("header, message", [
    ({"a": {"dtype": "F99", "shape": [1], "data_offsets": [0, 4]}}, "unknown dtype"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, "needs 8"),
    ({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, "shape"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}, "data_offsets"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
      "b": {"dtype": "F32", "shape": [1], "data_offsets": [2, 6]}}, "overlap"),
    ({"a": {"dtype": "F32", "shape": [100], "data_offsets": [0, 400]}}, "past the end"),
    ({"a": [1, 2]}, "not an object"),
])
def test_rejects_inconsistent_entries(header, message):
    raw = blob(header, bytes(8))
    with pytest.raises(errors.InvalidHeaderError, match=message) as e:
        parse_header("bad.safetensors", raw, len(raw))
    assert "bad.safetensors" in str(e.value)


def test_rejects_bad_lengths_and_json():
    with pytest.raises(errors.InvalidHeaderError, match="exceeds"):
        parse_header("x", struct.pack("<Q", 26_000_000) + b"{}", None)
    with pytest.raises(errors.InvalidHeaderError, match="runs past the end"):
        parse_header("x", struct.pack("<Q", 1000) + b"{}", 100)
    with pytest.raises(errors.InvalidHeaderError, match="not valid JSON"):
        parse_header("x", struct.pack("<Q", 5) + b"{nope", None)
    with pytest.raises(errors.InvalidHeaderError, match="not a JSON object"):
        parse_header("x", struct.pack("<Q", 2) + b"[]", None)


class FakeSource:
    def __init__(self, data: bytes):
        self.data = data
        self.reads = []

    async def read(self, path, start, length):
        self.reads.append((start, length))
        return self.data[start:start + length]

    async def get(self, path):
        return None


def test_small_header_takes_one_read_and_a_big_one_exactly_two():
    small = blob({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, bytes(4))
    src = FakeSource(small)
    asyncio.run(read_header(src, "s", len(small)))
    assert src.reads == [(0, len(small))]

    big_header = {f"t{i}": {"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]} for i in range(5000)}
    big = blob(big_header, bytes(4 * 5000))
    src = FakeSource(big)
    tensors, head = asyncio.run(read_header(src, "b", len(big)))
    header_end = len(big) - 20000
    assert head == big[:len(head)] and len(head) == header_end
    assert src.reads == [(0, 100_000), (100_000, header_end - 100_000)]
    assert len(tensors) == 5000
