"""What crosses the wire and what lands on disk, read from the fixture Hub's request log."""

from __future__ import annotations

import bisect
import hashlib
import json
import os
from pathlib import Path

import pytest

import hfstream
from hfstream import cli
from hfstream.safetensors import parse_header
from fixtures.build import snapshot_dir

from .conftest import golden


def _tensor_spans(path: Path) -> list[tuple[int, int]]:
    data = path.read_bytes()
    return [(t.start, t.end) for t in parse_header(path.name, data, len(data)) if t.end > t.start]


@pytest.mark.parametrize("repo", ["hfs-test/tiny-llama-sharded",
                                  # the gate and up halves of each fused expert block read the same bytes
                                  "hfs-test/tiny-gpt-oss", "hfs-test/tiny-gpt-oss-bf16"])
def test_every_tensor_byte_is_fetched_once_and_no_shard_whole(repo, fresh_hub, fixture_root, tmp_path):
    result = hfstream.convert(repo, outtype="q8_0", outfile=tmp_path)
    snap = snapshot_dir(fixture_root / repo)
    shards = sorted(p for p in snap.iterdir() if p.suffix == ".safetensors")
    assert len(shards) == json.loads((fixture_root.parent / "models" / f"{repo.split('/')[1]}.json").read_text())[
        "weights"].get("expect_shards", 1) > 1

    log = fresh_hub.log
    resolves = [e for e in log if e["origin"] == "hub" and "/resolve/" in e["path"]]
    # every request is pinned to the commit sha, never to "main"
    assert all(f"/resolve/{result.commit_sha}/" in e["path"] for e in resolves)
    for shard in shards:
        # the /resolve/ redirect is asked once per shard, then its storage URL is reused
        assert sum(e["path"].endswith("/" + shard.name) for e in resolves) == 1
    storage = [e for e in log if e["origin"] == "storage"]
    by_blob: dict[str, list[tuple[int, int]]] = {}
    for e in storage:
        assert e["status"] == 206 and e["range"], f"non-range storage request: {e}"
        a, b = e["range"].removeprefix("bytes=").split("-")
        by_blob.setdefault(e["path"], []).append((int(a), int(b) + 1))
    blobs = {shard: "/lfs/" + hashlib.sha256(shard.read_bytes()).hexdigest() for shard in shards}
    # the shards, and no other file but a large tokenizer.json (an LFS file too)
    assert set(by_blob) - set(blobs.values()) <= {"/lfs/" + hashlib.sha256(
        (snap / "tokenizer.json").read_bytes()).hexdigest()}
    for shard in shards:
        ranges = sorted(by_blob[blobs[shard]])
        size = shard.stat().st_size
        # no byte twice, no request for the whole file (but a shard under the 100 KB first header read)
        assert all(r0[1] <= r1[0] for r0, r1 in zip(ranges, ranges[1:]))
        assert all(b - a < size for a, b in ranges) or ranges == [(0, size)] and size <= 100_000
        # every tensor's bytes were fetched: each span lies inside one fetched range or is covered by several
        # adjacent ones (the ranges are disjoint and sorted: merge those that touch, then look the span up)
        merged: list[list[int]] = []
        for a, b in ranges:
            if merged and merged[-1][1] == a:
                merged[-1][1] = b
            else:
                merged.append([a, b])
        starts = [a for a, _ in merged]
        for a, b in _tensor_spans(shard):
            i = bisect.bisect_right(starts, a) - 1
            assert i >= 0 and b <= merged[i][1], f"{shard.name}: bytes {a}-{b} were not fetched"
        # and nothing else: header + tensors is the whole file, fetched exactly once
        assert sum(b - a for a, b in ranges) == size


def test_nothing_but_the_output_is_written(fresh_hub, tmp_path, monkeypatch):
    """No weight file in the HF cache, the temp dir or the output dir: only the GGUF."""
    hf_home, tmp, out = tmp_path / "hf-home", tmp_path / "tmp", tmp_path / "out"
    for d in (hf_home, tmp, out):
        d.mkdir(exist_ok=True)
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("TMPDIR", str(tmp))
    before = _all_files(tmp_path)
    result = hfstream.convert("hfs-test/tiny-llama-bpe", outtype="f16", outfile=out)
    after = _all_files(tmp_path)
    assert after - before == {result.path}
    assert result.path.parent == out


