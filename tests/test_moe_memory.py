"""MoE expert stacks are executed one expert (or less) at a time, under the memory budget.

An ``ffn_*_exps`` tensor is a ``graph.Stack`` of one source tensor per expert. The pipeline must
not hold a whole stack in memory: each part is fetched, decoded, encoded and written at its own
offset, so the bytes in flight stay near one expert whatever the number of experts. The fixture is
the MoE repo with the largest experts (tiny-mixtral: 4 experts of 320 x 64 per projection).
"""

from __future__ import annotations

import pytest

import hfstream
from hfstream.graph import Stack
from hfstream.plan import make_plan

from .conftest import golden
from .goldens.digest import diff_digests, digest_gguf
from .test_convert import comparable

REPO = "hfs-test/tiny-mixtral"
N_EXPERTS = 4


def _plan(fixture_root, outtype: str):
    """The plan of the fixture, made from its files on disk (no Hub)."""
    import json

    from hfstream.safetensors import parse_header

    info = json.loads((fixture_root / REPO / "repo.json").read_text())
    snap = fixture_root / REPO / "commits" / info["refs"]["main"]
    files = {p.name: p.read_bytes() for p in snap.iterdir() if p.suffix != ".safetensors"}
    shards = sorted(p.name for p in snap.glob("model*.safetensors"))
    headers = {}
    for s in shards:
        data = (snap / s).read_bytes()
        headers[s] = parse_header(s, data, len(data))
    return make_plan(repo_name="tiny-mixtral", files=files, headers=headers, shards=shards, outtype=outtype)


def _stack_bytes(t) -> tuple[int, int]:
    """(bytes a whole stack holds at least, bytes one expert holds at least): its source bytes
    plus its values decoded to F32, for the whole tensor and for one part."""
    fetched = sum(s.nbytes for s in t.node.leaves())
    numel = 1
    for d in t.shape:
        numel *= d
    whole = fetched + 4 * numel
    return whole, whole // len(t.node.parts)


@pytest.mark.parametrize("outtype", ["q8_0", "bf16"])
def test_expert_stacks_stream_one_expert_at_a_time(fresh_hub, fixture_root, tmp_path, monkeypatch, outtype):
    plan = _plan(fixture_root, outtype)
    stacks = [t for t in plan.tensors if isinstance(t.node, Stack)]
    assert len(stacks) == 3 * 2 and all(len(t.node.parts) == N_EXPERTS for t in stacks)
    whole, one_expert = max(_stack_bytes(t) for t in stacks)
    # every evaluation of a stack is recorded: which rows, and how many rows one expert has
    evaluated: list[tuple[int, int, int]] = []
    eval_rows = Stack.eval_rows

    def recording_eval_rows(self, data, r0, r1):
        evaluated.append((r0, r1, self.part_rows))
        return eval_rows(self, data, r0, r1)

    monkeypatch.setattr(Stack, "eval_rows", recording_eval_rows)

    budget = 2 * one_expert  # two experts' worth: half a stack
    result = hfstream.convert(REPO, outtype=outtype, outfile=tmp_path, max_memory=budget)

    # each stack was computed one expert (or a block of one expert's rows) at a time ...
    assert len(evaluated) >= len(stacks) * N_EXPERTS
    assert all(r0 // part == (r1 - 1) // part for r0, r1, part in evaluated)
    # ... and the bytes in flight stayed under the budget, i.e. well under a whole stack
    assert 0 < result.peak_bytes_in_flight <= budget < whole
    # and streaming the experts changed nothing in the output
    assert diff_digests(comparable(golden(f"tiny-mixtral.{outtype}")), comparable(digest_gguf(result.path))) == []


def test_a_budget_smaller_than_one_expert_still_converts(fresh_hub, tmp_path):
    """Below one expert the parts are cut into row blocks; the output is the same."""
    result = hfstream.convert(REPO, outtype="q8_0", outfile=tmp_path, max_memory=64 * 1024)
    assert 0 < result.peak_bytes_in_flight <= 64 * 1024
    assert diff_digests(comparable(golden("tiny-mixtral.q8_0")), comparable(digest_gguf(result.path))) == []
