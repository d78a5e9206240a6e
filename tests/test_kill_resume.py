"""A real process killed midway (SIGKILL, or Ctrl-C) and rerun: same bytes, only unfinished units fetched again.

"Midway" is made by events, not by a slow link: the fixture Hub holds tensor-data requests after the
first few (``Gate``), the test waits until the journal has entries and a request is held, and only
then sends the signal, so the conversion cannot have finished first however fast or loaded the
machine is.
"""

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
from hfstream.pipeline import read_headers, small_files, weight_shards
from hfstream.units import unit_target, units_for
from hfstream.plan import make_plan
from hfstream.writer import journal_path, part_path

from .conftest import cli_env

REPO = "hfs-test/tiny-llama-sharded"
BUDGET = 1 << 20
ARGS = ["--outtype", "q8_0", "--max-memory", str(BUDGET), "--connections", "2", "-q"]


@pytest.fixture
def gated_hub(fixture_root):
    """Its own fixture Hub, whose ``gate`` the tests set to stop a conversion midway."""
    from fixtures.hub import FixtureHub

    with FixtureHub(fixture_root) as h:
        yield h


#: tensor-data requests a conversion of REPO may make before the Gate holds it (it makes ~20)
ALLOWED = 6


def _units(endpoint: str):
    async def plan_units():
        snap = hubmod.resolve(REPO, "main", endpoint, None)
        async with HubSource(snap, None) as src:
            files = await small_files(src, snap)
            shards = weight_shards(snap, files)
            headers, _ = await read_headers(src, snap, shards)
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


def _stop_midway(hub, out, tmp_path):
    """Start a conversion and return it once it is stuck midway: some units journaled, a request held."""
    from fixtures.hub import Gate

    hub.gate = Gate(allow=ALLOWED)
    proc = _start(hub, out, tmp_path)
    if not hub.gate.wait_held():
        proc.kill()
        pytest.fail(f"the conversion never asked for more than {ALLOWED} ranges: {proc.communicate()[1]}")
    # the units whose ranges were allowed are written and journaled (the first comes with the layout)
    while not (journal_path(out).exists() and len(_journal(out)) >= 1):
        if proc.poll() is not None:
            pytest.fail(f"the conversion ended while held: {proc.stderr.read()}")
        time.sleep(0.02)
    return proc


def _run_to_the_end(hub, out, tmp_path):
    hub.gate.open()
    return subprocess.run([sys.executable, "-m", "hfstream", "convert", REPO, *ARGS, "-o", str(out)],
                          env=cli_env(hub, HF_HOME=str(tmp_path / "hf")), capture_output=True, text=True,
                          timeout=300)


def test_sigkill_midway_then_rerun(gated_hub, tmp_path):
    clean = tmp_path / "clean.gguf"
    assert subprocess.run([sys.executable, "-m", "hfstream", "convert", REPO, *ARGS, "-o", str(clean)],
                          env=cli_env(gated_hub, HF_HOME=str(tmp_path / "hf")), timeout=300).returncode == 0

    out = tmp_path / "out.gguf"
    proc = _stop_midway(gated_hub, out, tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert not out.exists() and part_path(out).exists()
    done = _journal(out)

    gated_hub.gate.open()
    units = _units(gated_hub.endpoint)
    todo = [u for u in units if (u.offset, u.nbytes) not in done]
    assert 0 < len(todo) < len(units)
    gated_hub.clear_log()
    rerun = _run_to_the_end(gated_hub, out, tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(clean.read_bytes()).digest()
    storage = [e for e in gated_hub.log if e["origin"] == "storage"]
    header_reads = sum(e["bytes_sent"] for e in storage if e["range"] and e["range"].startswith("bytes=0-"))
    tensor_reads = sum(e["bytes_sent"] for e in storage) - header_reads
    # what the rerun fetched beyond the headers is at most the bytes of the units the journal lacked
    assert tensor_reads <= sum(s.nbytes for u in todo for s in u.spans)


def test_ctrl_c_exits_130_and_the_rerun_resumes(gated_hub, tmp_path):
    out = tmp_path / "out.gguf"
    proc = _stop_midway(gated_hub, out, tmp_path)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert err.strip().splitlines() == ["hfstream: error: interrupted; rerun the same command to resume"]
    assert not out.exists() and part_path(out).exists() and journal_path(out).exists()
    rerun = _run_to_the_end(gated_hub, out, tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert out.exists() and not part_path(out).exists() and not journal_path(out).exists()
    assert os.path.getsize(out) > 0
