"""The header packer gives exactly the bytes of gguf's own writer."""

from __future__ import annotations

import pytest

from hfstream.layout import _serialize_header, _serialize_header_with_writer, layout
from hfstream.pipeline import read_headers, small_files, weight_shards

from .goldens.cases import cases

REPOS = sorted({c.repo_id for c in cases() if not c.gated})


@pytest.mark.parametrize("repo", REPOS)
def test_fast_header_packing_equals_gguf_writer(repo, fresh_hub):
    import asyncio

    from hfstream import hub
    from hfstream.fetch import HubSource
    from hfstream.plan import make_plan

    async def plan_for():
        snap = hub.resolve(repo, "main", fresh_hub.endpoint, None)
        async with HubSource(snap, None) as src:
            files = await small_files(src, snap)
            shards = weight_shards(snap, files)
            headers, _ = await read_headers(src, snap, shards)
            return make_plan(repo_name=snap.name, files=files, headers=headers, shards=shards, outtype="q8_0",
                             source=(snap.repo_id, snap.sha))

    plan = asyncio.run(plan_for())
    assert [_serialize_header(plan.writer)] == _serialize_header_with_writer(plan.writer)
    assert [layout(plan).header] == _serialize_header_with_writer(plan.writer)


@pytest.mark.parametrize("value", [
    ["a", "", "\u0120\u0120", "\u65e5\u672c", "\U0001f600x", "", "\x7f\x80\u07ff\u0800\uffff\U00010000"],
    [b"", b"ab", b"\xff\x00"],
    [""],
    ["x", b"y"],  # mixed: the writer's own packer
    # more strings than one packing chunk holds: chunk boundaries inside, strings of every UTF-8 width
    [chr(0x20 + i % 90) * (i % 5) + "\u0120" * (i % 3) + "\U0001f600" * (i % 7 == 0) for i in range(40_000)],
    [bytes([i % 256]) * (i % 4) for i in range(40_000)],
])
def test_string_arrays_pack_as_gguf_writer_does(value):
    import gguf
    from gguf import GGUFValueType

    from hfstream.layout import _pack_value

    w = gguf.GGUFWriter(path=None, arch="llama")
    ours = _pack_value(w, value, GGUFValueType.ARRAY, GGUFValueType.STRING)
    assert ours == w._pack_val(value, GGUFValueType.ARRAY, add_vtype=False, sub_type=GGUFValueType.STRING)
