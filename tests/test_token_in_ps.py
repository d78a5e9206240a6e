"""``--token`` does not stay in the command line other users see (``ps``, ``/proc/<pid>/cmdline``): not
in the process's, not in the helpers' it forks. (HF_TOKEN or the cached login are never there at all:
the README recommends them.)

The moment is an event: the Hub holds the repo's API call (a ``stall`` fault), so the child process
that resolves the repo is alive and waiting on it while the test reads every process's command line.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import cli_env

SECRET = "hf_fixture_good"
HANG_GUARD = 300


def _tree(pid: int) -> list[int]:
    """``pid`` and every process descended from it."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        ppid = int(text[text.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += children.get(p, [])
    return tree


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and the argv region are Linux's")
def test_the_token_is_in_no_command_line_of_the_run_or_its_helpers(fixture_root, tmp_path):
    from fixtures.hub import Fault, FixtureHub

    with FixtureHub(fixture_root) as hub:
        rule = Fault("stall", origin="hub", path="^/api/models/", after_bytes=0, seconds=60)
        hub.faults.rules = [rule]
        proc = subprocess.Popen([sys.executable, "-m", "hfstream", "convert", "hfs-test/gated-llama", "--token", SECRET,
                                 "-o", str(tmp_path), "-q"], env=cli_env(hub, HF_HOME=str(tmp_path / "hf")),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            while rule.fired == 0:  # the resolving child has asked, and is held
                if proc.poll() is not None:
                    pytest.fail(proc.stderr.read())
                time.sleep(0.02)
            tree = _tree(proc.pid)
            lines = {p: Path(f"/proc/{p}/cmdline").read_bytes() for p in tree if Path(f"/proc/{p}").exists()}
        finally:
            os.killpg(proc.pid, signal.SIGKILL)  # the command and the child it forked
            proc.communicate(timeout=HANG_GUARD)
            hub.faults.rules = []
    assert len(lines) >= 2  # the command and at least its resolving child
    assert all(SECRET.encode() not in line for line in lines.values()), lines
    assert b"--token\0" + b"*" * len(SECRET) in lines[proc.pid]
    # the token did go where it belongs: to the Hub, with the API call
    assert any(e["auth_token"] == SECRET for e in hub.log if e["path"].startswith("/api/models/"))
