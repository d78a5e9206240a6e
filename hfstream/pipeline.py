"""The scheduler: resolve -> small files -> headers -> plan -> layout -> execute -> finalize.

Execution takes the plan's tensors as units of work. Each unit fetches its source
ranges, transforms and quantizes them off the event loop, and writes the result at
its precomputed offset, so units may finish in any order. One memory budget bounds
the bytes held by units in flight.

The plan is drafted first without its vocabulary: tensors, types and order are then
final, so while a forked child builds the vocabulary and the layout (a second of CPU
on a big tokenizer, the link idle otherwise) the first units are already fetched and
encoded. They wait in memory, within the budget, for the layout to give them offsets:
every write is still a positional write into a file laid out in full.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import time
import zlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import gguf
import numpy as np
from gguf import GGMLQuantizationType as QT

from . import errors, forked, hub, mixplan, settings
from .arch import family_class
from .hfconfig import load_config, prepare as prepare_config_reader
from .fetch import ByteSource, HubSource
from .layout import Layout, layout
from .plan import Plan, PlannedTensor, draft_plan, weight_files, with_vocab
from .quant import quantize
from .graph import Load, Span, Stack
from .localdir import LocalSource, local_snapshot
from .safetensors import SourceTensor, read_header
from .writer import OutputFile, check_destination, part_path
from .settings import DEFAULT_MAX_MEMORY


@dataclass
class ConvertResult:
    """What a conversion did."""

    #: the written GGUF, the first shard of a split output (for a dry run: where it would be written)
    path: Path
    repo_id: str
    revision: str
    commit_sha: str
    outtype: str
    tensor_count: int
    bytes_fetched: int
    bytes_written: int
    seconds: float
    output_size: int
    dry_run: bool = False
    #: every file written: [path], or the shards of a split output in order
    paths: list[Path] = field(default_factory=list)
    #: (name, GGUF shape, type name, bytes) per tensor, in file order
    tensors: list[tuple[str, tuple[int, ...], str, int]] = field(default_factory=list)
    #: bytes of tensor data the conversion fetches (the dry run's estimate, the real run's need)
    source_bytes: int = 0
    #: the most bytes (fetched, decoded, encoded) held by units in flight at once
    peak_bytes_in_flight: int = 0
    #: work units of the conversion, and how many an earlier interrupted run had already finished
    units_total: int = 0
    units_resumed: int = 0


@dataclass
class Progress:
    """Counters a progress display can poll."""

    total_bytes: int = 0
    bytes_written: int = 0
    bytes_fetched: int = 0
    started: float = field(default_factory=time.monotonic)


@dataclass
class Options:
    outtype: str = "auto"
    revision: str = "main"
    outfile: str | os.PathLike | None = None
    token: str | None = None
    endpoint: str | None = None
    dry_run: bool = False
    force: bool = False
    bpe_pre: str | None = None
    connections: int = 8
    threads: int | None = None
    max_memory: int = DEFAULT_MAX_MEMORY
    retries: int = 8
    connect_timeout: float = 30.0
    #: seconds without a byte before a connection counts as stalled and is retried
    read_timeout: float = 60.0
    on_progress: Callable[[Progress], None] | None = None
    #: split the output into shards of at most this many bytes / tensors (0: no limit), as gguf-split does
    split_max_size: int = 0
    split_max_tensors: int = 0
    #: called with each finished file's path, in order; shards are then written one at a time
    on_shard_written: Callable[[Path], None] | None = None
    #: llama-quantize mixes only: an importance matrix file, PATTERN=TYPE overrides, output/embedding types
    imatrix: str | os.PathLike | None = None
    tensor_types: tuple[str, ...] = ()
    output_tensor_type: str | None = None
    token_embedding_type: str | None = None


Resolved = Callable[[], "tuple[hub.Snapshot, str | None]"]


def run(repo_id: str, opts: Options, resolved: Resolved | None = None) -> ConvertResult:
    """Convert ``repo_id``. ``resolved``: returns the Hub snapshot and token, resolved already (or being
    resolved: the CLI starts that in a child process before it imports this module)."""
    return asyncio.run(_convert(repo_id, opts, resolved))


async def _convert(repo_id: str, opts: Options, resolved: Resolved | None = None) -> ConvertResult:
    started = time.monotonic()
    prepare_config_reader()  # transformers' import, while the repo is resolved and its headers read
    quant_opts = mixplan.options_from(opts.tensor_types, opts.output_tensor_type, opts.token_embedding_type,
                                      os.fspath(opts.imatrix) if opts.imatrix is not None else None)
    source: HubSource | LocalSource
    if hub.is_local(repo_id):
        snapshot = local_snapshot(Path(repo_id))
        source = LocalSource(snapshot)
    else:
        if resolved is None:
            endpoint = (opts.endpoint or settings.endpoint()).rstrip("/")
            resolved = functools.partial(hub.resolve_with_token, repo_id, opts.revision, endpoint, opts.token,
                                         retries=opts.retries)
        snapshot, token = await asyncio.to_thread(resolved)
        source = HubSource(snapshot, token, connections=opts.connections, retries=opts.retries,
                           connect_timeout=opts.connect_timeout, read_timeout=opts.read_timeout)

    async with source:
        files = await _small_files(source, snapshot)
        shards = _shards(snapshot, files)
        headers, heads = await _headers(source, snapshot, shards)
        plan = draft_plan(repo_name=snapshot.name, files=files, headers=headers, shards=shards,
                          outtype=opts.outtype, bpe_pre=opts.bpe_pre,
                          source=(snapshot.repo_id, snapshot.sha) if snapshot.sha else None, quant_opts=quant_opts,
                          split_max_tensors=opts.split_max_tensors, split_max_size=opts.split_max_size)
        del files, headers
        final = output_path(opts.outfile, plan)
        cached = _HeadCachedSource(source, heads)
        workers = _Workers(opts)
        early = None
        try:
            if _starts_early(opts, source, final):
                early = _Early(plan.tensors, cached, workers)
            # The vocabulary and the header take a second of CPU on big tokenizers: a child process
            # builds them while the first units are fetched and encoded here.
            lay = await asyncio.to_thread(_finish_plan, plan, elsewhere=early is not None)
            if early is not None:
                early.stop()
            paths = output_paths(final, lay)
            result = ConvertResult(
                path=paths[0], paths=paths, repo_id=repo_id, revision=opts.revision, commit_sha=snapshot.sha,
                outtype=plan.outtype.name, tensor_count=len(plan.tensors), bytes_fetched=0, bytes_written=0,
                seconds=0.0, output_size=lay.total_size, dry_run=opts.dry_run,
                tensors=[(t.name, tuple(reversed(t.shape)), t.qtype.name, t.nbytes) for t in plan.tensors],
                source_bytes=plan.source_bytes)
            if not opts.dry_run:
                stats = await _execute(plan, lay, result.paths, cached, opts, workers, early, source.stats)
                result.bytes_written = stats.bytes_written
                result.peak_bytes_in_flight = stats.peak
                result.units_total = stats.units_total
                result.units_resumed = stats.units_resumed
        finally:
            if early is not None:
                await early.cancel()
            workers.pool.shutdown(wait=True, cancel_futures=True)
        result.bytes_fetched = source.stats.bytes_fetched
    result.seconds = time.monotonic() - started
    return result


def _finish_plan(draft: Plan, *, elsewhere: bool) -> Layout:
    """The layout, header included, of a draft plan: all its vocabulary adds to what streams.

    ``elsewhere``: build it in a forked child (``forked``), so that this process's GIL stays with
    the units streaming meanwhile. The draft then keeps its placeholder metadata, and lets go of
    what its vocabulary was to be built from (the small files: 17 MB of tokenizer.json).
    """
    if elsewhere and forked.available():
        lay = forked.call("building the vocabulary and header", _vocab_and_layout, draft)
        draft.pending_vocab = _built_in_a_child
        return lay
    lay = _vocab_and_layout(draft)
    _return_freed_memory()
    return lay


def _vocab_and_layout(draft: Plan) -> Layout:
    return layout(with_vocab(draft))


def _built_in_a_child(writer: gguf.GGUFWriter) -> None:
    raise RuntimeError("this plan's vocabulary was built in a child process: its keys are in the layout only")


def _return_freed_memory() -> None:
    """Give the heap the vocabulary work freed back to the OS before the streaming starts.

    Building a big vocabulary leaves ~60 MB of freed heap (128k-token Llama 3: RSS 176 -> 117 MiB
    with the trim) that glibc keeps mapped otherwise, counted against the run's RSS throughout.
    """
    import gc

    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


async def _small_files(source: ByteSource, snapshot: hub.Snapshot) -> dict[str, bytes]:
    names = [n for n in settings.SMALL_FILES if n in snapshot.files]
    blobs = await asyncio.gather(*(source.get(n) for n in names))
    files = {n: b for n, b in zip(names, blobs) if b is not None}
    if "config.json" not in files:
        raise errors.MissingFileError(f"{snapshot.repo_id} has no config.json")
    # Refuse an unsupported model before reading any weight header.
    family_class(load_config(files["config.json"]))
    return files


def _shards(snapshot: hub.Snapshot, files: dict[str, bytes]) -> list[str]:
    shards = weight_files(snapshot.files, files.get("model.safetensors.index.json"))
    if not shards:
        others = sorted(f for f in snapshot.files if f.endswith((".bin", ".pt", ".pth", ".gguf")))
        found = f" (found {', '.join(others[:3])})" if others else ""
        raise errors.NoWeightsError(f"{snapshot.repo_id} has no safetensors weights{found}")
    missing = [s for s in shards if s not in snapshot.files]
    if missing:
        raise errors.MissingFileError(
            f"model.safetensors.index.json names {missing[0]}, which is not in {snapshot.repo_id}")
    return shards


async def _headers(source: ByteSource, snapshot: hub.Snapshot,
                   shards: list[str]) -> tuple[dict[str, list[SourceTensor]], dict[str, bytes]]:
    """Every shard's header, all at once; also the bytes read from each file's start."""
    parsed = await asyncio.gather(*(read_header(source, s, snapshot.files.get(s)) for s in shards))
    return {s: p[0] for s, p in zip(shards, parsed)}, {s: p[1] for s, p in zip(shards, parsed)}


class _HeadCachedSource:
    """A ByteSource that serves ranges already read with the header before asking the real one.

    A header read takes ~100 KB; on small shards that includes tensor data, which is
    then not fetched a second time.
    """

    def __init__(self, source: ByteSource, heads: dict[str, bytes]):
        self._source = source
        self._heads = heads

    async def get(self, path: str) -> bytes | None:
        return await self._source.get(path)

    def copy_to(self, path: str, start: int, length: int, out_fd: int, out_offset: int) -> bool:
        copy = getattr(self._source, "copy_to", None)
        return bool(copy and start >= len(self._heads.get(path, b"")) and copy(path, start, length, out_fd, out_offset))

    async def read(self, path: str, start: int, length: int) -> bytes:
        head = self._heads.get(path, b"")
        if start + length <= len(head):
            return head[start:start + length]
        if start < len(head):
            cached = head[start:]
            return b"".join((cached, await self._source.read(path, len(head), length - len(cached))))
        return await self._source.read(path, start, length)


def output_path(outfile: str | os.PathLike | None, plan: Plan) -> Path:
    """``-o`` as given: a directory gets the default name; ``{ftype}`` in a name is filled in."""
    if outfile is None:
        return Path.cwd() / plan.default_filename
    path = Path(outfile)
    if path.is_dir():
        return path / plan.default_filename
    return path.parent / gguf.fill_templated_filename(path.name, plan.outtype.label)


class _Budget:
    """Bytes in flight, granted first come first served; a unit larger than the budget runs alone.

    ``peak`` is the most bytes really held at once (a lone unit larger than the budget counts in
    full), so it shows whether work was cut small enough, not just that the gate held.
    """

    def __init__(self, limit: int):
        self.limit = max(1, limit)
        self.used = 0
        self.held = 0
        self.peak = 0
        self._waiters: deque[tuple[int, asyncio.Future]] = deque()

    async def acquire(self, n: int) -> tuple[int, int]:
        """Wait until ``n`` bytes fit; returns the grant to pass to ``release``."""
        gate = min(n, self.limit)
        if not self._waiters and self.used + gate <= self.limit:
            self._grant(gate, n)
            return gate, n
        fut = asyncio.get_running_loop().create_future()
        entry = (gate, fut)
        self._waiters.append(entry)
        try:
            await fut
        except BaseException:
            if fut.done() and not fut.cancelled():
                self.used -= gate  # granted just as we were cancelled: give it back
                self._wake()
            elif entry in self._waiters:
                self._waiters.remove(entry)
                self._wake()
            raise
        self.held += n
        self.peak = max(self.peak, self.held)
        return gate, n

    def release(self, grant: tuple[int, int]) -> None:
        gate, n = grant
        self.used -= gate
        self.held -= n
        self._wake()

    def shrink(self, grant: tuple[int, int], n: int) -> tuple[int, int]:
        """Keep ``n`` of a grant's bytes (a unit that now holds only its encoded result); returns the new grant."""
        gate, held = grant
        n = min(n, held)
        new_gate = min(n, gate)
        self.used -= gate - new_gate
        self.held -= held - n
        self._wake()
        return new_gate, n

    def _grant(self, gate: int, n: int) -> None:
        self.used += gate
        self.held += n
        self.peak = max(self.peak, self.held)

    def _wake(self) -> None:
        while self._waiters and self.used + self._waiters[0][0] <= self.limit:
            gate, fut = self._waiters.popleft()
            if fut.done():
                continue
            self.used += gate
            fut.set_result(None)


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
    #: which output file (shard of a split output) the unit is written to
    file: int = 0

    @property
    def cost(self) -> int:
        """Peak bytes the unit holds: fetched bytes, the decoded array (and one copy), the encoded result."""
        values = (self.r1 - self.r0) * self.tensor.node.cols
        return sum(s.nbytes for s in self.spans) + 2 * 4 * values + self.nbytes


