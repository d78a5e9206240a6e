"""Configuration has one home: every environment variable hfstream reads is read here."""

from __future__ import annotations

import os
from pathlib import Path

from . import errors

DEFAULT_ENDPOINT = "https://huggingface.co"

#: huggingface_hub reads headers with one ~100 KB range first; 97% of headers fit in it.
FIRST_HEADER_READ = 100_000
#: huggingface_hub refuses safetensors headers over this size; so do we.
MAX_HEADER_BYTES = 25_000_000
#: Files hfstream reads into memory when the repo has them (never the weights).
SMALL_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "sentencepiece.bpe.model",  # XLM-RoBERTa's (a unigram model, whatever its name)
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "README.md",
    "model.safetensors.index.json",
    # sentence-transformers: the pooling of an embedding model (Qwen3-Embedding, gte-Qwen2, ...)
    "modules.json",
    "1_Pooling/config.json",
    # a vision projector's image processing (mean, std, sizes): --mmproj
    "preprocessor_config.json",
    "processor_config.json",
)
#: ``--max-memory``: bytes in flight (fetched, decoded, encoded, waiting to be written).
DEFAULT_MAX_MEMORY = 256 * 1024 * 1024
#: A small file larger than this is refused rather than read into memory.
MAX_SMALL_FILE_BYTES = 64 * 1024 * 1024
#: The Hub's answer listing a repo's files, decoded (a gzip answer is counted as it is inflated): ~300
#: bytes a file, so room for 200,000 files. Larger is refused before it is all read.
MAX_LISTING_BYTES = 64 * 1024 * 1024


#: The Linux-only paths, each with a portable fallback that writes the same bytes (what macOS and
#: Windows run). ``HFSTREAM_PORTABLE`` switches them off, so that Linux runs, and CI tests, the fallbacks.
LINUX_PATHS = {
    "fork": "helper processes by fork (forked.py): the vocabulary child, the CLI's resolving child; else threads",
    "o_direct": "the block-aligned middle of big writes with O_DIRECT (writer.py); else through the page cache",
    "fallocate": "the output preallocated with posix_fallocate (writer.py); else a sparse file",
    "sync_file_range": "writeback started after each write (writer.py); else all at the final fsync",
    "copy_file_range": "raw tensors of a local directory copied file to file (localdir.py); else read and written",
    "q8_0_avx2": "Q8_0 by hfstream's compiled AVX2 encoder (_q8_0.c); else ggml's encoder",
    "kquants_avx2": "Q4_K, Q5_K and Q6_K by hfstream's compiled AVX2 encoders (_kquants.c); else ggml's encoders",
    "f16c": "bf16/f16 <-> f32 with ggml-cpu's F16C routines (floats.py); else numpy",
    "malloc_trim": "glibc's malloc_trim after building the vocabulary (pipeline.py); else nothing",
    "argv": "--token's value blanked in the command line the kernel shows (ps, /proc; cli.py); else left there",
}


def linux_path(name: str) -> bool:
    """Whether the Linux-only path ``name`` (a key of ``LINUX_PATHS``) may be used where the platform has it.

    ``HFSTREAM_PORTABLE``: ``all`` (or ``1``) switches every one off; else a comma-separated list of
    the names to switch off. Read on every call, so a test can switch paths within one process.
    """
    if name not in LINUX_PATHS:
        raise KeyError(f"no Linux-only path named {name!r}")
    value = os.environ.get("HFSTREAM_PORTABLE", "").strip().lower()
    if not value or value == "0":
        return True
    if value in ("all", "1"):
        return False
    off = {part.strip() for part in value.split(",") if part.strip()}
    unknown = off - set(LINUX_PATHS)
    if unknown:
        raise errors.UnsupportedOptionError(f"HFSTREAM_PORTABLE: no Linux-only path named {sorted(unknown)[0]!r} "
                                            f"(choose all, or some of {', '.join(LINUX_PATHS)})")
    return name not in off


def endpoint() -> str:
    """The Hub endpoint: ``HF_ENDPOINT`` or huggingface.co, without a trailing slash."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def offline() -> bool:
    """``HF_HUB_OFFLINE``: no network at all; Hub repos are read from the Hugging Face cache (as huggingface_hub does)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def hub_cache() -> Path:
    """The Hugging Face cache of repos, where huggingface_hub puts them: ``HF_HUB_CACHE``, else
    ``HF_HOME/hub``, else ``$XDG_CACHE_HOME/huggingface/hub`` or ``~/.cache/huggingface/hub``."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    home = os.environ.get("HF_HOME")
    if not home:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
        home = os.path.join(xdg, "huggingface")
    return Path(home).expanduser() / "hub"


def token(explicit: str | None = None) -> str | None:
    """The token to use: ``--token``, else ``HF_TOKEN``, else the cached ``hf auth login`` token."""
    if explicit:
        return explicit
    from huggingface_hub import get_token

    return get_token() or None


def quant_engine() -> str | None:
    """``HFSTREAM_QUANT_ENGINE``: "ggml" or "numpy" to force a quantization engine (default: ggml if it loads)."""
    value = os.environ.get("HFSTREAM_QUANT_ENGINE", "").strip().lower()
    return value or None


def ggml_library() -> str | None:
    """``HFSTREAM_GGML_LIB``: a libggml-base shared library to quantize with instead of libggml-python's
    (e.g. a newer ggml, whose IQ1_M matches a newer llama-quantize)."""
    return os.environ.get("HFSTREAM_GGML_LIB", "").strip() or None


def parse_size(text: str | int) -> int:
    """``256M``, ``1.5G``, ``4096``, ``2GiB`` -> bytes (binary multiples, as llama.cpp's --split-max-size)."""
    import re

    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(i?[bB])?\s*", text)
    if not m:
        raise ValueError(f"not a size: {text!r} (e.g. 256M, 2G)")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2).lower()]
    return int(float(m.group(1)) * scale)


def cache_dir() -> Path:
    """Where hfstream keeps its own work between runs (a mirror's conversions on their way to a Hub
    repo): ``HFSTREAM_CACHE``, else ``$XDG_CACHE_HOME/hfstream``, else ``~/.cache/hfstream``. Private
    to the user: never a shared, predictable place such as ``/tmp``."""
    explicit = os.environ.get("HFSTREAM_CACHE", "").strip()
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg) if xdg else Path.home() / ".cache") / "hfstream"


def debug() -> bool:
    """``HFSTREAM_DEBUG``: show the traceback of an internal error (a bug) instead of one line."""
    return bool(os.environ.get("HFSTREAM_DEBUG"))


def dask_scheduler() -> str | None:
    """``HFSTREAM_DASK_SCHEDULER``: the address of a Dask cluster for ``mirror --engine dask`` (default: a local one)."""
    return os.environ.get("HFSTREAM_DASK_SCHEDULER") or None


def dask_processes() -> bool:
    """``HFSTREAM_DASK_PROCESSES=0``: the local Dask cluster's workers are threads of this process (tests)."""
    return os.environ.get("HFSTREAM_DASK_PROCESSES", "1") != "0"
