"""The fixture Hub's network shaping (``Throttle``): measured rates match the caps, latency is added.

These check the fixture (what the benchmark relies on), not hfstream: a plain aiohttp client
downloads a few tens of MB under a cap and the rate it measures must be within 10% of the cap.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import aiohttp
import pytest

from fixtures.hub import FixtureHub, Throttle, _rate

SHA = "b" * 40
MB = 1_000_000
FILE_SIZE = 60 * MB


@pytest.fixture(scope="module")
def big_repo(tmp_path_factory) -> Path:
    """A repo with one sparse 60 MB LFS file (reads of a hole cost no disk I/O)."""
    root = tmp_path_factory.mktemp("throttle-repos")
    repo = root / "hfs-test" / "big"
    (repo / "commits" / SHA).mkdir(parents=True)
    (repo / "repo.json").write_text(json.dumps({"refs": {"main": SHA}, "gated": False, "private": False}))
    with open(repo / "commits" / SHA / "blob.safetensors", "wb") as f:
        f.truncate(FILE_SIZE)
    return root


@pytest.fixture(scope="module")
def hub(big_repo):
    with FixtureHub(big_repo) as h:
        yield h


async def _storage_url(session: aiohttp.ClientSession, hub: FixtureHub) -> str:
    async with session.head(f"{hub.endpoint}/hfs-test/big/resolve/main/blob.safetensors",
                            allow_redirects=False) as resp:
        assert resp.status == 302
        return resp.headers["Location"]


async def _download(hub: FixtureHub, connections: int, per_connection: int) -> tuple[int, float]:
    """``connections`` concurrent Range GETs of ``per_connection`` bytes each; (bytes, seconds)."""
    conn = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=conn) as session:
        url = await _storage_url(session, hub)  # also hashes the file, before the clock starts

        async def one(i: int) -> int:
            start = i * per_connection
            headers = {"Range": f"bytes={start}-{start + per_connection - 1}"}
            got = 0
            async with session.get(url, headers=headers) as resp:
                assert resp.status == 206
                async for chunk in resp.content.iter_chunked(1 << 20):
                    got += len(chunk)
            return got

        t0 = time.perf_counter()
        sizes = await asyncio.gather(*(one(i) for i in range(connections)))
        return sum(sizes), time.perf_counter() - t0


def test_rate_parser():
    assert _rate("100M") == 100e6
    assert _rate("40MiB") == 40 * 2**20
    assert _rate("1.5G") == 1.5e9
    assert _rate("100MB/s") == 100e6


def test_total_cap_is_shared_by_all_connections(hub):
    """4 connections at 40 MB/s each could do 160 MB/s; the 100 MB/s link is the limit."""
    hub.throttle = Throttle(total_rate=100 * MB, connection_rate=40 * MB)
    try:
        got, seconds = asyncio.run(_download(hub, connections=4, per_connection=FILE_SIZE // 4))
    finally:
        hub.throttle = Throttle()
    rate = got / seconds
    assert got == FILE_SIZE
    # the cap is what matters; the floor only shows the throttle does not starve (a loaded CI box is slower)
    assert 0.5 * 100 * MB <= rate <= 1.1 * 100 * MB, f"{rate / MB:.1f} MB/s under a 100 MB/s cap"


def test_connection_cap(hub):
    hub.throttle = Throttle(connection_rate=40 * MB)
    try:
        got, seconds = asyncio.run(_download(hub, connections=1, per_connection=24 * MB))
    finally:
        hub.throttle = Throttle()
    rate = got / seconds
    assert 0.5 * 40 * MB <= rate <= 1.1 * 40 * MB, f"{rate / MB:.1f} MB/s under a 40 MB/s cap"


def test_latency_before_first_byte(hub):
    async def first_bytes() -> list[float]:
        async with aiohttp.ClientSession() as session:
            out = []
            for _ in range(5):
                t0 = time.perf_counter()
                async with session.get(f"{hub.endpoint}/api/models/hfs-test/big") as resp:
                    assert resp.status == 200
                    await resp.read()
                out.append(time.perf_counter() - t0)
            return out

    hub.throttle = Throttle(latency=0.05)
    try:
        slow = asyncio.run(first_bytes())
    finally:
        hub.throttle = Throttle()
    fast = asyncio.run(first_bytes())
    assert min(slow) >= 0.05
    assert min(slow) - min(fast) >= 0.045
    assert not Throttle().active and Throttle(latency=0.02).active


def test_unthrottled_is_not_paced(hub):
    """Off by default: the same 30 MB arrive far faster than any cap above."""
    got, seconds = asyncio.run(_download(hub, connections=1, per_connection=30 * MB))
    assert got == 30 * MB
    assert got / seconds > 100 * MB
