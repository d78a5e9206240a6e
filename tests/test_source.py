"""The byte-source seam: what every source declares, and the header cache in front of the real one."""

from __future__ import annotations

import asyncio
import os

import pytest

from hfstream.source import ByteSource, FetchStats, HeadCachedSource


class MemorySource(ByteSource):
    """A test double: files in memory, every read logged. Only ``read`` and ``get`` are its own."""

    def __init__(self, files: dict[str, bytes]):
        super().__init__()
        self.files = files
        self.reads: list[tuple[str, int, int]] = []

    async def read(self, path: str, start: int, length: int) -> bytes:
        self.reads.append((path, start, length))
        self.stats.bytes_fetched += length
        return self.files[path][start:start + length]

    async def get(self, path: str) -> bytes | None:
        return self.files.get(path)


class CopyingSource(MemorySource):
    """A double that can copy into the output (as LocalSource does with copy_file_range)."""

    def copy_to(self, path: str, start: int, length: int, out_fd: int, out_offset: int) -> bool:
        os.pwrite(out_fd, self.files[path][start:start + length], out_offset)
        return True


def test_a_source_needs_only_read_and_get_the_rest_has_defaults():
    async def run():
        async with MemorySource({"a": b"0123456789"}) as source:
            assert await source.read("a", 2, 3) == b"234"
            assert await source.get("missing") is None
            assert source.copy_to("a", 0, 4, -1, 0) is False  # cannot: the caller reads instead
            assert isinstance(source.stats, FetchStats) and source.stats.bytes_fetched == 3

    asyncio.run(run())


def test_a_source_without_read_is_refused_when_made():
    class NoRead(ByteSource):
        async def get(self, path):
            return None

    with pytest.raises(TypeError, match="read"):
        NoRead()


def test_the_head_cache_serves_what_the_header_read_already_has():
    data = bytes(range(100))
    inner = MemorySource({"s": data})
    cached = HeadCachedSource(inner, {"s": data[:40]})

    async def run():
        assert await cached.read("s", 10, 20) == data[10:30]  # inside the head: no request
        assert inner.reads == []
        assert await cached.read("s", 30, 20) == data[30:50]  # straddles: only the rest is asked for
        assert inner.reads == [("s", 40, 10)]
        assert await cached.read("s", 60, 5) == data[60:65]
        assert inner.reads[-1] == ("s", 60, 5)

    asyncio.run(run())
    assert cached.stats is inner.stats and cached.stats.bytes_fetched == 15


def test_the_head_cache_copies_only_what_it_does_not_hold(tmp_path):
    data = bytes(range(100))
    out = tmp_path / "out"
    out.write_bytes(bytes(100))
    fd = os.open(out, os.O_RDWR)
    try:
        plain = HeadCachedSource(MemorySource({"s": data}), {"s": data[:40]})
        assert plain.copy_to("s", 50, 10, fd, 0) is False  # the source cannot copy
        copying = HeadCachedSource(CopyingSource({"s": data}), {"s": data[:40]})
        assert copying.copy_to("s", 20, 10, fd, 0) is False  # in memory already: read, not copied
        assert copying.copy_to("s", 50, 10, fd, 5) is True
    finally:
        os.close(fd)
    assert out.read_bytes()[5:15] == data[50:60]
