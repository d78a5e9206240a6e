"""Execution: units of work in flight, from fetched bytes to bytes written at their offsets.

A unit (``units.py``) takes its cost from the memory budget, fetches its source ranges (one request
for a batch of adjacent small units), transforms and encodes them on the worker threads, off the
event loop, and writes the result at the offset the layout gave it; then it gives the memory back.
Units finish in any order: every write is positional, and the journal records each finished unit,
so a rerun of the same plan does only the rest.

The early start (``Early``): while a forked child builds the vocabulary and the layout, the first
units of the file are already fetched and encoded, within a share of the budget. They keep their
encoded bytes until ``execute`` claims them and writes them once the layout exists.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
from gguf import GGMLQuantizationType as QT

from . import errors
from .budget import Budget, Grant
from .graph import Load, Span, same_graph
from .layout import Layout
from .options import Options, Progress
from .plan import Plan, PlannedTensor
from .quant import quantize
from .source import ByteSource
from .units import (
    Unit,
    batch_cost,
    batches,
    decoded_cost,
    iter_batches,
    unit_target,
    units_for,
)
from .writer import OutputFile

#: what an early-started batch resolves to: its grant (shrunk to the encoded bytes) and those bytes
Encoded = tuple[Grant, list[memoryview]]


class Workers:
    """What every unit shares: the memory budget, the CPU threads, the unit size."""

    def __init__(self, opts: Options):
        self.budget = Budget(opts.max_memory)
        self.threads = opts.threads or os.cpu_count() or 1
        self.pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="hfstream")
        self.target = unit_target(opts.max_memory)


@dataclass
class Target:
    """One output of a run: its plan, its layout, the paths of its files (one, or a split's shards)."""

    plan: Plan
    layout: Layout
    paths: list[Path]


@dataclass
class TargetStats:
    bytes_written: int = 0
    units_total: int = 0
    units_resumed: int = 0


@dataclass
class ExecStats:
    #: per target, in order
    targets: list[TargetStats] = field(default_factory=list)
    #: the budget's peak: the most bytes held by units in flight at once
    peak: int = 0

    @property
    def bytes_written(self) -> int:
        return sum(t.bytes_written for t in self.targets)

    @property
    def units_total(self) -> int:
        return sum(t.units_total for t in self.targets)

    @property
    def units_resumed(self) -> int:
        return sum(t.units_resumed for t in self.targets)


async def execute(targets: Sequence[Target], source: ByteSource, opts: Options, workers: Workers,
                  early: Early | None = None, progress: Progress | None = None) -> ExecStats:
    """Write every file of every target. Several targets (one run, several outtypes) share the
    fetches: their tensors are cut alike, and units that read the same source bytes go in one batch,
    fetched once and encoded once per target.

    With ``opts.on_shard_written`` the shards of a split output are done one after another (the
    i-th shard of every target together), each committed and handed to the callback (e.g. upload,
    then delete) before the next one is even created, so the disk holds one shard (per target) at a
    time. Units ``early`` already encoded are only written. ``progress``: what ``opts.on_progress`` is
    given, its bytes and units kept current here."""
    # every file of every target, numbered in one sequence: a unit's ``file`` indexes ``files``
    files: list[tuple[int, int]] = [(ti, k) for ti, t in enumerate(targets) for k in range(len(t.layout.files))]
    first_file = [files.index((ti, 0)) for ti in range(len(targets))]
    outs: list[OutputFile | None] = [None] * len(files)
    stats = ExecStats(targets=[TargetStats() for _ in targets])
    progress = progress or Progress(total_bytes=sum(t.layout.total_size for t in targets))
    budget, pool = workers.budget, workers.pool
    loop = asyncio.get_running_loop()
    target = workers.target
    shared = len(targets) > 1
    by_file: list[list[Unit]] = [[] for _ in files]
    for ti, tg in enumerate(targets):
        lay = tg.layout
        for t in tg.plan.tensors:
            f = first_file[ti] + lay.file_of[t.name]
            by_file[f].extend(units_for(t, lay.offsets[t.name], target, f, same_cut_for_any_type=shared))
        stats.targets[ti].units_total = sum(len(by_file[first_file[ti] + k]) for k in range(len(lay.files)))
    weights = [_weights_digest(tg.plan) for tg in targets]
    n_shards = max(len(tg.layout.files) for tg in targets)
    groups = ([[f for f, (_, k) in enumerate(files) if k == i] for i in range(n_shards)] if opts.on_shard_written
              else [list(range(len(files)))])
    progress.units_total = stats.units_total
    resumed_bytes = 0

    def report() -> None:
        progress.bytes_written = resumed_bytes + stats.bytes_written + sum(o.bytes_written for o in outs if o)
        progress.bytes_fetched = source.stats.bytes_fetched
        if opts.on_progress is not None:
            opts.on_progress(progress)

    async def write_early(encoded: asyncio.Future[Encoded], units: list[tuple[int, Unit]]) -> None:
        grant, blobs = await encoded
        try:
            await loop.run_in_executor(pool, _write_all, [u for _, u in units], [blobs[i] for i, _ in units], outs)
            progress.units_done += len(units)
            report()
        finally:
            budget.release(grant)

    async def run_batch(batch: list[Unit]) -> None:
        grant = await budget.acquire(batch_cost(batch))
        try:
            data = await _fetch_batch(batch, source, outs)
            if data is not None:  # else copied file to file, nothing to compute
                report()
                await loop.run_in_executor(pool, _compute_and_write_all, batch, data, outs)
            progress.units_done += len(batch)
            report()
        finally:
            budget.release(grant)

    try:
        for group in groups:
            for f in group:
                ti, k = files[f]
                lay = targets[ti].layout
                identity = hashlib.sha256(lay.files[k].header + weights[ti]).hexdigest()[:32]
                outs[f] = out = OutputFile(targets[ti].paths[k], lay.files[k].total_size, identity=identity,
                                           force=opts.force)
                out.pwrite(lay.files[k].header, 0)
            todo = []
            for f in group:
                mine = by_file[f]
                left = [u for u in mine if not _out(outs, u).is_done(u.offset, u.nbytes)]
                stats.targets[files[f][0]].units_resumed += len(mine) - len(left)
                resumed_bytes += sum(u.nbytes for u in mine) - sum(u.nbytes for u in left)
                todo += left
            resumed = sum(len(by_file[f]) for f in group) - len(todo)
            if resumed:  # said once; and the source bytes only resumed units read are not fetched again
                progress.units_resumed += resumed
                progress.units_done += resumed
                needed = {s for u in todo for s in u.spans}
                progress.bytes_to_fetch -= sum(s.nbytes for s in {s for f in group for u in by_file[f] for s in u.spans}
                                               if s not in needed)
            report()
            claimed: list[tuple[asyncio.Future[Encoded], list[tuple[int, Unit]]]] = []
            if early is not None:
                claimed, todo = early.claim(todo, lambda u: files[u.file][0])
            if shared:  # units reading the same bytes side by side, so that they share a batch
                todo.sort(key=_source_order)
            tasks = ([asyncio.ensure_future(write_early(encoded, units)) for encoded, units in claimed]
                     + [asyncio.ensure_future(run_batch(b)) for b in batches(todo, target)])
            if early is not None:
                await early.cancel()  # anything not claimed now is in none of this run's batches
            try:
                await asyncio.gather(*tasks)
            except BaseException:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
            for f in group:
                done = outs[f]
                assert done is not None
                done.commit()
                stats.targets[files[f][0]].bytes_written += done.bytes_written
                outs[f] = None
                if opts.on_shard_written is not None:
                    # blocking work (an upload) off the event loop
                    ti, k = files[f]
                    await loop.run_in_executor(None, opts.on_shard_written, targets[ti].paths[k])
    except BaseException as e:
        pool.shutdown(wait=True, cancel_futures=True)
        for o in outs:
            if o is not None:
                o.abort(keep=_keep_partial(e))
        raise
    report()
    stats.peak = budget.peak
    return stats


def _source_order(u: Unit) -> tuple:
    """Where a unit's bytes are in the source (generated tensors, which read none, first)."""
    if not u.spans:
        return (0, "", 0)
    first = u.spans[0]
    return (1, first.file, first.start)


def _out(outs: list[OutputFile | None], u: Unit) -> OutputFile:
    out = outs[u.file]
    assert out is not None, "a unit of a file that is not open"
    return out


def _keep_partial(exc: BaseException) -> bool:
    """Failures a rerun can resume from keep the .part file and its journal."""
    if isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError)):
        return True
    return isinstance(exc, (errors.NetworkError, errors.OutputWriteError))


