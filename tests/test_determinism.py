"""Same inputs and options give the same bytes, whatever the threads, connections or memory budget."""

from __future__ import annotations

import hashlib

import pytest
from gguf import GGMLQuantizationType as QT

import hfstream
from hfstream.graph import Load, PermuteHeads, Stack
from hfstream.units import units_for
from hfstream.plan import PlannedTensor
from hfstream.quant import nbytes
from hfstream.safetensors import SourceTensor


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("repo, outtype, budget", [
    ("hfs-test/tiny-llama-spm", "q8_0", 32 * 1024),
    ("hfs-test/tiny-mistral", "f16", 32 * 1024),
    ("hfs-test/tiny-llama-sharded", "bf16", 1 << 20),
])
def test_output_bytes_do_not_depend_on_concurrency_or_budget(repo, outtype, budget, fresh_hub, tmp_path):
    """A budget this small cuts every matrix into row blocks (units of budget/8)."""
    runs = {
        "threads1-conn1": dict(threads=1, connections=1),
        "threads2-conn8": dict(threads=2, connections=8),
        "tiny-budget": dict(threads=2, connections=8, max_memory=budget),
    }
    digests = {}
    for name, kw in runs.items():
        r = hfstream.convert(repo, outtype=outtype, outfile=tmp_path / f"{name}.gguf", **kw)
        digests[name] = sha(r.path)
        if name == "tiny-budget":
            assert r.peak_bytes_in_flight <= budget
    assert len(set(digests.values())) == 1, digests


def _planned(node, qt=QT.Q8_0):
    return PlannedTensor(name="t", node=node, qtype=qt, shape=node.shape, nbytes=nbytes(qt, node.shape))


def test_units_cover_the_tensor_in_order_and_never_straddle_an_expert():
    experts = [SourceTensor("f", f"e{i}", "BF16", (64, 256), i * 32768, (i + 1) * 32768) for i in range(4)]
    t = _planned(Stack(tuple(Load(e) for e in experts)))
    units = units_for(t, offset=1000, target=48 * 1024)
    assert units[0].offset == 1000
    assert sum(u.nbytes for u in units) == t.nbytes
    assert all(a.offset + a.nbytes == b.offset for a, b in zip(units, units[1:]))
    for u in units:
        assert u.r0 // 64 == (u.r1 - 1) // 64  # inside one expert
        assert len({s.src for s in u.spans}) == 1
    # a big budget still gives one unit per expert at most
    assert len(units_for(t, 0, 1 << 30)) == 4


def test_permuted_rows_are_cut_at_whole_heads():
    q = SourceTensor("f", "q", "F32", (64, 64), 0, 64 * 64 * 4)
    t = _planned(PermuteHeads(Load(q), 4), QT.F16)
    units = units_for(t, 0, target=4096)
    assert len(units) > 1
    assert all(u.r0 % 16 == 0 and (u.r1 - u.r0) % 16 == 0 for u in units)