def units_for(t: PlannedTensor, offset: int, target: int, file: int = 0) -> list[Unit]:
    """Cut a tensor into row blocks of about ``target`` bytes of cost; a Stack part never shares a unit.

    Blocks are aligned to what the node allows (whole heads for permuted q/k, whole experts at
    most for MoE stacks), so no source byte is needed by two units.
    """
    node = t.node
    rows = node.rows
    row_bytes = t.nbytes // rows if rows else 0
    align = node.row_align()
    if align is None or rows <= align:
        return [Unit(t, 0, rows, offset, t.nbytes, tuple(node.spans(0, rows)), file)]
    part = node.part_rows if isinstance(node, Stack) else rows
    per_row = max(1, (sum(s.nbytes for s in node.spans(0, align)) + 8 * align * node.cols + align * row_bytes) // align)
    block = max(align, (target // per_row) // align * align)
    block = min(block, part)
    units = []
    for p0 in range(0, rows, part):
        for r0 in range(p0, p0 + part, block):
            r1 = min(r0 + block, p0 + part)
            units.append(Unit(t, r0, r1, offset + r0 * row_bytes, (r1 - r0) * row_bytes, tuple(node.spans(r0, r1)),
                              file))
    return units


def _unit_target(max_memory: int) -> int:
    """Unit size: small enough that several fit the budget, big enough to keep per-unit overhead low."""
    return max(4096, min(64 << 20, max_memory // 8))


@dataclass
class _ExecStats:
    bytes_written: int = 0
    peak: int = 0
    units_total: int = 0
    units_resumed: int = 0


def batches(units: list[Unit], target: int) -> list[list[Unit]]:
    """Coalesce neighbours: consecutive single-span units whose bytes are adjacent in the same file
    share one Range request, up to ``target`` bytes of cost (small tensors: norms, biases)."""
    out: list[list[Unit]] = []
    for u in units:
        if out and len(u.spans) == 1 and all(len(v.spans) == 1 for v in out[-1]):
            last = out[-1][-1].spans[0]
            here = u.spans[0]
            if (here.file == last.file and here.start == last.end
                    and sum(v.cost for v in out[-1]) + u.cost <= target):
                out[-1].append(u)
                continue
        out.append([u])
    return out


def _keep_partial(exc: BaseException) -> bool:
    """Failures a rerun can resume from keep the .part file and its journal."""
    if isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError)):
        return True
    return isinstance(exc, (errors.NetworkError, errors.OutputWriteError))


def output_paths(final: Path, lay: Layout) -> list[Path]:
    """The output file, or the shards of a split output named as llama.cpp's gguf-split names them."""
    if len(lay.files) == 1:
        return [final]
    n = len(lay.files)
    return [final.with_name(f"{final.stem}-{i + 1:05d}-of-{n:05d}{final.suffix}") for i in range(n)]


async def _execute(plan: Plan, lay: Layout, finals: list[Path], source, opts: Options, workers: _Workers,
                   early: _Early | None = None, fetch_stats=None) -> _ExecStats:
    """Write every file of the layout. With ``opts.on_shard_written`` the shards of a split output are
    done one after another, each committed and handed to the callback (e.g. upload, then delete) before
    the next one is even created, so the disk holds one shard at a time. Units ``early`` already
    encoded are only written."""
    weights = _weights_digest(plan)
    n_files = len(lay.files)
    outs: list[OutputFile | None] = [None] * n_files
    stats = _ExecStats()
    progress = Progress(total_bytes=lay.total_size)
    budget, pool = workers.budget, workers.pool
    loop = asyncio.get_running_loop()
    target = workers.target
    units = [u for t in plan.tensors for u in units_for(t, lay.offsets[t.name], target, lay.file_of[t.name])]
    stats.units_total = len(units)
    groups = [[i] for i in range(n_files)] if opts.on_shard_written else [list(range(n_files))]
    resumed_bytes = 0

    def report() -> None:
        progress.bytes_written = resumed_bytes + stats.bytes_written + sum(o.bytes_written for o in outs if o)
        progress.bytes_fetched = fetch_stats.bytes_fetched if fetch_stats else 0
        if opts.on_progress is not None:
            opts.on_progress(progress)

    async def run_batch(batch: list[Unit], encoded: asyncio.Future | None) -> None:
        if encoded is not None:
            grant, blobs = await encoded
            try:
                await loop.run_in_executor(pool, _write_all, batch, blobs, outs)
                report()
            finally:
                budget.release(grant)
            return
        grant = await budget.acquire(sum(u.cost for u in batch))
        try:
            data = await _fetch_batch(batch, source, outs)
            if data is None:  # copied file to file, nothing to compute
                report()
                return
            report()
            await loop.run_in_executor(pool, _compute_and_write_all, batch, data, outs)
            report()
        finally:
            budget.release(grant)

    try:
        for group in groups:
            for i in group:
                identity = hashlib.sha256(lay.files[i].header + weights).hexdigest()[:32]
                outs[i] = OutputFile(finals[i], lay.files[i].total_size, identity=identity, force=opts.force)
                outs[i].pwrite(lay.files[i].header, 0)
            mine = [u for u in units if u.file in group]
            todo = [u for u in mine if not outs[u.file].is_done(u.offset, u.nbytes)]
            stats.units_resumed += len(mine) - len(todo)
            resumed_bytes += sum(u.nbytes for u in mine) - sum(u.nbytes for u in todo)
            tasks = [asyncio.ensure_future(run_batch(b, early.claim(b) if early is not None else None))
                     for b in batches(todo, target)]
            if early is not None:
                await early.cancel()  # anything not claimed now is in none of this run's batches
            try:
                await asyncio.gather(*tasks)
            except BaseException:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
            for i in group:
                outs[i].commit()
                stats.bytes_written += outs[i].bytes_written
                outs[i] = None
                if opts.on_shard_written is not None:
                    # blocking work (an upload) off the event loop
                    await loop.run_in_executor(None, opts.on_shard_written, finals[i])
    except BaseException as e:
        pool.shutdown(wait=True, cancel_futures=True)
        for o in outs:
            if o is not None:
                o.abort(keep=_keep_partial(e))
        raise
    report()
    stats.peak = budget.peak
    return stats


class _Workers:
    """What every unit shares: the memory budget, the CPU threads, the unit size."""

    def __init__(self, opts: Options):
        self.budget = _Budget(opts.max_memory)
        self.pool = ThreadPoolExecutor(max_workers=opts.threads or os.cpu_count() or 1, thread_name_prefix="hfstream")
        self.target = _unit_target(opts.max_memory)


def _starts_early(opts: Options, source, final: Path) -> bool:
    """Whether units may be fetched and encoded before the layout exists.

    Not for a dry run, a local source (its raw copies go file to file, which needs the output),
    a split output (which file a unit lands in is part of the layout) or a run that may resume
    (which units are done is in the journal of the very layout). The output's destination is
    checked first, so a refusal comes before any tensor byte is fetched.
    """
    if opts.dry_run or not isinstance(source, HubSource) or opts.split_max_size or opts.split_max_tensors:
        return False
    check_destination(final, opts.force)
    return not part_path(final).exists()


class _Early:
    """Units fetched and encoded while the vocabulary and the header are being built.

    The first units of the file, in order, as long as they fit a share of the budget (fetched,
    decoded and encoded bytes, as any unit counts them, and then the encoded result they keep):
    the rest of the budget stays for the vocabulary's own peak (in the child process that builds
    it, or in a thread where there is no fork), which is not in it. Each also holds
    its grant of the whole budget (shrunk to the encoded bytes once encoded) until ``_execute``
    claims it and writes it at the offset the layout gave it. Nothing is written before the layout.
    """

    #: of the budget. On the benchmark's throttled link a quarter gave wall/ideal 1.10 where a half gave
    #: 1.07-1.08; with a half the process tree's peak is 330-350 MiB (bench/README.md)
    SHARE = 0.5

    def __init__(self, tensors: list[PlannedTensor], source, workers: _Workers):
        self._source = source
        self._workers = workers
        self._share = _Budget(int(workers.budget.limit * self.SHARE))
        self._tasks: dict[tuple, asyncio.Future] = {}
        self._stopped = False
        units = [u for t in tensors for u in units_for(t, 0, workers.target)]
        self._launcher = asyncio.ensure_future(self._launch(batches(units, workers.target)))

    async def _launch(self, todo: list[list[Unit]]) -> None:
        for batch in todo:
            cost = sum(u.cost for u in batch)
            share = await self._share.acquire(cost)  # never given back: the window ends with the layout
            grant = await self._workers.budget.acquire(cost)
            if self._stopped:
                self._workers.budget.release(grant)
                return
            task = asyncio.ensure_future(self._encode(batch, grant, share))
            # an error surfaces where the unit is claimed; unclaimed (the run failed elsewhere) it is moot
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            self._tasks[_batch_key(batch)] = task

    async def _encode(self, batch: list[Unit], grant: tuple[int, int],
                      share: tuple[int, int]) -> tuple[tuple[int, int], list[memoryview]]:
        budget = self._workers.budget
        try:
            data = await _fetch_batch(batch, self._source, None)
            blobs = await asyncio.get_running_loop().run_in_executor(self._workers.pool, _encode_all, batch, data)
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

    def claim(self, batch: list[Unit]) -> asyncio.Future | None:
        """The encoding of ``batch`` if it was started early: resolves to (grant, encoded bytes per unit)."""
        return self._tasks.pop(_batch_key(batch), None)

    async def cancel(self) -> None:
        """Drop every unit not claimed, giving its memory back."""
        self.stop()
        tasks, self._tasks = list(self._tasks.values()), {}
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(self._launcher, *tasks, return_exceptions=True)
        for r in results[1:]:
            if isinstance(r, tuple):  # finished before the cancel: its grant is still held
                self._workers.budget.release(r[0])


def _batch_key(batch: list[Unit]) -> tuple:
    return tuple((u.tensor.name, u.r0, u.r1) for u in batch)


async def _fetch_batch(batch: list[Unit], source, outs: list[OutputFile] | None) -> dict[Span, bytes] | None:
    """The bytes of every span of the batch: one request for adjacent spans, else one per span.

    A lone raw-copy unit from a local file goes file to file instead when there are ``outs`` (returns None).
    """
    if outs is not None and len(batch) == 1 and _raw_copy(batch[0]) and batch[0].tensor.qtype != QT.BF16:
        (span,) = batch[0].spans
        out = outs[batch[0].file]
        if source.copy_to(span.file, span.start, span.nbytes, out.fileno(), batch[0].offset):
            out.record(batch[0].offset, batch[0].nbytes, zlib.crc32(os.pread(out.fileno(), span.nbytes,
                                                                                batch[0].offset)))
            return None
    spans = list(dict.fromkeys(s for u in batch for s in u.spans))
    if len(batch) > 1:
        first, last = spans[0], spans[-1]
        blob = await source.read(first.file, first.start, last.end - first.start)
        view = memoryview(blob)
        return {s: view[s.start - first.start:s.end - first.start] for s in spans}
    blobs = await asyncio.gather(*(source.read(s.file, s.start, s.nbytes) for s in spans))
    return dict(zip(spans, blobs))


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


def _compute_and_write_all(batch: list[Unit], data: dict[Span, bytes], outs: list[OutputFile]) -> None:
    for u in batch:
        _write(u, _encode(u, data), outs)


def _encode_all(batch: list[Unit], data: dict[Span, bytes]) -> list[memoryview]:
    return [_encode(u, data) for u in batch]


def _write_all(batch: list[Unit], encoded: list[memoryview], outs: list[OutputFile]) -> None:
    for u, blob in zip(batch, encoded):
        _write(u, blob, outs)


def _encode(u: Unit, data: dict[Span, bytes]) -> memoryview:
    """The unit's bytes as they go in the file."""
    if _raw_copy(u):
        (span,) = u.spans
        encoded = memoryview(data[span])
        if u.tensor.qtype == QT.BF16:
            encoded = _quiet_bf16_nans(encoded)
    else:
        array = u.tensor.node.eval_rows(data, u.r0, u.r1)
        q = quantize(array, u.tensor.qtype, weights=u.tensor.weights, first_row=u.r0)
        encoded = memoryview(q if q.flags["C_CONTIGUOUS"] else np.ascontiguousarray(q)).cast("B")
    if encoded.nbytes != u.nbytes:
        raise errors.InvalidHeaderError(f"{u.tensor.name}: encoded {encoded.nbytes} bytes, planned {u.nbytes}")
    return encoded


def _write(u: Unit, encoded: memoryview, outs: list[OutputFile]) -> None:
    outs[u.file].pwrite(encoded, u.offset)
    outs[u.file].record(u.offset, u.nbytes, zlib.crc32(encoded))


def _quiet_bf16_nans(raw: memoryview) -> memoryview:
    """BF16 -> F32 -> BF16 is the identity except that NaNs come back quiet (the 0x0040 bit set)."""
    u16 = np.frombuffer(raw, dtype="<u2")
    nan = (u16 & 0x7FFF) > 0x7F80
    if not nan.any():
        return raw
    fixed = np.where(nan, u16 | 0x0040, u16).astype("<u2")
    return memoryview(fixed).cast("B")
