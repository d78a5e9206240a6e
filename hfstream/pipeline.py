"""The scheduler: resolve -> small files -> headers -> plan -> layout -> execute -> finalize.

Execution takes the plan's tensors as units of work. Each unit fetches its source
ranges, transforms and quantizes them off the event loop, and writes the result at
its precomputed offset, so units may finish in any order. One memory budget bounds
the bytes held by units in flight.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import gguf

from . import errors, hub, settings
from .arch import family_for
from .fetch import ByteSource, HubSource
from .layout import Layout, layout
from .plan import Plan, PlannedTensor, make_plan, weight_files
from .quant import quantize
from .safetensors import SourceTensor, read_header
from .writer import OutputFile

DEFAULT_MAX_MEMORY = 256 * 1024 * 1024


@dataclass
class ConvertResult:
    """What a conversion did."""

    #: the written GGUF (for a dry run: where it would be written)
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
    #: (name, GGUF shape, type name, bytes) per tensor, in file order
    tensors: list[tuple[str, tuple[int, ...], str, int]] = field(default_factory=list)
    #: bytes of tensor data the conversion fetches (the dry run's estimate, the real run's need)
    source_bytes: int = 0


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
    on_progress: Callable[[Progress], None] | None = None


def run(repo_id: str, opts: Options) -> ConvertResult:
    return asyncio.run(_convert(repo_id, opts))


async def _convert(repo_id: str, opts: Options) -> ConvertResult:
    started = time.monotonic()
    endpoint = (opts.endpoint or settings.endpoint()).rstrip("/")
    token = settings.token(opts.token)
    snapshot = await asyncio.to_thread(hub.resolve, repo_id, opts.revision, endpoint, token)

    async with HubSource(snapshot, token, connections=opts.connections) as source:
        files = await _small_files(source, snapshot)
        shards = _shards(snapshot, files)
        headers, heads = await _headers(source, snapshot, shards)
        plan = make_plan(repo_name=snapshot.name, files=files, headers=headers, shards=shards,
                         outtype=opts.outtype, bpe_pre=opts.bpe_pre, source=(snapshot.repo_id, snapshot.sha))
        lay = layout(plan)
        final = output_path(opts.outfile, plan)
        result = ConvertResult(
            path=final, repo_id=repo_id, revision=opts.revision, commit_sha=snapshot.sha,
            outtype=plan.outtype.name, tensor_count=len(plan.tensors), bytes_fetched=0, bytes_written=0,
            seconds=0.0, output_size=lay.total_size, dry_run=opts.dry_run,
            tensors=[(t.name, tuple(reversed(t.shape)), t.qtype.name, t.nbytes) for t in plan.tensors],
            source_bytes=plan.source_bytes)
        if not opts.dry_run:
            written = await _execute(plan, lay, final, _HeadCachedSource(source, heads), opts, source.stats)
            result.bytes_written = written
        result.bytes_fetched = source.stats.bytes_fetched
    result.seconds = time.monotonic() - started
    return result


async def _small_files(source: ByteSource, snapshot: hub.Snapshot) -> dict[str, bytes]:
    names = [n for n in settings.SMALL_FILES if n in snapshot.files]
    blobs = await asyncio.gather(*(source.get(n) for n in names))
    files = {n: b for n, b in zip(names, blobs) if b is not None}
    if "config.json" not in files:
        raise errors.MissingFileError(f"{snapshot.repo_id} has no config.json")
    # Refuse an unsupported model before reading any weight header.
    import json

    try:
        hparams = json.loads(files["config.json"])
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise errors.InvalidConfigError("config.json is not valid JSON") from None
    if not isinstance(hparams, dict):
        raise errors.InvalidConfigError("config.json is not a JSON object")
    family_for(hparams)
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

    async def read(self, path: str, start: int, length: int) -> bytes:
        head = self._heads.get(path, b"")
        if start + length <= len(head):
            return head[start:start + length]
        if start < len(head):
            cached = head[start:]
            return cached + await self._source.read(path, len(head), length - len(cached))
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
    """Bytes in flight, granted first come first served; a unit larger than the budget runs alone."""

    def __init__(self, limit: int):
        self.limit = max(1, limit)
        self.used = 0
        self._waiters: deque[tuple[int, asyncio.Future]] = deque()

    async def acquire(self, n: int) -> int:
        n = min(n, self.limit)
        if not self._waiters and self.used + n <= self.limit:
            self.used += n
            return n
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((n, fut))
        await fut
        return n

    def release(self, n: int) -> None:
        self.used -= n
        while self._waiters and self.used + self._waiters[0][0] <= self.limit:
            m, fut = self._waiters.popleft()
            self.used += m
            fut.set_result(None)


def _unit_cost(t: PlannedTensor) -> int:
    """Peak bytes a unit holds: fetched bytes, the decoded array, the encoded result."""
    fetched = sum(s.nbytes for s in t.node.leaves())
    numel = 1
    for d in t.shape:
        numel *= d
    return fetched + numel * 4 + t.nbytes


async def _execute(plan: Plan, lay: Layout, final: Path, source: ByteSource, opts: Options,
                   fetch_stats=None) -> int:
    out = OutputFile(final, lay.total_size, force=opts.force)
    progress = Progress(total_bytes=lay.total_size)
    budget = _Budget(opts.max_memory)
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(max_workers=opts.threads or os.cpu_count() or 1, thread_name_prefix="hfstream")

    def report() -> None:
        progress.bytes_written = out.bytes_written
        progress.bytes_fetched = fetch_stats.bytes_fetched if fetch_stats else 0
        if opts.on_progress is not None:
            opts.on_progress(progress)

    async def unit(t: PlannedTensor) -> None:
        cost = await budget.acquire(_unit_cost(t))
        try:
            leaves = list(dict.fromkeys(t.node.leaves()))
            blobs = await asyncio.gather(*(source.read(s.file, s.start, s.nbytes) for s in leaves))
            report()
            data = dict(zip(leaves, blobs))
            offset = lay.offsets[t.name]
            await loop.run_in_executor(pool, _compute_and_write, t, data, out, offset)
            report()
        finally:
            budget.release(cost)

    try:
        out.pwrite(lay.header, 0)
        tasks = [asyncio.ensure_future(unit(t)) for t in plan.tensors]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        out.commit()
    except BaseException:
        out.abort()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    report()
    return out.bytes_written


def _compute_and_write(t: PlannedTensor, data: dict[SourceTensor, bytes], out: OutputFile, offset: int) -> None:
    array = t.node.evaluate(data)
    encoded = quantize(array, t.qtype)
    if encoded.nbytes != t.nbytes:
        raise errors.InvalidHeaderError(f"{t.name}: encoded {encoded.nbytes} bytes, planned {t.nbytes}")
    out.pwrite(encoded.tobytes() if not encoded.flags["C_CONTIGUOUS"] else encoded.data, offset)
