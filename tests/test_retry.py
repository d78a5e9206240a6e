"""The boundary with HTTP: one table from answers to errors (``httperrors``), one retry policy
(``retry``), and the three places that use them (hub.py's API call, fetch.py's requests, publish.py's
calls) seen through the fixture Hub, on a fake clock: the waits are read, never waited out."""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json

import pytest

from hfstream import errors, httperrors, hub
from hfstream.retry import RetryPolicy

from .conftest import FakeTime

READ = httperrors.Request("org/model", "https://hub.example", revision="main")
READ_FILE = httperrors.Request("org/model", "https://hub.example", path="config.json", revision="0123456789abcdef")
WITH_TOKEN = httperrors.Request("org/model", "https://hub.example", token=True, revision="main")
WRITE = httperrors.Request("me/model-GGUF", "https://hub.example", token=True, publishing=True)


# --- status -> error ------------------------------------------------------------------------------


@pytest.mark.parametrize("status, code, request_, error, words", [
    (404, "RevisionNotFound", READ, errors.RevisionNotFoundError, "revision 'main' not found in org/model"),
    (404, "RepoNotFound", READ, errors.RepoNotFoundError, "if it is private"),
    (401, "RepoNotFound", READ, errors.RepoNotFoundError, "not found on https://hub.example"),
    (404, "RepoNotFound", WITH_TOKEN, errors.RepoNotFoundError, "not found on https://hub.example"),
    (404, "", READ, errors.RepoNotFoundError, "repository org/model"),
    (401, "GatedRepo", READ_FILE, errors.AuthRequiredError, "is gated: log in"),
    (403, "GatedRepo", WITH_TOKEN, errors.AccessDeniedError, "request access at https://hub.example/org/model"),
    (404, "EntryNotFound", READ_FILE, errors.MissingFileError, "config.json not found in org/model@0123456789ab"),
    (404, "", READ_FILE, errors.MissingFileError, "config.json not found"),
    (401, "", READ, errors.AuthRequiredError, "needs a token"),
    (401, "", WITH_TOKEN, errors.AccessDeniedError, "rejected the token"),
    (403, "", WITH_TOKEN, errors.AccessDeniedError, "request access"),
    (416, "", READ_FILE, errors.InvalidHeaderError, "outside the file"),
    (412, "", READ, errors.ProtocolError, "unexpected HTTP 412"),
    (408, "", READ_FILE, errors.NetworkError, "answered HTTP 408"),
    (429, "", READ_FILE, errors.RateLimitedError, "config.json: rate-limited by https://hub.example"),
    (503, "", READ, errors.ServerError, "org/model@main: https://hub.example answered HTTP 503"),
    (None, "", READ, errors.NetworkError, "no answer"),
    (401, "", WRITE, errors.AccessDeniedError, "a write token is needed"),
    (403, "GatedRepo", WRITE, errors.AccessDeniedError, "a write token is needed"),
    (412, "", WRITE, errors.PublishConflictError, "moved while publishing"),
    (409, "", WRITE, errors.PublishConflictError, "moved while publishing"),
    (404, "RepoNotFound", WRITE, errors.PublishError, "HTTP 404"),
    (429, "", WRITE, errors.RateLimitedError, "publishing to me/model-GGUF"),
    (502, "", WRITE, errors.ServerError, "HTTP 502"),
])
def test_one_table_from_answers_to_errors(status, code, request_, error, words):
    e = httperrors.for_status(status, {"X-Error-Code": code} if code else {}, request_)
    assert type(e) is error and words in e.message


def test_huggingface_hub_exceptions_meet_the_same_table():
    import httpx2
    from huggingface_hub import errors as hf_errors

    def hf(cls, status, headers=None):
        request = httpx2.Request("GET", "https://hub.example/api/models/org/model")
        return cls("boom", response=httpx2.Response(status, headers=headers or {}, request=request))

    assert type(httperrors.from_exception(hf(hf_errors.GatedRepoError, 401), READ)) is errors.AuthRequiredError
    assert type(httperrors.from_exception(hf(hf_errors.RevisionNotFoundError, 404), READ)) is errors.RevisionNotFoundError
    assert type(httperrors.from_exception(hf(hf_errors.RepositoryNotFoundError, 401), READ)) is errors.RepoNotFoundError
    limited = httperrors.from_exception(hf(hf_errors.HfHubHTTPError, 429, {"RateLimit": '"api";r=0;t=55'}), READ)
    assert type(limited) is errors.RateLimitedError and limited.retry_after == 56
    assert type(httperrors.from_exception(ConnectionRefusedError(), READ)) is errors.NetworkError
    assert httperrors.from_exception(KeyError("a bug"), READ) is None


