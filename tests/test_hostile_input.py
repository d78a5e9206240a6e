"""Broken and hostile repos through the CLI: one line naming the file and the problem, its own exit
code, no traceback, nothing left in the output directory. The corpus is ``fixtures/hostile.py``."""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from fixtures.hostile import CASES, CASES_BY_NAME, Case, build_corpus
from hfstream import settings

from .conftest import cli_env

#: a case that runs longer than this hangs (the slowest take ~3 s on two cores)
TIMEOUT = 60


@dataclass
class Outcome:
    returncode: int | None
    stdout: str
    stderr: str
    left_behind: list[str]
    seconds: float


@pytest.fixture(scope="session")
def hostile_hub(tmp_path_factory):
    """The corpus written to a temporary fixture-Hub root, served by a FixtureHub of its own."""
    from fixtures.hub import FixtureHub

    root = tmp_path_factory.mktemp("hostile-repos")
    build_corpus(root)
    with FixtureHub(root) as hub:
        yield hub


@pytest.fixture(scope="session")
def outcomes(hostile_hub, tmp_path_factory) -> dict[str, Outcome]:
    """Every case run once through the CLI, a few at a time (the runs mostly wait on imports)."""
    work = tmp_path_factory.mktemp("hostile-runs")

    def run(case: Case) -> Outcome:
        out = work / case.name / "out"
        out.mkdir(parents=True)
        started = time.monotonic()
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "hfstream", "convert", case.repo_id, "-o", str(out), "-q"],
                env=cli_env(hostile_hub, HF_HOME=str(work / case.name / "hf")), cwd=work / case.name,
                capture_output=True, text=True, timeout=TIMEOUT)
            code, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
        except subprocess.TimeoutExpired as e:
            code, stdout, stderr = None, str(e.stdout or ""), str(e.stderr or "")
        left = sorted(str(p.relative_to(work / case.name)) for p in (work / case.name).rglob("*")
                      if p.is_file() and "hf" not in p.relative_to(work / case.name).parts[:1])
        return Outcome(code, stdout, stderr, left, time.monotonic() - started)

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip((c.name for c in CASES), pool.map(run, CASES)))


def test_the_corpus_is_big_enough_and_every_line_must_name_a_file():
    assert len(CASES) >= 30
    assert len({c.error for c in CASES}) >= 5
    for case in CASES:
        assert any(w.endswith(FILE_SUFFIXES) or ".safetensors" in w for w in case.words), case.name


FILE_SUFFIXES = (".json", ".safetensors", ".model", ".md")


@pytest.mark.parametrize("case", [
    pytest.param(c, marks=pytest.mark.xfail(strict=True, reason=c.pending)) if c.pending else c for c in CASES
], ids=[c.name for c in CASES])
def test_hostile_repo_is_refused_with_one_clear_line(case: Case, outcomes):
    o = outcomes[case.name]
    assert o.returncode is not None, f"{case.name} hung (> {TIMEOUT} s)"
    assert o.returncode == case.code, o.stderr
    assert "Traceback" not in o.stderr
    lines = o.stderr.strip().splitlines()
    assert len(lines) == 1, o.stderr
    assert lines[0].startswith("hfstream: error: ")
    for word in case.words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    assert "internal error" not in lines[0]
    assert o.stdout == ""
    # nothing written: no output, no .part, no journal
    assert o.left_behind == []


def test_a_huge_metadata_file_is_refused_from_the_listing_without_reading_it(outcomes, hostile_hub):
    case = CASES_BY_NAME["config-too-large"]
    assert outcomes[case.name].returncode == case.code
    size = 200 * 1024 * 1024
    assert settings.MAX_SMALL_FILE_BYTES < size
    asked = [e for e in hostile_hub.log if f"/{case.repo_id}/resolve/" in e["path"] and e["path"].endswith("/config.json")]
    assert asked == [], "config.json was requested although the listing says it is too large"
    assert sum(e["bytes_sent"] for e in hostile_hub.log if e["origin"] == "storage") < size


def test_a_yaml_alias_bomb_does_not_hang(outcomes):
    assert outcomes["readme-alias-bomb"].seconds < 20
