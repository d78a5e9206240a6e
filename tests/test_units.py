"""Units and batches: linear in the tensor count (issue 20: DeepSeek-V3 has ~91k tensors).

Counts, not times: how many times a unit's cost is computed, and read while batching.
"""

from __future__ import annotations

import json
import shutil
import struct

import numpy as np
import pytest
from gguf import GGMLQuantizationType as QT

import hfstream
from hfstream import units
from hfstream.graph import Load
from hfstream.plan import PlannedTensor
from hfstream.quant import nbytes
from hfstream.safetensors import SourceTensor
from hfstream.units import Unit, batches, units_for


def _adjacent_units(n: int, size: int = 256) -> list[Unit]:
    """n single-span units whose source bytes follow each other in one file (norms, biases)."""
    out = []
    for i in range(n):
        src = SourceTensor("model.safetensors", f"t{i}", "F32", (size // 4,), i * size, (i + 1) * size)
        t = PlannedTensor(name=f"t{i}", node=Load(src), qtype=QT.F32, shape=(size // 4,),
                          nbytes=nbytes(QT.F32, (size // 4,)))
        out += units_for(t, i * size, target=1 << 20)
    return out


class _Counted:
    """A unit whose cost reads are counted (batching uses only ``tensor``, ``spans`` and ``cost``)."""

    reads = 0

    def __init__(self, unit: Unit):
        self.unit = unit
        self.tensor = unit.tensor
        self.spans = unit.spans

    @property
    def cost(self) -> int:
        _Counted.reads += 1
        return self.unit.cost


@pytest.mark.parametrize("n", [1000, 8000])
def test_batching_reads_each_units_cost_at_most_twice(n):
    """The growing batch's cost is a running total: re-summing it for every unit was quadratic (33.5 M
    cost evaluations on a 1024-layer model)."""
    counted = [_Counted(u) for u in _adjacent_units(n)]
    _Counted.reads = 0
    got = batches(counted, target=64 * 1024)  # type: ignore[arg-type]
    assert _Counted.reads <= 2 * n
    # and the batches are what they were: neighbours up to the target, in order, none left out
    assert [c for b in got for c in b] == counted
    assert all(sum(c.unit.cost for c in b) <= 64 * 1024 for b in got)
    cost = counted[0].unit.cost
    assert [len(b) for b in got[:-1]] == [64 * 1024 // cost] * (len(got) - 1)


def test_a_unit_knows_its_cost_from_when_it_is_made():
    (u,) = _adjacent_units(1, size=4096)
    # fetched bytes, the decoded f32 array and one copy, the encoded bytes
    assert u.cost == 4096 + 2 * 4 * 1024 + 4096


def _deep_llama(fixture_root, tmp_path, layers: int):
    """A local directory holding tiny-llama-spm's config and tokenizer with ``layers`` layers of tiny f16 tensors."""
    (snapshot,) = (fixture_root / "hfs-test" / "tiny-llama-spm" / "commits").iterdir()
    out = tmp_path / f"deep{layers}"
    out.mkdir()
    for name in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(snapshot / name, out / name)
    config = json.loads((snapshot / "config.json").read_text())
    config["num_hidden_layers"] = layers
    (out / "config.json").write_text(json.dumps(config))
    h, inter, kv, vocab = config["hidden_size"], config["intermediate_size"], 32, config["vocab_size"]
    shapes = {"lm_head.weight": (vocab, h), "model.embed_tokens.weight": (vocab, h), "model.norm.weight": (h,)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update({p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
                       p + "mlp.down_proj.weight": (h, inter), p + "mlp.gate_proj.weight": (inter, h),
                       p + "mlp.up_proj.weight": (inter, h), p + "self_attn.k_proj.weight": (kv, h),
                       p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, h),
                       p + "self_attn.q_proj.weight": (h, h)})
    header, pos = {}, 0
    for name in sorted(shapes):
        size = int(np.prod(shapes[name])) * 2
        header[name] = {"dtype": "F16", "shape": list(shapes[name]), "data_offsets": [pos, pos + size]}
        pos += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(out / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.write(np.full(pos // 2, 0.01, np.float16).tobytes())
    return out, len(shapes)


def test_a_conversion_computes_each_units_cost_once(fixture_root, tmp_path, monkeypatch):
    """8x the tensors, 8x the cost evaluations: one per unit, none while batching or starting early."""
    calls = {"n": 0}
    real = units._cost

    def counting(*args):
        calls["n"] += 1
        return real(*args)

    monkeypatch.setattr(units, "_cost", counting)
    seen = {}
    for layers in (16, 128):
        model, tensors = _deep_llama(fixture_root, tmp_path, layers)
        calls["n"] = 0
        result = hfstream.convert(str(model), outtype="f32", outfile=tmp_path / f"{layers}.gguf")
        assert result.tensor_count == tensors and result.units_total == tensors  # small: one unit each
        assert calls["n"] == result.units_total
        seen[layers] = calls["n"]
    assert seen[128] / seen[16] == pytest.approx(1155 / 147)


def test_a_hub_conversion_that_starts_early_computes_each_cost_at_most_twice(fresh_hub, tmp_path, monkeypatch):
    """Once for the early start (without offsets, before the layout), once for the run; the early
    start cuts units only as far as it launches them."""
    calls = {"n": 0}
    real = units._cost

    def counting(*args):
        calls["n"] += 1
        return real(*args)

    monkeypatch.setattr(units, "_cost", counting)
    result = hfstream.convert("hfs-test/tiny-llama-sharded", outtype="q8_0", outfile=tmp_path / "out.gguf")
    assert result.units_total <= calls["n"] <= 2 * result.units_total


def test_units_that_read_the_same_bytes_share_a_batch_and_nothing_else_moves():
    """The gate and up halves of a fused tensor are two tensors whose units read the same spans: one batch each."""
    src = SourceTensor("model.safetensors", "fused", "F32", (8, 64), 0, 8 * 64 * 4)
    load = Load(src)
    gate = PlannedTensor(name="gate", node=load, qtype=QT.F32, shape=(8, 64), nbytes=8 * 64 * 4)
    up = PlannedTensor(name="up", node=load, qtype=QT.F32, shape=(8, 64), nbytes=8 * 64 * 4)
    norm_src = SourceTensor("model.safetensors", "norm", "F32", (64,), 8 * 64 * 4, 8 * 64 * 4 + 256)
    norm = PlannedTensor(name="norm", node=Load(norm_src), qtype=QT.F32, shape=(64,), nbytes=256)
    g = units_for(gate, 0, target=1024)
    u = units_for(up, 4096, target=1024)
    n = units_for(norm, 8192, target=1024)
    assert len(g) == len(u) > 1
    got = batches([*g, *u, *n], target=1024)
    assert [[x.tensor.name for x in b] for b in got] == [["gate", "up"]] * len(g) + [["norm"]]
    assert all(b[0].spans == b[1].spans for b in got[:-1])


def test_a_unit_within_the_bytes_of_the_one_before_joins_its_batch_and_is_fetched_with_it():
    """A Pixtral projector takes one row of the text embedding; in a run that also writes the text model
    (``--with-mmproj``) that row comes with the text model's block of the embedding, not once more."""
    import asyncio

    from hfstream.execute import _fetch_batch
    from hfstream.graph import Reshape, SliceRows

    src = SourceTensor("model.safetensors", "embed", "F32", (16, 8), 64, 64 + 16 * 8 * 4)
    embed = PlannedTensor(name="token_embd.weight", node=Load(src), qtype=QT.F32, shape=(16, 8), nbytes=16 * 8 * 4)
    row = Reshape(SliceRows(Load(src), 5, 6), (8,))
    img_break = PlannedTensor(name="v.token_embd.img_break", node=row, qtype=QT.F32, shape=(8,), nbytes=32)
    norm_src = SourceTensor("model.safetensors", "norm", "F32", (8,), 64 + 512, 64 + 512 + 32)
    norm = PlannedTensor(name="norm", node=Load(norm_src), qtype=QT.F32, shape=(8,), nbytes=32)
    (e,), (r,), (n,) = (units_for(t, 0, target=1 << 20) for t in (embed, img_break, norm))
    assert r.spans[0].start == src.start + 5 * 32 and r.spans[0].end == src.start + 6 * 32
    got = batches([e, r, n], target=1 << 20)
    assert [[u.tensor.name for u in b] for b in got] == [["v.token_embd.img_break", "token_embd.weight", "norm"]]

    blob = bytes(range(256)) * 4
    reads = []

    class Source:
        async def read(self, file, start, length):
            reads.append((start, length))
            return blob[start:start + length]

    data = asyncio.run(_fetch_batch(got[0], Source(), None))  # type: ignore[arg-type]
    assert reads == [(64, 512 + 32)]  # one request: the embedding and the norm after it, the row inside
    assert bytes(data[r.spans[0]]) == blob[64 + 160:64 + 192]
    assert bytes(data[e.spans[0]]) == blob[64:64 + 512] and bytes(data[n.spans[0]]) == blob[576:608]
    # and apart from its neighbours (one request each), the row still comes from the embedding's bytes
    reads.clear()
    data = asyncio.run(_fetch_batch([e, r], Source(), None))  # type: ignore[arg-type]
    assert reads == [(64, 512)] and bytes(data[r.spans[0]]) == blob[64 + 160:64 + 192]


def test_a_batch_of_several_outputs_counts_their_shared_source_bytes_and_array_once():
    """The same 64 x 256 rows in q8_0, f16 and f32 outputs (one run, three outtypes): one fetch of the
    source span, one decoded array at a time, and the three encoded results; not three units' costs."""
    src = SourceTensor("model.safetensors", "w", "BF16", (64, 256), 0, 64 * 256 * 2)
    made = []
    for qt in (QT.Q8_0, QT.F16, QT.F32):
        t = PlannedTensor(name="w", node=Load(src), qtype=qt, shape=(64, 256), nbytes=nbytes(qt, (64, 256)))
        made += units_for(t, 0, target=1 << 30, same_cut_for_any_type=True)
    assert len(made) == 3 and len({u.spans for u in made}) == 1
    values = 64 * 256
    encoded = sum(u.nbytes for u in made)
    assert units.batch_cost(made) == 2 * values + 2 * 4 * values + encoded
    assert units.batch_cost(made) < sum(u.cost for u in made)
    # a single unit costs what it always did
    assert units.batch_cost(made[:1]) == made[0].cost
