"""Units fetched and encoded while the vocabulary and the header are built, written once the layout exists."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time

import pytest

import hfstream
from hfstream import cli, errors, hfconfig, pipeline, plan
from hfstream.budget import Budget
from hfstream.execute import Early
from hfstream.settings import DEFAULT_MAX_MEMORY
from hfstream.writer import journal_path, part_path

from .conftest import golden
from .goldens.digest import diff_digests, digest_gguf
from .test_convert import comparable

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


def test_a_unit_larger_than_the_rest_runs_alone_beside_a_reserve():
    async def run():
        budget = Budget(100)
        reserve = await budget.acquire(30)
        big = await asyncio.wait_for(budget.acquire(500, beside=30), 5)  # counted as the 70 left
        assert budget.used == 100 and budget.held == 530
        waiter = asyncio.ensure_future(budget.acquire(1, beside=30))
        await asyncio.sleep(0)
        assert not waiter.done()
        budget.release(big)
        assert (await waiter) == (1, 1)
        budget.release(reserve)

    asyncio.run(run())


def test_early_units_larger_than_the_budget_run_alone(fresh_hub, tmp_path, monkeypatch):
    """A budget smaller than one row block: before the layout, such a block is fetched and computed on its
    own beside the decode reserve (counted as what the reserve leaves), not waited for until the layout."""
    from hfstream import execute
    from hfstream.units import batch_cost

    budget = 2048
    larger: list = []
    real = execute.Early._encode

    async def noted(self, batch, grant, share):
        encoded = await real(self, batch, grant, share)
        if batch_cost(batch) > budget:
            larger.append(len(batch))
        return encoded

    monkeypatch.setattr(execute.Early, "_encode", noted)
    seen = _vocab_held_until(monkeypatch, tmp_path, lambda: len(larger))
    result = hfstream.convert(REPO, outtype="f16", outfile=tmp_path / "out.gguf", max_memory=budget)
    assert seen.get("value", 0) >= 1, "no block larger than the budget was computed before the layout"
    expected = golden(f"{REPO.split('/')[1]}.f16")
    assert diff_digests(comparable(expected), comparable(digest_gguf(result.path))) == []


def test_early_units_hold_at_most_their_share_of_the_budget(fresh_hub, tmp_path, monkeypatch):
    """Before the layout, fetched-not-written bytes stay within half the budget (the vocabulary's
    own peak is outside the budget): a tiny budget, and a vocabulary that waits until no more
    tensor data comes. As f32 of an f32 checkpoint, a unit keeps as many bytes as it fetched, so
    the bytes the Hub sent are the bytes held (as f16 it keeps half: twice the share may be fetched)."""
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
    result = hfstream.convert(REPO, outtype="f32", outfile=tmp_path / "out.gguf", max_memory=budget)
    assert 0 < before_layout.get("value", 0) <= budget * Early.SHARE
    assert result.peak_bytes_in_flight <= budget
    expected = golden(f"{REPO.split('/')[1]}.f32")
    assert diff_digests(comparable(expected), comparable(digest_gguf(result.path))) == []


def test_before_the_layout_fetching_runs_ahead_of_the_encoders(fresh_hub, tmp_path, monkeypatch):
    """An early batch holds its fetched bytes and its encoding, not the array it is decoded into: that
    exists only while it is computed, and a reserve of the budget covers one per thread. So with the
    encoders held, fetching goes on: here 6 batches and more, where counting each batch's array from
    before its fetch let 4 into the share (9,216 fetched + 18,432 decoded + 4,608 encoded bytes each,
    against 128 KiB), and the link waited on the encoders."""
    from hfstream import execute

    encoders = threading.Event()
    fetched: list = []
    real_encode, real_fetch = execute._encode_all, execute._fetch_batch

    def held(batch, data):
        encoders.wait(20)  # a guard: released once enough batches are fetched
        return real_encode(batch, data)

    async def counted(batch, source, outs):
        data = await real_fetch(batch, source, outs)
        fetched.append(len(batch))
        return data

    def enough():
        if len(fetched) < 6:
            return None
        encoders.set()
        return len(fetched)

    monkeypatch.setattr(execute, "_encode_all", held)
    monkeypatch.setattr(execute, "_fetch_batch", counted)
    seen = _vocab_held_until(monkeypatch, tmp_path, enough)
    try:
        result = hfstream.convert(REPO, outtype="f16", outfile=tmp_path / "out.gguf", max_memory=256 * 1024)
    finally:
        encoders.set()
    assert seen.get("value", 0) >= 6, "fetching waited for the encoders"
    assert result.peak_bytes_in_flight <= 256 * 1024
    expected = golden(f"{REPO.split('/')[1]}.f16")
    assert diff_digests(comparable(expected), comparable(digest_gguf(result.path))) == []


def _config_read_after_tensor_data(monkeypatch, hub) -> dict:
    """Make transformers' reading of config.json (``plan.normalize``) answer only once tensor data has
    been asked of the Hub, as when its import is slower than the headers; and make the pipeline see the
    worker as not ready yet. Returns {"value": tensor reads seen when it answered}."""
    seen: dict = {}
    real = plan.normalize

    def late(*args, **kwargs):
        deadline = time.monotonic() + 20  # a guard against a hang, not a timing: the answer waits for an event
        while time.monotonic() < deadline and not _tensor_reads(hub):
            time.sleep(0.005)
        seen["value"] = len(_tensor_reads(hub))
        return real(*args, **kwargs)

    monkeypatch.setattr(hfconfig, "answers_now", lambda *a, **k: False)
    monkeypatch.setattr(plan, "normalize", late)
    return seen


def test_tensor_data_streams_while_transformers_reads_the_config(fresh_hub, tmp_path, monkeypatch):
    """Units start by a plan of config.json as written while transformers is still importing; the real
    plan confirms it, so they are kept: the file is its golden and no range is asked twice."""
    seen = _config_read_after_tensor_data(monkeypatch, fresh_hub)
    result = hfstream.convert(REPO, outtype="q8_0,f16", outfile=f"{tmp_path}/")
    assert seen.get("value", 0) >= 1, "no tensor data was fetched before transformers had read config.json"
    for out in result.outputs:
        expected = golden(f"{REPO.split('/')[1]}.{out.outtype.lower()}")
        assert diff_digests(comparable(expected), comparable(digest_gguf(out.path))) == []
    ranges = [(e["path"], e["range"]) for e in _tensor_reads(fresh_hub)]
    assert len(ranges) == len(set(ranges))


def test_early_units_the_real_plan_does_not_confirm_are_dropped(fresh_hub, tmp_path, monkeypatch):
    """config.json as written gives other head counts than transformers does (here: made to), so the
    provisional plan permutes q/k rows otherwise: its early units are dropped and fetched again by
    the real plan, whose file is the golden."""
    seen = _config_read_after_tensor_data(monkeypatch, fresh_hub)
    real_as_written = plan.as_written

    def other_heads(blob):
        hparams = real_as_written(blob)
        return {**hparams, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 32}

    monkeypatch.setattr(plan, "as_written", other_heads)
    result = hfstream.convert(REPO, outtype="q8_0", outfile=tmp_path / "out.gguf")
    assert seen.get("value", 0) >= 1
    expected = golden(f"{REPO.split('/')[1]}.q8_0")
    assert diff_digests(comparable(expected), comparable(digest_gguf(result.path))) == []
    ranges = [(e["path"], e["range"]) for e in _tensor_reads(fresh_hub)]
    assert len(ranges) > len(set(ranges)), "the provisional plan's units were not fetched again"


def test_no_provisional_plan_when_transformers_answers_at_once(fresh_hub, tmp_path, monkeypatch):
    provisional = []
    real = pipeline.draft_plan

    def drafting(**kwargs):
        provisional.append(kwargs.get("provisional", False))
        return real(**kwargs)

    monkeypatch.setattr(hfconfig, "answers_now", lambda *a, **k: True)
    monkeypatch.setattr(pipeline, "draft_plan", drafting)
    result = hfstream.convert(REPO, outtype="q8_0", outfile=tmp_path / "out.gguf")
    assert provisional == [False]
    expected = golden(f"{REPO.split('/')[1]}.q8_0")
    assert diff_digests(comparable(expected), comparable(digest_gguf(result.path))) == []


def test_a_provisional_plan_naming_another_file_gives_way_to_the_real_one(fresh_hub, tmp_path, monkeypatch):
    """The output directory's default name comes from the real plan: nothing is left under the name the
    provisional plan gave (no file, no .part, no lock), and the file is the golden."""
    _config_read_after_tensor_data(monkeypatch, fresh_hub)
    real = pipeline._draft_plans

    def drafts(**kwargs):
        plans = real(**kwargs)
        if kwargs.get("provisional"):
            plans = [dataclasses.replace(p, default_filename="provisional.gguf") for p in plans]
        return plans

    monkeypatch.setattr(pipeline, "_draft_plans", drafts)
    result = hfstream.convert(REPO, outtype="q8_0", outfile=f"{tmp_path}/")
    assert result.path.parent == tmp_path and result.path.name != "provisional.gguf"
    assert sorted(p.name for p in tmp_path.iterdir()) == [result.path.name]
    expected = golden(f"{REPO.split('/')[1]}.q8_0")
    assert diff_digests(comparable(expected), comparable(digest_gguf(result.path))) == []


def _count_builds_here(monkeypatch) -> list:
    """Calls of ``pipeline._finish_plans``: the vocabulary and header built from the real drafts (none
    when those of the provisional drafts are kept)."""
    calls: list = []
    real = pipeline._finish_plans
    monkeypatch.setattr(pipeline, "_finish_plans", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def _is_golden(result, repo: str = REPO) -> None:
    for out in result.outputs:
        expected = golden(f"{repo.split('/')[1]}.{out.outtype.lower()}")
        assert diff_digests(comparable(expected), comparable(digest_gguf(out.path))) == []


def test_the_vocabulary_built_while_transformers_reads_the_config_is_kept(fresh_hub, tmp_path, monkeypatch):
    """The provisional drafts' vocabulary and header are built (in a child) while transformers is still
    reading config.json; the real drafts differ in nothing they are made of, so they are the layouts:
    nothing is built again, the files are the goldens, and no range is asked twice."""
    seen = _config_read_after_tensor_data(monkeypatch, fresh_hub)
    builds = _count_builds_here(monkeypatch)
    result = hfstream.convert(REPO, outtype="q8_0,f16", outfile=f"{tmp_path}/")
    assert seen.get("value", 0) >= 1
    assert builds == []
    _is_golden(result)
    ranges = [(e["path"], e["range"]) for e in _tensor_reads(fresh_hub)]
    assert len(ranges) == len(set(ranges))


def test_a_vocabulary_the_real_hparams_would_build_otherwise_is_built_again(fresh_hub, tmp_path, monkeypatch):
    """config.json as written gives the vocabulary a key transformers' dict lacks (here: made to; an spm
    vocabulary is padded to it), and nothing else: the early units are kept, the vocabulary is built
    again from the real hparams, and the file is the golden (kept, it would have 8 tokens more)."""
    repo = "hfs-test/tiny-gemma"
    _config_read_after_tensor_data(monkeypatch, fresh_hub)
    builds = _count_builds_here(monkeypatch)
    real_as_written = plan.as_written
    monkeypatch.setattr(plan, "as_written", lambda blob: {**real_as_written(blob), "vocab_size_per_layer_input":
                                                          real_as_written(blob)["vocab_size"] + 8})
    result = hfstream.convert(repo, outtype="q8_0", outfile=f"{tmp_path}/")
    assert builds == [1]
    _is_golden(result, repo)
    ranges = [(e["path"], e["range"]) for e in _tensor_reads(fresh_hub)]
    assert len(ranges) == len(set(ranges)), "the early units were not kept"


def test_the_provisional_layouts_give_way_when_the_keys_differ_or_their_build_fails(fresh_hub, tmp_path,
                                                                                   monkeypatch):
    """transformers' dict sets a key config.json lacks (rope_theta's default): the keys differ, so the
    provisional vocabulary's child is stopped and the real drafts' built. And where that child fails,
    the real drafts' build is the one that counts. The files are the goldens both times."""
    _config_read_after_tensor_data(monkeypatch, fresh_hub)
    builds = _count_builds_here(monkeypatch)
    real_as_written = plan.as_written
    monkeypatch.setattr(plan, "as_written", lambda blob: {k: v for k, v in real_as_written(blob).items()
                                                          if k not in ("rope_theta", "rope_parameters")})
    _is_golden(hfstream.convert(REPO, outtype="q8_0", outfile=tmp_path / "a.gguf"))
    assert builds == [1]
    monkeypatch.setattr(plan, "as_written", real_as_written)

    def failing(drafts):
        raise errors.InvalidConfigError("made to fail")

    monkeypatch.setattr(pipeline, "_layouts_and_reads", failing)
    _is_golden(hfstream.convert(REPO, outtype="q8_0", outfile=tmp_path / "b.gguf"))
    assert builds == [1, 1]