def _all_files(root: Path) -> set[Path]:
    return {Path(dirpath) / f for dirpath, _, files in os.walk(root) for f in files}


def test_revision_is_pinned_to_its_commit(fresh_hub, fixture_root, tmp_path):
    info = json.loads((fixture_root / "hfs-test/two-commits/repo.json").read_text())
    old = hfstream.convert("hfs-test/two-commits", outtype="f16", revision="v1", outfile=tmp_path / "v1.gguf")
    new = hfstream.convert("hfs-test/two-commits", outtype="f16", outfile=tmp_path / "main.gguf")
    assert old.commit_sha == info["refs"]["v1"] and new.commit_sha == info["refs"]["main"]
    assert old.commit_sha != new.commit_sha
    from .goldens.digest import digest_gguf

    assert [t["sha256"] for t in digest_gguf(old.path)["tensors"]] == \
        [t["sha256"] for t in golden("two-commits@v1.f16")["tensors"]]
    assert [t["sha256"] for t in digest_gguf(new.path)["tensors"]] == \
        [t["sha256"] for t in golden("two-commits.f16")["tensors"]]
    # a full commit sha works as a revision too
    again = hfstream.convert("hfs-test/two-commits", outtype="f16", revision=old.commit_sha,
                             outfile=tmp_path / "again.gguf")
    assert again.path.read_bytes() == old.path.read_bytes()


