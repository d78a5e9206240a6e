"""The ``hfstream`` command line. Every failure is one line on stderr and a distinct exit code."""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from typing import TYPE_CHECKING, Callable, Sequence

from . import errors, forked, hub, interrupt, options, settings
from ._version import __version__
from .quant import OUTTYPE_CHOICES

if TYPE_CHECKING:
    from .display import Display
    from .options import ConvertResult, OutputResult


def _argument_type(parse: Callable[[str], object]) -> Callable[[str], object]:
    """An option's parser as argparse wants it: its ValueError's reason becomes the usage error."""

    def parse_argument(text: str) -> object:
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse_argument.__name__ = parse.__name__
    return parse_argument


class _VersionAction(argparse.Action):
    """``--version``: ours, and which ggml quantizes (loaded only when asked)."""

    def __call__(self, parser, namespace, values, option_string=None):
        from .quant import compiled_kquants, compiled_q8_0, default_engine, ggml_origin, ggml_version

        try:
            engine = default_engine()
        except errors.HfstreamError as e:
            engine = f"no quantization engine: {e}"
        if engine == "ggml":
            engine = f"ggml {ggml_version() or '(unknown version)'} from {ggml_origin()}"
            if compiled_q8_0():
                engine += "; Q8_0 by hfstream's AVX2 encoder"
            if compiled_kquants():
                engine += "; Q4_K, Q5_K and Q6_K by hfstream's AVX2 encoders"
        elif engine == "numpy":
            engine = "gguf's numpy quantization"
        print(f"hfstream {__version__} ({engine}; config.json read by transformers {_transformers_version()})")
        parser.exit()


def _transformers_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("transformers")
    except PackageNotFoundError:
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hfstream", description="Stream Hugging Face safetensors repos into GGUF files.")
    p.add_argument("--version", action=_VersionAction, nargs=0, help="show the version and the ggml used, then exit")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("convert", help="convert one repo to GGUF")
    c.add_argument("repo", help=_SOURCE_HELP)
    _add_options(c)
    c.add_argument("-q", "--quiet", action="store_true", help="no progress and no retry notes, only the result line")
    c.add_argument("--json", action="store_true",
                   help="print the result as one JSON object (the fields of hfstream.ConvertResult) instead of a line")

    i = sub.add_parser("inspect", help="what a repo, a local model directory or a .gguf file holds, without converting")
    i.add_argument("repo", help=f"{_SOURCE_HELP}, or a .gguf file")
    i.add_argument("--revision", default="main", help="branch, tag or commit sha (default main)")
    i.add_argument("--token", help="Hub token (default: HF_TOKEN, else the `hf auth login` token)")
    i.add_argument("--bpe-pre", metavar="NAME", help="tokenizer.ggml.pre for a BPE tokenizer that is not recognised")
    i.add_argument("--json", action="store_true", help="print one JSON object")

    m = sub.add_parser("mirror", help="convert (and publish) every repo of a TOML manifest that changed upstream")
    m.add_argument("manifest", help="the TOML manifest")
    m.add_argument("--state", help="state file (default: the manifest's path with .state.json added, "
                                   "e.g. mirror.toml.state.json)")
    m.add_argument("--report", help="write a JSON report of what was converted, skipped and failed")
    m.add_argument("--engine", choices=("serial", "dask"), default="serial",
                   help="serial (default) or dask: one conversion per worker (HFSTREAM_DASK_SCHEDULER for a cluster)")
    m.add_argument("--workers", type=_positive, default=2, help="dask workers of the local cluster (default 2)")
    m.add_argument("--hub-connections", type=_positive, default=16,
                   help="global cap on concurrent Hub connections across all workers (default 16)")
    m.add_argument("--dry-run", action="store_true", help="say what would be converted; convert nothing")
    m.add_argument("--json", action="store_true",
                   help="print one JSON object at the end (the report) instead of a line per entry and a summary")
    return p


_SOURCE_HELP = ("the model: org/name or org/name@REVISION on the Hub, hf://org/name[@REVISION], a Hub URL "
                "(https://huggingface.co/org/name[/tree/REVISION]), a local model directory, or a snapshot "
                "directory of the Hugging Face cache")


def _add_options(parser: argparse.ArgumentParser) -> None:
    """A flag for every option that has one (``options.Options``: each declared there, once)."""
    for f in options.fields():
        flags, help, default = f.metadata["flags"], f.metadata["help"], options.default(f)
        if not flags:
            continue
        kwargs: dict = {"dest": f.name, "help": help}
        if isinstance(default, bool):
            kwargs.update(action="store_true")
        elif isinstance(default, tuple):
            kwargs.update(action="append", default=[], metavar=f.metadata["metavar"])
        else:
            kwargs.update(default=default, metavar=f.metadata["metavar"])
            if f.metadata["parse"] is not None:
                kwargs["type"] = _argument_type(f.metadata["parse"])
        if f.name == "outtype":
            kwargs.update(help=f"{help}. Types: {', '.join(OUTTYPE_CHOICES)}")
        parser.add_argument(*flags, **kwargs)


