"""Where bytes come from: the one seam between the pipeline and the Hub, a local directory or a test double.

The pipeline reads ranges of files and whole small files, and nothing else, so that where the bytes
live is not its business. A source is a subclass of ``ByteSource`` that says how to ``read`` a range
and ``get`` a small file; the rest has defaults (as an httpx transport is a class with one
``handle_request``): ``copy_to``, for a source that can put bytes into the output file without passing
them through Python, says it cannot; the async context opens and closes nothing.

    HubSource (fetch.py)        HTTP Range requests on one pooled session, retried, resumed
    LocalSource (localdir.py)   positional reads of a directory's files; copy_to with copy_file_range
    HeadCachedSource (here)     any source, with the bytes already read with the headers served from memory
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TypeVar


@dataclass
class FetchStats:
    """What a source did: bytes it delivered, requests it made, Hub ``/resolve/`` look-ups among them."""

    bytes_fetched: int = 0
    requests: int = 0
    resolves: int = 0


_S = TypeVar("_S", bound="ByteSource")


class ByteSource(abc.ABC):
    """Where bytes come from: the Hub, a local directory, a test double.

    Used as ``async with source:`` around every call, so a source can hold a connection pool or
    open files for the run. ``stats`` counts what it fetched.
    """

    stats: FetchStats

    def __init__(self) -> None:
        self.stats = FetchStats()

    @abc.abstractmethod
    async def read(self, path: str, start: int, length: int) -> bytes | memoryview:
        """Exactly ``length`` bytes of ``path`` from offset ``start`` (any bytes-like object)."""

    @abc.abstractmethod
    async def get(self, path: str) -> bytes | None:
        """The whole (small) file, or None when the repo has no such file."""

    def copy_to(self, path: str, start: int, length: int, out_fd: int, out_offset: int) -> bool:
        """Copy ``length`` bytes of ``path`` from ``start`` straight into ``out_fd`` at ``out_offset``.

        Returns False, having copied nothing, when this source cannot (the caller then reads the
        bytes and writes them itself): the default.
        """
        return False

    async def __aenter__(self: _S) -> _S:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


class HeadCachedSource(ByteSource):
    """A source that serves ranges already read with the headers before asking the real one.

    A header read takes ~100 KB; on small shards that includes tensor data, which is then not
    fetched a second time. ``heads``: every byte read from each file's start.
    """

    def __init__(self, source: ByteSource, heads: dict[str, bytes]):
        self._source = source
        self._heads = heads
        self.stats = source.stats  # the same counters: what it fetches is what this one fetched

    async def get(self, path: str) -> bytes | None:
        return await self._source.get(path)

    def copy_to(self, path: str, start: int, length: int, out_fd: int, out_offset: int) -> bool:
        # bytes already in memory are not copied again from the file: the caller writes those
        return start >= len(self._heads.get(path, b"")) and self._source.copy_to(path, start, length, out_fd,
                                                                                   out_offset)

    async def read(self, path: str, start: int, length: int) -> bytes | memoryview:
        head = self._heads.get(path, b"")
        if start + length <= len(head):
            return head[start:start + length]
        if start < len(head):
            cached = head[start:]
            return b"".join((cached, await self._source.read(path, len(head), length - len(cached))))
        return await self._source.read(path, start, length)
