"""Orchestration: resolve -> small files -> headers -> plan -> layout -> execute -> finalize.

This module runs the steps in order and owns none of them: the repo is resolved by ``hub``, bytes
come from a byte source (``source``: the Hub's ``fetch`` or a ``localdir``), headers are parsed by
``safetensors``, the plan is ``plan``'s and the layout ``layout``'s, units are cut by ``units`` and
executed by ``execute`` under one memory budget (``budget``), the output is ``writer``'s.

The plan is drafted first without its vocabulary: tensors, types and order are then final, so while
a forked child builds the vocabulary and the layout (a second of CPU on a big tokenizer, the link
idle otherwise) the first units are already fetched and encoded (``execute.Early``). They wait in
memory, within the budget, for the layout to give them offsets: every write is still a positional
write into a file laid out in full. While transformers is still being imported, a provisional
draft (config.json as written) starts both; the real drafts keep the units and the layout they would
have made the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import time
from pathlib import Path
from typing import AsyncIterator, Callable

import gguf

from . import errors, forked, hfconfig, hub, quant, settings, vocab
from .arch import family_class, projector_class
from .execute import Early, Target, Workers, execute
from .fetch import HubSource
from .hfconfig import HparamReads, RecordedReads, load_config, prepare as prepare_config_reader
from .layout import Layout, PackedArrays, layout
from .quant import options_from
from .localdir import LocalSource, local_snapshot
from .options import ConvertResult, Options, OutputResult, Progress
from .plan import (Plan, build_vocab, draft_plan, index_name_check, same_keys_and_names, same_tensors, value_sources,
                   weight_files, with_vocab)
from .safetensors import SourceTensor, read_header
from .source import ByteSource, HeadCachedSource
from .writer import OutputLock, check_destination, part_path

Resolved = Callable[[], "tuple[hub.Snapshot, str | None]"]


def run(repo_id: str, opts: Options, resolved: Resolved | None = None) -> ConvertResult:
    """Convert ``repo_id`` (any form ``hub.parse_source`` reads). ``resolved``: returns the Hub snapshot
    and token, resolved already (or being resolved: the CLI starts that in a child process before it
    imports this module)."""
    return asyncio.run(_convert(repo_id, opts, resolved))


async def _convert(repo_id: str, opts: Options, resolved: Resolved | None = None) -> ConvertResult:
    started = time.monotonic()
    for name in opts.outtypes():
        if name.lower() != "auto":
            quant.outtype(name)  # an unknown type is refused before anything is asked of the Hub
    if opts.mmproj and opts.with_mmproj:
        raise errors.UnsupportedOptionError("--mmproj writes the projector alone, --with-mmproj both files: "
                                            "give one of them")
    #: which files each outtype gives: the text model, its vision projector, or both
    kinds = [False] if not (opts.mmproj or opts.with_mmproj) else [True] if opts.mmproj else [False, True]
    template = vocab.load_chat_template(opts.chat_template) if opts.chat_template is not None else None
    prepare_config_reader()  # transformers' import, while the repo is resolved and its headers read
    quant_opts = options_from(opts.tensor_types, opts.output_tensor_type, opts.token_embedding_type,
                              os.fspath(opts.imatrix) if opts.imatrix is not None else None)
    endpoint = (opts.endpoint or settings.endpoint()).rstrip("/")
    asked = hub.parse_source(repo_id, endpoint)
    revision = "" if asked.directory is not None else hub.pick_revision(asked.revision, opts.revision)
    report = _Reporter(opts, asked.directory or f"{asked.repo_id}@{revision}")
    report.phase("resolving")
    snapshot, source = await open_source(asked, revision, opts, endpoint, resolved)

    async with source, report.ticking(source):
        report.phase("headers")
        files, shards, headers, heads = await files_and_headers(source, snapshot, kinds, opts.connections)
        if template is not None:
            files = vocab.with_chat_template(files, template)
        cached = HeadCachedSource(source, heads)
        # the few single numbers a text model's keys are made of (Apertus' xIELU scalars)
        values = await read_values(cached, files, headers) if False in kinds else {}
        drafts = functools.partial(_draft_plans, snapshot=snapshot, files=files, headers=headers, shards=shards,
                                   kinds=kinds, opts=opts, quant_opts=quant_opts, values=values)
        # transformers may still be importing (a second or so of CPU): fetching starts by a plan of
        # config.json as written meanwhile, and keeps what the real plan confirms
        provisional = _provisional_plans(drafts, files, snapshot, kinds, opts, source)
        plans = provisional if provisional is not None else drafts()
        finals = output_paths_of(opts.outfile, plans, create=not opts.dry_run)
        workers = Workers(opts)
        early = None
        held = contextlib.ExitStack()
        try:
            _lock_outputs(held, finals, opts)
            if not opts.dry_run:  # a dry run fetches nothing; on DeepSeek-V3 this sum is a second of CPU
                report.progress.bytes_to_fetch = source.stats.bytes_fetched + _still_to_fetch(plans, heads)
            report.phase("vocabulary")
            if _starts_early(opts, source, finals, plans):
                early = Early([plan.tensors for plan in plans], cached, workers)
            elif not opts.dry_run:
                for final in finals:  # refused before any tensor byte is fetched
                    check_destination(final, opts.force)
            speculative = None
            if provisional is not None:
                if early is not None:  # its vocabulary and header, built while transformers is read
                    speculative = _start_layouts(provisional)
                    if speculative is not None:
                        held.callback(speculative.cancel)
                plans = await asyncio.to_thread(drafts)  # the event loop goes on fetching meanwhile
                real_finals = output_paths_of(opts.outfile, plans)
                if real_finals != finals or not all(map(same_tensors, provisional, plans)):
                    # transformers' defaults changed what is read or how: the early units are dropped
                    if early is not None:
                        await early.cancel()
                        early = None
                    if real_finals != finals:
                        held.close()
                        finals = real_finals
                        _lock_outputs(held, finals, opts)
                        for final in finals:
                            check_destination(final, opts.force)
                    report.progress.bytes_to_fetch = source.stats.bytes_fetched + _still_to_fetch(plans, heads)
            layouts = None
            if speculative is not None and provisional is not None:
                layouts = await _layouts_if_alike(speculative, provisional, plans, early is not None)
            del files, headers, drafts, provisional
            if layouts is None:
                # The vocabulary and the header take a second of CPU on big tokenizers: a child process
                # builds them while the first units are fetched and encoded here.
                layouts = await asyncio.to_thread(_finish_plans, plans, elsewhere=early is not None)
            if early is not None:
                early.stop()
            targets = [Target(plan, lay, output_paths(final, lay)) for plan, lay, final in zip(plans, layouts, finals)]
            outputs = [OutputResult(outtype=tg.plan.outtype.name, path=tg.paths[0], paths=tg.paths,
                                    tensor_count=len(tg.plan.tensors), output_size=tg.layout.total_size,
                                    tensors=[(t.name, tuple(reversed(t.shape)), t.qtype.name, t.nbytes)
                                             for t in tg.plan.tensors])
                       for tg in targets]
            first = outputs[0]
            result = ConvertResult(
                path=first.path, paths=first.paths, repo_id=snapshot.repo_id, revision=revision or snapshot.revision,
                commit_sha=snapshot.sha, outtype=first.outtype, tensor_count=first.tensor_count, bytes_fetched=0,
                bytes_written=0, seconds=0.0, output_size=first.output_size, dry_run=opts.dry_run,
                tensors=first.tensors, source_bytes=_source_bytes(plans), outputs=outputs)
            if not opts.dry_run:
                report.progress.total_bytes = sum(o.output_size for o in outputs)
                report.phase("tensors")
                stats = await execute(targets, cached, opts, workers, early, report.progress)
                for out, st in zip(outputs, stats.targets):
                    out.bytes_written, out.units_total, out.units_resumed = st.bytes_written, st.units_total, st.units_resumed
                result.bytes_written = first.bytes_written
                result.peak_bytes_in_flight = stats.peak
                result.units_total = first.units_total
                result.units_resumed = first.units_resumed
        finally:
            if early is not None:
                await early.cancel()
            workers.pool.shutdown(wait=True, cancel_futures=True)
            held.close()
        result.bytes_fetched = source.stats.bytes_fetched
    result.seconds = time.monotonic() - started
    report.progress.bytes_fetched = result.bytes_fetched
    report.progress.bytes_written = report.progress.total_bytes  # alignment padding is in the file too
    report.phase("done")
    return result


class _Reporter:
    """Tells ``opts.on_progress`` where the conversion is: each phase as it starts, and the bytes fetched
    a few times a second meanwhile (``execute`` also reports as units finish)."""

    #: seconds between two reports of the bytes fetched
    TICK = 0.25

    def __init__(self, opts: Options, source: object):
        self._callback = opts.on_progress
        self._source: ByteSource | None = None
        self.progress = Progress(source=str(source))

    def phase(self, name: str) -> None:
        self.progress.phase = name
        self.emit()

    def emit(self) -> None:
        if self._source is not None:
            self.progress.bytes_fetched = self._source.stats.bytes_fetched
        if self._callback is not None:
            self._callback(self.progress)

    @contextlib.asynccontextmanager
    async def ticking(self, source: ByteSource) -> AsyncIterator[None]:
        """Report ``source``'s bytes fetched while the body runs, from its first request on."""
        self._source = source
        if self._callback is None:
            yield
            return

        async def tick() -> None:
            while True:
                await asyncio.sleep(self.TICK)
                if source.stats.bytes_fetched != self.progress.bytes_fetched:
                    self.emit()

        ticker = asyncio.ensure_future(tick())
        try:
            yield
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker


