"""What a conversion is asked (``Options``) and what it answers (``ConvertResult``, ``Progress``).

Every option is declared once, as a field of ``Options`` with its help text: ``hfstream.convert``
takes the fields as arguments (its signature and docstring are made from them), the CLI makes a flag
of every field that names one, and a mirror manifest may set the fields that say which TOML types
they take. Adding an option is adding a field; nothing else lists them.

Light on purpose (no numpy, aiohttp or gguf): the CLI and ``hfstream.convert`` import it before the
pipeline, and the CLI resolves the repo in a child process meanwhile.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import errors
from .retry import RetryPolicy
from .settings import DEFAULT_MAX_MEMORY, parse_size


def positive(value: str | int) -> int:
    """A count of at least 1 (``"8"`` or ``8``)."""
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"not a number: {value!r}") from None
    if n < 1:
        raise ValueError("must be at least 1")
    return n


def size(value: str | int) -> int:
    """A byte count: ``4096``, ``"256M"``, ``"2G"`` (binary multiples)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"not a size: {value!r} (e.g. 256M, 2G)")
    return parse_size(value)


def _lower(value: str) -> str:
    """A type name as llama.cpp's tools take it, in any case (``Q4_K_M``, ``q4_k_m``)."""
    if not isinstance(value, str):
        raise ValueError(f"not a type name: {value!r}")
    return value.lower()


def outtype_list(value: str | list[str] | tuple[str, ...]) -> str:
    """One outtype, or several (``"q8_0,q4_k_m"``, or a list from the API): one run, one file each.
    In any case, as llama.cpp's tools take them (``Q4_K_M``)."""
    names = value.split(",") if isinstance(value, str) else list(value)
    if not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise ValueError(f"not an output type or a comma-separated list of them: {value!r}")
    names = [n.strip().lower() for n in names]
    if len(set(names)) != len(names):
        raise ValueError(f"a type is named twice: {value!r}")
    return ",".join(names)


def retries(value: str | int | RetryPolicy) -> int | RetryPolicy:
    """A count of retries (at least 1), or a whole ``RetryPolicy`` as it is."""
    return value if isinstance(value, RetryPolicy) else positive(value)


def seconds(value: str | float) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"not a number of seconds: {value!r}") from None


def _option(default: Any, help: str, *, flags: tuple[str, ...] = (), metavar: str | None = None,
            parse: Callable[[Any], Any] | None = None, manifest: tuple[type, ...] = ()) -> Any:
    """A field of ``Options``.

    ``help``: one line for ``--help`` and ``hfstream.convert``'s docstring. ``flags``: the CLI's
    spelling (none: API only). ``parse``: turns a CLI string or a caller's value into the option's
    value, raising ValueError with the reason (a value equal to the default is taken as it is).
    ``manifest``: the TOML types a mirror manifest may give it (none: not settable there).
    """
    meta = {"help": help, "flags": flags, "metavar": metavar, "parse": parse, "manifest": manifest}
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: tuple(default), metadata=meta)
    return field(default=default, metadata=meta)


#: what a conversion does, in order (``Progress.phase``)
PHASES = ("resolving", "headers", "vocabulary", "tensors", "done")


@dataclass
class Progress:
    """Where a conversion is: ``on_progress`` gets it at every change of phase, then as bytes are
    fetched and written (a few times a second, and as units finish). Byte counts are exact, not rounded."""

    #: one of ``PHASES``: resolving the repo, reading the small files and headers, building the
    #: vocabulary and header (while the first tensors already stream), the tensors, done
    phase: str = "resolving"
    #: the repo (``org/name@revision``) or directory being converted
    source: str = ""
    #: bytes of the output file(s): 0 until the vocabulary phase has laid them out
    total_bytes: int = 0
    #: of ``total_bytes``, what is in the output (units an earlier run finished included); equal to it when done
    bytes_written: int = 0
    #: bytes this run fetched (read, from a local directory): small files, headers and tensor data
    bytes_fetched: int = 0
    #: what ``bytes_fetched`` is expected to reach once every tensor is in (0 until the plan is made)
    bytes_to_fetch: int = 0
    #: work units of the output, done (resumed ones included), and done by an earlier run
    units_total: int = 0
    units_done: int = 0
    units_resumed: int = 0
    started: float = field(default_factory=time.monotonic)


