"""A real process killed midway (SIGKILL, or Ctrl-C) and rerun: same bytes, only unfinished units fetched again."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import time

import pytest

from hfstream import hub as hubmod
from hfstream.fetch import HubSource
from hfstream.layout import layout
from hfstream.pipeline import _headers, _shards, _small_files
from hfstream.units import unit_target, units_for
from hfstream.plan import make_plan
from hfstream.writer import journal_path, part_path

from .conftest import cli_env

REPO = "hfs-test/tiny-llama-sharded"
BUDGET = 1 << 20
ARGS = ["--outtype", "q8_0", "--max-memory", str(BUDGET), "--connections", "2", "-q"]


@pytest.fixture
def slow_hub(fixture_root):
    """Its own fixture Hub with a slow link, so a conversion is still running when we kill it."""
    from fixtures.hub import FixtureHub, Throttle

    with FixtureHub(fixture_root, throttle=Throttle(total_rate=3_000_000)) as h:
        yield h


def _units(endpoint: str):
    async def plan_units():
        snap = hubmod.resolve(REPO, "main", endpoint, None)
        async with HubSource(snap, None) as src:
            files = await _small_files(src, snap)
            shards = _shards(snap, files)
            headers, _ = await _headers(src, snap, shards)
            plan = make_plan(repo_name=snap.name, files=files, headers=headers, shards=shards, outtype="q8_0",
                             source=(snap.repo_id, snap.sha))
        lay = layout(plan)
        return [u for t in plan.tensors for u in units_for(t, lay.offsets[t.name], unit_target(BUDGET))]

    return asyncio.run(plan_units())


def _journal(out) -> set[tuple[int, int]]:
    lines = journal_path(out).read_text().splitlines()[1:]
    return {(int(a), int(b)) for a, b, _ in (line.split() for line in lines if len(line.split()) == 3)}


def _start(hub, out, tmp_path):
    return subprocess.Popen([sys.executable, "-m", "hfstream", "convert", REPO, *ARGS, "-o", str(out)],
                            env=cli_env(hub, HF_HOME=str(tmp_path / "hf")), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for_journal(proc, out, entries: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if journal_path(out).exists() and len(_journal(out)) >= entries:
            return
        if proc.poll() is not None:
            pytest.fail(f"the conversion ended before it could be interrupted: {proc.stderr.read()}")
        time.sleep(0.05)
    pytest.fail("the journal did not grow")


def test_sigkill_midway_then_rerun(slow_hub, tmp_path):
    clean = tmp_path / "clean.gguf"
    slow_hub.throttle.total_rate = None
    assert subprocess.run([sys.executable, "-m", "hfstream", "convert", REPO, *ARGS, "-o", str(clean)],
                          env=cli_env(slow_hub, HF_HOME=str(tmp_path / "hf")), timeout=120).returncode == 0
    slow_hub.throttle.total_rate = 3_000_000

    out = tmp_path / "out.gguf"
    proc = _start(slow_hub, out, tmp_path)
    _wait_for_journal(proc, out, entries=8)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not out.exists() and part_path(out).exists()
    done = _journal(out)

    slow_hub.throttle.total_rate = None
    units = _units(slow_hub.endpoint)
    todo = [u for u in units if (u.offset, u.nbytes) not in done]
    assert 0 < len(todo) < len(units)
    slow_hub.clear_log()
    rerun = subprocess.run([sys.executable, "-m", "hfstream", "convert", REPO, *ARGS, "-o", str(out)],
                           env=cli_env(slow_hub, HF_HOME=str(tmp_path / "hf")), capture_output=True, text=True,
                           timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(clean.read_bytes()).digest()
    storage = [e for e in slow_hub.log if e["origin"] == "storage"]
    header_reads = sum(e["bytes_sent"] for e in storage if e["range"] and e["range"].startswith("bytes=0-"))
    tensor_reads = sum(e["bytes_sent"] for e in storage) - header_reads
    # what the rerun fetched beyond the headers is at most the bytes of the units the journal lacked
    assert tensor_reads <= sum(s.nbytes for u in todo for s in u.spans)


def test_ctrl_c_exits_130_and_the_rerun_resumes(slow_hub, tmp_path):
    out = tmp_path / "out.gguf"
    proc = _start(slow_hub, out, tmp_path)
    _wait_for_journal(proc, out, entries=4)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert err.strip().splitlines() == ["hfstream: error: interrupted; rerun the same command to resume"]
    assert not out.exists() and part_path(out).exists() and journal_path(out).exists()
    slow_hub.throttle.total_rate = None
    rerun = subprocess.run([sys.executable, "-m", "hfstream", "convert", REPO, *ARGS, "-o", str(out)],
                           env=cli_env(slow_hub, HF_HOME=str(tmp_path / "hf")), capture_output=True, text=True,
                           timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert out.exists() and not part_path(out).exists() and not journal_path(out).exists()
    assert os.path.getsize(out) > 0