def test_headers_are_read_while_the_tokenizer_arrives(fresh_hub):
    """The headers need config.json and the index only: tokenizer.json (17 MB for Llama 3) is still on
    its way when they are asked for. Here it is held back until a header has been read; read one
    after the other, the two would wait for each other for ever (the guard ends that as a failure)."""
    from hfstream import hub as hf_hub
    from hfstream.fetch import HubSource

    async def run():
        snap = hf_hub.resolve(REPO, "main", fresh_hub.endpoint, None)
        header_read = asyncio.Event()

        class TokenizerAfterAHeader(HubSource):
            async def get(self, name, *args, **kwargs):
                if name == "tokenizer.json":
                    await header_read.wait()
                return await super().get(name, *args, **kwargs)

            async def read(self, file, start, *args, **kwargs):
                data = await super().read(file, start, *args, **kwargs)
                if file.endswith(".safetensors") and start == 0:
                    header_read.set()
                return data

        async with TokenizerAfterAHeader(snap, None) as src:
            return await asyncio.wait_for(pipeline.files_and_headers(src, snap, [False], 8), timeout=60)

    files, shards, headers, _ = asyncio.run(run())
    assert "tokenizer.json" in files and list(files) == [n for n in pipeline.settings.SMALL_FILES if n in files]
    assert sorted(headers) == shards and all(headers[s] for s in shards)


