"""A Hub that hangs, trickles, bombs or redirects away: every request has a deadline a trickle cannot
defeat, what the Hub sends is bounded as it arrives, and a redirect away from http(s) is one protocol
error at once.

Stalls and trickles run on the fixture Hub's faults. A trickle is timed by events: the client's clock
(``RetryPolicy.monotonic``) is the fixture's count of trickled writes, one second each, so nothing
waits for real (the writes are a few ms apart only so that they arrive as separate chunks). A socket that stays silent can only be noticed by a real timer: those tests use a
read timeout of a fraction of a second, and assert what happened, never how long it took.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import tracemalloc
import zlib

import pytest
from aiohttp import web

import hfstream
from hfstream import errors, hub, settings
from hfstream.mirror import EXIT_PERMANENT, EXIT_RETRYABLE, mirror

from .conftest import cli_env

REPO = "hfs-test/tiny-llama-sharded"
SHA = "0123456789abcdef0123456789abcdef01234567"


def _fault(kind, **kw):
    from fixtures.hub import Fault

    return Fault(kind, **kw)


@pytest.fixture
def faulty_hub(fixture_root):
    from fixtures.hub import FixtureHub

    with FixtureHub(fixture_root) as h:
        yield h


# --- a Hub of our own making: any answer to any request --------------------------------------------


class HostileHub:
    """An aiohttp server on 127.0.0.1 that answers with ``handler(request)``; ``log`` lists
    (method, path, bytes sent)."""

    def __init__(self, handler):
        from fixtures.loopthread import LoopThread

        outer = self
        self.handler = handler
        self.log: list[list] = []

        class Thread(LoopThread):
            thread_name = "hostile-hub"

            async def _serve(self):
                app = web.Application()
                app.router.add_route("*", "/{tail:.*}", outer._handle)
                self.runner = web.AppRunner(app, shutdown_timeout=0.5)
                await self.runner.setup()
                site = web.TCPSite(self.runner, "127.0.0.1", 0)
                await site.start()
                outer.endpoint = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"

            async def _cleanup(self):
                await self.runner.cleanup()

        self._thread = Thread()

    async def _handle(self, request):
        entry = [request.method, request.path, 0]
        self.log.append(entry)
        return await self.handler(request, entry)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._thread.stop()


async def _stream(request, entry, chunks, headers):
    resp = web.StreamResponse(status=200, headers=headers)
    await resp.prepare(request)
    try:
        for chunk in chunks:
            await resp.write(chunk)
            entry[2] += len(chunk)
    except ConnectionError:  # the client stopped reading: what it wanted to show
        pass
    return resp


# --- 5: an API answer that sends its headers, then nothing ------------------------------------------


def test_an_api_answer_that_never_comes_is_timed_out_and_retried(faulty_hub, fake_time):
    faulty_hub.faults.rules = [_fault("stall", origin="hub", path="^/api/models/", after_bytes=0, seconds=120)]
    with pytest.raises(errors.NetworkError, match=r"hfs-test/tiny-llama-sharded@main: cannot reach .*"
                                                  r"\(after 2 retries\)") as e:
        hub.resolve(REPO, "main", faulty_hub.endpoint, None, retries=fake_time.policy(2), read_timeout=0.3)
    assert e.value.retryable and e.value.exit_code == 40
    assert faulty_hub.faults.rules[0].fired == 3 and len(fake_time.waits) == 2


def test_the_command_and_the_mirror_time_out_a_silent_api_too(faulty_hub, tmp_path):
    faulty_hub.faults.rules = [_fault("stall", origin="hub", path="^/api/models/", after_bytes=0, seconds=120)]
    proc = subprocess.run([sys.executable, "-m", "hfstream", "convert", REPO, "--timeout", "0.3", "--retries", "1",
                           "-o", str(tmp_path), "-q"], env=cli_env(faulty_hub, HF_HOME=str(tmp_path / "hf")),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 40, proc.stderr
    assert proc.stderr.startswith("hfstream: error: hfs-test/tiny-llama-sharded@main: cannot reach")
    manifest = tmp_path / "m.toml"
    manifest.write_text(f'[[model]]\nrepo = "{REPO}"\ntarget_dir = "{tmp_path}/out"\nretries = 1\n'
                        'read_timeout = 0.3\n')
    code, outcomes = mirror(manifest, endpoint=faulty_hub.endpoint)
    assert code == EXIT_RETRYABLE and outcomes[0].exit_code == 40 and outcomes[0].retryable


# --- 7: a trickle, on the API call and on a range -------------------------------------------------------


def _trickle_clock(fake_time, rule):
    """The policy of ``fake_time`` whose elapsed time is the fixture's trickled writes, one second each."""
    from dataclasses import replace

    return replace(fake_time.policy(1), monotonic=lambda: float(rule.trickled))


