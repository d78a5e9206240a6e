"""Broken and hostile repos through the CLI: one line naming the file and the problem, its own exit
code, no traceback, nothing left in the output directory. The corpus is ``fixtures/hostile.py``.

Every case runs through ``cli.main`` in this process (a new interpreter per case cost ~100 s of
start-up on the whole corpus); ``SUBPROCESS_CASES`` also run as the real command, where an error
before or outside ``main`` (an import, the entry point) would show.
"""

from __future__ import annotations

import contextlib
import faulthandler
import io
import os
import subprocess
import sys
from dataclasses import dataclass

import pytest

from fixtures.hostile import CASES, CASES_BY_NAME, Case, build_corpus
from hfstream import cli, settings

from .conftest import cli_env

#: a case still running after this many seconds hangs: the test process is stopped with a traceback
#: (a guard against a hang taking CI down, not a measure of speed)
HANG_GUARD = 300
#: cases also run as a separate ``python -m hfstream`` process
SUBPROCESS_CASES = ("config-not-json", "header-length-zero", "index-dotdot")


@dataclass
class Outcome:
    returncode: int | None
    stdout: str
    stderr: str
    left_behind: list[str]


@pytest.fixture(scope="session")
def hostile_hub(tmp_path_factory):
    """The corpus written to a temporary fixture-Hub root, served by a FixtureHub of its own."""
    from fixtures.hub import FixtureHub

    root = tmp_path_factory.mktemp("hostile-repos")
    build_corpus(root)
    with FixtureHub(root) as hub:
        yield hub


def _left_behind(where) -> list[str]:
    return sorted(str(p.relative_to(where)) for p in where.rglob("*")
                  if p.is_file() and "hf" not in p.relative_to(where).parts[:1])


@pytest.fixture(scope="session")
def outcomes(hostile_hub, tmp_path_factory) -> dict[str, Outcome]:
    """Every case run once through ``cli.main``, one after another, in this process."""
    work = tmp_path_factory.mktemp("hostile-runs")
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    results = {}
    faulthandler.dump_traceback_later(HANG_GUARD, exit=True)
    try:
        os.environ.pop("HF_TOKEN", None)
        os.environ["HF_ENDPOINT"] = hostile_hub.endpoint
        for case in CASES:
            where = work / case.name
            (where / "out").mkdir(parents=True)
            os.environ["HF_HOME"] = str(where / "hf")
            os.chdir(where)
            stdout, stderr = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
                code = cli.main(["convert", case.repo_id, "-o", str(where / "out"), "-q"])
            results[case.name] = Outcome(code, stdout.getvalue(), stderr.getvalue(), _left_behind(where))
    finally:
        faulthandler.cancel_dump_traceback_later()
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    return results


@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_the_command_itself_refuses_with_one_line_too(name, hostile_hub, tmp_path):
    case = CASES_BY_NAME[name]
    (tmp_path / "out").mkdir()
    proc = subprocess.run([sys.executable, "-m", "hfstream", "convert", case.repo_id, "-o", str(tmp_path / "out"), "-q"],
                          env=cli_env(hostile_hub, HF_HOME=str(tmp_path / "hf")), cwd=tmp_path,
                          capture_output=True, text=True, timeout=HANG_GUARD)
    assert proc.returncode == case.code, proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("hfstream: error: ") and proc.stdout == ""
    assert _left_behind(tmp_path) == []


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


def test_a_yaml_alias_bomb_is_refused_by_counting_not_by_walking_it(outcomes):
    """The card expands to 10^6 values through aliases; the check stops counting at its limit."""
    from hfstream import errors, meta

    assert outcomes["readme-alias-bomb"].returncode == CASES_BY_NAME["readme-alias-bomb"].code
    levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for prev, name in zip("abcde", "bcdef"):
        levels.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 10)}]")
    with pytest.raises(errors.InvalidConfigError, match=str(meta.MAX_CARD_VALUES)):
        meta.model_card(("---\n" + "\n".join(levels) + "\n---\n").encode())