class Early:
    """Units fetched and encoded while the vocabulary and the headers are being built.

    The first units of the first output, in order, as long as they fit a share of the budget (fetched
    and encoded bytes, and then the encoded result they keep): the rest of the budget stays for the
    vocabulary's own peak (in the child process that builds it, or in a thread where there is no fork),
    which is not in it, and for the arrays being decoded. Those exist only while a batch is computed,
    one per thread at most: a reserve of the budget, held while early batches are computed, covers
    them, instead of each batch counting one from before its fetch (which kept fetching waiting on the
    encoders: the link at 60-75% until the layouts on the benchmark). With several outputs (one run,
    several outtypes) each batch is encoded for every output whose tensor of that name reads the same bytes,
    from one fetch, as ``execute`` would. Each batch also holds its grant of the whole budget (shrunk to
    the encoded bytes once encoded) until ``execute`` claims its units and writes them at the offsets
    the layouts gave them. Nothing is written before the layouts. Units are cut as they are launched,
    so the early start costs nothing per tensor it does not reach.
    """

    #: of the budget. On the benchmark's throttled link a quarter gave wall/ideal 1.10 where a half gave
    #: 1.07-1.08; with a half the process tree's peak is 330-350 MiB (bench/README.md)
    SHARE = 0.5
    #: with several outputs, which keep an encoding per output of every early batch (q8_0, q4_k_m and
    #: q6_k: 1.22 bytes per source byte, q8_0 alone 0.53): a half ran out before the layouts, three
    #: quarters did not (the throttled pass of bench.multi's three types alone, alternated: 16.72-16.82 s
    #: against 16.35-16.56 s)
    SHARE_SEVERAL = 0.75

    def __init__(self, outputs: Sequence[Sequence[PlannedTensor]], source: ByteSource, workers: Workers):
        """``outputs``: the planned tensors of each output of the run, in the order ``execute`` numbers them."""
        self._source = source
        self._workers = workers
        share = int(workers.budget.limit * (self.SHARE_SEVERAL if len(outputs) > 1 else self.SHARE))
        self._share = Budget(share)
        #: the decoded arrays of the batches being computed: a unit's is at most its target size, one per
        #: thread; out of the budget the share leaves (held from the first launch until the last batch is
        #: computed: ``_reserve``)
        self._decoding = Budget(min(workers.threads * workers.target, workers.budget.limit - share))
        self._reserve: Grant | None = None
        self._computing = 0  # batches launched and not yet computed (or dropped)
        #: (output, tensor name, r0, r1) -> the encoding of the batch holding that unit, and its index there
        self._tasks: dict[tuple, tuple[asyncio.Future[Encoded], int]] = {}
        self._keys: dict[asyncio.Future[Encoded], list[tuple]] = {}
        self._stopped = False
        #: a unit of the first output -> the same rows of the other outputs: (output, unit)
        self._partners: dict[tuple, list[tuple[int, Unit]]] = {}
        shared = len(outputs) > 1
        units = self._first_units(outputs, shared)
        self._launcher = asyncio.ensure_future(self._launch(iter_batches(units, workers.target)))

    def _first_units(self, outputs: Sequence[Sequence[PlannedTensor]], shared: bool) -> Iterator[Unit]:
        """The first output's units, as ``execute`` cuts them; the other outputs' units for the same
        rows, where they read the very same bytes, noted as their partners."""
        target = self._workers.target
        others = [{t.name: t for t in tensors} for tensors in outputs[1:]] if shared else []
        for t in outputs[0]:
            mine = units_for(t, 0, target, same_cut_for_any_type=shared)
            theirs = [(k, units_for(o[t.name], 0, target, same_cut_for_any_type=True))
                      for k, o in enumerate(others, 1) if t.name in o]
            for i, u in enumerate(mine):
                partners = [(k, v[i]) for k, v in theirs
                            if len(v) == len(mine) and (v[i].r0, v[i].r1, v[i].spans) == (u.r0, u.r1, u.spans)]
                if partners:
                    self._partners[_unit_key(0, u)] = partners
                yield u

    async def _launch(self, todo: Iterable[list[Unit]]) -> None:
        self._reserve = await self._workers.budget.acquire(self._decoding.limit)
        for first in todo:
            # each unit beside its partners: the same rows are evaluated once for all outputs (``_encoded``)
            group = [g for u in first for g in ((0, u), *self._partners.pop(_unit_key(0, u), ()))]
            batch = [u for _, u in group]
            cost = batch_cost(batch) - decoded_cost(batch)
            share = await self._share.acquire(cost)  # never given back: the window ends with the layout
            grant = await self._workers.budget.acquire(cost, beside=self._decoding.limit)
            if self._stopped:
                self._workers.budget.release(grant)
                return
            task = asyncio.ensure_future(self._encode(batch, grant, share))
            self._computing += 1
            task.add_done_callback(self._computed)
            # an error surfaces where the unit is claimed; unclaimed (the run failed elsewhere) it is moot
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            keys = [_unit_key(k, u) for k, u in group]
            self._keys[task] = keys
            for i, key in enumerate(keys):
                self._tasks[key] = (task, i)

    async def _encode(self, batch: list[Unit], grant: Grant, share: Grant) -> Encoded:
        budget = self._workers.budget
        try:
            data = await _fetch_batch(batch, self._source, None)
            assert data is not None  # nothing is copied file to file without the output
            decoding = await self._decoding.acquire(decoded_cost(batch))
            try:
                blobs = await asyncio.get_running_loop().run_in_executor(self._workers.pool, _encode_all, batch, data)
            finally:
                self._decoding.release(decoding)
            del data
            encoded = sum(u.nbytes for u in batch)
            self._share.shrink(share, encoded)
            return budget.shrink(grant, encoded), blobs
        except BaseException:
            budget.release(grant)
            self._share.release(share)
            raise

    def stop(self) -> None:
        """Start no more units (those started go on)."""
        self._stopped = True
        self._launcher.cancel()
        self._give_back_reserve()

    def _computed(self, task: asyncio.Future) -> None:
        self._computing -= 1
        self._give_back_reserve()

    def _give_back_reserve(self) -> None:
        """The reserve for decoded arrays, once no batch will be computed any more."""
        if self._stopped and self._computing == 0 and self._reserve is not None:
            self._workers.budget.release(self._reserve)
            self._reserve = None

    def claim(self, units: list[Unit], output_of: Callable[[Unit], int]
              ) -> tuple[list[tuple[asyncio.Future[Encoded], list[tuple[int, Unit]]]], list[Unit]]:
        """Split ``units`` (``execute``'s, with their offsets) into those started early, by batch: the
        batch's encoding (resolving to its grant and encoded bytes) and (index in it, unit) of each; and
        the rest, in order. ``output_of``: a unit's output, numbered as in ``outputs``."""
        claimed: dict[asyncio.Future[Encoded], list[tuple[int, Unit]]] = {}
        rest = []
        for u in units:
            hit = self._tasks.get(_unit_key(output_of(u), u))
            if hit is None:
                rest.append(u)
            else:
                claimed.setdefault(hit[0], []).append((hit[1], u))
        for task in claimed:  # a batch is claimed whole: its grant goes back once what is claimed is written
            for key in self._keys.pop(task):
                del self._tasks[key]
        return list(claimed.items()), rest

    async def cancel(self) -> None:
        """Drop every unit not claimed, giving its memory back."""
        self.stop()
        tasks, self._tasks, self._keys = list(self._keys), {}, {}
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(self._launcher, *tasks, return_exceptions=True)
        for r in results[1:]:
            if isinstance(r, tuple):  # finished before the cancel: its grant is still held
                self._workers.budget.release(r[0])