def test_the_wait_a_server_asks_for():
    clock = FakeTime(now=1_700_000_000)
    date = email.utils.formatdate(1_700_000_000 + 42, usegmt=True)
    assert httperrors.asked_wait({"Retry-After": "7"}) == 7
    assert httperrors.asked_wait({"Retry-After": date}, clock.clock) == 42
    assert httperrors.asked_wait({"Retry-After": "7", "RateLimit": '"api";r=0;t=55'}) == 7
    assert httperrors.asked_wait({"RateLimit": '"api";r=0;t=55'}) == 56  # t is rounded down
    assert httperrors.asked_wait({"RateLimit": '"resolvers";r=0;t=0'}) == 1
    assert httperrors.asked_wait({"RateLimit": '"api";r=12;t=55'}) is None  # not exhausted: not an ask
    assert httperrors.asked_wait({"Retry-After": "soon"}) is None
    assert httperrors.asked_wait({}) is None


# --- the policy -------------------------------------------------------------------------------------


def test_backoff_doubles_from_the_first_wait_up_to_its_cap_and_a_servers_ask_wins():
    policy = RetryPolicy(first_backoff=0.5, max_backoff=30, max_wait=300, jitter=lambda: 0.5)  # no spread
    assert [policy.wait(n, None) for n in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert policy.wait(0, 55.0) == pytest.approx(55 * 1.05)  # a little spread, never less than asked
    assert policy.wait(7, 0.0) == 0  # "now" is now
    assert policy.wait(0, 3600.0) == 300  # never longer than max_wait
    spread = RetryPolicy(jitter=lambda: 0.0), RetryPolicy(jitter=lambda: 0.999)
    assert spread[0].wait(3, None) == 2 and spread[1].wait(3, None) == pytest.approx(6, rel=1e-3)


def test_only_network_errors_are_retried_and_the_last_says_so():
    time = FakeTime()
    failures = [errors.ServerError("x: HTTP 503", retry_after=2.0), errors.NetworkError("x: reset")]
    outcomes = iter(failures + ["done"])

    def attempt():
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert time.policy().call(attempt) == "done"
    assert time.waits[0] == pytest.approx(2.0, rel=0.1) and 0.5 <= time.waits[1] <= 1.5

    time = FakeTime()
    calls = []

    def refused():
        calls.append(1)
        raise errors.AccessDeniedError("no")

    with pytest.raises(errors.AccessDeniedError):
        time.policy().call(refused)
    assert calls == [1] and time.waits == []

    def always_503():
        raise errors.ServerError("x: HTTP 503")

    with pytest.raises(errors.ServerError, match=r"x: HTTP 503 \(after 3 retries\)"):
        time.policy(retries=3).call(always_503)
    assert len(time.waits) == 3


def test_the_async_side_waits_with_the_async_sleep():
    time = FakeTime()
    attempts = []

    async def flaky():
        attempts.append(1)
        if len(attempts) < 3:
            raise errors.RateLimitedError("x", retry_after=9.0)
        return len(attempts)

    assert asyncio.run(time.policy().acall(flaky)) == 3
    assert len(time.waits) == 2 and all(9 <= w <= 9.9 for w in time.waits)
    assert time.now == pytest.approx(1_700_000_000 + sum(time.waits))


# --- the three users, through the fixture Hub -------------------------------------------------------


def test_hub_resolve_waits_out_a_rate_limit_as_the_hub_asks(fresh_hub, fake_time):
    from fixtures.hub import Fault

    fresh_hub.faults.rules = [Fault("429", origin="hub", path="/api/models/", count=3, seconds=55)]
    try:
        snap = hub.resolve("hfs-test/tiny-llama-spm", "main", fresh_hub.endpoint, None, retries=fake_time.policy())
    finally:
        fresh_hub.faults.rules = []
    assert len(snap.sha) == 40
    assert len(fake_time.waits) == 3 and all(56 <= w <= 56 * 1.1 for w in fake_time.waits)
    api = [e["status"] for e in fresh_hub.log if e["path"].startswith("/api/models/")]
    assert api == [429, 429, 429, 200]


def test_hub_resolve_gives_up_with_the_rate_limit_exit_code(fresh_hub, fake_time):
    from fixtures.hub import Fault

    fresh_hub.faults.rules = [Fault("429", origin="hub", path="/api/models/", seconds=5)]
    try:
        with pytest.raises(errors.RateLimitedError, match=r"after 2 retries") as caught:
            hub.resolve("hfs-test/tiny-llama-spm", "main", fresh_hub.endpoint, None, retries=fake_time.policy(2))
    finally:
        fresh_hub.faults.rules = []
    assert caught.value.exit_code == 41 and len(fake_time.waits) == 2


def test_fetch_retries_5xx_with_the_policy_and_refuses_a_redirect_away_from_http(fresh_hub, fake_time):
    from fixtures.hub import Fault
    from hfstream.fetch import HubSource

    snap = hub.resolve("hfs-test/tiny-llama-spm", "main", fresh_hub.endpoint, None)

    async def small_file(source_policy):
        async with HubSource(snap, None, retries=source_policy) as source:
            return await source.get("config.json")

    fresh_hub.faults.rules = [Fault("503", origin="hub", path="/config.json$", count=2, seconds=4, retry_after=True)]
    try:
        blob = asyncio.run(small_file(fake_time.policy()))
    finally:
        fresh_hub.faults.rules = []
    assert json.loads(blob)["architectures"]
    assert len(fake_time.waits) == 2 and all(4 <= w <= 4.4 for w in fake_time.waits)


def test_a_redirect_to_a_file_url_is_a_protocol_error_at_once(fake_time):
    """A server whose /resolve/ points at file:// (or ftp://) broke the protocol: exit 43, no retries."""
    from aiohttp import web

    from hfstream.fetch import HubSource
    from hfstream.hub import Snapshot

    async def run():
        hits = []

        async def handler(request):
            hits.append(request.method)
            raise web.HTTPFound("file:///etc/passwd")

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        snap = Snapshot("org/model", "main", "0" * 40, f"http://127.0.0.1:{port}",
                        files={"config.json": 10, "model.safetensors": 1000})
        try:
            async with HubSource(snap, None, retries=fake_time.policy()) as source:
                for call in (source.get("config.json"), source.read("model.safetensors", 0, 8)):
                    with pytest.raises(errors.ProtocolError, match="redirected to a file: URL"):
                        await call
        finally:
            await runner.cleanup()
        return hits

    assert asyncio.run(run()) == ["GET", "HEAD"]
    assert fake_time.waits == []


@pytest.mark.filterwarnings("ignore:Use 'content=<...>' to upload raw bytes:DeprecationWarning")
def test_publish_retries_a_server_error_and_commits_once(tmp_path, monkeypatch, fake_time):
    import huggingface_hub.constants

    from fixtures.hub import Fault, FixtureHub
    from hfstream.publish import publish

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
    root = tmp_path / "hub-root"
    root.mkdir()
    (root / "_tokens.json").write_text(json.dumps({"valid": ["hf_fixture_good"]}))
    gguf = tmp_path / "Tiny-1M-Q8_0.gguf"
    gguf.write_bytes(b"GGUF" + hashlib.sha256(b"x").digest() * 100)
    with FixtureHub(root) as h:
        h.faults.rules = [Fault("503", origin="hub", path="/commit/main$", count=2, seconds=3, retry_after=True)]
        sha = publish("mirrors/Tiny-GGUF", [gguf], source_repo="hfs-test/tiny", source_commit="a" * 40,
                      outtype="q8_0", token="hf_fixture_good", endpoint=h.endpoint, retries=fake_time.policy())
        commits = [e["status"] for e in h.log if e["path"].endswith("/commit/main")]
    assert commits == [503, 503, 200] and len(sha) == 40
    assert len(fake_time.waits) == 2 and all(3 <= w <= 3.3 for w in fake_time.waits)
