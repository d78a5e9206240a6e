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


def batch_cost(batch: Sequence[Unit]) -> int:
    """Peak bytes a batch holds in flight: its source bytes once (the units of several outputs that
    read the same rows share them), the decoded array of one unit at a time (the units of a batch are
    computed one after another), and the encoded result of every unit (an early-started batch keeps
    them all until the layout exists). Summing the units' own costs would count the source bytes and
    the decoded array once per output, and let a run of several outtypes keep a third as much in flight."""
    fetched = sum(s.nbytes for s in {s for u in batch for s in u.spans})
    return fetched + decoded_cost(batch) + sum(u.nbytes for u in batch)


def decoded_cost(batch: Sequence[Unit]) -> int:
    """Of ``batch_cost``, what only exists while the batch is computed: one unit's decoded array."""
    return max(2 * 4 * (u.r1 - u.r0) * u.tensor.node.cols for u in batch)


def units_for(t: PlannedTensor, offset: int, target: int, file: int = 0, *, same_cut_for_any_type: bool = False) -> list[Unit]:
    """Cut a tensor into row blocks of about ``target`` bytes of cost; a Stack part never shares a unit.

    Blocks are aligned to what the node allows (whole heads for permuted q/k, whole experts at
    most for MoE stacks), so no source byte is needed by two units. ``same_cut_for_any_type``: cut
    as if the output were F32 (the widest type), so that the same tensor in outputs of other types
    (one run, several outtypes) is cut into the same blocks, which read the same source spans.
    """
    node = t.node
    rows, cols = node.rows, node.cols
    row_bytes = t.nbytes // rows if rows else 0
    align = node.row_align()
    if align is None or rows <= align:
        spans = tuple(node.spans(0, rows))
        return [Unit(t, 0, rows, offset, t.nbytes, spans, _cost(spans, rows * cols, t.nbytes), file)]
    part = node.part_rows if isinstance(node, Stack) else rows
    cut_row_bytes = 4 * cols if same_cut_for_any_type else row_bytes
    per_row = max(1, (sum(s.nbytes for s in node.spans(0, align)) + 8 * align * cols + align * cut_row_bytes) // align)
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

    A unit that reads the very bytes a unit of the same or the previous tensor reads (the gate and up
    halves of the same rows of a fused expert tensor, which a family gives as two tensors one after
    the other), or bytes within those the batch's last unit reads (the row of the text embedding a
    vision projector takes, after the text model's block of it in one run), joins that unit's batch,
    so those bytes are fetched once. A batch is therefore yielded
    once the units of the tensor after its last one are cut, so a caller that stops early has cut
    only a tensor more than it used.
    """
    done: list[tuple[int, list[Unit]]] = []  # (index of its last tensor, batch), oldest first
    readers: dict[tuple[Span, ...], list[Unit]] = {}  # spans -> the batch, not yet yielded, that reads them
    batch: list[Unit] = []
    cost = 0
    #: whether ``batch`` takes neighbours: only a batch of single-span units does
    open_ = False
    tensor, index = None, -1
    for u in units:
        if u.tensor is not tensor:
            tensor, index = u.tensor, index + 1
            while done and done[0][0] < index - 1:
                for v in done[0][1]:
                    readers.pop(v.spans, None)
                yield done.pop(0)[1]
        if u.spans and (sharing := readers.get(u.spans)) is not None:
            sharing.append(u)
            if sharing is batch:
                cost += u.cost
            continue
        if batch and len(u.spans) == 1 and _within(u.spans[0], batch[-1].spans):
            batch.insert(len(batch) - 1, u)  # the holder stays last: its neighbours still join
            readers[u.spans] = batch
            cost += u.cost
            continue
        if open_ and len(u.spans) == 1:
            last, here = batch[-1].spans[0], u.spans[0]
            if here.file == last.file and here.start == last.end and cost + u.cost <= target:
                batch.append(u)
                readers[u.spans] = batch
                cost += u.cost
                continue
        if batch:
            done.append((index if batch[-1].tensor is tensor else index - 1, batch))
        batch, cost, open_ = [u], u.cost, len(u.spans) == 1
        readers[u.spans] = batch
    if batch:
        done.append((index, batch))
    for _, b in done:
        yield b


def _within(span: Span, spans: Sequence[Span]) -> bool:
    """Whether ``span`` lies inside one of ``spans``."""
    return any(s.file == span.file and s.start <= span.start and span.end <= s.end for s in spans)


def batches(units: Iterable[Unit], target: int) -> list[list[Unit]]:
    """``iter_batches`` as a list."""
    return list(iter_batches(units, target))
