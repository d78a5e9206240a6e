"""Units fetched and encoded while the vocabulary and the header are built, written once the layout exists."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import hfstream
from hfstream import cli, errors, pipeline
from hfstream.budget import Budget
from hfstream.execute import Early
from hfstream.settings import DEFAULT_MAX_MEMORY
from hfstream.writer import journal_path, part_path

from .goldens.digest import diff_digests, digest_gguf
from .test_convert import comparable
from .conftest import golden

REPO = "hfs-test/tiny-llama-sharded"


def _tensor_reads(hub) -> list[dict]:
    """Storage range requests past the header read (which starts every shard at byte 0)."""
    return [e for e in hub.log if e["origin"] == "storage" and e["range"] and not e["range"].startswith("bytes=0-")]


def _vocab_held_until(monkeypatch, tmp_path, ready, *, then_fail: Exception | None = None) -> dict:
    """Make building the vocabulary wait until ``ready()`` (called here, on the Hub's log) returns a
    value; then build it, or raise ``then_fail``. Returns {"value": what ready() returned}.

    The vocabulary is built in a forked child, which sees no live copy of the Hub's log: a thread here
    watches the log and lets the child go through a file.
    """
    go = tmp_path.parent / f"{tmp_path.name}.go"
    seen: dict = {}

    def watch():
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            value = ready()
            if value:
                seen["value"] = value
                break
            time.sleep(0.005)
        go.write_text("go")

    real = pipeline.with_vocab

    def waiting(draft, *args):
        while not go.exists():
            time.sleep(0.005)
        if then_fail is not None:
            raise then_fail
        return real(draft, *args)

    monkeypatch.setattr(pipeline, "with_vocab", waiting)
    threading.Thread(target=watch, daemon=True).start()
    return seen


def test_tensor_data_streams_while_the_vocabulary_is_built(fresh_hub, tmp_path, monkeypatch):
    seen = _vocab_held_until(monkeypatch, tmp_path, lambda: len(_tensor_reads(fresh_hub)))
    result = hfstream.convert(REPO, outtype="q8_0", outfile=tmp_path / "out.gguf")
    assert seen.get("value", 0) >= 1, "no tensor data was fetched while the vocabulary was being built"
    expected = golden(f"{REPO.split('/')[1]}.q8_0")
    assert diff_digests(comparable(expected), comparable(digest_gguf(result.path))) == []
    # early units are not fetched a second time: every tensor range once
    ranges = [(e["path"], e["range"]) for e in _tensor_reads(fresh_hub)]
    assert len(ranges) == len(set(ranges))
    assert result.peak_bytes_in_flight <= DEFAULT_MAX_MEMORY


def test_several_outtypes_stream_while_the_vocabulary_is_built_and_fetch_each_range_once(fresh_hub, tmp_path,
                                                                                             monkeypatch):
    """One run, three outtypes: the early units are fetched once and encoded for every output while
    the vocabulary is built; each file is its golden, and no tensor range is asked twice."""
    seen = _vocab_held_until(monkeypatch, tmp_path, lambda: len(_tensor_reads(fresh_hub)))
    out = tmp_path / "out"
    result = hfstream.convert(REPO, outtype="q8_0,f16,f32", outfile=str(out) + "/")
    assert seen.get("value", 0) >= 1, "no tensor data was fetched while the vocabulary was being built"
    assert [o.outtype for o in result.outputs] == ["q8_0", "f16", "f32"]
    for outtype in ("q8_0", "f16", "f32"):
        expected = golden(f"{REPO.split('/')[1]}.{outtype}")
        written = out / expected["default_name"]
        assert diff_digests(comparable(expected), comparable(digest_gguf(written))) == [], outtype
    ranges = [(e["path"], e["range"]) for e in _tensor_reads(fresh_hub)]
    assert len(ranges) == len(set(ranges))
    assert result.peak_bytes_in_flight <= DEFAULT_MAX_MEMORY


def test_a_quantize_mix_among_the_outtypes_starts_early_too(fresh_hub, tmp_path, monkeypatch):
    """q4_k_m orders its tensors as llama-quantize does, not as q8_0's file: the outputs are still the
    same tensors, so the run starts early, and each file is the one its type alone writes."""
    alone = {t: hfstream.convert(REPO, outtype=t, outfile=tmp_path / f"alone-{t}.gguf").path.read_bytes()
             for t in ("q8_0", "q4_k_m")}
    fresh_hub.clear_log()
    seen = _vocab_held_until(monkeypatch, tmp_path, lambda: len(_tensor_reads(fresh_hub)))
    result = hfstream.convert(REPO, outtype="q8_0,q4_k_m", outfile=str(tmp_path / "both") + "/")
    assert seen.get("value", 0) >= 1, "no tensor data was fetched while the vocabulary was being built"
    assert [o.path.read_bytes() for o in result.outputs] == [alone["q8_0"], alone["q4_k_m"]]
    ranges = [(e["path"], e["range"]) for e in _tensor_reads(fresh_hub)]
    assert len(ranges) == len(set(ranges))


def test_a_vocabulary_error_after_the_early_start_leaves_nothing(fresh_hub, tmp_path, monkeypatch, capsys):
    _vocab_held_until(monkeypatch, tmp_path, lambda: _tensor_reads(fresh_hub),
                      then_fail=errors.UnsupportedTokenizerError("tokenizer.json: broken"))
    out = tmp_path / "out.gguf"
    rc = cli.main(["convert", REPO, "--outtype", "q8_0", "-o", str(out), "-q"])
    assert rc == errors.UnsupportedTokenizerError.exit_code
    assert "tokenizer.json: broken" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_the_destination_is_refused_before_any_tensor_byte(fresh_hub, tmp_path, capsys):
    out = tmp_path / "out.gguf"
    out.write_bytes(b"keep me")
    rc = cli.main(["convert", REPO, "--outtype", "q8_0", "-o", str(out), "-q"])
    assert rc == errors.OutputExistsError.exit_code
    assert out.read_bytes() == b"keep me"
    assert _tensor_reads(fresh_hub) == []
    rc = cli.main(["convert", REPO, "--outtype", "q8_0", "-o", str(tmp_path / "missing" / "out.gguf"), "-q"])
    assert rc == errors.OutputWriteError.exit_code
    assert _tensor_reads(fresh_hub) == []


def test_a_run_that_may_resume_starts_after_the_layout(fresh_hub, tmp_path, monkeypatch):
    """Which units are done is in the journal of the very layout, so a leftover .part waits for it."""
    out = tmp_path / "out.gguf"
    part_path(out).write_bytes(b"")
    journal_path(out).write_text("hfstream-journal-v1 other-plan 0\n")
    started = []
    monkeypatch.setattr(pipeline, "Early", lambda *a: started.append(a) or pytest.fail("started early"))
    result = hfstream.convert(REPO, outtype="q8_0", outfile=out)
    assert started == [] and result.path == out and not part_path(out).exists()


def test_budget_shrink_keeps_the_encoded_bytes():
    async def run():
        budget = Budget(100)
        grant = await budget.acquire(80)
        waiter = asyncio.ensure_future(budget.acquire(50))
        await asyncio.sleep(0)
        assert not waiter.done()
        grant = budget.shrink(grant, 30)  # 30 + 50 fit now
        await asyncio.sleep(0)
        assert waiter.done() and budget.held == 80 and budget.peak == 80
        budget.release(grant)
        budget.release(waiter.result())
        assert budget.used == budget.held == 0

    asyncio.run(run())


def test_early_units_hold_at_most_their_share_of_the_budget(fresh_hub, tmp_path, monkeypatch):
    """Before the layout, fetched-not-written bytes stay within half the budget (the vocabulary's
    own peak is outside the budget): a tiny budget, and a vocabulary that waits until no more
    tensor data comes."""
    budget = 256 * 1024
    quiet = {"seen": -1, "since": time.monotonic()}

    def fetching_stopped():
        n = len(_tensor_reads(fresh_hub))
        if n != quiet["seen"]:
            quiet["seen"], quiet["since"] = n, time.monotonic()
        if time.monotonic() - quiet["since"] < 0.5:
            return None
        return sum(e["bytes_sent"] for e in _tensor_reads(fresh_hub)) or None

    before_layout = _vocab_held_until(monkeypatch, tmp_path, fetching_stopped)
    result = hfstream.convert(REPO, outtype="f16", outfile=tmp_path / "out.gguf", max_memory=budget)
    assert 0 < before_layout.get("value", 0) <= budget * Early.SHARE
    assert result.peak_bytes_in_flight <= budget
    expected = golden(f"{REPO.split('/')[1]}.f16")
    assert diff_digests(comparable(expected), comparable(digest_gguf(result.path))) == []
