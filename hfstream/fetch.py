"""Bytes from the Hub by HTTP Range, on one pooled aiohttp session.

A byte source (``source.py``) has two operations: ``read(path, start, length)`` for a
range of a file and ``get(path)`` for a whole small file. The pipeline only sees that seam.

``/resolve/{sha}/{path}`` is asked once per file: its redirect ``Location`` (the
signed storage URL) is kept and reused for every later range of that file, since
the Hub rate-limits ``/resolve/`` requests. The token goes only to the endpoint's
own origin, never to a host a redirect points at.

Failures are ours before they leave a request: a status becomes its error in
``httperrors``, an aiohttp failure a NetworkError, and ``retry.RetryPolicy`` tries
the NetworkError family again, a range continuing from the byte it reached. A body
that trickles (less than ``retry.PROGRESS_BYTES`` per read timeout) is a stall too.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiohttp
import numpy as np
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from . import errors, httperrors
from .snapshot import Snapshot
from .retry import RetryPolicy
from .settings import MAX_SMALL_FILE_BYTES
from .source import ByteSource


T = TypeVar("T")

#: metadata files of at least twice this size are fetched in parallel ranges of about this size
SMALL_FILE_PART = 4 * 1024 * 1024

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_REDIRECTS = httperrors.REDIRECTS
_redirect_target = httperrors.redirect_target
_origin = httperrors.origin


class HubSource(ByteSource):
    """A ByteSource reading one pinned snapshot of a Hub repo."""

    def __init__(self, snapshot: Snapshot, token: str | None, *, connections: int = 8,
                 retries: int | RetryPolicy = 8, connect_timeout: float = 30.0, read_timeout: float = 60.0):
        super().__init__()
        self.snapshot = snapshot
        self._token = token
        self._connections = connections
        self._retry = RetryPolicy.of(retries)
        self._read_timeout = read_timeout
        self._timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_read=read_timeout)
        self._session: aiohttp.ClientSession | None = None
        self._storage_urls: dict[str, str] = {}
        self._resolve_locks: dict[str, asyncio.Lock] = {}
        self._proxies: dict[tuple[str, str], dict] = {}
        self._endpoint_origin = _origin(snapshot.endpoint)

    async def __aenter__(self) -> "HubSource":
        connector = aiohttp.TCPConnector(limit=self._connections)
        # Not trust_env: with it aiohttp also looks up ~/.netrc for every request (a thread hop each)
        # and refuses a request that has our Authorization header when netrc names the host. Proxies
        # from the environment are looked up per origin instead (``_proxy``), as trust_env would.
        self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout, auto_decompress=False)
        return self

    async def __aexit__(self, *exc) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- the ByteSource operations --------------------------------------------

    async def get(self, path: str) -> bytes | None:
        if path not in self.snapshot.files:
            return None
        size = self.snapshot.files.get(path)
        if size is not None and size > MAX_SMALL_FILE_BYTES:
            raise errors.InvalidConfigError(f"{path}: {size} bytes is too large for a metadata file")
        if size == 0:
            return b""
        if size is not None and size >= 2 * SMALL_FILE_PART:
            whole = await self._get_by_ranges(path, size)
            if whole is not None:
                return whole
        url = self.snapshot.resolve_url(path)
        return await self._with_retries(path, lambda: self._get_whole(url, path))

    async def _get_by_ranges(self, path: str, size: int) -> bytes | None:
        """A big metadata file (a tokenizer.json of 10-30 MB) in parallel ranges, as tensor data comes:
        one connection alone is often capped well below the link. None when the server will not
        serve ranges of it (then it is fetched whole)."""
        parts = max(2, min(self._connections, size // SMALL_FILE_PART))
        step = -(-size // parts)
        tasks = [asyncio.ensure_future(self.read(path, start, min(step, size - start)))
                 for start in range(0, size, step)]
        try:
            blobs = await asyncio.gather(*tasks)
        except BaseException as e:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # a 200 with the whole file instead of 206, or a listed size the file does not have (416)
            if isinstance(e, (errors.ProtocolError, errors.InvalidHeaderError)):
                return None
            raise
        return b"".join(blobs)

    async def read(self, path: str, start: int, length: int) -> memoryview:
        if length == 0:
            return memoryview(b"")
        # Chunks land in place in one buffer of the final size (no joins, no growing, no final copy).
        # A retried range continues from the byte it reached.
        buf = _Filling(length)
        await self._with_retries(path, lambda: self._read_into(path, start, length, buf))
        return buf.view

    # -- internals ------------------------------------------------------------

    def _proxy(self, url: str) -> dict:
        """``proxy``/``proxy_auth`` for a request to ``url`` from HTTP(S)_PROXY and NO_PROXY, once per origin."""
        origin = _origin(url)
        if origin not in self._proxies:
            try:
                proxy, auth = get_env_proxy_for_url(URL(url))
                self._proxies[origin] = {"proxy": proxy, "proxy_auth": auth}
            except LookupError:
                self._proxies[origin] = {}
        return self._proxies[origin]

    def _headers(self, url: str) -> dict[str, str]:
        headers = {"User-Agent": "hfstream"}
        if self._token and _origin(url) == self._endpoint_origin:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    async def _storage_url(self, path: str) -> str:
        """The URL to read ``path`` from: the /resolve/ redirect target, looked up once."""
        if path in self._storage_urls:
            return self._storage_urls[path]
        lock = self._resolve_locks.setdefault(path, asyncio.Lock())
        async with lock:
            if path not in self._storage_urls:
                self._storage_urls[path] = await self._with_retries(path, lambda: self._resolve(path))
        return self._storage_urls[path]

    async def _resolve(self, path: str) -> str:
        assert self._session is not None
        url = self.snapshot.resolve_url(path)
        self.stats.resolves += 1
        self.stats.requests += 1
        async with self._session.head(url, headers=self._headers(url), allow_redirects=False,
                                      **self._proxy(url)) as resp:
            if resp.status in _REDIRECTS:
                return _redirect_target(url, resp.headers, path)
            if resp.status in (200, 206):
                return url
            raise self._error(resp.status, path, resp.headers)

    async def _get_whole(self, url: str, path: str) -> bytes:
        assert self._session is not None
        self.stats.requests += 1
        # Small files are followed through redirects, but never with the token on another host:
        # aiohttp would keep our header, so redirects are followed by hand.
        for _ in range(5):
            async with self._session.get(url, headers=self._headers(url), allow_redirects=False,
                                         **self._proxy(url)) as resp:
                if resp.status in _REDIRECTS:
                    url = _redirect_target(url, resp.headers, path)
                    continue
                if resp.status == 404:
                    return None  # type: ignore[return-value]
                if resp.status != 200:
                    raise self._error(resp.status, path, resp.headers)
                chunks: list[bytes] = []
                size = 0
                expected = resp.headers.get("Content-Length")
                progress = self._retry.progress(path, self._read_timeout,
                                                int(expected) if expected is not None and expected.isdigit() else None)
                async for chunk in resp.content.iter_any():
                    size += len(chunk)
                    if size > MAX_SMALL_FILE_BYTES:
                        raise errors.InvalidConfigError(f"{path}: too large for a metadata file")
                    chunks.append(chunk)
                    progress.arrived(len(chunk))
                if expected is not None and expected.isdigit() and int(expected) != size:
                    raise errors.NetworkError(f"{path}: the body ended after {size} of {expected} bytes")
                self.stats.bytes_fetched += size
                return b"".join(chunks)
        raise errors.ProtocolError(f"{path}: too many redirects")

    async def _read_into(self, path: str, start: int, length: int, buf: _Filling) -> None:
        """Fill ``buf`` with bytes [start + buf.filled, start + length) of ``path``."""
        assert self._session is not None
        url = await self._storage_url(path)
        first = start + buf.filled
        end = start + length - 1
        headers = self._headers(url)
        headers["Range"] = f"bytes={first}-{end}"
        self.stats.requests += 1
        async with self._session.get(url, headers=headers, allow_redirects=False, **self._proxy(url)) as resp:
            if resp.status == 200:
                # The server ignored Range: stop now rather than download the whole file.
                raise errors.ProtocolError(f"{path}: the server ignored the Range header (200 instead of 206)")
            if resp.status == 403 and _origin(url) != self._endpoint_origin:
                # A signed storage URL expired (they last about an hour): resolve the file again, now.
                self._storage_urls.pop(path, None)
                raise errors.NetworkError(f"{path}: the storage host refused its signed URL (expired?)",
                                          retry_after=0.0)
            if resp.status != 206:
                raise self._error(resp.status, path, resp.headers)
            m = _CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", "").strip())
            if not m or int(m.group(1)) != first or int(m.group(2)) != end:
                raise errors.ProtocolError(
                    f"{path}: Content-Range {resp.headers.get('Content-Range')!r} does not match bytes {first}-{end}")
            want = end - first + 1
            got = 0
            progress = self._retry.progress(path, self._read_timeout, want)
            async for chunk in resp.content.iter_any():
                n = len(chunk)
                got += n
                if got > want:
                    raise errors.ProtocolError(f"{path}: the server sent more than the {want} bytes asked for")
                buf.view[buf.filled:buf.filled + n] = chunk
                buf.filled += n
                self.stats.bytes_fetched += n
                progress.arrived(n)
            if got != want:
                raise errors.NetworkError(f"{path}: the body ended after {got} of {want} bytes")

    def _error(self, status: int, path: str, headers) -> errors.HfstreamError:
        request = httperrors.Request(self.snapshot.repo_id, self.snapshot.endpoint, token=bool(self._token),
                                     path=path, revision=self.snapshot.sha)
        return httperrors.for_status(status, headers, request, clock=self._retry.clock)

    async def _with_retries(self, path: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """``attempt()`` under the retry policy, aiohttp's failures translated to ours first."""

        async def translated() -> T:
            try:
                return await attempt()
            except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError) as e:
                # aiohttp's timeouts are asyncio's; its payload errors are truncated bodies
                raise errors.NetworkError(f"{path}: {httperrors.describe(e)}") from None

        return await self._retry.acall(translated)


class _Filling:
    """A buffer of a range's size and how much of it has arrived."""

    __slots__ = ("view", "filled")

    def __init__(self, length: int):
        # numpy's empty array: no zero-filling pass over memory that is about to be overwritten
        self.view = memoryview(np.empty(length, dtype=np.uint8).data).cast("B")
        self.filled = 0