_positive = _argument_type(options.positive)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv``; returns the exit code. Ctrl-C or SIGTERM at any point of it is one
    line and 130 or 143 (``interrupt``)."""
    args: argparse.Namespace | None = None
    with interrupt.handling():
        try:
            args = build_parser().parse_args(argv)
            if getattr(args, "token", None):
                hide_in_argv(args.token)  # before any helper process is forked with a copy of it
            if args.command == "convert":
                return _convert(args)
            if args.command == "inspect":
                return _inspect(args)
            if args.command == "mirror":
                return _mirror(args)
        except KeyboardInterrupt:
            interrupt.ignore()  # a second Ctrl-C while this is said does not cut it short
            stopped = interrupt.error()
            return _fail(args, stopped.message, stopped.exit_code)
        except errors.HfstreamError as e:
            return _fail(args, e.message, e.exit_code)
        except BrokenPipeError:  # stdout's reader stopped reading (`| head`): it has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        except Exception as e:  # a bug: still one line, unless asked for the traceback
            if settings.debug():
                raise
            return _fail(args, f"internal error: {type(e).__name__}: {e} (set HFSTREAM_DEBUG=1 for a traceback)", 1)
    return 2


def hide_in_argv(secret: str) -> bool:
    """Overwrite ``secret`` with asterisks in this process's command line as the kernel keeps it (what
    ``ps`` and ``/proc/<pid>/cmdline`` show other users), so that neither this process nor the
    helpers forked from it carry it there from now on. Linux only (a Linux-only path, ``argv``); True
    when it was found and blanked. Until this runs (the interpreter's start, ~0.3 s) it is visible:
    HF_TOKEN or the cached login never are."""
    if not secret or not sys.platform.startswith("linux") or not settings.linux_path("argv"):
        return False
    try:
        with open("/proc/self/stat", "rb") as f:
            stat = f.read()
        # proc(5): after "pid (comm)" come the fields numbered from 3; arg_start and arg_end are 48, 49
        fields = stat[stat.rindex(b")") + 2:].split()
        start, end = int(fields[48 - 3]), int(fields[49 - 3])
        import ctypes

        args = ctypes.string_at(start, end - start)
        needle = secret.encode()
        at = args.find(needle)
        found = at >= 0
        while at >= 0:
            ctypes.memset(start + at, ord("*"), len(needle))
            at = args.find(needle, at + len(needle))
        return found
    except (OSError, ValueError, IndexError):
        return False


def entry_point() -> None:
    """The command's entry point: ``main``, then exit without tearing the interpreter down.

    By then every output is fsynced and renamed and every thread joined; the teardown would only
    free memory object by object (~0.1 s after a big conversion, 2% of a fast one).
    """
    code = main()  # after it, Ctrl-C and SIGTERM are ignored: the outcome is decided (``interrupt.handling``)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`| head`): nothing more can be said there
            pass
    os._exit(code)


def _fail(args: argparse.Namespace | None, message: str, code: int) -> int:
    """The one error line on stderr; with ``--json`` also the error as the JSON result on stdout."""
    print(f"hfstream: error: {message}", file=sys.stderr)
    if getattr(args, "json", False):
        _print_json({"error": message, "exit_code": code})
    return code


def _print_json(obj: object) -> None:
    import json
    from pathlib import PurePath

    def plain(value: object) -> object:
        if isinstance(value, PurePath):
            return str(value)
        raise TypeError(f"{type(value).__name__} is not JSON")

    print(json.dumps(obj, default=plain, indent=1))


def _convert(args: argparse.Namespace) -> int:
    from . import hfconfig

    asked = hub.parse_source(args.repo, settings.endpoint())
    display = _display(args.quiet)  # before the fork: the resolving child says its retries there too
    resolving = _start_resolving(asked, args)
    hfconfig.prepare()  # transformers' import (~2 s) under way while the repo is resolved and read
    try:
        return _convert_resolving(args, resolving, display)
    finally:
        if resolving is not None:
            resolving.cancel()
        if display is not None:
            display.close()


def _start_resolving(asked: hub.Source, args: argparse.Namespace) -> forked.Pending | None:
    """Pin the repo's revision in a child process while this one imports the pipeline.

    Importing huggingface_hub and asking the Hub take ~0.2 s, and so do the pipeline's imports
    (numpy, aiohttp, gguf); one after the other they were the first 0.5 s of every conversion, on one core.
    """
    if asked.repo_id is None or not forked.available():
        return None
    revision = hub.pick_revision(asked.revision, args.revision)
    return forked.start(f"resolving {asked.repo_id}@{revision}", functools.partial(
        hub.resolve_with_token, asked.repo_id, revision, settings.endpoint(), args.token, retries=args.retries,
        read_timeout=args.read_timeout))


def _convert_resolving(args: argparse.Namespace, resolving: forked.Pending | None, display: Display | None) -> int:
    from .pipeline import run

    opts = options.Options(**{f.name: getattr(args, f.name) for f in options.fields() if f.metadata["flags"]},
                           on_progress=display.update if display else None)
    result = run(args.repo, opts, resolving.result if resolving is not None else None)
    if display:
        display.close()
    if args.json:
        import dataclasses

        _print_json(dataclasses.asdict(result))
    elif args.dry_run:
        for output in result.outputs:
            _print_plan(result, output)
    else:
        for output in result.outputs:
            shown = output.path if len(output.paths) <= 1 else f"{output.path} (+{len(output.paths) - 1} more shards)"
            what = [f"{output.tensor_count} tensors", f"{_size(output.output_size)} written",
                    f"{_size(result.bytes_fetched)} fetched", f"{result.seconds:.1f} s"]
            if output.units_resumed:
                what.append(f"resumed {output.units_resumed} of {output.units_total} units")
            if result.commit_sha:
                what.append(f"commit {result.commit_sha[:12]}")
            print(f"{shown}  ({', '.join(what)})")
    return 0


def _display(quiet: bool) -> Display | None:
    """The progress display on stderr, with the retry notes (``hfstream`` logger) printed above it;
    with ``-q`` neither."""
    from .display import Display

    log = logging.getLogger("hfstream")
    log.propagate = False
    log.handlers.clear()
    if quiet:
        log.addHandler(logging.NullHandler())
        return None
    display = Display()
    log.addHandler(_NoteHandler(display))
    log.setLevel(logging.INFO)
    return display


def _size(n: float) -> str:
    from .display import size

    return size(n)


def _mirror(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .mirror import Outcome, mirror

    _display(quiet=False)  # for the retry notes (no progress line: entries print their own lines)

    def finished(o: Outcome) -> None:
        if args.json:
            return
        what = o.reason if o.status != "converted" else ", ".join(Path(p).name for p in o.outputs) or o.published
        print(f"{o.status:<9} {o.repo}@{o.revision} {o.outtype}: {what}", flush=True)

    code, outcomes = mirror(Path(args.manifest), state_path=Path(args.state) if args.state else None,
                            report_path=Path(args.report) if args.report else None, engine=args.engine,
                            workers=args.workers, hub_connections=args.hub_connections, dry_run=args.dry_run,
                            on_outcome=finished)
    count = {status: sum(o.status == status for o in outcomes) for status in ("converted", "skipped", "failed")}
    if args.json:
        import dataclasses

        _print_json({"exit_code": code, **count, "bytes_written": sum(o.bytes_written for o in outcomes),
                     "bytes_fetched": sum(o.bytes_fetched for o in outcomes),
                     "entries": [dataclasses.asdict(o) for o in outcomes]})
    else:
        print(f"{count['converted']} converted, {count['skipped']} skipped, {count['failed']} failed; "
              f"{_size(sum(o.bytes_written for o in outcomes))} written, "
              f"{_size(sum(o.bytes_fetched for o in outcomes))} fetched")
    if code:
        kind = "all retryable: run again later" if code == 75 else "some for good"
        print(f"hfstream: error: {count['failed']} of {len(outcomes)} entries failed ({kind})", file=sys.stderr)
    return code


def _inspect(args: argparse.Namespace) -> int:
    from .inspection import inspect_source

    _display(quiet=False)  # for the retry notes
    report = inspect_source(args.repo, revision=args.revision, token=args.token, bpe_pre=args.bpe_pre)
    if args.json:
        _print_json(report.as_dict())
    else:
        print(report.text())
    return 0


def _print_plan(result: ConvertResult, output: OutputResult) -> None:
    from .inspection import mix_fallback
    from .quant import bits_per_weight

    width = max((len(t[0]) for t in output.tensors), default=10)
    print(f"{'tensor':<{width}}  {'shape':>20}  {'type':>7}  {'bytes':>14}  {'bits/weight':>10}")
    for name, shape, qtype, nbytes in output.tensors:
        dims = "x".join(str(d) for d in shape)
        bpw = bits_per_weight([(shape, nbytes)])
        print(f"{name:<{width}}  {dims:>20}  {qtype:>7}  {nbytes:>14,d}  {bpw:6.2f} bpw")
    data = sum(t[3] for t in output.tensors)
    bpw = bits_per_weight([(t[1], t[3]) for t in output.tensors])
    print(f"{len(output.tensors)} tensors, {data:,d} bytes of tensor data ({bpw:.2f} bpw), "
          f"output {output.output_size:,d} bytes -> {output.path}")
    fallback = mix_fallback(output.outtype, output.tensors)
    if fallback:
        print(fallback)
    where = f"{result.repo_id}@{result.commit_sha}" if result.commit_sha else result.repo_id
    print(f"would fetch {result.source_bytes:,d} bytes of tensor data from {where}")


class _NoteHandler(logging.Handler):
    """Log records of the ``hfstream`` logger (retries and their waits) as notes above the progress line."""

    def __init__(self, display: Display):
        super().__init__(logging.INFO)
        self._display = display

    def emit(self, record: logging.LogRecord) -> None:
        self._display.note(record.getMessage())