def test_the_rows_of_several_outputs_are_evaluated_once_early_or_not(fresh_hub, tmp_path, monkeypatch):
    """Two outtypes in one run, started early: every block of source rows is decoded once, whichever
    output quantizes it, in the early batches (small tensors, several to a batch) as in the rest."""
    from hfstream import graph

    loads: list[tuple] = []
    real = graph.Load.eval_rows
    monkeypatch.setattr(graph.Load, "eval_rows", lambda self, d, r0, r1: loads.append((self.src, r0, r1)) or
                        real(self, d, r0, r1))
    seen = _vocab_held_until(monkeypatch, tmp_path, lambda: len(_tensor_reads(fresh_hub)))
    hfstream.convert(REPO, outtype="q8_0,q4_k_m", outfile=f"{tmp_path}/")
    assert seen.get("value", 0) >= 1
    assert loads and len(loads) == len(set(loads)), [x for x in loads if loads.count(x) > 1][:3]


def _every_fixture_models_drafts(fixture_root, outtype: str = "q8_0"):
    """(name, the real draft, the provisional draft or None) of every fixture model hfstream converts, as
    the pipeline drafts them: None where config.json as written makes no plan."""
    from fixtures.build import snapshot_dir
    from hfstream.localdir import LocalSource, local_snapshot
    from hfstream.plan import draft_plan

    async def drafts(directory):
        snap = local_snapshot(directory)
        async with LocalSource(snap) as src:
            files = await pipeline.small_files(src, snap)
            shards = pipeline.weight_shards(snap, files)
            headers, _ = await pipeline.read_headers(src, snap, shards)
            values = await pipeline.read_values(src, files, headers)
        common = {"repo_name": snap.name, "files": files, "headers": headers, "shards": shards, "outtype": outtype,
                  "values": values}
        real = draft_plan(**common)
        try:
            return real, draft_plan(**common, provisional=True)
        except Exception:  # noqa: BLE001 - as the pipeline: no provisional plan
            return real, None

    for repo in sorted(p for p in (fixture_root / "hfs-test").iterdir() if not p.name.startswith(".")):
        try:
            real, provisional = asyncio.run(drafts(snapshot_dir(repo, "main")))
        except errors.HfstreamError:  # the repos made to be refused
            continue
        yield repo.name, real, provisional