def _draft_plans(*, snapshot: hub.Snapshot, files: dict[str, bytes], headers: dict[str, list[SourceTensor]],
                 shards: list[str], kinds: list[bool], opts: Options, quant_opts: quant.QuantOptions | None,
                 values: dict[SourceTensor, bytes | memoryview], provisional: bool = False) -> list[Plan]:
    """One draft per output: every outtype of the text model, of its projector, or of both."""
    return [draft_plan(repo_name=snapshot.name, files=files, headers=headers, shards=shards, outtype=outtype,
                       bpe_pre=opts.bpe_pre, source=(snapshot.repo_id, snapshot.sha) if snapshot.sha else None,
                       quant_opts=quant_opts, split_max_tensors=opts.split_max_tensors,
                       split_max_size=opts.split_max_size, projector=projector, values=values, provisional=provisional)
            for projector in kinds for outtype in opts.outtypes()]


def _provisional_plans(drafts: Callable[..., list[Plan]], files: dict[str, bytes], snapshot: hub.Snapshot,
                       kinds: list[bool], opts: Options, source: ByteSource) -> list[Plan] | None:
    """Drafts from config.json as written, when the real ones would wait for transformers' import and
    units could start early (the Hub, no dry run); None otherwise, or when config.json as written does
    not make a plan (a key only transformers' defaults give, say): the real drafts say why, if anything."""
    if opts.dry_run or not isinstance(source, HubSource):
        return None
    config = load_config(files["config.json"])
    if all((projector_class(config) if projector else family_class(config)).config_source == "config.json"
           for projector in kinds):
        return None  # the real drafts do not wait
    if hfconfig.answers_now(files["config.json"], name_or_path=snapshot.name):
        return None
    try:
        return drafts(provisional=True)
    except Exception:  # noqa: BLE001 - any way a family trips on keys transformers would have filled in
        return None


