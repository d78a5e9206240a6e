"""hfstream: convert Hugging Face safetensors repos to GGUF by streaming them from the Hub.

    >>> import hfstream
    >>> result = hfstream.convert("org/model", outtype="q8_0")
    >>> result.path, result.commit_sha
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from . import errors
from .errors import HfstreamError
from .settings import DEFAULT_MAX_MEMORY, parse_size

if TYPE_CHECKING:
    from .pipeline import ConvertResult, Progress
    from .retry import RetryPolicy

__all__ = ["convert", "ConvertResult", "Progress", "HfstreamError", "errors"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # The pipeline (numpy, aiohttp, gguf: ~0.2 s of imports) loads on first use, so that the CLI can
    # start resolving the repo in a child process before it imports them.
    if name in ("ConvertResult", "Progress"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'hfstream' has no attribute {name!r}")


def convert(
    repo_id: str,
    outtype: str = "auto",
    revision: str = "main",
    outfile: str | os.PathLike | None = None,
    token: str | None = None,
    *,
    endpoint: str | None = None,
    dry_run: bool = False,
    force: bool = False,
    bpe_pre: str | None = None,
    connections: int = 8,
    threads: int | None = None,
    max_memory: int = DEFAULT_MAX_MEMORY,
    on_progress=None,
    imatrix: str | os.PathLike | None = None,
    tensor_types: tuple[str, ...] | list[str] = (),
    output_tensor_type: str | None = None,
    token_embedding_type: str | None = None,
    split_max_size: int | str = 0,
    split_max_tensors: int = 0,
    retries: int | RetryPolicy = 8,
    read_timeout: float = 60.0,
    on_shard_written=None,
) -> ConvertResult:
    """Convert ``repo_id`` at ``revision`` to a GGUF file, streaming the weights from the Hub.

    Args:
        repo_id: ``org/name`` on the Hub (``HF_ENDPOINT`` or ``endpoint`` selects the Hub).
        outtype: ``f32``, ``f16``, ``bf16``, ``q8_0`` or ``auto`` (bf16 for bf16 checkpoints, else f16), as
            llama.cpp's converter writes them; or a llama-quantize type (``q4_k_m``, ``iq4_xs``, ... see
            ``hfstream.mixes.MIXES``): the bytes llama-quantize writes from the converter's f32 output.
        revision: branch, tag or commit sha; resolved to one commit sha before anything is read.
        outfile: output path; a directory gets the default name ``{Name}-{SizeLabel}-{FTYPE}.gguf``,
            and ``{ftype}`` in a file name is replaced by the output type. Default: that name in the cwd.
        token: Hub token; default ``HF_TOKEN``, else the token cached by ``hf auth login``.
        dry_run: plan only: fetch headers and small files, no tensor data, write nothing.
        force: overwrite an existing output file.
        bpe_pre: force ``tokenizer.ggml.pre`` for a BPE tokenizer whose pre-tokenizer is not recognised.
        connections, threads, max_memory: concurrent HTTP connections, CPU threads, bytes in flight.
        on_progress: called with a ``Progress`` as bytes are fetched and written.
        imatrix: llama-imatrix output (GGUF or legacy .dat) for the llama-quantize types.
        tensor_types: ``PATTERN=TYPE`` overrides (regex searched in the GGUF tensor name, first match wins).
        output_tensor_type, token_embedding_type: types of ``output.weight`` / ``token_embd.weight``.
        split_max_size, split_max_tensors: write shards of at most this many bytes (``"2G"`` works) /
            tensors, in llama.cpp's split format (``-00001-of-0000N.gguf``); ``result.paths`` lists them.
        retries, read_timeout: retries per request on transient failures (connection errors, stalls,
            408, 429, 5xx), or a ``hfstream.retry.RetryPolicy`` (backoff, clock and sleep of your own);
            seconds of silence that count as a stalled connection.
        on_shard_written: called with each finished file (shard) as soon as it is complete; shards are
            then written one at a time, so a callback that uploads and deletes keeps one on disk.

    Returns a ConvertResult (path, commit sha, tensor count, bytes fetched and written, seconds).
    Raises an ``hfstream.errors.HfstreamError`` subclass for every expected failure; no partial
    file is ever left at the output path.
    """
    from .pipeline import Options, run

    opts = Options(outtype=outtype, revision=revision, outfile=outfile, token=token, endpoint=endpoint,
                   dry_run=dry_run, force=force, bpe_pre=bpe_pre, connections=connections, threads=threads,
                   max_memory=max_memory, on_progress=on_progress, imatrix=imatrix,
                   tensor_types=tuple(tensor_types), output_tensor_type=output_tensor_type,
                   token_embedding_type=token_embedding_type, split_max_size=parse_size(split_max_size),
                   split_max_tensors=split_max_tensors, retries=retries, read_timeout=read_timeout,
                   on_shard_written=on_shard_written)
    return run(repo_id, opts)
