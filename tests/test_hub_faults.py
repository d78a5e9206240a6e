"""The fixture Hub's fault knobs, seen by plain HTTP clients (requests, aiohttp), not by hfstream.

Each knob is off by default, selectable per origin, and fires on a count ("the first N requests")
or with a seeded probability that replays the same way.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time

import aiohttp
import pytest
import requests

from fixtures.hub import Fault, Faults, FixtureHub

SHA = hashlib.sha1(b"faults commit").hexdigest()
WEIGHTS = os.urandom(300_000)  # an "LFS" file: /resolve/ redirects to the storage origin
CONFIG = b'{"architectures": ["LlamaForCausalLM"]}\n'
REPO = "org/faulty"


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """Shadows conftest's session ``hub``: a one-repo tree of our own."""
    root = tmp_path_factory.mktemp("faults-hub")
    snapshot = root / REPO / "commits" / SHA
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").write_bytes(WEIGHTS)
    (snapshot / "config.json").write_bytes(CONFIG)
    (root / REPO / "repo.json").write_text(json.dumps({"refs": {"main": SHA}}))
    with FixtureHub(root) as h:
        yield h


@pytest.fixture
def http(hub):
    hub.faults = Faults()
    hub.clear_log()
    with requests.Session() as s:
        s.trust_env = False
        yield s
    hub.faults = Faults()


def resolve_url(hub, path="model.safetensors") -> str:
    return f"{hub.endpoint}/{REPO}/resolve/main/{path}"


def storage_url(hub, http) -> str:
    r = http.get(resolve_url(hub), allow_redirects=False)
    assert r.status_code == 302
    return r.headers["Location"]


def fetch(url: str, *, range_: str | None = None, sock_read: float | None = None) -> tuple[int, dict, bytes, str | None]:
    """(status, headers, body bytes received, error) with aiohttp: a cut body shows as an error, not a hang."""

    async def go():
        timeout = aiohttp.ClientTimeout(total=30, sock_read=sock_read)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.get(url, headers={"Range": range_} if range_ else {}, allow_redirects=False) as resp:
                body = bytearray()
                error = None
                try:
                    async for chunk in resp.content.iter_chunked(1 << 16):
                        body += chunk
                except (aiohttp.ClientPayloadError, asyncio.TimeoutError) as e:
                    error = type(e).__name__
                return resp.status, dict(resp.headers), bytes(body), error

    return asyncio.run(go())


def faults_of(hub) -> list[str | None]:
    return [e["fault"] for e in hub.log]


# --- off by default, validated ---------------------------------------------------------------------


def test_no_faults_unless_asked(hub, http):
    url = storage_url(hub, http)
    status, headers, body, error = fetch(url, range_="bytes=0-99999")
    assert (status, len(body), error) == (206, 100_000, None)
    assert faults_of(hub) == [None, None]


def test_bad_knobs_are_refused():
    with pytest.raises(ValueError, match="kind"):
        Fault("explode")
    with pytest.raises(ValueError, match="origin"):
        Fault("drop", origin="cdn")
    with pytest.raises(ValueError, match="probability"):
        Fault("drop", probability=1.5)


# --- connection drops ------------------------------------------------------------------------------


def test_drop_cuts_the_body_and_closes_the_connection(hub, http):
    url = storage_url(hub, http)
    hub.faults.rules = [Fault("drop", origin="storage", count=1, after_bytes=12_345)]
    status, headers, body, error = fetch(url, range_="bytes=1000-200999")
    assert status == 206 and headers["Content-Length"] == "200000"
    assert body == WEIGHTS[1000:1000 + 12_345] and error == "ClientPayloadError"
    # only the first matching request
    status, _, body, error = fetch(url, range_="bytes=1000-200999")
    assert (status, body, error) == (206, WEIGHTS[1000:201000], None)
    assert hub.faults.rules[0].fired == 1
    assert faults_of(hub) == [None, "drop", None]
    assert hub.log[1]["bytes_sent"] == 12_345


def test_drop_defaults_to_half_the_body(hub, http):
    url = storage_url(hub, http)
    hub.faults.rules = [Fault("drop", count=1, ranged=True)]
    _, _, body, error = fetch(url, range_="bytes=0-9999")
    assert (len(body), error) == (5000, "ClientPayloadError")


def test_drop_with_a_probability_replays_with_the_same_seed(hub, http):
    url = storage_url(hub, http)
    ranges = [f"bytes={i * 1000}-{i * 1000 + 1999}" for i in range(40)]

    def pattern(seed: int) -> list[bool]:
        hub.faults = Faults(seed=seed, rules=[Fault("drop", origin="storage", probability=0.5, after_bytes=10)])
        return [fetch(url, range_=r)[3] is not None for r in ranges]

    first = pattern(7)
    assert 5 < sum(first) < 35  # about half
    assert pattern(7) == first  # same seed, same requests: same drops
    assert pattern(8) != first
    # asking the same range again is a new draw: a retry is not doomed to the same fate
    hub.faults = Faults(seed=7, rules=[Fault("drop", origin="storage", probability=0.5, after_bytes=10)])
    again = [fetch(url, range_=ranges[0])[3] is not None for _ in range(12)]
    assert 0 < sum(again) < 12


# --- rate limits and server errors -------------------------------------------------------------------


def test_429_storm_with_the_hub_ratelimit_header(hub, http):
    hub.faults.rules = [Fault("429", origin="hub", path="/resolve/", count=3, seconds=7)]
    for _ in range(3):
        r = http.get(resolve_url(hub), allow_redirects=False)
        assert r.status_code == 429
        assert r.headers["RateLimit"] == '"api";r=0;t=7'
        assert "Retry-After" not in r.headers
    assert http.get(resolve_url(hub), allow_redirects=False).status_code == 302
    # the API was not covered by the path filter
    assert http.get(f"{hub.endpoint}/api/models/{REPO}").status_code == 200
    assert faults_of(hub) == ["429"] * 3 + [None, None]


