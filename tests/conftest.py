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
