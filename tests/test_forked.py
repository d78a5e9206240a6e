"""Forked children: the one that builds the vocabulary and header while units stream, and the CLI's
one that resolves the repo while the pipeline is imported."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time

import pytest

import hfstream
from hfstream import cli, errors, forked, pipeline

from .conftest import ROOT
from .goldens.digest import diff_digests, digest_gguf
from .test_convert import comparable

pytestmark = pytest.mark.skipif(not forked.available(), reason="forks on Linux only")

REPO = "hfs-test/tiny-llama-sharded"
_STATE = {"touched": False}


def _touch_and_return(value):
    _STATE["touched"] = True
    return {"pid": os.getpid(), "value": value}


def _fail(exc):
    raise exc


def _die():
    os.kill(os.getpid(), signal.SIGKILL)


class _Unpicklable(Exception):
    def __init__(self, a, b):  # pickling calls cls(*args): one argument only, so unpickling fails
        super().__init__(f"{a}/{b}")
        # and a lock does not pickle at all: without it, tblib's reducer (which dask's distributed
        # installs for every exception class once imported, as test_mirror does) would pickle this one
        self.lock = threading.Lock()


def _raised(call) -> BaseException | None:
    try:
        call()
    except BaseException as e:  # noqa: B036 - what the call raised is the value
        return e
    return None


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_the_result_comes_back_from_another_process_whose_changes_stay_there():
    fds = _open_fds()
    answer = forked.call("work", _touch_and_return, [1, "two", b"3"])
    assert answer["value"] == [1, "two", b"3"]
    assert answer["pid"] != os.getpid()
    assert _STATE["touched"] is False  # the child's memory is its own
    assert _open_fds() == fds  # the pipe is closed
    with pytest.raises(ChildProcessError):
        os.waitpid(answer["pid"], os.WNOHANG)  # and the child reaped: no zombie


def test_an_error_in_the_child_is_raised_here_with_its_type_and_message():
    with pytest.raises(errors.UnsupportedTokenizerError, match="tokenizer.json: bad") as info:
        forked.call("work", _fail, errors.UnsupportedTokenizerError("tokenizer.json: bad"))
    assert info.value.exit_code == errors.UnsupportedTokenizerError.exit_code
    with pytest.raises(KeyError):
        forked.call("work", _fail, KeyError("k"))


def test_an_error_that_does_not_pickle_still_says_what_it_was():
    with pytest.raises(RuntimeError, match="_Unpicklable: x/y"):
        forked.call("work", _fail, _Unpicklable("x", "y"))


def _interrupted():
    os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_in_the_child_is_an_interrupt_here():
    with pytest.raises(KeyboardInterrupt):
        forked.call("work", _interrupted)


def test_a_child_killed_before_answering_is_a_clear_error():
    with pytest.raises(errors.HelperDiedError, match=r"work: the child process was killed by signal 9 \(out of memory\?\)"):
        forked.call("work", _die)


def test_a_hub_conversion_builds_its_vocabulary_in_a_child_and_a_local_one_here(fresh_hub, fixture_root, tmp_path,
                                                                               monkeypatch):
    """Where the first units stream early, the vocabulary is built in another process; with nothing
    to overlap (a local source), here."""
    real = pipeline.with_vocab
    pid_file = tmp_path / "pid"

    def recording(draft):
        pid_file.write_text(str(os.getpid()))
        return real(draft)

    monkeypatch.setattr(pipeline, "with_vocab", recording)
    hub_out = hfstream.convert(REPO, outtype="q8_0", outfile=tmp_path / "hub.gguf")
    assert int(pid_file.read_text()) != os.getpid()
    info = json.loads((fixture_root / REPO / "repo.json").read_text())
    model_dir = tmp_path / "tiny-llama-sharded"
    shutil.copytree(fixture_root / REPO / "commits" / info["refs"]["main"], model_dir)
    local_out = hfstream.convert(str(model_dir), outtype="q8_0", outfile=tmp_path / "local.gguf")
    assert int(pid_file.read_text()) == os.getpid()
    # the same file either way, header included (only the source keys differ)
    assert diff_digests(comparable(digest_gguf(hub_out.path)), comparable(digest_gguf(local_out.path))) == []


def test_a_killed_helper_exits_70_and_leaves_nothing(fresh_hub, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pipeline, "with_vocab", lambda draft: _die())
    out = tmp_path / "out.gguf"
    rc = cli.main(["convert", REPO, "--outtype", "q8_0", "-o", str(out), "-q"])
    assert rc == errors.HelperDiedError.exit_code == 70
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "building the vocabulary and header: the child process was killed" in err
    assert list(tmp_path.iterdir()) == []


def _sleep_forever():
    import time

    time.sleep(3600)


def test_a_started_child_answers_later_and_a_cancelled_one_is_gone():
    pending = forked.start("work", _touch_and_return, "later")
    assert pending.result()["value"] == "later"
    assert pending.result()["value"] == "later"  # asked again: the same answer
    pending.cancel()  # answered already: nothing to stop

    sleeper = forked.start("sleeping", _sleep_forever)
    pid = sleeper._pid
    sleeper.cancel()
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # killed and reaped
    with pytest.raises(RuntimeError, match="sleeping: cancelled"):
        sleeper.result()


def test_a_child_cancelled_while_another_thread_waits_for_it_is_reaped_once():
    """The run stopped while a thread waits for the child's answer: ``cancel`` kills the child, the waiting
    thread gets an error, the child is reaped and its pipe closed once (no descriptor of someone else's)."""
    before = _open_fds()
    sleeper = forked.start("sleeping", _sleep_forever)
    pid = sleeper._pid
    outcome: dict = {}
    waiting = threading.Thread(target=lambda: outcome.setdefault("error", _raised(sleeper.result)))
    waiting.start()
    deadline = time.monotonic() + 60  # a guard, not a timing: it waits for the thread to be reading
    while not sleeper._reading.locked() and time.monotonic() < deadline:
        time.sleep(0.001)
    sleeper.cancel()
    waiting.join(60)
    assert not waiting.is_alive()
    assert isinstance(outcome["error"], errors.HelperDiedError) and "signal 9" in str(outcome["error"])
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    assert _open_fds() == before


def test_when_fork_fails_the_work_is_done_here(monkeypatch):
    def no_fork():
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(forked.os, "fork", no_fork)
    answer = forked.start("work", _touch_and_return, 5)
    assert answer.result() == {"pid": os.getpid(), "value": 5} and _STATE.pop("touched") is True
    with pytest.raises(KeyError):
        forked.start("work", _fail, KeyError("k")).result()


def test_the_cli_resolves_the_repo_in_a_child_while_it_imports_the_pipeline(fresh_hub, tmp_path, monkeypatch):
    from hfstream import hub

    real = hub.resolve_with_token
    pid_file = tmp_path / "pid"

    def recording(*args, **kw):
        pid_file.write_text(str(os.getpid()))
        return real(*args, **kw)

    monkeypatch.setattr(hub, "resolve_with_token", recording)
    assert cli.main(["convert", REPO, "--outtype", "q8_0", "-o", str(tmp_path / "cli.gguf"), "-q"]) == 0
    assert int(pid_file.read_text()) != os.getpid()
    hfstream.convert(REPO, outtype="q8_0", outfile=tmp_path / "api.gguf")  # the API resolves here
    assert int(pid_file.read_text()) == os.getpid()
    assert (tmp_path / "cli.gguf").read_bytes() == (tmp_path / "api.gguf").read_bytes()


def test_importing_the_cli_leaves_the_pipeline_for_after_the_fork():
    """What the resolving child saves depends on it: the parent imports the pipeline meanwhile."""
    import subprocess
    import sys

    code = "import sys, hfstream.cli; print(sorted(m for m in ('aiohttp', 'huggingface_hub', 'hfstream.pipeline') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_killed_resolver_exits_70(fresh_hub, tmp_path, monkeypatch, capsys):
    from hfstream import hub

    monkeypatch.setattr(hub, "resolve_with_token", lambda *a, **k: _die())
    rc = cli.main(["convert", REPO, "--outtype", "q8_0", "-o", str(tmp_path / "out.gguf"), "-q"])
    assert rc == 70
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"resolving {REPO}@main: the child process was killed" in err
    assert list(tmp_path.iterdir()) == []


_CTRL_C_AT_FORK = """
import os, sys
from hfstream import forked
ready, go = int(sys.argv[1]), int(sys.argv[2])

def in_child():  # after Python's own after-fork hooks, before the child's work
    os.write(ready, b"forked")
    os.read(go, 1)  # the test has signalled the whole group by now

os.register_at_fork(after_in_child=in_child)
try:
    forked.call("adding", sum, [1, 2])
except BaseException as e:
    print(type(e).__name__)
"""


def test_ctrl_c_as_the_child_starts_prints_nothing_from_the_child():
    """Ctrl-C signals the whole group; one arriving while the new child still runs the after-fork hooks
    was taken there by the parent's handler, and Python printed "Exception ignored in ..." beside the
    CLI's one line. The signal is held across the fork now, so the child ends quietly."""
    import subprocess
    import sys

    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    proc = subprocess.Popen([sys.executable, "-c", _CTRL_C_AT_FORK, str(ready_w), str(go_r)],
                            pass_fds=(ready_w, go_r), start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    os.close(ready_w)
    os.close(go_r)
    try:
        assert os.read(ready_r, 6) == b"forked"
        os.killpg(proc.pid, signal.SIGINT)
        os.write(go_w, b"g")
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(ready_r)
        os.close(go_w)
        if proc.poll() is None:
            proc.kill()
    assert "Exception ignored" not in err and "Traceback" not in err, err
    assert out.strip() == "KeyboardInterrupt"
