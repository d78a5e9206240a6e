"""Bytes from the Hub by HTTP Range, on one pooled aiohttp session.

A byte source (``source.py``) has two operations: ``read(path, start, length)`` for a
range of a file and ``get(path)`` for a whole small file. The pipeline only sees that seam.

``/resolve/{sha}/{path}`` is asked once per file: its redirect ``Location`` (the
signed storage URL) is kept and reused for every later range of that file, since
the Hub rate-limits ``/resolve/`` requests. The token goes only to the endpoint's
own origin, never to a host a redirect points at.
"""

from __future__ import annotations

import asyncio
import random
import re
from urllib.parse import urljoin, urlsplit

import aiohttp
import numpy as np
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from . import errors
from .hub import Snapshot, asked_wait, note_retry
from .settings import MAX_SMALL_FILE_BYTES
from .source import ByteSource


#: metadata files of at least twice this size are fetched in parallel ranges of about this size
SMALL_FILE_PART = 4 * 1024 * 1024

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_RETRY_STATUS = {408, 429, 500, 502, 503, 504}


class HubSource(ByteSource):
    """A ByteSource reading one pinned snapshot of a Hub repo."""

    def __init__(self, snapshot: Snapshot, token: str | None, *, connections: int = 8, retries: int = 8,
                 connect_timeout: float = 30.0, read_timeout: float = 60.0, max_wait: float = 300.0):
        super().__init__()
        self.snapshot = snapshot
        self._token = token
        self._connections = connections
        self._retries = retries
        #: never sleep longer than this between two attempts, whatever the server asks
        self._max_wait = max_wait
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
            if resp.status in (301, 302, 303, 307, 308):
                location = resp.headers.get("Location")
                if not location:
                    raise errors.ProtocolError(f"{path}: redirect without a Location header")
                return urljoin(url, location)
            if resp.status in (200, 206):
                return url
            self._raise_for_status(resp.status, path, resp.headers)
        raise AssertionError("unreachable")

    async def _get_whole(self, url: str, path: str) -> bytes:
        assert self._session is not None
        self.stats.requests += 1
        # Small files are followed through redirects, but never with the token on another host:
        # aiohttp would keep our header, so redirects are followed by hand.
        for _ in range(5):
            async with self._session.get(url, headers=self._headers(url), allow_redirects=False,
                                         **self._proxy(url)) as resp:
                if resp.status in (301, 302, 303, 307, 308):
                    url = urljoin(url, resp.headers.get("Location", ""))
                    continue
                if resp.status == 404:
                    return None  # type: ignore[return-value]
                if resp.status != 200:
                    self._raise_for_status(resp.status, path, resp.headers)
                chunks: list[bytes] = []
                size = 0
                async for chunk in resp.content.iter_chunked(1 << 20):
                    size += len(chunk)
                    if size > MAX_SMALL_FILE_BYTES:
                        raise errors.InvalidConfigError(f"{path}: too large for a metadata file")
                    chunks.append(chunk)
                expected = resp.headers.get("Content-Length")
                if expected is not None and expected.isdigit() and int(expected) != size:
                    raise _Truncated(f"{path}: got {size} of {expected} bytes")
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
                # A signed storage URL expired (they last about an hour): resolve the file again.
                self._storage_urls.pop(path, None)
                raise _Retryable(403, {}, immediate=True)
            if resp.status != 206:
                self._raise_for_status(resp.status, path, resp.headers)
            m = _CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", "").strip())
            if not m or int(m.group(1)) != first or int(m.group(2)) != end:
                raise errors.ProtocolError(
                    f"{path}: Content-Range {resp.headers.get('Content-Range')!r} does not match bytes {first}-{end}")
            want = end - first + 1
            got = 0
            async for chunk in resp.content.iter_any():
                n = len(chunk)
                got += n
                if got > want:
                    raise errors.ProtocolError(f"{path}: the server sent more than the {want} bytes asked for")
                buf.view[buf.filled:buf.filled + n] = chunk
                buf.filled += n
                self.stats.bytes_fetched += n
            if got != want:
                raise _Truncated(f"{path}: got {got} of {want} bytes")

    def _raise_for_status(self, status: int, path: str, headers) -> None:
        if status in _RETRY_STATUS:
            raise _Retryable(status, headers)
        repo = self.snapshot.repo_id
        code = headers.get("X-Error-Code", "")
        if status == 401:
            # A gated repo's model info is public; its files answer 401 (no token) or 403 (no access).
            if self._token and code != "GatedRepo":
                raise errors.AccessDeniedError(f"the Hub rejected the token for {repo} (invalid credentials); "
                                               "check HF_TOKEN or --token")
            kind = "is gated" if code == "GatedRepo" else "needs a token"
            raise errors.AuthRequiredError(
                f"{repo} {kind}: log in with `hf auth login`, set HF_TOKEN or pass --token")
        if status == 403:
            raise errors.AccessDeniedError(
                f"your token has no access to {repo}: request access at {self.snapshot.page_url}")
        if status == 404:
            raise errors.MissingFileError(f"{path} not found in {repo}@{self.snapshot.sha[:12]}")
        if status == 416:
            raise errors.InvalidHeaderError(f"{path}: the requested range lies outside the file")
        raise errors.ProtocolError(f"{path}: unexpected HTTP {status}")

    async def _with_retries(self, path: str, attempt):
        delay = 0.5
        last: Exception | None = None
        for n in range(self._retries + 1):
            try:
                return await attempt()
            except _Retryable as e:
                last = e
                if e.immediate:
                    continue
                asked = e.wait_seconds()
                wait = max(asked, delay) if asked is not None else delay * (0.5 + random.random())
                reason = f"{path}: HTTP {e.status} from {self.snapshot.endpoint}"
            except (_Truncated, aiohttp.ClientError, asyncio.TimeoutError, ConnectionError) as e:
                last = e
                wait = delay * (0.5 + random.random())
                reason = f"{path}: {type(e).__name__}" + (f": {e}" if str(e) else "")
            if n == self._retries:
                break
            wait = min(wait, self._max_wait) * (1 + 0.1 * random.random())
            note_retry(wait, n, self._retries, reason)
            await asyncio.sleep(wait)
            delay = min(delay * 2, 30.0)
        if isinstance(last, _Retryable):
            if last.status == 429:
                raise errors.RateLimitedError(f"{path}: still rate-limited after {self._retries} retries")
            if last.status >= 500:
                raise errors.ServerError(f"{path}: HTTP {last.status} after {self._retries} retries")
            if last.status == 403:
                raise errors.AccessDeniedError(f"{path}: the storage URL kept being refused after re-resolving")
        reason = type(last).__name__ if last else "unknown"
        raise errors.NetworkError(f"{path}: failed after {self._retries} retries ({reason})")


class _Filling:
    """A buffer of a range's size and how much of it has arrived."""

    __slots__ = ("view", "filled")

    def __init__(self, length: int):
        # numpy's empty array: no zero-filling pass over memory that is about to be overwritten
        self.view = memoryview(np.empty(length, dtype=np.uint8)).cast("B")
        self.filled = 0


class _Retryable(Exception):
    def __init__(self, status: int, headers, immediate: bool = False):
        super().__init__(f"HTTP {status}")
        self.status = status
        self.headers = headers
        #: retry at once, without backoff (e.g. after re-resolving an expired URL)
        self.immediate = immediate

    def wait_seconds(self) -> float | None:
        return asked_wait(self.headers)


class _Truncated(Exception):
    pass


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()
