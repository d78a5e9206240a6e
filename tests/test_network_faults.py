"""Conversions through a misbehaving Hub: every survivable fault still gives the clean run's bytes;
a server that breaks the protocol stops the run at once with one clear error.

The retry policy runs on a fake clock (``conftest.FakeTime``): nothing waits out a backoff, and each
test reads the waits the policy chose (what the server asked for, or backoff).
"""

from __future__ import annotations

import hashlib

import pytest

import hfstream
from hfstream import errors

from .conftest import FakeTime

REPO = "hfs-test/tiny-llama-sharded"
OPTS = dict(outtype="q8_0", max_memory=1 << 20)


@pytest.fixture(scope="module")
def faulty_hub(fixture_root):
    """One hub for the module; each test sets its fault rules and clears them after."""
    from fixtures.hub import FixtureHub

    with FixtureHub(fixture_root) as h:
        yield h


@pytest.fixture(scope="module")
def clean_digest(faulty_hub, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean") / "clean.gguf"
    clock = FakeTime()
    hfstream.convert(REPO, endpoint=faulty_hub.endpoint, outfile=out, retries=clock.policy(), **OPTS)
    assert clock.waits == []
    return hashlib.sha256(out.read_bytes()).hexdigest()


def _fault(kind, **kw):
    from fixtures.hub import Fault

    return Fault(kind, **kw)


SURVIVABLE = {
    "dropped-connections": lambda: [_fault("drop", origin="storage", ranged=True, probability=0.3)],
    "429-storm-with-ratelimit": lambda: [_fault("429", count=6, seconds=55)],
    "429-with-retry-after": lambda: [_fault("429", origin="storage", count=3, seconds=7, retry_after=True)],
    "503s": lambda: [_fault("503", count=5, seconds=2, retry_after=True)],
    "stall": lambda: [_fault("stall", origin="storage", ranged=True, count=1, seconds=3.0)],
    "expiring-storage-url": lambda: [_fault("expire", origin="storage", ranged=True, count=2)],
}

#: what the policy must have waited after each fault: (smallest, largest) of every wait
WAITS = {
    "dropped-connections": (0.25, 0.5 * 2 ** 8 * 1.5),  # backoff: nothing was asked
    "429-storm-with-ratelimit": (56, 56 * 1.1),  # RateLimit t=55, plus the second its rounding hides
    "429-with-retry-after": (7, 7 * 1.1),  # Retry-After: 7 wins over RateLimit's t
    "503s": (2, 2 * 1.1),
    "stall": (0.25, 0.75),  # one stalled range, timed out: the first backoff
    "expiring-storage-url": (0, 0),  # resolved again at once
}


@pytest.mark.parametrize("name", list(SURVIVABLE))
def test_conversion_under_faults_is_byte_identical(name, faulty_hub, clean_digest, tmp_path, fake_time):
    faulty_hub.faults.rules = SURVIVABLE[name]()
    faulty_hub.faults.seed = 7
    faulty_hub.clear_log()
    try:
        r = hfstream.convert(REPO, endpoint=faulty_hub.endpoint, outfile=tmp_path / "out.gguf",
                             retries=fake_time.policy(), **OPTS, **({"read_timeout": 1.0} if name == "stall" else {}))
    finally:
        fired = sum(rule.fired for rule in faulty_hub.faults.rules)
        faulty_hub.faults.rules = []
    assert fired > 0, "the fault never fired: the test proves nothing"
    assert hashlib.sha256(r.path.read_bytes()).hexdigest() == clean_digest
    # one wait per fault that cost an attempt (a dropped body may have been a range's last bytes),
    # each what the server asked for when it said
    assert 0 < len(fake_time.waits) <= fired
    low, high = WAITS[name]
    assert all(low <= w <= high for w in fake_time.waits), fake_time.waits
    if name == "expiring-storage-url":
        resolves = [e for e in faulty_hub.log if e["origin"] == "hub" and "/resolve/" in e["path"]
                    and e["path"].endswith(".safetensors")]
        assert len(resolves) > 3  # expired URLs were resolved again


@pytest.mark.parametrize("kind", ["wrong_range", "ignore_range"])
def test_protocol_breakage_stops_at_once(kind, faulty_hub, tmp_path, fake_time):
    faulty_hub.faults.rules = [_fault(kind, origin="storage", ranged=True)]
    faulty_hub.clear_log()
    try:
        with pytest.raises(errors.ProtocolError, match="Range" if kind == "ignore_range" else "Content-Range"):
            hfstream.convert(REPO, endpoint=faulty_hub.endpoint, outfile=tmp_path / "out.gguf",
                             retries=fake_time.policy(), **OPTS)
    finally:
        faulty_hub.faults.rules = []
    # it stopped at the first bad answer instead of downloading the files (what the server pushed into
    # socket buffers before the client hung up is counted too, so compare with the whole weights)
    storage_bytes = sum(e["bytes_sent"] for e in faulty_hub.log if e["origin"] == "storage")
    assert storage_bytes < 15_000_000 / 2
    assert list(tmp_path.iterdir()) == []