def test_an_api_answer_that_trickles_is_cut_as_a_stall(faulty_hub, fake_time):
    rule = _fault("trickle", origin="hub", path="^/api/models/", step=16, seconds=0.002)
    faulty_hub.faults.rules = [rule]
    with pytest.raises(errors.NetworkError, match=r"stalled \(\d+ bytes in \d+ s, less than 64 KiB per 50 s\)"):
        hub.resolve(REPO, "main", faulty_hub.endpoint, None, retries=_trickle_clock(fake_time, rule),
                    read_timeout=50)
    assert rule.fired == 2 and len(fake_time.waits) == 1
    assert rule.trickled < 2 * 60  # each attempt cut after ~50 "seconds" of trickle, not at the answer's end


def test_a_range_that_trickles_is_cut_and_counted_retryable(faulty_hub, fake_time, tmp_path):
    rule = _fault("trickle", origin="storage", ranged=True, step=16, seconds=0.002)
    faulty_hub.faults.rules = [rule]
    with pytest.raises(errors.NetworkError, match="stalled") as e:
        hfstream.convert(REPO, outtype="q8_0", endpoint=faulty_hub.endpoint, outfile=tmp_path / "out.gguf",
                         retries=_trickle_clock(fake_time, rule), read_timeout=50)
    assert e.value.retryable  # a mirror counts it with the network failures (exit 75)
    assert fake_time.waits  # and it was retried first
    assert not (tmp_path / "out.gguf").exists()


def test_a_slow_but_steady_answer_is_not_a_stall(faulty_hub, fake_time, tmp_path):
    """The same deadline on a clean run: every body makes its 64 KiB (or ends) in time."""
    r = hfstream.convert(REPO, outtype="q8_0", endpoint=faulty_hub.endpoint, outfile=tmp_path / "out.gguf",
                         retries=fake_time.policy(), read_timeout=50)
    assert r.path.exists() and fake_time.waits == []


# --- 8: a redirect to file:// or ftp:// -------------------------------------------------------------------


@pytest.mark.parametrize("target", ["ftp://files.example/config.json", "file:///etc/passwd"])
def test_a_redirect_away_from_http_is_a_protocol_error_at_once_on_every_request(target, fake_time, tmp_path):
    listing = json.dumps({"id": "org/model", "sha": SHA, "siblings": [{"rfilename": "config.json", "size": 10},
                                                   {"rfilename": "model.safetensors", "size": 1000}]}).encode()

    async def answer(request, entry):
        if request.path.startswith("/api/models/org/redirected-api/"):
            raise web.HTTPFound(target)
        if request.path.startswith("/api/models/"):
            return web.Response(body=listing, content_type="application/json")
        raise web.HTTPFound(target)

    with HostileHub(answer) as h:
        with pytest.raises(errors.ProtocolError, match=rf"redirected to a {target.split(':')[0]}: URL"):
            hub.resolve("org/redirected-api", "main", h.endpoint, None, retries=fake_time.policy())
        with pytest.raises(errors.ProtocolError, match=rf"config.json: the server redirected to a {target[:3]}"):
            hfstream.convert("org/model", endpoint=h.endpoint, outfile=tmp_path, retries=fake_time.policy())
        manifest = tmp_path / "m.toml"
        manifest.write_text(f'[[model]]\nrepo = "org/redirected-api"\ntarget_dir = "{tmp_path}/out"\n')
        code, outcomes = mirror(manifest, endpoint=h.endpoint)
    assert fake_time.waits == []  # no retry: another attempt would be redirected the same way
    assert code == EXIT_PERMANENT and outcomes[0].exit_code == 43 and not outcomes[0].retryable
    assert [e[:2] for e in h.log].count(["GET", "/api/models/org/redirected-api/revision/main"]) == 2