def _unit_key(output: int, u: Unit) -> tuple:
    return (output, u.tensor.name, u.r0, u.r1)


async def _fetch_batch(batch: list[Unit], source: ByteSource,
                       outs: list[OutputFile | None] | None) -> dict[Span, bytes | memoryview] | None:
    """The bytes of every span of the batch: one request for adjacent spans, else one per span.

    A lone raw-copy unit from a local file goes file to file instead when there are ``outs`` (returns None).
    """
    if outs is not None and len(batch) == 1 and _raw_copy(batch[0]) and batch[0].tensor.qtype != QT.BF16:
        (span,) = batch[0].spans
        out = _out(outs, batch[0])
        if source.copy_to(span.file, span.start, span.nbytes, out.fileno(), batch[0].offset):
            out.record(batch[0].offset, batch[0].nbytes, zlib.crc32(os.pread(out.fileno(), span.nbytes,
                                                                                batch[0].offset)))
            return None
    spans = list(dict.fromkeys(s for u in batch for s in u.spans))
    container = _containers(spans)  # a span inside another is served from the other's bytes
    outer = [s for s in spans if container[s] is s]
    if len(outer) > 1 and all(a.file == b.file and a.end == b.start for a, b in zip(outer, outer[1:])):
        first, last = outer[0], outer[-1]
        blob = await source.read(first.file, first.start, last.end - first.start)
        view = memoryview(blob)
        return {s: view[s.start - first.start:s.end - first.start] for s in spans}
    blobs = dict(zip(outer, await asyncio.gather(*(source.read(s.file, s.start, s.nbytes) for s in outer))))
    return {s: blobs[s] if container[s] is s else
            memoryview(blobs[container[s]])[s.start - container[s].start:s.end - container[s].start] for s in spans}