def test_every_fixture_models_provisional_plan_is_the_real_one_or_none(fixture_root):
    """What README says of the provisional plan, checked on every fixture model: drafted from
    config.json as written it is the real plan tensor for tensor (its early units are kept), or none
    can be made without transformers' defaults (the early start waits for them); it never differs,
    which would fetch its early units twice."""
    from hfstream.plan import same_tensors

    same, none, different = [], [], []
    for name, real, provisional in _every_fixture_models_drafts(fixture_root):
        (none if provisional is None else same if same_tensors(provisional, real) else different).append(name)
    assert different == []
    assert none == ["tiny-gemma4", "tiny-gemma4-vlm", "tiny-qwen3-next"]
    assert len(same) == 86


@pytest.mark.slow
def test_every_fixture_models_speculative_layouts_are_kept_only_where_they_are_the_real_ones(fixture_root):
    """The provisional drafts' vocabulary and header, built while transformers reads config.json, are
    kept when the real drafts have the same tensors, keys and names and their hparams answer what the
    vocabulary read the same way. Checked on every fixture model: where kept, they are byte for byte
    what the real drafts lay out; and they are kept for most (the count README gives)."""
    from hfstream.plan import same_keys_and_names, same_tensors

    kept, wrong = [], []
    for name, real, provisional in _every_fixture_models_drafts(fixture_root):
        if provisional is None or not (same_tensors(provisional, real) and same_keys_and_names(provisional, real)):
            continue
        try:
            layouts, reads = pipeline._layouts_and_reads([provisional])
        except errors.HfstreamError:  # the real drafts' build says why
            continue
        if reads[0].agree(real.hparams):
            kept.append(name)
            if [lay.files for lay in layouts] != [lay.files for lay in pipeline._vocab_and_layouts([real])]:
                wrong.append(name)
    assert wrong == []
    assert len(kept) == 64