@dataclass
class Options:
    """How to convert: every option of ``hfstream.convert``, the CLI's ``convert`` and a mirror entry."""

    # The first four are also positional in hfstream.convert(repo_id, outtype, revision, outfile, token).
    outtype: str = _option(
        "auto", "output type: f32, f16, bf16, q8_0 as llama.cpp's converter writes them; auto (default: bf16 for "
                "bf16 checkpoints, else f16); or a llama-quantize type, as llama-quantize writes it from the "
                "converter's f32 output. Several, comma-separated (q8_0,q4_k_m,q6_k), write one file each from "
                "one pass over the source (-o a directory, or a name with {ftype}); any case",
        flags=("--outtype",), metavar="TYPE[,TYPE...]", parse=outtype_list)
    revision: str = _option("main", "branch, tag or commit sha, pinned to one commit sha before anything is read",
                            flags=("--revision",))
    outfile: str | os.PathLike | None = _option(
        None, "output file or directory (default: the current directory); a directory gets the default name "
              "{Name}-{SizeLabel}-{FTYPE}.gguf, '{ftype}' in a file name is replaced by the output type",
        flags=("-o", "--outfile"))
    token: str | None = _option(None, "Hub token (default: HF_TOKEN, else the `hf auth login` token)",
                                flags=("--token",), manifest=(str,))
    endpoint: str | None = _option(None, "the Hub's URL (default: HF_ENDPOINT, else https://huggingface.co)")
    imatrix: str | os.PathLike | None = _option(
        None, "importance matrix from llama.cpp's llama-imatrix (GGUF or legacy .dat), for the llama-quantize "
              "types; iq1_s, iq1_m, iq2_*, iq3_xxs and q2_k_s need one",
        flags=("--imatrix",), metavar="FILE", manifest=(str,))
    tensor_types: tuple[str, ...] = _option(
        (), "PATTERN=TYPE overrides: quantize the tensors whose GGUF name matches the regular expression PATTERN "
            "(searched, lowercased; the first match wins) as TYPE, as llama-quantize's --tensor-type",
        flags=("--tensor-type",), metavar="PATTERN=TYPE", parse=lambda v: (v,) if isinstance(v, str) else tuple(v),
        manifest=(list,))
    output_tensor_type: str | None = _option(None, "type of output.weight (llama-quantize types)",
                                             flags=("--output-tensor-type",), metavar="TYPE", parse=_lower,
                                             manifest=(str,))
    token_embedding_type: str | None = _option(None, "type of token_embd.weight (llama-quantize types)",
                                               flags=("--token-embedding-type",), metavar="TYPE", parse=_lower,
                                               manifest=(str,))
    chat_template: str | os.PathLike | None = _option(
        None, "write this Jinja file as the chat template (tokenizer.chat_template), in place of the repo's own, "
              "e.g. for a repo that ships none (DeepSeek-V4)", flags=("--chat-template",), metavar="FILE",
        manifest=(str,))
    mmproj: bool = _option(False, "write the vision projector (mmproj-*.gguf, llama.cpp's clip model) of a "
                                  "vision-language repo instead of its text model, as the reference's --mmproj",
                           flags=("--mmproj",))
    with_mmproj: bool = _option(False, "write both the text model and its vision projector, from one pass over the "
                                       "repo (-o a directory)", flags=("--with-mmproj",), manifest=(bool,))
    dry_run: bool = _option(False, "plan only: fetch the headers and small files, no tensor data; write nothing",
                            flags=("--dry-run",))
    force: bool = _option(False, "overwrite an existing output file", flags=("--force",))
    bpe_pre: str | None = _option(None, "tokenizer.ggml.pre to use when the BPE pre-tokenizer is not recognised",
                                  flags=("--bpe-pre",), metavar="NAME", manifest=(str,))
    connections: int = _option(8, "concurrent HTTP connections (default 8)", flags=("--connections",), parse=positive,
                               manifest=(int,))
    threads: int | None = _option(None, "CPU threads (default: all cores)", flags=("--threads",), parse=positive,
                                  manifest=(int,))
    max_memory: int = _option(DEFAULT_MAX_MEMORY, "bound on bytes in flight: fetched, decoded, encoded (default 256M)",
                              flags=("--max-memory",), metavar="SIZE", parse=size, manifest=(int, str))
    split_max_size: int = _option(
        0, "split the output into shards of at most SIZE (e.g. 2G), in llama.cpp's gguf-split format "
           "(-00001-of-0000N.gguf)", flags=("--split-max-size",), metavar="SIZE", parse=size, manifest=(int, str))
    split_max_tensors: int = _option(0, "split the output into shards of at most N tensors",
                                     flags=("--split-max-tensors",), metavar="N", parse=positive, manifest=(int,))
    retries: int | RetryPolicy = _option(
        8, "retries per request on connection errors, stalls, truncated bodies, 408/429/5xx (default 8); from "
        "Python also a hfstream.retry.RetryPolicy (its backoff, clock and sleep)", flags=("--retries",),
        parse=retries, manifest=(int,))
    connect_timeout: float = _option(30.0, "seconds to wait for a connection (default 30)", parse=seconds)
    read_timeout: float = _option(
        60.0, "seconds a connection may go without a byte, or without 64 KiB of the answer, before it counts as "
              "stalled and is retried (default 60)", flags=("--timeout",), metavar="SECONDS", parse=seconds,
        manifest=(int, float))
    on_progress: Callable[[Progress], None] | None = _option(
        None, "called with a Progress as bytes are fetched and written")
    on_shard_written: Callable[[Path], None] | None = _option(
        None, "called with each finished file (shard), in order, as soon as it is complete; shards are then "
              "written one at a time, so a callback that uploads and deletes keeps one on disk")

    def outtypes(self) -> list[str]:
        """The output types asked for, in order (one file each)."""
        return self.outtype.split(",")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            parse = f.metadata["parse"]
            value = getattr(self, f.name)
            if parse is None or value == default(f):
                continue
            try:
                setattr(self, f.name, parse(value))
            except ValueError as e:
                raise errors.UnsupportedOptionError(f"{f.name}={value!r}: {e}") from None


