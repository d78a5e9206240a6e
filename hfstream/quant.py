"""Output types: which GGUF type each tensor gets, and the quantization itself.

For f32/f16/bf16/q8_0 the type rules mirror the reference converter's: 1-D tensors, ``*_norm.weight``,
non-weights (biases) and a fixed list of tensor kinds stay F32; the rest take the
file type, and Q8_0 falls back to F16 when a row is not a multiple of 32 long.

The other output types are llama-quantize's mixes (``mixes.py``): the plan starts from what
the reference converter's F32 output would be (every tensor F32) and ``mixes.choose_types``
picks each tensor's type as llama-quantize does from that file.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import gguf
import numpy as np
from gguf import GGMLQuantizationType as QT
from gguf import LlamaFileType as FT
from gguf import MODEL_TENSOR as MT

from . import errors, floats, settings
from .mixes import MIXES


@dataclass(frozen=True)
class OutType:
    """One ``--outtype``: the file type recorded in the GGUF and the default tensor type."""

    name: str
    file_type: FT
    tensor_type: QT
    #: a llama-quantize mix: types per tensor come from ``mixes.py``, starting from all-F32
    mix: bool = False

    @property
    def label(self) -> str:
        """The FTYPE part of the file name, as the reference spells it (``Q8_0``, ``BF16``)."""
        return self.file_type.name.partition("_")[2]


OUTTYPES = {
    "f32": OutType("f32", FT.ALL_F32, QT.F32),
    "f16": OutType("f16", FT.MOSTLY_F16, QT.F16),
    "bf16": OutType("bf16", FT.MOSTLY_BF16, QT.BF16),
    "q8_0": OutType("q8_0", FT.MOSTLY_Q8_0, QT.Q8_0),
    **{m.name: OutType(m.name, m.ftype, m.default, mix=True) for m in MIXES.values()},
}
OUTTYPE_CHOICES = (*OUTTYPES, "auto")

#: Tensor kinds the reference always keeps in F32 (they are small or precision-critical).
_ALWAYS_F32 = (
    MT.FFN_GATE_INP, MT.FFN_GATE_INP_SHEXP, MT.POS_EMBD, MT.TOKEN_TYPES, MT.SSM_CONV1D,
    MT.TIME_MIX_FIRST, MT.TIME_MIX_W1, MT.TIME_MIX_W2, MT.TIME_MIX_DECAY_W1, MT.TIME_MIX_DECAY_W2,
    MT.TIME_MIX_LERP_FUSED, MT.POSNET_NORM1, MT.POSNET_NORM2, MT.V_ENC_EMBD_POS, MT.A_ENC_EMBD_POS,
    MT.ALTUP_CORRECT_COEF, MT.ALTUP_PREDICT_COEF,
)
_OPTIONAL_F32 = ("SHORTCONV_CONV", "SSM_CONV1D_Q", "SSM_CONV1D_K", "SSM_CONV1D_V", "INDEXER_PROJ")
ALWAYS_F32_KINDS = _ALWAYS_F32 + tuple(getattr(MT, n) for n in _OPTIONAL_F32 if hasattr(MT, n))


def outtype(name: str) -> OutType:
    try:
        return OUTTYPES[name.lower()]
    except KeyError:
        raise errors.UnsupportedOptionError(
            f"unknown --outtype {name!r}; choose one of {', '.join(OUTTYPE_CHOICES)}") from None


def auto_outtype(first_2d_dtype: str | None) -> OutType:
    """``--outtype auto``: bf16 for a bf16 checkpoint, else f16 (the reference's heuristic)."""
    return OUTTYPES["bf16"] if first_2d_dtype == "BF16" else OUTTYPES["f16"]


def tensor_type(out: OutType, kind: MT | None, name: str, shape: tuple[int, ...]) -> QT:
    """The GGUF type of one output tensor (``kind`` from the gguf tensor-name map, ``shape`` numpy order).

    For a mix this is F32, the type in the reference's F32 file; ``mixes.choose_types`` decides later.
    """
    if out.mix:
        return QT.F32
    if len(shape) <= 1 or name.endswith("_norm.weight"):
        return QT.F32
    if kind in ALWAYS_F32_KINDS or not name.endswith((".weight", ".lora_a", ".lora_b")):
        return QT.F32
    qt = out.tensor_type
    if qt not in (QT.F32, QT.F16, QT.BF16):
        block_size, _ = gguf.GGML_QUANT_SIZES[qt]
        if shape[-1] % block_size != 0:
            return QT.F16  # the reference falls back to F16 when rows don't split into blocks
    return qt


def nbytes(qt: QT, shape: tuple[int, ...]) -> int:
    """Size in bytes of a tensor of numpy ``shape`` stored as ``qt``."""
    return int(np.prod(gguf.quant_shape_to_byte_shape(shape, qt), dtype=np.int64)) if qt not in (
        QT.F32, QT.F16, QT.BF16) else int(np.prod(shape, dtype=np.int64)) * {QT.F32: 4, QT.F16: 2, QT.BF16: 2}[qt]


@dataclass(frozen=True)
class Weights:
    """Importance weights of a tensor's rows (an imatrix entry): row ``r`` uses ``values[r // rows_per_mat]``.

    ``values`` is (n_mat, n_per_row): one vector for a 2-D tensor, one per expert for an MoE stack.
    """

    values: np.ndarray
    rows_per_mat: int

    def pieces(self, r0: int, r1: int):
        """(start, end, vector) covering rows [r0, r1), never crossing a matrix (expert)."""
        while r0 < r1:
            k = r0 // self.rows_per_mat
            end = min(r1, (k + 1) * self.rows_per_mat)
            yield r0, end, self.values[k]
            r0 = end


def quantize(array: np.ndarray, qt: QT, engine: str | None = None, weights: Weights | None = None,
             first_row: int = 0) -> np.ndarray:
    """Encode ``array`` (F32 or F16, rows along the last axis) as ``qt``.

    Rows are encoded independently, so any block of rows gives the same bytes as the same
    rows of the whole tensor. ``engine``: "ggml" (libggml's ggml_quantize_chunk, which releases
    the GIL, so threads use every core) or "numpy" (the gguf package); both give the same bytes
    for finite values. Default: ggml when its library loads, else numpy. Under "ggml", Q8_0 goes
    through hfstream's compiled encoder (``_q8_0.c``, ten times faster, the same bytes) when it was
    built and this CPU can run it.

    ``weights``: the tensor's importance weights; ``array`` is then rows ``first_row...`` of the
    tensor, and each row is encoded with its matrix's (expert's) vector, as llama-quantize does.
    """
    if qt == QT.F32:
        return array.astype(np.float32, copy=False)
    if qt == QT.F16:
        return floats.f32_to_f16(array) if array.dtype == np.float32 else array.astype(np.float16, copy=False)
    engine = engine or default_engine()
    if engine == "ggml":
        if qt == QT.Q8_0 and compiled_q8_0():
            encoded = _kernel_q8_0(_KERNEL, array)  # Q8_0 takes no importance weights, in ggml either
            if encoded is not None:
                return encoded
        if weights is None:
            return _ggml_quantize(array, qt)
        rows = array.reshape(-1, array.shape[-1]) if array.ndim != 2 else array
        parts = [_ggml_quantize(rows[a - first_row:b - first_row], qt, vec)
                 for a, b, vec in weights.pieces(first_row, first_row + rows.shape[0])]
        return (np.concatenate(parts) if len(parts) > 1 else parts[0]).reshape(
            gguf.quant_shape_to_byte_shape(array.shape, qt))
    if weights is not None or qt not in _NUMPY_TYPES:
        raise errors.UnsupportedOptionError(
            f"{qt.name} {'with an importance matrix ' if weights is not None else ''}needs libggml "
            "(pip install libggml-python), which could not be loaded")
    return gguf.quants.quantize(array, qt)


#: what the gguf package can encode itself
_NUMPY_TYPES = (QT.BF16, QT.Q8_0, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1, QT.TQ1_0, QT.TQ2_0)


def default_engine() -> str:
    from .settings import quant_engine

    wanted = quant_engine()
    if wanted == "numpy":
        return "numpy"
    if _ggml_lib() is not None:
        return "ggml"
    if wanted == "ggml":
        raise errors.UnsupportedOptionError("HFSTREAM_QUANT_ENGINE=ggml but libggml could not be loaded")
    return "numpy"


_GGML = None
_GGML_TRIED = False
_GGML_ORIGIN: str | None = None
_GGML_LOCK = threading.Lock()


def _ggml_lib():
    """A libggml-base with ggml_quantize_chunk's signature (see ``_load_ggml``), or None."""
    with _GGML_LOCK:  # worker threads ask at once: none may see "tried" before the library is set
        return _load_ggml()


_LIB_NAMES = ("libggml-base.so", "libggml-base.dylib", "ggml-base.dll")


def _package_library(package: str, subdirs: tuple[str, ...]) -> str | None:
    """The libggml-base shipped inside an installed package, found without importing the package."""
    import importlib.util
    import os

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
    import re

    m = re.match(r"(\d+)\.(\d+)\.(\d+)", text or "")
    return tuple(int(x) for x in m.groups()) if m else ()


def _load_ggml():
    """The ggml to quantize with: ``HFSTREAM_GGML_LIB`` when set; else the newest installed one.

    libggml-python (a dependency) ships one; llama-cpp-python, when installed, ships the ggml of
    the llama.cpp it was built from, which is usually newer, and llama-quantize's bytes are the
    ones its own ggml writes (IQ1_M's search changed after libggml-python 0.20.2's ggml). Loading
    llama-cpp-python's copy also keeps one ggml in the process if ``llama_cpp`` is imported later.
    """
    global _GGML, _GGML_TRIED, _GGML_ORIGIN
    if _GGML_TRIED:
        return _GGML
    _GGML_TRIED = True
    from .settings import ggml_library

    import ctypes

    def load(path: str):
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

    explicit = ggml_library()
    if explicit is not None:
        try:
            _GGML, _GGML_ORIGIN = load(explicit), "HFSTREAM_GGML_LIB"
        except (OSError, AttributeError) as e:
            raise errors.UnsupportedOptionError(f"HFSTREAM_GGML_LIB={explicit} cannot be used: {e}") from None
        return _GGML

    shipped = _package_library("libggml", ("lib64", "lib", "bin"))
    newer = _package_library("llama_cpp", ("lib",))
    if newer is not None:
        try:
            lib = load(newer)
            mine = _version_tuple(lib.ggml_version().decode()) if hasattr(lib, "ggml_version") else ()
            if shipped is None or mine >= _version_tuple(_distribution_version("libggml-python")):
                _GGML, _GGML_ORIGIN = lib, "llama-cpp-python"
                return _GGML
        except (OSError, AttributeError):
            pass
    if shipped is not None:
        try:
            _GGML, _GGML_ORIGIN = load(shipped), "libggml-python"
        except (OSError, AttributeError):
            _GGML = None
    return _GGML


def _distribution_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def ggml_origin() -> str | None:
    """Where the loaded ggml comes from ("libggml-python", "llama-cpp-python", "HFSTREAM_GGML_LIB"),
    or None when none could be loaded (``default_engine`` says whether it is used)."""
    return _GGML_ORIGIN if _ggml_lib() is not None else None


def ggml_version() -> str | None:
    """The version of the ggml library quantization uses (None: not loaded; numpy engine)."""
    lib = _ggml_lib()
    return lib.ggml_version().decode() if lib is not None and hasattr(lib, "ggml_version") else None


try:
    from . import _q8_0
except ImportError:  # not built (no C compiler at install)
    _q8_0 = None
#: hfstream's compiled Q8_0 encoder (``_q8_0.c``), when it was built and this CPU runs it
_KERNEL = _q8_0 if _q8_0 is not None and _q8_0.available() else None


def compiled_q8_0() -> bool:
    """Whether Q8_0 goes through hfstream's compiled encoder (under the ggml engine): built, run by
    this CPU, and not switched off (``settings.linux_path("q8_0_avx2")``)."""
    return _KERNEL is not None and settings.linux_path("q8_0_avx2")


def _kernel_q8_0(kernel, array: np.ndarray) -> np.ndarray | None:
    """``array`` as Q8_0 through the compiled encoder, or None when ggml must encode it (see _q8_0.c)."""
    src = _contiguous_f32(array)
    out = np.empty(gguf.quant_shape_to_byte_shape(src.shape, QT.Q8_0), dtype=np.uint8)
    return out if kernel.quantize(src.reshape(-1), out.reshape(-1)) == 0 else None


def _contiguous_f32(array: np.ndarray) -> np.ndarray:
    return floats.f16_to_f32(array) if array.dtype == np.float16 else np.ascontiguousarray(array, dtype=np.float32)


def _ggml_quantize(array: np.ndarray, qt: QT, imatrix: np.ndarray | None = None) -> np.ndarray:
    lib = _ggml_lib()
    src = _contiguous_f32(array)
    n_per_row = src.shape[-1] if src.ndim else 1
    nrows = src.size // n_per_row if n_per_row else 0
    out = np.empty(gguf.quant_shape_to_byte_shape(src.shape, qt), dtype=np.uint8)
    im = None if imatrix is None else np.ascontiguousarray(imatrix, dtype=np.float32)
    size = lib.ggml_quantize_chunk(int(qt), src.ctypes.data, out.ctypes.data, 0, nrows, n_per_row,
                                   None if im is None else im.ctypes.data)
    if size != out.nbytes:
        raise RuntimeError(f"ggml_quantize_chunk wrote {size} bytes for {qt.name}, expected {out.nbytes}")
    return out