def test_dry_run_fetches_no_tensor_data(fresh_hub, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc = cli.main(["convert", "hfs-test/tiny-llama-spm", "--outtype", "q8_0", "--dry-run"])
    out = capsys.readouterr().out
    assert rc == 0
    expected = golden("tiny-llama-spm.q8_0")
    for t in expected["tensors"]:
        assert t["name"] in out
    assert "blk.0.attn_q.weight" in out and "Q8_0" in out
    assert f"{expected['default_name']}" in out
    assert "would fetch" in out
    assert list(tmp_path.iterdir()) == []
    storage = [e for e in fresh_hub.log if e["origin"] == "storage" and e["path"].startswith("/lfs/")]
    # only the header range of the weights (the tokenizer.model is a small LFS file read whole)
    weight_reads = [e for e in storage if e["range"]]
    assert len(weight_reads) == 1 and weight_reads[0]["range"] == "bytes=0-99999"


def test_outfile_template_and_default_name(fresh_hub, tmp_path, monkeypatch, capsys):
    rc = cli.main(["convert", "hfs-test/tiny-mistral", "-q", "-o", str(tmp_path / "m-{ftype}.gguf")])
    assert rc == 0
    assert (tmp_path / "m-bf16.gguf").exists()  # auto -> bf16 for a bf16 checkpoint
    rc = cli.main(["convert", "hfs-test/tiny-mistral", "-q", "--outtype", "f16", "-o", str(tmp_path / "m-{FTYPE}.gguf")])
    assert rc == 0 and (tmp_path / "m-F16.gguf").exists()  # upper-case placeholder, upper-case type
    monkeypatch.chdir(tmp_path)
    rc = cli.main(["convert", "hfs-test/tiny-mistral", "--outtype", "q8_0", "-q"])
    assert rc == 0
    assert (tmp_path / golden("tiny-mistral.q8_0")["default_name"]).exists()
    out = capsys.readouterr().out
    assert "Tiny-Mistral-227K-Q8_0.gguf" in out


def test_python_api_result(fresh_hub, tmp_path):
    r = hfstream.convert("hfs-test/tiny-llama-spm", outtype="q8_0", outfile=tmp_path)
    assert r.path.exists() and r.path.stat().st_size == r.output_size
    assert r.tensor_count == len(golden("tiny-llama-spm.q8_0")["tensors"])
    # every tensor byte plus the header; alignment padding is the preallocated zeros
    assert sum(t[3] for t in r.tensors) < r.bytes_written <= r.output_size
    assert 0 < r.bytes_fetched
    assert len(r.commit_sha) == 40 and r.seconds > 0


def test_a_big_tokenizer_json_comes_in_parallel_ranges(fresh_hub, fixture_root, tmp_path):
    """17 MB of tokenizer.json: one connection is often capped below the link, so ranges of ~4 MB."""
    from hfstream.fetch import SMALL_FILE_PART

    repo = "hfs-test/tiny-llama-bpe"
    blob = (snapshot_dir(fixture_root / repo) / "tokenizer.json").read_bytes()
    assert len(blob) >= 2 * SMALL_FILE_PART
    hfstream.convert(repo, outtype="q8_0", outfile=tmp_path, dry_run=True)  # small files and headers only
    lfs = "/lfs/" + hashlib.sha256(blob).hexdigest()
    parts = [e for e in fresh_hub.log if e["path"] == lfs]
    assert len(parts) >= 2 and all(e["status"] == 206 and e["range"] for e in parts)
    spans = sorted(tuple(int(x) for x in e["range"].removeprefix("bytes=").split("-")) for e in parts)
    assert spans[0][0] == 0 and spans[-1][1] == len(blob) - 1
    assert all(a[1] + 1 == b[0] for a, b in zip(spans, spans[1:]))  # adjacent, no byte twice
    assert sum(e["bytes_sent"] for e in parts) == len(blob)


def test_a_server_that_ignores_range_on_it_still_gives_the_whole_file_once(fresh_hub, fixture_root, tmp_path):
    from fixtures.hub import Fault

    from .goldens.cases import cases
    from .goldens.digest import diff_digests, digest_gguf
    from .test_convert import comparable

    repo = "hfs-test/tiny-llama-bpe"
    blob = (snapshot_dir(fixture_root / repo) / "tokenizer.json").read_bytes()
    lfs = "/lfs/" + hashlib.sha256(blob).hexdigest()
    fresh_hub.faults.rules = [Fault("ignore_range", origin="storage", path=lfs + "$", count=1)]
    try:
        result = hfstream.convert(repo, outtype="q8_0", outfile=tmp_path)
    finally:
        fresh_hub.faults.rules = []
    whole = [e for e in fresh_hub.log if e["path"] == lfs and not e["range"]]
    assert len(whole) == 1 and whole[0]["status"] == 200
    # the vocab built from the file fetched whole is the reference's, as is everything else
    expected = next(c for c in cases() if c.golden_name == "tiny-llama-bpe.q8_0").golden()
    assert diff_digests(comparable(expected), comparable(digest_gguf(result.path))) == []


def test_a_metadata_file_listed_larger_than_it_is_still_comes_whole(fresh_hub, fixture_root):
    """A listed size the file does not have (ranges past its end get 416): one GET of the real file."""
    import asyncio
    import dataclasses

    from hfstream import hub as hubmod
    from hfstream.fetch import SMALL_FILE_PART, HubSource

    repo = "hfs-test/tiny-llama-bpe"
    blob = (snapshot_dir(fixture_root / repo) / "tokenizer.json").read_bytes()
    snap = hubmod.resolve(repo, "main", fresh_hub.endpoint, None)
    # listed as twice its size: with two connections, one range is the whole file, the other lies past its end
    lying = dataclasses.replace(snap, files={**snap.files, "tokenizer.json": 2 * len(blob)})
    assert len(blob) >= 2 * SMALL_FILE_PART

    async def get() -> bytes:
        async with HubSource(lying, None, connections=2) as source:
            return await source.get("tokenizer.json")

    assert asyncio.run(get()) == blob
    lfs = "/lfs/" + hashlib.sha256(blob).hexdigest()
    assert any(e["path"] == lfs and e["status"] == 416 for e in fresh_hub.log)
    assert [e["status"] for e in fresh_hub.log if e["path"] == lfs and not e["range"]] == [200]