def test_429_with_retry_after_and_another_bucket(hub, http):
    hub.faults.rules = [Fault("429", count=1, seconds=3, retry_after=True, bucket="resolvers")]
    r = http.get(resolve_url(hub, "config.json"))
    assert r.status_code == 429
    assert (r.headers["Retry-After"], r.headers["RateLimit"]) == ("3", '"resolvers";r=0;t=3')
    assert http.get(resolve_url(hub, "config.json")).content == CONFIG


def test_503_only_on_the_storage_origin(hub, http):
    url = storage_url(hub, http)
    hub.faults.rules = [Fault("503", origin="storage", count=2, retry_after=True, seconds=1)]
    assert http.get(resolve_url(hub, "config.json")).status_code == 200  # the hub is spared
    for _ in range(2):
        r = http.get(url, headers={"Range": "bytes=0-9"})
        assert r.status_code == 503 and r.headers["Retry-After"] == "1"
    assert http.get(url, headers={"Range": "bytes=0-9"}).content == WEIGHTS[:10]


def test_503_on_every_request_until_turned_off(hub, http):
    hub.faults.rules = [Fault("503", origin="hub")]
    assert [http.get(resolve_url(hub, "config.json")).status_code for _ in range(3)] == [503] * 3
    hub.faults.rules = []
    assert http.get(resolve_url(hub, "config.json")).status_code == 200


# --- stalls --------------------------------------------------------------------------------------------


def test_stall_pauses_mid_body_then_finishes(hub, http):
    url = storage_url(hub, http)
    hub.faults.rules = [Fault("stall", origin="storage", count=1, after_bytes=1000, seconds=0.6)]
    started = time.monotonic()
    status, _, body, error = fetch(url, range_="bytes=0-49999")
    assert time.monotonic() - started >= 0.55
    assert (status, body, error) == (206, WEIGHTS[:50_000], None)


def test_a_stall_trips_a_client_read_timeout(hub, http):
    url = storage_url(hub, http)
    hub.faults.rules = [Fault("stall", origin="storage", count=1, after_bytes=1000, seconds=2)]
    status, _, body, error = fetch(url, range_="bytes=0-49999", sock_read=0.3)
    assert len(body) == 1000 and "TimeoutError" in error  # aiohttp: SocketTimeoutError


# --- broken Range answers ----------------------------------------------------------------------------


def test_wrong_content_range(hub, http):
    url = storage_url(hub, http)
    hub.faults.rules = [Fault("wrong_range", count=1, shift=5)]
    r = http.get(url, headers={"Range": "bytes=100-199"})
    assert r.status_code == 206
    assert r.headers["Content-Range"] == f"bytes 105-204/{len(WEIGHTS)}"
    assert r.content == WEIGHTS[105:205]
    r = http.get(url, headers={"Range": "bytes=100-199"})
    assert r.headers["Content-Range"] == f"bytes 100-199/{len(WEIGHTS)}"


def test_wrong_content_range_at_the_end_of_the_file_moves_back(hub, http):
    url = storage_url(hub, http)
    hub.faults.rules = [Fault("wrong_range", count=1)]
    r = http.get(url, headers={"Range": "bytes=-10"})
    n = len(WEIGHTS)
    assert r.headers["Content-Range"] == f"bytes {n - 11}-{n - 2}/{n}"


def test_ignore_range_sends_the_whole_file(hub, http):
    url = storage_url(hub, http)
    hub.faults.rules = [Fault("ignore_range", origin="storage", count=1)]
    r = http.get(url, headers={"Range": "bytes=100-199"})
    assert r.status_code == 200 and "Content-Range" not in r.headers and r.content == WEIGHTS
    assert http.get(url, headers={"Range": "bytes=100-199"}).status_code == 206


def test_ranged_filter(hub, http):
    url = storage_url(hub, http)
    hub.faults.rules = [Fault("503", origin="storage", ranged=False)]
    assert http.get(url).status_code == 503
    assert http.get(url, headers={"Range": "bytes=0-0"}).status_code == 206


# --- expiring storage URLs -----------------------------------------------------------------------------


def test_expire_makes_a_storage_url_stale_until_it_is_resolved_again(hub, http):
    url = storage_url(hub, http)
    hub.faults.rules = [Fault("expire", count=1)]
    r = http.get(url, headers={"Range": "bytes=0-9"})
    assert r.status_code == 403 and b"Request has expired" in r.content
    assert http.get(url, headers={"Range": "bytes=0-9"}).status_code == 403  # it stays expired
    fresh = storage_url(hub, http)
    assert fresh != url
    assert http.get(fresh, headers={"Range": "bytes=0-9"}).content == WEIGHTS[:10]


def test_storage_url_ttl_expires_urls_after_it(hub, http):
    signed_at = float(int(time.time()))
    hub.faults.clock = lambda: signed_at  # the storage origin's clock, moved by hand below
    hub.faults.storage_url_ttl = 60
    url = storage_url(hub, http)
    assert "X-Amz-Expires=60" in url
    hub.faults.clock = lambda: signed_at + 59.9
    assert http.get(url, headers={"Range": "bytes=0-9"}).status_code == 206
    hub.faults.clock = lambda: signed_at + 60
    r = http.get(url, headers={"Range": "bytes=0-9"})
    assert r.status_code == 403 and b"Request has expired" in r.content


def test_every_resolve_issues_a_distinct_url(hub, http):
    assert len({storage_url(hub, http) for _ in range(3)}) == 3