def _containers(spans: list[Span]) -> dict[Span, Span]:
    """Each span's outermost span among ``spans`` that holds it (itself, for most)."""
    out: dict[Span, Span] = {}
    outer: Span | None = None
    for s in sorted(spans, key=lambda s: (s.file, s.start, -s.end)):
        if outer is None or s.file != outer.file or s.end > outer.end or s.start >= outer.end:
            outer = s
        out[s] = outer
    return out


def _weights_digest(plan: Plan) -> bytes:
    """Importance weights change the bytes but not the header: a resume must not mix two imatrices."""
    h = hashlib.sha256()
    for t in plan.tensors:
        if t.weights is not None:
            h.update(t.name.encode() + t.weights.values.tobytes())
    return h.digest() if any(t.weights is not None for t in plan.tensors) else b""


def _raw_copy(u: Unit) -> bool:
    """Output type = source type and no transform: the bytes pass through without a decode."""
    node = u.tensor.node
    return isinstance(node, Load) and _SAME_TYPE.get(node.src.dtype) == u.tensor.qtype


_SAME_TYPE = {"F32": QT.F32, "F16": QT.F16, "BF16": QT.BF16}


def _compute_and_write_all(batch: list[Unit], data: dict[Span, bytes | memoryview],
                           outs: list[OutputFile | None]) -> None:
    for u, encoded in _encoded(batch, data):
        _write(u, encoded, outs)


