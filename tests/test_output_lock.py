"""Two runs on one output: the second is refused at once, naming the first; a killed run's lock is
taken over. Never a file at the output path that is not what some run wrote.

"At the same time" is made by events: the first run is held midway by the fixture Hub's ``Gate``
(its lock file is there, a tensor request is held), and only then is the second one started.
"""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys

import pytest

import hfstream
from hfstream import errors
from hfstream.writer import journal_path, lock_path, part_path

from .conftest import cli_env

REPO = "hfs-test/tiny-llama-sharded"
ARGS = ["--outtype", "q8_0", "--max-memory", str(1 << 20), "--connections", "2", "-q"]
#: tensor-data requests the first run may make before the Gate holds it (it makes ~20)
ALLOWED = 6
#: a hang guard, not a measure: a run blocked by a bug fails the test instead of stalling CI
HANG_GUARD = 300


@pytest.fixture
def gated_hub(fixture_root):
    from fixtures.hub import FixtureHub

    with FixtureHub(fixture_root) as h:
        yield h


@pytest.fixture
def clean_digest(gated_hub, tmp_path):
    out = hfstream.convert(REPO, outtype="q8_0", max_memory=1 << 20, endpoint=gated_hub.endpoint,
                           outfile=tmp_path / "clean.gguf").path
    return hashlib.sha256(out.read_bytes()).hexdigest()


def _run(hub, tmp_path, out, *extra):
    return subprocess.Popen([sys.executable, "-m", "hfstream", "convert", REPO, *ARGS, *extra, "-o", str(out)],
                            env=cli_env(hub, HF_HOME=str(tmp_path / "hf")), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _held_midway(hub, tmp_path, out):
    """The first run, once it holds its lock and the Gate holds one of its tensor requests."""
    from fixtures.hub import Gate

    hub.gate = Gate(allow=ALLOWED)
    proc = _run(hub, tmp_path, out)
    if not hub.gate.wait_held():
        proc.kill()
        pytest.fail(f"the run never asked for more than {ALLOWED} ranges: {proc.communicate()[1]}")
    assert proc.poll() is None
    return proc


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_second_run_on_the_same_output_is_refused_at_once_and_names_the_first(gated_hub, clean_digest, tmp_path):
    out = tmp_path / "out.gguf"
    first = _held_midway(gated_hub, tmp_path, out)
    try:
        # another outtype and --force: without the lock it would rename its file into place under the first
        second = subprocess.run([sys.executable, "-m", "hfstream", "convert", REPO, *ARGS, "--outtype", "f16",
                                 "--force", "-o", str(out)], env=cli_env(gated_hub, HF_HOME=str(tmp_path / "hf")),
                                capture_output=True, text=True, timeout=HANG_GUARD)
        assert second.returncode == errors.OutputBusyError.exit_code == 52, second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("hfstream: error: another hfstream run")
        assert f"(pid {first.pid})" in lines[0] and str(out) in lines[0]
        assert first.poll() is None and not out.exists()  # the first run goes on, untouched
        assert lock_path(out).exists()
    finally:
        gated_hub.gate.open()
    _, err = first.communicate(timeout=HANG_GUARD)
    assert first.returncode == 0, err
    assert _digest(out) == clean_digest
    assert not lock_path(out).exists() and not part_path(out).exists()


def test_the_lock_of_a_killed_run_is_taken_over(gated_hub, clean_digest, tmp_path):
    out = tmp_path / "out.gguf"
    first = _held_midway(gated_hub, tmp_path, out)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=HANG_GUARD)
    assert lock_path(out).read_text().split()[0] == str(first.pid)  # left behind, but nobody holds it
    gated_hub.gate.open()
    rerun = _run(gated_hub, tmp_path, out)
    _, err = rerun.communicate(timeout=HANG_GUARD)
    assert rerun.returncode == 0, err
    assert _digest(out) == clean_digest
    assert not lock_path(out).exists() and not journal_path(out).exists()


def test_runs_in_one_process_on_one_output_are_refused_too(gated_hub, tmp_path):
    """The lock is per open file, so two conversions in one process (a mirror on threads) exclude
    each other as two processes do."""
    from hfstream.writer import OutputLock

    out = tmp_path / "out.gguf"
    with OutputLock(out):
        with pytest.raises(errors.OutputBusyError, match=r"\(pid \d+\) is writing .*out\.gguf"):
            hfstream.convert(REPO, outtype="q8_0", endpoint=gated_hub.endpoint, outfile=out)
        assert not part_path(out).exists()
    assert hfstream.convert(REPO, outtype="q8_0", endpoint=gated_hub.endpoint, outfile=out).path == out
