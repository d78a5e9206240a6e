"""MoE expert stacks are executed one expert (or less) at a time, under the memory budget.

An ``ffn_*_exps`` tensor is a ``graph.Stack`` of one source tensor per expert. The pipeline must
not hold a whole stack in memory: each part is fetched, decoded, encoded and written at its own
offset, so the bytes in flight stay near one expert whatever the number of experts. The fixtures are
the MoE repo with the largest experts (tiny-mixtral: 4 experts of 320 x 64 per projection) and an FP8
one (tiny-deepseek-v3: 8 experts of 200 x 64 F8_E4M3 bytes, each with its own block scales, one of
them in another shard), where a unit is one expert's weight plus its scales; and DeepSeek-V4's MXFP4
experts (tiny-deepseek-v4: 8 experts of I8 codes and E8M0 scales per projection), repacked expert by
expert.
"""

from __future__ import annotations

import pytest

import hfstream
from hfstream.graph import Stack
from hfstream.plan import make_plan
from fixtures.build import snapshot_dir

from .conftest import golden
from .goldens.digest import diff_digests, digest_gguf
from .test_convert import comparable

REPO = "hfs-test/tiny-mixtral"
N_EXPERTS = 4
#: (repo, experts per stack, stacks, outtype) of the MoE fixtures whose experts stream one at a time
MOE_CASES = [(REPO, N_EXPERTS, 3 * 2, "q8_0"), (REPO, N_EXPERTS, 3 * 2, "bf16"),
             ("hfs-test/tiny-deepseek-v3", 8, 3, "q8_0"), ("hfs-test/tiny-deepseek-v4", 8, 4 * 3, "q8_0")]


def _plan(fixture_root, outtype: str, repo: str = REPO):
    """The plan of the fixture, made from its files on disk (no Hub)."""

    from hfstream.safetensors import parse_header

    snap = snapshot_dir(fixture_root / repo)
    files = {p.name: p.read_bytes() for p in snap.iterdir() if p.suffix != ".safetensors"}
    shards = sorted(p.name for p in snap.glob("model*.safetensors"))
    headers = {}
    for s in shards:
        data = (snap / s).read_bytes()
        headers[s] = parse_header(s, data, len(data))
    return make_plan(repo_name=repo.split("/")[1], files=files, headers=headers, shards=shards, outtype=outtype)


def _stack_bytes(t) -> tuple[int, int]:
    """(bytes a whole stack holds at least, bytes one expert holds at least): its source bytes (an FP8
    expert's weight and its scales), its values decoded to F32 and a working copy, and its encoded
    bytes, for the whole tensor and for one part."""
    fetched = sum(s.nbytes for s in t.node.leaves())
    numel = 1
    for d in t.shape:
        numel *= d
    whole = fetched + 2 * 4 * numel + t.nbytes
    return whole, whole // len(t.node.parts)


@pytest.mark.parametrize("repo, n_experts, n_stacks, outtype", MOE_CASES,
                         ids=[f"{r.split('/')[1]}-{t}" for r, _, _, t in MOE_CASES])
def test_expert_stacks_stream_one_expert_at_a_time(fresh_hub, fixture_root, tmp_path, monkeypatch, repo, n_experts,
                                                   n_stacks, outtype):
    plan = _plan(fixture_root, outtype, repo)
    stacks = [t for t in plan.tensors if isinstance(t.node, Stack)]
    assert len(stacks) == n_stacks and all(len(t.node.parts) == n_experts for t in stacks)
    whole, one_expert = max(_stack_bytes(t) for t in stacks)
    # every evaluation of a stack is recorded: which rows, and how many rows one expert has
    evaluated: list[tuple[int, int, int]] = []
    eval_rows = Stack.eval_rows

    def recording_eval_rows(self, data, r0, r1):
        evaluated.append((r0, r1, self.part_rows))
        return eval_rows(self, data, r0, r1)

    monkeypatch.setattr(Stack, "eval_rows", recording_eval_rows)

    budget = 2 * one_expert  # two experts' worth: a quarter of a stack or less
    result = hfstream.convert(repo, outtype=outtype, outfile=tmp_path, max_memory=budget)

    # each stack was computed one expert (or a block of one expert's rows) at a time ...
    assert len(evaluated) >= len(stacks) * n_experts
    assert all(r0 // part == (r1 - 1) // part for r0, r1, part in evaluated)
    # ... and the bytes in flight stayed under the budget, i.e. well under a whole stack
    assert 0 < result.peak_bytes_in_flight <= budget < whole
    # and streaming the experts changed nothing in the output
    name = repo.split("/")[1]
    assert diff_digests(comparable(golden(f"{name}.{outtype}")), comparable(digest_gguf(result.path))) == []


def test_an_fp8_expert_unit_fetches_its_weight_rows_and_only_its_own_scales(fixture_root):
    """A unit of an FP8 stack: one expert's F8 bytes and that expert's scale rows (another tensor, maybe
    another shard), nothing of the other experts."""
    from hfstream.graph import BlockScale
    from hfstream.units import units_for

    plan = _plan(fixture_root, "q8_0", "hfs-test/tiny-deepseek-v3")
    stacks = [t for t in plan.tensors if isinstance(t.node, Stack)]
    up = next(t for t in stacks if t.name == "blk.1.ffn_up_exps.weight")
    assert all(isinstance(p, BlockScale) for p in up.node.parts)
    units = units_for(up, 0, target=1 << 20)
    assert len(units) == 8  # 200 rows per expert: a partial 16-row block ends each, so whole experts
    for x, unit in enumerate(units):
        names = {s.src.name for s in unit.spans}
        prefix = f"model.layers.1.mlp.experts.{x}.up_proj.weight"
        assert names == {prefix, prefix + "_scale_inv"}
        weight = next(s for s in unit.spans if s.src.name == prefix)
        assert weight.nbytes == 200 * 64  # one F8 byte per weight
    # expert 3's scale sits in the second shard, its weight in the first
    files = {s.src.name: s.file for s in units[3].spans}
    assert files == {"model.layers.1.mlp.experts.3.up_proj.weight": "model-00001-of-000003.safetensors",
                     "model.layers.1.mlp.experts.3.up_proj.weight_scale_inv": "model-00002-of-000003.safetensors"}


def test_a_budget_smaller_than_one_expert_still_converts(fresh_hub, tmp_path):
    """Below one expert the parts are cut into row blocks; the output is the same."""
    result = hfstream.convert(REPO, outtype="q8_0", outfile=tmp_path, max_memory=64 * 1024)
    assert 0 < result.peak_bytes_in_flight <= 64 * 1024
    assert diff_digests(comparable(golden("tiny-mixtral.q8_0")), comparable(digest_gguf(result.path))) == []
