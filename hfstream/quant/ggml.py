"""Which libggml-base quantizes, found once per process.

``HFSTREAM_GGML_LIB`` when set; else the newest installed copy. libggml-python (a dependency)
ships one; llama-cpp-python, when installed, ships the ggml of the llama.cpp it was built from,
which is usually newer, and llama-quantize's bytes are the ones its own ggml writes (IQ1_M's search
changed after libggml-python 0.20.2's ggml). Loading llama-cpp-python's copy also keeps one ggml in
the process if ``llama_cpp`` is imported later. The packages are found without being imported.

``floats`` loads ggml-cpu from beside the library chosen here, so both halves are one build.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import re
import threading

from .. import errors, settings

_LIB: ctypes.CDLL | None = None
_TRIED = False
_ORIGIN: str | None = None
_PATH: str | None = None
_LOCK = threading.Lock()

_LIB_NAMES = ("libggml-base.so", "libggml-base.dylib", "ggml-base.dll")


def library() -> ctypes.CDLL | None:
    """A libggml-base with ggml_quantize_chunk's signature set, or None when none loads."""
    with _LOCK:  # worker threads ask at once: none may see "tried" before the library is set
        return _load()


def origin() -> str | None:
    """Where the loaded ggml comes from ("libggml-python", "llama-cpp-python", "HFSTREAM_GGML_LIB"),
    or None when none could be loaded (``encode.default_engine`` says whether it is used)."""
    return _ORIGIN if library() is not None else None


def library_path() -> str | None:
    """The file the loaded library came from (ggml-cpu sits beside it), or None."""
    return _PATH if library() is not None else None


def version() -> str | None:
    """The version of the ggml library quantization uses (None: not loaded; numpy engine)."""
    lib = library()
    return lib.ggml_version().decode() if lib is not None and hasattr(lib, "ggml_version") else None


def version_tuple() -> tuple[int, int, int] | None:
    """``version()`` as (major, minor, patch), or None when it is not known."""
    parts = _version_tuple(version())
    return parts if len(parts) == 3 else None  # type: ignore[return-value]


def _open(path: str) -> ctypes.CDLL:
    lib = ctypes.CDLL(path)
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    lib.ggml_quantize_requires_imatrix.restype = ctypes.c_bool
    lib.ggml_quantize_requires_imatrix.argtypes = [ctypes.c_int]
    if hasattr(lib, "ggml_version"):
        lib.ggml_version.restype = ctypes.c_char_p
        lib.ggml_version.argtypes = []
    return lib


def _load() -> ctypes.CDLL | None:
    global _LIB, _TRIED, _ORIGIN, _PATH
    if _TRIED:
        return _LIB
    _TRIED = True

    explicit = settings.ggml_library()
    if explicit is not None:
        try:
            _LIB, _ORIGIN, _PATH = _open(explicit), "HFSTREAM_GGML_LIB", explicit
        except (OSError, AttributeError) as e:
            raise errors.UnsupportedOptionError(f"HFSTREAM_GGML_LIB={explicit} cannot be used: {e}") from None
        return _LIB

    shipped = _package_library("libggml", ("lib64", "lib", "bin"))
    newer = _package_library("llama_cpp", ("lib",))
    if newer is not None:
        try:
            lib = _open(newer)
            mine = _version_tuple(lib.ggml_version().decode()) if hasattr(lib, "ggml_version") else ()
            if shipped is None or mine >= _version_tuple(_distribution_version("libggml-python")):
                _LIB, _ORIGIN, _PATH = lib, "llama-cpp-python", newer
                return _LIB
        except (OSError, AttributeError):
            pass
    if shipped is not None:
        try:
            _LIB, _ORIGIN, _PATH = _open(shipped), "libggml-python", shipped
        except (OSError, AttributeError):
            _LIB = None
    return _LIB


def _package_library(package: str, subdirs: tuple[str, ...]) -> str | None:
    """The libggml-base shipped inside an installed package, found without importing the package."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    for base in (spec.submodule_search_locations or []) if spec else []:
        for d in subdirs:
            for n in _LIB_NAMES:
                path = os.path.join(base, d, n)
                if os.path.exists(path):
                    return path
    return None


def _version_tuple(text: str | None) -> tuple[int, ...]:
    m = re.match(r"(\d+)\.(\d+)\.(\d+)", text or "")
    return tuple(int(x) for x in m.groups()) if m else ()


def _distribution_version(name: str) -> str | None:
    from importlib import metadata  # only when llama-cpp-python's copy is a candidate

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