def _lock_outputs(held: contextlib.ExitStack, finals: list[Path], opts: Options) -> None:
    """One run per output at a time: taken before the destination is checked."""
    if not opts.dry_run:
        for final in finals:
            held.enter_context(OutputLock(final))


def _still_to_fetch(plans: list[Plan], heads: dict[str, bytes]) -> int:
    """Tensor bytes the plans read that did not come with the headers (what is left to fetch): the
    outputs of one run read each source byte once, so a span several plans read counts once, and so
    does one inside another (a projector's row of the text embedding)."""
    spans = {(span.file, span.start, span.end) for plan in plans for t in plan.tensors
             for span in t.node.spans(0, t.node.rows)}
    total = 0
    outer: tuple[str, int, int] | None = None
    for file, start, end in sorted(spans, key=lambda s: (s[0], s[1], -s[2])):
        if outer is not None and file == outer[0] and end <= outer[2]:
            continue  # within the span before
        outer = (file, start, end)
        total += max(0, end - max(start, len(heads.get(file, b""))))
    return total


def _source_bytes(plans: list[Plan]) -> int:
    """Bytes of tensor data the plans read together (each source tensor once)."""
    seen: dict[SourceTensor, None] = {}
    for plan in plans:
        for t in plan.tensors:
            for leaf in t.node.leaves():
                seen.setdefault(leaf, None)
    return sum(s.nbytes for s in seen)