def _encode_all(batch: list[Unit], data: dict[Span, bytes | memoryview]) -> list[memoryview]:
    return [encoded for _, encoded in _encoded(batch, data)]


def _encoded(batch: list[Unit], data: dict[Span, bytes | memoryview]) -> Iterator[tuple[Unit, memoryview]]:
    """Each unit's bytes as they go in the file. A unit that reads the same rows through the same graph
    as the one before (the same rows of another output of the run: several outtypes) quantizes that
    unit's values instead of evaluating them again (a tenth of the CPU of q8_0,q4_k_m,q6_k); one array
    at a time, as ``batch_cost`` counts."""
    last: Unit | None = None
    values: np.ndarray | None = None
    for u in batch:
        if _raw_copy(u):
            yield u, _encode(u, data, None)
        else:
            if last is None or not _same_rows(last, u):
                last = values = None  # the array before goes before the next is made
                values = u.tensor.node.eval_rows(data, u.r0, u.r1)
                values.flags.writeable = False  # shared by the units after: no encoder may change it
                last = u
            yield u, _encode(u, data, values)


def _same_rows(a: Unit, b: Unit) -> bool:
    return (a.r0, a.r1, a.spans) == (b.r0, b.r1, b.spans) and same_graph(a.tensor.node, b.tensor.node)


def _write_all(batch: list[Unit], encoded: list[memoryview], outs: list[OutputFile | None]) -> None:
    for u, blob in zip(batch, encoded):
        _write(u, blob, outs)


def _encode(u: Unit, data: dict[Span, bytes | memoryview], array: np.ndarray | None) -> memoryview:
    """The unit's bytes as they go in the file; ``array``: its rows' values (None for a raw copy)."""
    if array is None:
        (span,) = u.spans
        encoded = memoryview(data[span])
        if u.tensor.qtype == QT.BF16:
            encoded = _quiet_bf16_nans(encoded)
    else:
        # a node may give its rows in the tensor's GGUF type already (repacked MXFP4): written as they are
        q = array if u.tensor.node.encoded is not None else quantize(array, u.tensor.qtype, weights=u.tensor.weights,
                                                                     first_row=u.r0)
        encoded = np.ascontiguousarray(q).data.cast("B")  # no copy when it is contiguous already
    if encoded.nbytes != u.nbytes:
        raise errors.InvalidHeaderError(f"{u.tensor.name}: encoded {encoded.nbytes} bytes, planned {u.nbytes}")
    return encoded


def _write(u: Unit, encoded: memoryview, outs: list[OutputFile | None]) -> None:
    out = _out(outs, u)
    out.pwrite(encoded, u.offset)
    out.record(u.offset, u.nbytes, zlib.crc32(encoded))


def _quiet_bf16_nans(raw: memoryview) -> memoryview:
    """BF16 -> F32 -> BF16 is the identity except that NaNs come back quiet (the 0x0040 bit set)."""
    u16 = np.frombuffer(raw, dtype="<u2")
    nan = (u16 & 0x7FFF) > 0x7F80
    if not nan.any():
        return raw
    fixed = np.where(nan, u16 | 0x0040, u16).astype("<u2")
    return fixed.data.cast("B")
