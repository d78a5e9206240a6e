"""Ctrl-C and SIGTERM at any moment: one line, exit 130 (SIGINT) or 143 (SIGTERM), and a rerun that
resumes.

Every moment is an event, not a delay: a process paused just before it imports a module
(``tests/pause_on_import/sitecustomize.py`` says when it is there), or a conversion held midway by
the fixture Hub's ``Gate``. Ctrl-C goes to the whole process group, as a terminal sends it; SIGTERM
to the process only, as a scheduler stopping a job does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hfstream import interrupt
from hfstream.writer import journal_path, lock_path, part_path

from .conftest import ROOT, cli_env

REPO = "hfs-test/tiny-llama-sharded"
ARGS = ["--outtype", "q8_0", "--max-memory", str(1 << 20), "--connections", "2", "-q"]
PAUSE = Path(__file__).with_name("pause_on_import")
HANG_GUARD = 300
LINES = {signal.SIGINT: ("hfstream: error: interrupted; rerun the same command to resume", 130),
         signal.SIGTERM: ("hfstream: error: terminated (SIGTERM); rerun the same command to resume", 143)}


@pytest.fixture(scope="module")
def signal_hub(fixture_root):
    from fixtures.hub import FixtureHub

    with FixtureHub(fixture_root) as h:
        yield h


def _start(hub, tmp_path, out, env=None, **popen):
    return subprocess.Popen([sys.executable, "-m", "hfstream", "convert", REPO, *ARGS, "-o", str(out)],
                            env=cli_env(hub, HF_HOME=str(tmp_path / "hf"), **(env or {})), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, **popen)


def _send(proc, sig):
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)  # Ctrl-C: the terminal signals the whole foreground group
    else:
        proc.send_signal(sig)


def _one_line(proc, sig):
    out, err = proc.communicate(timeout=HANG_GUARD)
    line, code = LINES[sig]
    assert proc.returncode == code, err
    assert err.splitlines() == [line] and out == ""


#: the package's own first imports (the early handler), the command's (numpy, gguf: the heaviest), the
#: pipeline's, taken once the command works (``interrupt.handling``)
MODULES = ["hfstream.errors", "hfstream.cli", "numpy", "gguf", "hfstream.pipeline", "aiohttp"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("module", MODULES)
def test_a_signal_while_the_command_imports_is_one_line(module, sig, signal_hub, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    read_fd, write_fd = os.pipe()
    try:
        proc = _start(signal_hub, tmp_path, out, pass_fds=(write_fd,),
                      env={"PYTHONPATH": f"{PAUSE}{os.pathsep}{ROOT}", "HFSTREAM_TEST_PAUSE_AT": module,
                           "HFSTREAM_TEST_PAUSE_FD": str(write_fd)})
        os.close(write_fd)
        with os.fdopen(read_fd) as said:
            word = said.readline()
        assert word == f"paused before importing {module}\n", proc.communicate(timeout=HANG_GUARD)
        _send(proc, sig)
        _one_line(proc, sig)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert list(out.iterdir()) == []


def _held_midway(hub, tmp_path, out):
    from fixtures.hub import Gate

    hub.gate = Gate(allow=6)
    proc = _start(hub, tmp_path, out)
    if not hub.gate.wait_held():
        proc.kill()
        pytest.fail(f"the conversion never asked for more than 6 ranges: {proc.communicate()[1]}")
    while not (journal_path(out).exists() and len(journal_path(out).read_text().splitlines()) > 1):
        if proc.poll() is not None:
            pytest.fail(f"the conversion ended while held: {proc.stderr.read()}")
        time.sleep(0.02)  # polling for an event (a journaled unit), not waiting for time to pass
    return proc


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_midway_keeps_what_a_rerun_resumes_from(sig, signal_hub, tmp_path):
    out = tmp_path / "out.gguf"
    proc = _held_midway(signal_hub, tmp_path, out)
    try:
        _send(proc, sig)
        _one_line(proc, sig)
    finally:
        signal_hub.gate.open()
    assert not out.exists() and part_path(out).exists() and not lock_path(out).exists()
    journaled = len(journal_path(out).read_text().splitlines()) - 1
    assert journaled >= 1
    rerun = subprocess.run([sys.executable, "-m", "hfstream", "convert", REPO, *ARGS, "-o", str(out)],
                           env=cli_env(signal_hub, HF_HOME=str(tmp_path / "hf")), capture_output=True, text=True,
                           timeout=HANG_GUARD)
    assert rerun.returncode == 0, rerun.stderr
    assert out.exists() and not part_path(out).exists() and not journal_path(out).exists()


def test_only_the_command_installs_handlers_at_import(monkeypatch):
    """A program that imports hfstream keeps its own signal handling; ``python -m hfstream`` and the
    ``hfstream`` script do not."""
    cases = {("python", "-m", "hfstream", "convert"): True, ("python", "-X", "importtime", "-m", "hfstream"): True,
             ("python", "-mhfstream"): True, ("python", "-m", "pytest"): False, ("python", "script.py"): False,
             ("python", "-c", "import hfstream"): False}
    for orig, expected in cases.items():
        monkeypatch.setattr(sys, "orig_argv", list(orig))
        monkeypatch.setattr(sys, "argv", [orig[-1]])
        assert interrupt.started_as_the_command() is expected, orig
    monkeypatch.setattr(sys, "argv", ["/usr/local/bin/hfstream", "convert"])
    assert interrupt.started_as_the_command()


def test_the_command_line_in_this_process_leaves_its_handlers_as_they_were(fresh_hub, tmp_path, capsys):
    from hfstream import cli

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    assert cli.main(["convert", "hfs-test/does-not-exist", "-o", str(tmp_path), "-q"]) == 10
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