def _finish_plans(drafts: list[Plan], *, elsewhere: bool) -> list[Layout]:
    """The layouts, headers included, of the drafts (one per outtype, of one model): all their
    vocabulary adds to what streams.

    ``elsewhere``: build them in a forked child (``forked``), so that this process's GIL stays with
    the units streaming meanwhile. The drafts then keep their placeholder metadata, and let go of
    what their vocabulary was to be built from (the small files: 17 MB of tokenizer.json).
    """
    if elsewhere and forked.available():
        lays = forked.call("building the vocabulary and header", _vocab_and_layouts, drafts)
        for draft in drafts:
            draft.pending_vocab = _built_in_a_child
        return lays
    lays = _vocab_and_layouts(drafts)
    _return_freed_memory()
    return lays


def _start_layouts(provisional: list[Plan]) -> forked.Pending[tuple[list[Layout], list[HparamReads]]] | None:
    """The layouts of the provisional drafts, started in a forked child: they are the real drafts' too
    when these differ in nothing the layouts are made of (``_layouts_if_alike``). None where there is
    no fork."""
    if not forked.available():
        return None
    return forked.start("building the vocabulary and header", _layouts_and_reads, provisional)


def _layouts_and_reads(drafts: list[Plan]) -> tuple[list[Layout], list[HparamReads]]:
    """The layouts of provisional drafts, and what their vocabulary read of each one's hparams."""
    layouts = _vocab_and_layouts(drafts)
    reads = []
    for d in drafts:
        assert isinstance(d.hparams, RecordedReads)  # a provisional draft's (``draft_plan``)
        reads.append(d.hparams.reads)
    return layouts, reads


async def _layouts_if_alike(speculative: forked.Pending[tuple[list[Layout], list[HparamReads]]],
                            provisional: list[Plan], plans: list[Plan], kept: bool) -> list[Layout] | None:
    """The provisional drafts' layouts, if the real drafts would give the same: the same tensors (``kept``:
    the early units were kept, which the caller does only then), keys and names (``same_keys_and_names``),
    and hparams that answer what the vocabulary read of them the same way (``HparamReads.agree``); None
    otherwise (the child is stopped) or if the child failed (the real drafts then say why, if they fail
    too)."""
    if not kept or not all(map(same_keys_and_names, provisional, plans)):
        speculative.cancel()
        return None
    try:
        layouts, reads = await asyncio.to_thread(speculative.result)
    except Exception:  # noqa: BLE001 - the real drafts' own build reports it, if it fails there too
        return None
    if not all(r.agree(plan.hparams) for r, plan in zip(reads, plans)):
        return None
    for plan in plans:
        plan.pending_vocab = _built_in_a_child
    return layouts


def _vocab_and_layouts(drafts: list[Plan]) -> list[Layout]:
    """The vocabulary is built once for all the drafts that share it (every outtype of the text model)."""
    sharing = [d for d in drafts if d.shares_vocab]
    vocab = build_vocab(sharing[0]) if len(sharing) > 1 else None
    packed: PackedArrays = {}
    return [layout(with_vocab(d, vocab) if vocab is not None and d.shares_vocab else with_vocab(d), packed)
            for d in drafts]


def _built_in_a_child(writer: gguf.GGUFWriter) -> None:
    raise RuntimeError("this plan's vocabulary was built in a child process: its keys are in the layout only")


def _return_freed_memory() -> None:
    """Give the heap the vocabulary work freed back to the OS before the streaming starts.

    Building a big vocabulary leaves ~60 MB of freed heap (128k-token Llama 3: RSS 176 -> 117 MiB
    with the trim) that glibc keeps mapped otherwise, counted against the run's RSS throughout.
    """
    import gc

    gc.collect()
    if not settings.linux_path("malloc_trim"):
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _check_families(config: dict, kinds: list[bool]) -> None:
    """Refuse a model (or its projector) hfstream does not convert, before any weight header is read."""
    if False in kinds:
        family_class(config)
    if True in kinds:
        projector_class(config)


async def open_source(asked: hub.Source, revision: str, opts: Options, endpoint: str,
                      resolved: Resolved | None = None) -> tuple[hub.Snapshot, ByteSource]:
    """The snapshot of what the user named (``hub.parse_source``) and the byte source to read it with
    (not yet entered): the Hub pinned at one commit, or a directory (also the cached snapshot that
    ``HF_HUB_OFFLINE`` reads instead of the Hub)."""
    token = None
    if asked.directory is not None:
        snapshot = local_snapshot(asked.directory)
    else:
        assert asked.repo_id is not None
        if resolved is None:
            resolved = functools.partial(hub.resolve_with_token, asked.repo_id, revision, endpoint, opts.token,
                                         retries=opts.retries, connect_timeout=opts.connect_timeout,
                                         read_timeout=opts.read_timeout)
        snapshot, token = await asyncio.to_thread(resolved)
    if snapshot.local_root is not None:
        return snapshot, LocalSource(snapshot)
    return snapshot, HubSource(snapshot, token, connections=opts.connections, retries=opts.retries,
                               connect_timeout=opts.connect_timeout, read_timeout=opts.read_timeout)