#: hfstream.convert(repo_id, outtype, revision, outfile, token, *, every other option)
POSITIONAL = ("outtype", "revision", "outfile", "token")


def default(f: dataclasses.Field) -> Any:
    """An option's default value."""
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def default_of(name: str) -> Any:
    """The default value of the option called ``name``."""
    (f,) = [f for f in fields() if f.name == name]
    return default(f)


def fields() -> tuple[dataclasses.Field, ...]:
    """The options, in declaration order."""
    return dataclasses.fields(Options)


def signature(returns: Any) -> inspect.Signature:
    """``hfstream.convert``'s signature: ``repo_id``, the positional options, then the rest keyword-only."""
    params = [inspect.Parameter("repo_id", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str)]
    for f in fields():
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD if f.name in POSITIONAL else inspect.Parameter.KEYWORD_ONLY
        params.append(inspect.Parameter(f.name, kind, default=default(f), annotation=f.type))
    return inspect.Signature(params, return_annotation=returns)


def describe() -> str:
    """One docstring line per option (``name: help``), for ``hfstream.convert``."""
    return "\n".join(f"        {f.name}: {f.metadata['help']}." for f in fields())


@dataclass
class OutputResult:
    """One output file (or split output) of a conversion."""

    outtype: str
    #: the written GGUF, the first shard of a split output (for a dry run: where it would be written)
    path: Path
    #: every file written: [path], or the shards of a split output in order
    paths: list[Path]
    tensor_count: int
    output_size: int
    bytes_written: int = 0
    #: (name, GGUF shape, type name, bytes) per tensor, in file order
    tensors: list[tuple[str, tuple[int, ...], str, int]] = field(default_factory=list)
    units_total: int = 0
    units_resumed: int = 0


@dataclass
class ConvertResult:
    """What a conversion did. Its own fields describe the first output; ``outputs`` has every one
    (several when several outtypes were asked for)."""

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
    #: every output of the run, in the order of the outtypes asked for
    outputs: list[OutputResult] = field(default_factory=list)
