"""The header packer gives exactly the bytes of gguf's own writer, split outputs included."""

from __future__ import annotations

import io

import gguf
import numpy as np
import pytest
from gguf import GGUFValueType

from hfstream.layout import _pack_value, layout
from hfstream.pipeline import read_headers, read_values, small_files, weight_shards

from .goldens.cases import cases

REPOS = sorted({c.repo_id for c in cases() if not c.gated})


def plan_for(repo, hub, draft=False, **options):
    """The plan of ``repo`` (``draft``: before its vocabulary is built)."""
    import asyncio

    from hfstream import hub as hf_hub
    from hfstream.fetch import HubSource
    from hfstream.plan import draft_plan, make_plan

    async def plan():
        snap = hf_hub.resolve(repo, "main", hub.endpoint, None)
        async with HubSource(snap, None) as src:
            files = await small_files(src, snap)
            shards = weight_shards(snap, files)
            headers, _ = await read_headers(src, snap, shards)
            return (draft_plan if draft else make_plan)(repo_name=snap.name, files=files, headers=headers, shards=shards,
                             source=(snap.repo_id, snap.sha), values=await read_values(src, files, headers), **options)

    return asyncio.run(plan())


def headers_by_gguf_writer(plan) -> list[bytes]:
    """Every file's header as gguf's GGUFWriter writes the plan: its keys, and its tensors added one by
    one to a writer with the plan's split limits, which cuts the shards by itself."""
    w = gguf.GGUFWriter(path=None, arch=plan.arch, split_max_tensors=plan.split_max_tensors,
                        split_max_size=plan.split_max_size)
    w.kv_data = [{k: gguf.GGUFValue(e.value, e.type, e.sub_type) for k, e in plan.metadata.items()}]
    for t in plan.tensors:
        w.add_tensor_info(t.name, t.shape, np.dtype(np.float32), t.nbytes, raw_dtype=t.qtype)
    bufs = [io.BytesIO() for _ in w.tensors]
    w.fout = bufs
    w.state = gguf.gguf_writer.WriterState.EMPTY
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    return [b.getvalue() for b in bufs]


@pytest.mark.parametrize("repo", REPOS)
def test_fast_header_packing_equals_gguf_writer(repo, fresh_hub):
    plan = plan_for(repo, fresh_hub, outtype="q8_0")
    assert [f.header for f in layout(plan).files] == headers_by_gguf_writer(plan)


@pytest.mark.parametrize("options", [
    dict(outtype="f16", split_max_tensors=5),
    dict(outtype="q4_k_m", split_max_size=60_000),  # llama-quantize's order and sizes, cut by bytes
    dict(outtype="q8_0", split_max_size=1),  # one tensor a file
], ids=["f16-by-count", "q4_k_m-by-size", "one-tensor-a-file"])
def test_split_outputs_are_cut_and_packed_as_gguf_writer_does(options, fresh_hub):
    plan = plan_for("hfs-test/tiny-llama-sharded", fresh_hub, **options)
    lay = layout(plan)
    assert len(lay.files) > 2
    assert [f.header for f in lay.files] == headers_by_gguf_writer(plan)


@pytest.mark.parametrize("value", [
    ["a", "", "\u0120\u0120", "\u65e5\u672c", "\U0001f600x", "", "\x7f\x80\u07ff\u0800\uffff\U00010000"],
    [b"", b"ab", b"\xff\x00"],
    [""],
    ["x", b"y"],  # mixed: item by item
    # more strings than one packing chunk holds: chunk boundaries inside, strings of every UTF-8 width
    [chr(0x20 + i % 90) * (i % 5) + "\u0120" * (i % 3) + "\U0001f600" * (i % 7 == 0) for i in range(40_000)],
    [bytes([i % 256]) * (i % 4) for i in range(40_000)],
])
def test_string_arrays_pack_as_gguf_writer_does(value):
    w = gguf.GGUFWriter(path=None, arch="llama")
    ours = _pack_value(value, GGUFValueType.ARRAY, GGUFValueType.STRING)
    assert ours == w._pack_val(value, GGUFValueType.ARRAY, add_vtype=False, sub_type=GGUFValueType.STRING)


@pytest.mark.parametrize("value, vtype", [
    ([1, 2, 3], GGUFValueType.ARRAY),  # item type from the items: INT32
    ([0.5, -1.0], GGUFValueType.ARRAY),
    ([True, False], GGUFValueType.ARRAY),
    (b"\x00\x01\xff", GGUFValueType.ARRAY),  # bytes: UINT8
    ([[1, 2], [3]], GGUFValueType.ARRAY),  # nested: each typed by itself
    ([["a"], [b"b", "c"]], GGUFValueType.ARRAY),
    (True, GGUFValueType.BOOL),
    (-3, GGUFValueType.INT64),
    ("text", GGUFValueType.STRING),
])
def test_values_without_an_item_type_pack_as_gguf_writer_does(value, vtype):
    w = gguf.GGUFWriter(path=None, arch="llama")
    assert _pack_value(value, vtype) == w._pack_val(value, vtype, add_vtype=False)


@pytest.mark.parametrize("value", [[1, 2.0], [], [1, True]])
def test_arrays_gguf_writer_refuses_are_refused(value):
    w = gguf.GGUFWriter(path=None, arch="llama")
    with pytest.raises(ValueError):
        w._pack_val(value, GGUFValueType.ARRAY, add_vtype=False)
    with pytest.raises(ValueError):
        _pack_value(value, GGUFValueType.ARRAY)


def test_the_outputs_of_one_run_pack_their_shared_vocabulary_once(fresh_hub, monkeypatch):
    """Several outtypes of one model hold the very same token and merge lists: their layouts, given
    one cache, pack each long array once and are byte for byte the layouts made alone."""
    from hfstream import layout as layout_module
    from hfstream.plan import build_vocab, with_vocab

    drafts = [plan_for("hfs-test/tiny-llama-bpe", fresh_hub, outtype=t, draft=True) for t in ("q8_0", "f16")]
    vocab = build_vocab(drafts[0])
    plans = [with_vocab(d, vocab) for d in drafts]
    alone = [layout(p) for p in plans]
    packs: list[int] = []
    real = layout_module._pack_value

    def counting(value, vtype, sub_type=None):
        if vtype == GGUFValueType.ARRAY and len(value) >= 1024:
            packs.append(id(value))
        return real(value, vtype, sub_type)

    monkeypatch.setattr(layout_module, "_pack_value", counting)
    cache: layout_module.PackedArrays = {}
    shared = [layout(p, cache) for p in plans]
    assert [f.header for lay in shared for f in lay.files] == [f.header for lay in alone for f in lay.files]
    assert packs and len(packs) == len(set(packs))  # the tokens, their types, the merges: once each