#: the small files the headers wait for; the others come while the headers are read
_HEADER_FILES = ("config.json", "model.safetensors.index.json")


async def files_and_headers(source: ByteSource, snapshot: hub.Snapshot, kinds: list[bool], connections: int
                            ) -> tuple[dict[str, bytes], list[str], dict[str, list[SourceTensor]], dict[str, bytes]]:
    """The small files (as ``small_files``), the shards, and their headers (as ``read_headers``).

    The headers need config.json (a model hfstream does not convert is refused before any header is
    read) and the index only: they are read while the other small files arrive (Llama 3's
    tokenizer.json is 17 MB, a sixth of a second at 100 MB/s).
    """
    names = [n for n in settings.SMALL_FILES if n in snapshot.files]
    rest = asyncio.ensure_future(_fetch_files(source, [n for n in names if n not in _HEADER_FILES]))
    try:
        files = _with_config(await _fetch_files(source, [n for n in names if n in _HEADER_FILES]), snapshot)
        _check_families(load_config(files["config.json"]), kinds)
        shards = weight_shards(snapshot, files)
        headers, heads = await read_headers(source, snapshot, shards, files, connections)
        files.update(await rest)
    finally:
        rest.cancel()  # (done already unless something failed first, which is the failure reported)
        rest.add_done_callback(lambda t: t.cancelled() or t.exception())
    return {n: files[n] for n in names if n in files}, shards, headers, heads


async def small_files(source: ByteSource, snapshot: hub.Snapshot) -> dict[str, bytes]:
    """The small files of ``settings.SMALL_FILES`` the snapshot has, by name; config.json must be one."""
    return _with_config(await _fetch_files(source, [n for n in settings.SMALL_FILES if n in snapshot.files]), snapshot)


async def _fetch_files(source: ByteSource, names: list[str]) -> dict[str, bytes]:
    blobs = await asyncio.gather(*(source.get(n) for n in names))
    return {n: b for n, b in zip(names, blobs) if b is not None}


def _with_config(files: dict[str, bytes], snapshot: hub.Snapshot) -> dict[str, bytes]:
    """``files``, which must hold config.json."""
    if "config.json" not in files:
        if "params.json" in snapshot.files:
            # Mistral's own layout (params.json, consolidated*.safetensors, tekken.json): the reference reads it
            # only when told (--mistral-format) and with mistral_common's tokenizer classes
            raise errors.UnsupportedArchitectureError(
                f"{snapshot.repo_id} is in Mistral's format (params.json, no config.json), which hfstream does not "
                "read; convert the Hugging Face layout of the model (config.json, model*.safetensors)")
        raise errors.MissingFileError(f"{snapshot.repo_id} has no config.json")
    return files


def weight_shards(snapshot: hub.Snapshot, files: dict[str, bytes]) -> list[str]:
    """The safetensors files, in order; NoWeightsError / MissingFileError when there are none or one is missing."""
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


#: bytes read with the headers kept to serve the tensor data they hold (small files), over all shards
HEAD_CACHE_BYTES = 64 * 1024 * 1024


async def read_headers(source: ByteSource, snapshot: hub.Snapshot, shards: list[str],
                       files: dict[str, bytes] | None = None,
                       connections: int = 8) -> tuple[dict[str, list[SourceTensor]], dict[str, bytes]]:
    """Every shard's header, ``connections`` at a time (the memory a header costs is bounded by its
    length, 25 MB at most, so many shards cost no more at once); also the bytes read from each file's
    start that hold tensor data, up to ``HEAD_CACHE_BYTES`` in all. With an index, each header's names
    are checked against it as soon as the header is parsed: the first shard that disagrees stops the
    run."""
    check = index_name_check((files or {}).get("model.safetensors.index.json"))
    parsed: dict[str, tuple[list[SourceTensor], bytes]] = {}
    pending = iter(shards)

    async def worker() -> None:
        # a few workers take the shards in turn: no task, coroutine or buffer per shard waits its turn
        # (a listing of 100,000 shard names costs a name each, not a waiting task each)
        for shard in pending:
            parsed[shard] = await read_header(source, shard, snapshot.files.get(shard), check)

    workers = [asyncio.ensure_future(worker()) for _ in range(max(1, min(connections, len(shards))))]
    try:
        await asyncio.gather(*workers)
    except BaseException:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        raise
    headers, heads, kept = {}, {}, 0
    for shard in shards:
        tensors, head = parsed[shard]
        headers[shard] = tensors
        data_start = min((t.start for t in tensors), default=len(head))
        if len(head) > data_start and kept + len(head) <= HEAD_CACHE_BYTES:  # it holds tensor bytes
            heads[shard] = head
            kept += len(head)
    return headers, heads