def test_every_familys_vocabulary_reads_the_config_through_its_hparams_only():
    """What keeps a provisional vocabulary honest: the check compares what ``add_vocab`` read of the
    hparams, so ``add_vocab`` and every method and property it reaches may take nothing else from the
    config: each ``self.<name>`` they read is the hparams, ``hf_arch`` (config.json's own, the same
    both ways), a method or property (followed), or a class attribute no method sets on ``self``; and
    ``self`` itself is handed to nothing."""
    import ast
    import inspect
    import textwrap

    from hfstream import arch

    def tree(fn):
        return ast.parse(textwrap.dedent(inspect.getsource(fn)))

    def self_names(node, *, stores: bool):
        kind = ast.Store if stores else ast.Load
        return {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
                and n.value.id == "self" and isinstance(n.ctx, kind)}

    families = {*arch._REGISTRY.values(), *arch._PROJECTORS.values()}
    offending = []
    for family in sorted(families, key=lambda c: c.__name__):
        mine = [c for c in family.__mro__ if c.__module__.startswith("hfstream.arch")]
        members = {name: value for c in reversed(mine) for name, value in vars(c).items()}
        set_on_self = set().union(*(self_names(tree(v), stores=True) for c in mine for v in vars(c).values()
                                    if inspect.isfunction(v)))
        todo, seen = ["add_vocab"], set()
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            for c in mine:  # every definition along the chain (super() calls reach them)
                value = vars(c).get(name)
                fn = value.fget if isinstance(value, property) else value
                if not inspect.isfunction(fn):
                    continue
                body = tree(fn)
                # Base.method(self, ...): another definition along the chain, followed like the rest
                explicit = [n.func.attr for n in ast.walk(body) if isinstance(n, ast.Call)
                            and isinstance(n.func, ast.Attribute) and isinstance(n.func.value, ast.Name)
                            and n.args and isinstance(n.args[0], ast.Name) and n.args[0].id == "self"
                            and n.func.attr in members]
                todo.extend(explicit)
                bare = sum(isinstance(n, ast.Name) and n.id == "self" for n in ast.walk(body))
                if bare > len(explicit) + sum(isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
                                              and n.value.id == "self" for n in ast.walk(body)):
                    offending.append(f"{c.__name__}.{name} hands self on")  # to code this cannot follow
                for read in self_names(body, stores=False):
                    member = members.get(read)
                    if read in ("hparams", "hf_arch"):
                        continue
                    if inspect.isfunction(member) or isinstance(member, property):
                        todo.append(read)  # (a cached_property is not: its value may come from before)
                    elif read not in members or read in set_on_self:
                        offending.append(f"{family.__name__}.{name} reads self.{read}")
    assert offending == []
