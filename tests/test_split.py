"""Split outputs in llama.cpp's gguf-split format: the same tensors as the unsplit file, spread over shards."""

from __future__ import annotations

import pytest

import hfstream
from hfstream import cli

from . import llamacpp
from .goldens.digest import digest_gguf

REPO = "hfs-test/tiny-llama-sharded"


def _kv(d):
    return {k: v for k, _, v in d["kv"]}


@pytest.mark.parametrize("split", [{"split_max_tensors": 5}, {"split_max_size": 3 * 1024 * 1024}])
def test_shards_hold_the_unsplit_tensors_with_split_keys(split, fresh_hub, tmp_path):
    whole = hfstream.convert(REPO, outtype="q8_0", outfile=tmp_path / "whole.gguf")
    parts = hfstream.convert(REPO, outtype="q8_0", outfile=tmp_path / "part.gguf", **split)
    n = len(parts.paths)
    assert n > 1
    assert [p.name for p in parts.paths] == [f"part-{i:05d}-of-{n:05d}.gguf" for i in range(1, n + 1)]
    assert not (tmp_path / "part.gguf").exists()

    whole_d = digest_gguf(whole.path)
    tensors = []
    for i, path in enumerate(parts.paths):
        d = digest_gguf(path)
        kv = _kv(d)
        assert kv["split.no"] == i and kv["split.count"] == n and kv["split.tensors.count"] == whole.tensor_count
        if i == 0:
            # all metadata lives in the first shard, in the same order, split keys last
            assert [e for e in d["kv"] if not e[0].startswith("split.")] == whole_d["kv"]
        else:
            assert set(kv) == {"split.no", "split.count", "split.tensors.count"}
        if "split_max_tensors" in split:
            assert len(d["tensors"]) <= split["split_max_tensors"]
        tensors += [(t["name"], t["shape"], t["type"], t["sha256"]) for t in d["tensors"]]
    assert tensors == [(t["name"], t["shape"], t["type"], t["sha256"]) for t in whole_d["tensors"]]


def test_cli_split_flag_and_sizes(fresh_hub, tmp_path, capsys):
    rc = cli.main(["convert", REPO, "--outtype", "f16", "-q", "--split-max-size", "2M", "-o", str(tmp_path)])
    assert rc == 0
    shards = sorted(tmp_path.glob("*.gguf"))
    assert len(shards) > 1 and all("-of-" in p.name for p in shards)
    assert "more shards" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.skipif(not llamacpp.available(), reason="llama-cpp-python is not installed")
def test_llamacpp_loads_a_split_output_and_decodes_like_the_whole(fresh_hub, tmp_path):
    whole = hfstream.convert(REPO, outtype="q8_0", outfile=tmp_path / "whole.gguf")
    parts = hfstream.convert(REPO, outtype="q8_0", outfile=tmp_path / "part.gguf", split_max_tensors=4)
    prompt = [1, 100, 200, 300]
    assert llamacpp.greedy_tokens(parts.paths[0], prompt, 8) == llamacpp.greedy_tokens(whole.path, prompt, 8)


def test_shards_are_written_one_at_a_time_when_a_callback_takes_them(fresh_hub, tmp_path):
    """With on_shard_written, shard i is complete (and may be deleted) before shard i+1 exists."""
    seen = []

    def taken(path):
        on_disk = sorted(p.name for p in tmp_path.iterdir())
        seen.append((path.name, on_disk))
        path.unlink()  # what an upload-then-delete callback does

    r = hfstream.convert(REPO, outtype="q8_0", outfile=tmp_path / "part.gguf", split_max_tensors=5,
                         on_shard_written=taken)
    assert [name for name, _ in seen] == [p.name for p in r.paths]
    for name, on_disk in seen:
        # only the finished shard is on disk (beside the run's lock): no other shard and no other .part file
        assert on_disk == sorted([name, "part.gguf.lock"])
    assert list(tmp_path.iterdir()) == []
