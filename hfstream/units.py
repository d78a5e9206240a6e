"""Units of work: how output tensors are cut into blocks of rows that fetch, encode and write on their own.

A unit is rows [r0, r1) of one planned tensor: the source bytes those rows need (``graph``'s spans),
where their encoded bytes go in the output, and what the unit costs in memory while in flight
(fetched bytes, the decoded array and one copy of it, the encoded result). Blocks are cut at the
rows the tensor's node allows (whole heads of a permuted q/k, one expert at most of an MoE stack)
and sized so that several fit the memory budget.

Small neighbours (norms, biases) are batched: consecutive single-span units whose source bytes are
adjacent share one Range request. Everything here is linear in the tensor count: a unit's cost is
computed once, when it is made, and a batch keeps its running total (DeepSeek-V3 has ~91k tensors).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

from .graph import Span, Stack
from .plan import PlannedTensor


@dataclass(frozen=True)
class Unit:
    """Rows [r0, r1) of one output tensor: fetched, transformed, encoded and written on their own."""

    tensor: PlannedTensor
    r0: int
    r1: int
    #: absolute file offset of the unit's first byte
    offset: int
    nbytes: int
    spans: tuple[Span, ...]
    #: peak bytes the unit holds in flight (``_cost``), computed once
    cost: int
    #: which output file (shard of a split output) the unit is written to
    file: int = 0


def _cost(spans: Sequence[Span], values: int, nbytes: int) -> int:
    """Peak bytes a unit holds: fetched bytes, the decoded F32 array (and one copy), the encoded result."""
    return sum(s.nbytes for s in spans) + 2 * 4 * values + nbytes


def units_for(t: PlannedTensor, offset: int, target: int, file: int = 0) -> list[Unit]:
    """Cut a tensor into row blocks of about ``target`` bytes of cost; a Stack part never shares a unit.

    Blocks are aligned to what the node allows (whole heads for permuted q/k, whole experts at
    most for MoE stacks), so no source byte is needed by two units.
    """
    node = t.node
    rows, cols = node.rows, node.cols
    row_bytes = t.nbytes // rows if rows else 0
    align = node.row_align()
    if align is None or rows <= align:
        spans = tuple(node.spans(0, rows))
        return [Unit(t, 0, rows, offset, t.nbytes, spans, _cost(spans, rows * cols, t.nbytes), file)]
    part = node.part_rows if isinstance(node, Stack) else rows
    per_row = max(1, (sum(s.nbytes for s in node.spans(0, align)) + 8 * align * cols + align * row_bytes) // align)
    block = max(align, (target // per_row) // align * align)
    block = min(block, part)
    units = []
    for p0 in range(0, rows, part):
        for r0 in range(p0, p0 + part, block):
            r1 = min(r0 + block, p0 + part)
            spans = tuple(node.spans(r0, r1))
            nbytes = (r1 - r0) * row_bytes
            units.append(Unit(t, r0, r1, offset + r0 * row_bytes, nbytes, spans,
                              _cost(spans, (r1 - r0) * cols, nbytes), file))
    return units


def unit_target(max_memory: int) -> int:
    """Unit size: small enough that several fit the budget, big enough to keep per-unit overhead low."""
    return max(4096, min(64 << 20, max_memory // 8))


def iter_batches(units: Iterable[Unit], target: int) -> Iterator[list[Unit]]:
    """Coalesce neighbours: consecutive single-span units whose bytes are adjacent in the same file
    share one Range request, up to ``target`` bytes of cost (small tensors: norms, biases).

    Each batch is yielded once complete, so a caller that stops early has cut only what it used.
    """
    batch: list[Unit] = []
    cost = 0
    #: whether ``batch`` takes neighbours: only a batch of single-span units does
    open_ = False
    for u in units:
        if open_ and len(u.spans) == 1:
            last, here = batch[-1].spans[0], u.spans[0]
            if here.file == last.file and here.start == last.end and cost + u.cost <= target:
                batch.append(u)
                cost += u.cost
                continue
        if batch:
            yield batch
        batch, cost, open_ = [u], u.cost, len(u.spans) == 1
    if batch:
        yield batch


def batches(units: Iterable[Unit], target: int) -> list[list[Unit]]:
    """``iter_batches`` as a list."""
    return list(iter_batches(units, target))