# --- 9: what the Hub sends is bounded as it arrives ------------------------------------------------------


def _gzip_bomb(decoded: int) -> list[bytes]:
    """A listing gzip-encoded: a few hundred KB on the wire, ``decoded`` bytes inflated."""
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = [z.compress(b'{"id": "org/bomb", "sha": "' + SHA.encode() + b'", "siblings": [], "pad": "')]
    block = b"0" * (1 << 20)
    out += [z.compress(block) for _ in range(decoded >> 20)]
    out.append(z.compress(b'"}') + z.flush())
    return [c for c in out if c]


def test_a_gzip_listing_that_inflates_past_the_limit_is_refused_as_it_arrives(fake_time):
    chunks = _gzip_bomb(400 << 20)
    wire = sum(map(len, chunks))

    async def answer(request, entry):
        return await _stream(request, entry, chunks, {"Content-Type": "application/json", "Content-Encoding": "gzip"})

    with HostileHub(answer) as h:
        tracemalloc.start()
        try:
            with pytest.raises(errors.ProtocolError, match=r"file listing is larger than 67108864 bytes decoded"):
                hub.resolve("org/bomb", "main", h.endpoint, None, retries=fake_time.policy())
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert wire < 500_000
    # what was held at most: the refused body up to the limit, and a bounded chunk of inflating
    assert peak < 2 * settings.MAX_LISTING_BYTES, peak
    assert fake_time.waits == []


#: runs argv[2:] and writes the peak resident size of that process tree (KiB) to argv[1]; exits as it did
_LAUNCH = ("import os, subprocess, sys; p = subprocess.Popen(sys.argv[2:]); _, status, usage = os.wait4(p.pid, 0); "
           "open(sys.argv[1], 'w').write(str(usage.ru_maxrss)); sys.exit(os.waitstatus_to_exitcode(status))")


def test_a_listing_of_100k_shard_names_is_refused_without_reading_them_all(tmp_path):
    """100,000 ``model-*.safetensors`` names that do not exist (404): the run stops at the first header
    it cannot read, having asked for a few, in a process whose memory stays that of one conversion.
    (Before: 100,000 header reads at once, 1.7 GB.)"""
    n = 100_000
    siblings = [{"rfilename": f"model-{i:06d}-of-{n:06d}.safetensors", "size": 1_000_000} for i in range(n)]
    from fixtures.hostile import base_files

    config = base_files()["config.json"]
    listing = json.dumps({"id": "org/many", "sha": SHA,
                          "siblings": [{"rfilename": "config.json", "size": len(config)}, *siblings]})
    listing_gz = gzip.compress(listing.encode())

    async def answer(request, entry):
        if request.path.startswith("/api/models/"):
            return await _stream(request, entry, [listing_gz], {"Content-Type": "application/json",
                                                                "Content-Encoding": "gzip"})
        if request.path.endswith("/config.json"):
            return web.Response(body=config)
        return web.Response(status=404, headers={"X-Error-Code": "EntryNotFound"})

    with HostileHub(answer) as h:
        # started by a small launcher: a process forked from this (large) test process counts the
        # test's pages in its peak before it execs, and the launcher's children do not
        peak_file = tmp_path / "peak"
        proc = subprocess.Popen([sys.executable, "-c", _LAUNCH, str(peak_file), sys.executable, "-m", "hfstream",
                                 "convert", "org/many", "-o", str(tmp_path), "-q", "--connections", "8"],
                                env={**cli_env(h), "HF_HOME": str(tmp_path / "hf")},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _, err = proc.communicate()
        peak_kib = int(peak_file.read_text())
        heads = [e for e in h.log if e[1].endswith(".safetensors")]
    assert proc.returncode == errors.MissingFileError.exit_code, err
    assert "model-0000" in err and "not found" in err
    assert len(heads) <= 3 * 8  # the header reads in flight when the first failed: `--connections` at a time
    # the process tree's peak (this conversion and its helpers, the transformers worker included)
    assert peak_kib * 1024 < 900 * 1024 * 1024, peak_kib