async def read_values(source: ByteSource, files: dict[str, bytes],
                  headers: dict[str, list[SourceTensor]]) -> dict[SourceTensor, bytes | memoryview]:
    """The bytes of the few single-number tensors whose values the plan writes as keys (``value_sources``)."""
    wanted = value_sources(files, headers)
    blobs = await asyncio.gather(*(source.read(s.file, s.start, s.nbytes) for s in wanted))
    return dict(zip(wanted, blobs))


def output_path(outfile: str | os.PathLike | None, plan: Plan, *, create: bool = False) -> Path:
    """``-o`` as given: a directory gets the default name; ``{ftype}`` in a name is filled in.

    A trailing slash (``-o out/``) says a directory: one that is not there yet is made (with
    ``create``), as the user asked for a directory and would get a file named ``out`` otherwise.
    """
    if outfile is None:
        return Path.cwd() / plan.default_filename
    path = Path(outfile)
    if _names_a_directory(outfile):
        if create and not path.is_dir():
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise errors.OutputWriteError(f"cannot make the output directory {path}: {e.strerror}") from None
        return path / plan.default_filename
    if path.is_dir():
        return path / plan.default_filename
    return path.parent / gguf.fill_templated_filename(path.name, plan.outtype.label)


def _names_a_directory(outfile: str | os.PathLike) -> bool:
    return os.fspath(outfile).endswith(("/", os.sep))


def output_paths_of(outfile: str | os.PathLike | None, plans: list[Plan], *, create: bool = False) -> list[Path]:
    """Where each plan's output goes. Several outputs need a directory (default names) or a name
    with ``{ftype}``, and may not land on one path (``auto`` and the type it picks, say).
    ``create``: make a directory named with a trailing slash (``output_path``)."""
    if len(plans) > 1 and outfile is not None and not Path(outfile).is_dir() and not _names_a_directory(outfile) \
            and "{ftype}" not in str(outfile).lower():
        raise errors.UnsupportedOptionError(
            f"--outtype {','.join(p.outtype.name for p in plans)} writes {len(plans)} files: -o must be a "
            f"directory or a file name with {{ftype}} in it, not {os.fspath(outfile)!r}")
    finals = [output_path(outfile, plan, create=create) for plan in plans]
    if len(set(finals)) != len(finals):
        dup = next(f for f in finals if finals.count(f) > 1)
        raise errors.UnsupportedOptionError(f"two of the output types would both be written to {dup}")
    return finals


def output_paths(final: Path, lay: Layout) -> list[Path]:
    """The output file, or the shards of a split output named as llama.cpp's gguf-split names them."""
    if len(lay.files) == 1:
        return [final]
    n = len(lay.files)
    return [final.with_name(f"{final.stem}-{i + 1:05d}-of-{n:05d}{final.suffix}") for i in range(n)]


def _starts_early(opts: Options, source: ByteSource, finals: list[Path], plans: list[Plan]) -> bool:
    """Whether units may be fetched and encoded before the layouts exist.

    Not for a dry run, a local source (its raw copies go file to file, which needs the output),
    a split output (which file a unit lands in is part of the layout), a run that may resume
    (which units are done is in the journal of the very layout), or outputs that are not the same
    tensors in other types and orders (a text model and its projector: a projector unit may read bytes within
    an early unit of the text model, which would then be fetched twice). The outputs' destinations
    are checked first, so a refusal comes before any tensor byte is fetched.
    """
    if opts.dry_run or not isinstance(source, HubSource) or opts.split_max_size or opts.split_max_tensors:
        return False
    for final in finals:
        check_destination(final, opts.force)
    names = {t.name for t in plans[0].tensors}  # (a llama-quantize mix orders them its own way)
    if any({t.name for t in plan.tensors} != names for plan in plans[1:]):
        return False
    return not any(part_path(final).exists() for final in finals)
