"""Atomicity and resume: the final path only ever holds a complete file; an interrupted run continues."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import shutil
from pathlib import Path

import pytest

import hfstream
from hfstream import errors
from hfstream.fetch import HubSource
from hfstream.writer import journal_path, part_path

from .goldens.cases import cases
from .goldens.digest import digest_gguf

REPO = "hfs-test/tiny-llama-sharded"


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class _Stop(Exception):
    pass


def _interrupt_once_journaled(exc: BaseException, out: Path, at_least: int = 1) -> pytest.MonkeyPatch:
    """Make the first tensor read after ``out``'s journal lists units of ``at_least`` bytes raise
    ``exc`` (as a dropped network or a Ctrl-C would); undo() ends it. Reads before that are of units
    started before the layout, with nothing on disk yet to resume from."""
    monkeypatch = pytest.MonkeyPatch()
    real = HubSource.read

    def written() -> bool:
        j = journal_path(out)
        if not j.exists():
            return False
        units = [line.split() for line in j.read_text().splitlines()[1:]]
        return bool(units) and sum(int(u[1]) for u in units if len(u) == 3) >= at_least

    async def read(self, path, start, length):
        if written():
            raise exc
        return await real(self, path, start, length)

    monkeypatch.setattr(HubSource, "read", read)
    return monkeypatch


def test_interrupted_run_leaves_part_and_journal_and_a_rerun_finishes_identically(fresh_hub, tmp_path, monkeypatch):
    clean = hfstream.convert(REPO, outtype="q8_0", outfile=tmp_path / "clean.gguf", max_memory=1 << 20)
    out = tmp_path / "out.gguf"
    # past the first 512 KiB written: units whose source bytes the rerun would otherwise fetch, not only
    # small ones read with a shard's header (which a rerun reads again anyway)
    patch = _interrupt_once_journaled(errors.NetworkError("simulated: link down"), out, at_least=512 << 10)
    with pytest.raises(errors.NetworkError):
        hfstream.convert(REPO, outtype="q8_0", outfile=out, max_memory=1 << 20, threads=1, connections=1)
    assert not out.exists()
    assert part_path(out).exists() and journal_path(out).exists()
    journaled = len(journal_path(out).read_text().splitlines()) - 1
    assert journaled > 0
    patch.undo()

    fresh_hub.clear_log()
    again = hfstream.convert(REPO, outtype="q8_0", outfile=out, max_memory=1 << 20)
    assert sha(again.path) == sha(clean.path)
    assert not part_path(out).exists() and not journal_path(out).exists()
    assert again.units_resumed == journaled
    # only the units that were not journaled were fetched again (plus the headers)
    assert again.bytes_fetched < clean.bytes_fetched


def test_keyboard_interrupt_keeps_resumable_state(fresh_hub, tmp_path, monkeypatch):
    out = tmp_path / "out.gguf"
    patch = _interrupt_once_journaled(KeyboardInterrupt(), out)
    with pytest.raises(KeyboardInterrupt):
        hfstream.convert(REPO, outtype="f16", outfile=out, max_memory=1 << 20, threads=1, connections=1)
    assert not out.exists() and part_path(out).exists() and journal_path(out).exists()
    patch.undo()
    r = hfstream.convert(REPO, outtype="f16", outfile=out, max_memory=1 << 20)
    assert r.units_resumed > 0
    golden = next(c for c in cases() if c.golden_name == "tiny-llama-sharded.f16").golden()
    assert [t["sha256"] for t in digest_gguf(r.path)["tensors"]] == [t["sha256"] for t in golden["tensors"]]


def test_a_different_plan_starts_over(fresh_hub, tmp_path, monkeypatch):
    out = tmp_path / "out.gguf"
    patch = _interrupt_once_journaled(errors.NetworkError("simulated"), out)
    with pytest.raises(errors.NetworkError):
        hfstream.convert(REPO, outtype="f16", outfile=out, max_memory=1 << 20, threads=1, connections=1)
    patch.undo()
    assert len(journal_path(out).read_text().splitlines()) > 1
    # same output path, another outtype: the journal is for another plan, so nothing is reused
    r = hfstream.convert(REPO, outtype="q8_0", outfile=out, max_memory=1 << 20)
    assert r.units_resumed == 0
    golden = next(c for c in cases() if c.golden_name == "tiny-llama-sharded.q8_0").golden()
    assert [t["sha256"] for t in digest_gguf(r.path)["tensors"]] == [t["sha256"] for t in golden["tensors"]]


def test_a_corrupted_journaled_unit_is_redone(fresh_hub, tmp_path, monkeypatch):
    clean = hfstream.convert(REPO, outtype="bf16", outfile=tmp_path / "clean.gguf")
    out = tmp_path / "out.gguf"
    patch = _interrupt_once_journaled(errors.NetworkError("simulated"), out)
    with pytest.raises(errors.NetworkError):
        hfstream.convert(REPO, outtype="bf16", outfile=out, max_memory=1 << 20, threads=1, connections=1)
    patch.undo()
    # flip a byte inside the first journaled unit, as a power loss could leave it
    first = journal_path(out).read_text().splitlines()[1].split()
    offset = int(first[0])
    with open(part_path(out), "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))
    r = hfstream.convert(REPO, outtype="bf16", outfile=out, max_memory=1 << 20)
    assert sha(r.path) == sha(clean.path)


def test_existing_output_is_not_overwritten_without_force(fresh_hub, tmp_path):
    out = tmp_path / "model.gguf"
    out.write_bytes(b"keep me")
    with pytest.raises(errors.OutputExistsError):
        hfstream.convert("hfs-test/tiny-llama-spm", outtype="f16", outfile=out)
    assert out.read_bytes() == b"keep me"
    hfstream.convert("hfs-test/tiny-llama-spm", outtype="f16", outfile=out, force=True)
    assert out.read_bytes()[:4] == b"GGUF"


def test_disk_full_is_one_clear_error_and_keeps_what_a_resume_needs(fresh_hub, tmp_path, monkeypatch):
    out = tmp_path / "out.gguf"
    real = os.pwrite
    calls = {"n": 0}

    def pwrite(fd, data, offset):
        calls["n"] += 1
        if calls["n"] == 15:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data, offset)

    patch = pytest.MonkeyPatch()
    patch.setattr(os, "pwrite", pwrite)
    with pytest.raises(errors.OutputWriteError, match="disk full"):
        hfstream.convert(REPO, outtype="f32", outfile=out, max_memory=1 << 20, threads=1)
    assert not out.exists() and part_path(out).exists() and journal_path(out).exists()
    patch.undo()
    r = hfstream.convert(REPO, outtype="f32", outfile=out, max_memory=1 << 20)
    assert r.units_resumed > 0


def test_local_directory_source_gives_the_same_file(fresh_hub, fixture_root, tmp_path):
    import json

    info = json.loads((fixture_root / REPO / "repo.json").read_text())
    model_dir = tmp_path / "tiny-llama-sharded"
    shutil.copytree(fixture_root / REPO / "commits" / info["refs"]["main"], model_dir)
    for outtype in ("f32", "q8_0"):
        local = hfstream.convert(str(model_dir), outtype=outtype, outfile=tmp_path / f"local-{outtype}.gguf")
        golden = next(c for c in cases() if c.golden_name == f"tiny-llama-sharded.{outtype}").golden()
        assert [t["sha256"] for t in digest_gguf(local.path)["tensors"]] == \
            [t["sha256"] for t in golden["tensors"]]
        # no Hub involved, and no source keys of ours that would claim a commit
        kv = {k for k, _, _ in digest_gguf(local.path)["kv"]}
        assert "hfstream.source.commit" not in kv
    assert not any(e for e in fresh_hub.log if REPO in e["path"])


def test_cancelled_task_keeps_resumable_state(fresh_hub, tmp_path, monkeypatch):
    """asyncio cancellation (how Ctrl-C reaches the event loop) is treated like an interrupt."""
    out = tmp_path / "out.gguf"
    patch = _interrupt_once_journaled(asyncio.CancelledError(), out)
    with pytest.raises((asyncio.CancelledError, KeyboardInterrupt)):
        hfstream.convert(REPO, outtype="f16", outfile=out, max_memory=1 << 20, threads=1, connections=1)
    patch.undo()
    assert part_path(out).exists() and journal_path(out).exists()
