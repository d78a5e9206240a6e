"""Shared test setup: the repo root is importable, the fixture repos are built once, one fixture Hub serves them."""

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

GOLDENS = ROOT / "tests" / "goldens" / "models"


@pytest.fixture(scope="session")
def fixture_root() -> Path:
    """The fixture repos, built (or reused when unchanged) under fixtures/repos."""
    from fixtures.build import DEFAULT_ROOT, build

    build(DEFAULT_ROOT)
    return DEFAULT_ROOT


@pytest.fixture(scope="session")
def hub(fixture_root):
    """One fixture Hub for the session; each test starts with an empty request log (see ``fresh_hub``)."""
    from fixtures.hub import FixtureHub

    with FixtureHub(fixture_root) as h:
        yield h


@pytest.fixture
def fresh_hub(hub, monkeypatch, tmp_path):
    """The session Hub with an empty log, HF_ENDPOINT pointing at it, and no token or HF cache leaking in."""
    hub.clear_log()
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    yield hub


def golden(name: str) -> dict:
    return json.loads((GOLDENS / f"{name}.json").read_text())


def cli_env(hub, **extra) -> dict:
    """Environment for running the CLI as a subprocess against the fixture Hub."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN",)}
    env.update({"HF_ENDPOINT": hub.endpoint, "PYTHONPATH": str(ROOT)})
    env.update(extra)
    return env


class FakeTime:
    """A clock that moves only when something sleeps, for ``RetryPolicy``: a fault test does not wait
    out the backoff (seconds of it per fault), and can still read every wait the policy chose."""

    def __init__(self, now: float = 1_700_000_000.0):
        self.now = now
        self.waits: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds

    async def async_sleep(self, seconds: float) -> None:
        import asyncio

        self.sleep(seconds)
        await asyncio.sleep(0)  # still a point where other tasks run, as a real sleep is

    def policy(self, retries: int = 8, **kw):
        from hfstream.retry import RetryPolicy

        return RetryPolicy(retries=retries, sleep=self.sleep, async_sleep=self.async_sleep, clock=self.clock, **kw)


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()
