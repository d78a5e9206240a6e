"""Encoding: rows of F32 or F16 values into the bytes of a GGUF type.

Three encoders give the same bytes. libggml's ``ggml_quantize_chunk`` (library found by ``ggml``)
encodes every type and releases the GIL, so threads use every core; the gguf package's numpy code
encodes the older types; for Q8_0 and for the K-quants of the common mixes (Q4_K, Q5_K, Q6_K),
hfstream's compiled encoders (``_q8_0.c``, ``_kquants.c``: the reference's float operations, in its
order, eight lanes at a time) are 5-20 times faster than ggml's. They are used under the ggml
engine when they were built and this CPU runs them; the K-quant one only with a ggml whose K-quant
code it follows, and it hands back the blocks it cannot promise (NaN, infinity), which ggml encodes.

Rows are encoded independently, so any block of rows gives the same bytes as the same rows of the
whole tensor: a unit of work can be any block of rows.
"""

from __future__ import annotations

from types import ModuleType

import gguf
import numpy as np
from gguf import GGMLQuantizationType as QT

from .. import errors, settings
from . import floats, ggml
from .imatrix import Weights

try:
    from . import _q8_0
except ImportError:  # not built (no C compiler at install)
    _q8_0 = None  # type: ignore[assignment]
#: hfstream's compiled Q8_0 encoder (``_q8_0.c``), when it was built and this CPU runs it
_KERNEL: ModuleType | None = _q8_0 if _q8_0 is not None and _q8_0.available() else None

try:
    from . import _kquants
except ImportError:  # not built
    _kquants = None  # type: ignore[assignment]
#: hfstream's compiled K-quant encoders (``_kquants.c``), when they were built and this CPU runs them
_KQUANTS: ModuleType | None = _kquants if _kquants is not None and _kquants.available() else None
#: the types ``_kquants.c`` encodes
KQUANT_TYPES = (QT.Q4_K, QT.Q5_K, QT.Q6_K)
#: the ggml releases whose Q4_K/Q5_K/Q6_K encoders ``_kquants.c`` follows: their code (quantize_row_q*_K_ref
#: and _impl, make_qkx2/qkx3/qp/qx_quants, the f16 rounding) is the same from libggml-python's 0.20.2 to
#: llama-cpp-python 0.3.36's 0.25.3. Another ggml encodes these types itself, until it is checked too.
KQUANT_GGML_VERSIONS = ((0, 20, 2), (0, 25, 3))

#: what the gguf package can encode itself
_NUMPY_TYPES = (QT.BF16, QT.Q8_0, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1, QT.TQ1_0, QT.TQ2_0)


def quantize(array: np.ndarray, qt: QT, engine: str | None = None, weights: Weights | None = None,
             first_row: int = 0) -> np.ndarray:
    """Encode ``array`` (F32 or F16, rows along the last axis) as ``qt``.

    ``engine``: "ggml" or "numpy" (the gguf package); both give the same bytes for finite values.
    Default: ggml when its library loads, else numpy.

    ``weights``: the tensor's importance weights; ``array`` is then rows ``first_row...`` of the
    tensor, and each row is encoded with its matrix's (expert's) vector, as llama-quantize does.
    """
    if qt == QT.F32:
        return array.astype(np.float32, copy=False)
    if qt == QT.F16:
        return floats.f32_to_f16(array) if array.dtype == np.float32 else array.astype(np.float16, copy=False)
    engine = engine or default_engine()
    if engine == "ggml":
        if qt == QT.Q8_0 and _KERNEL is not None and compiled_q8_0():
            encoded = _kernel_q8_0(_KERNEL, array)  # Q8_0 takes no importance weights, in ggml either
            if encoded is not None:
                return encoded
        kquants = _KQUANTS
        if kquants is not None and qt in KQUANT_TYPES and array.shape[-1] % 256 == 0 and compiled_kquants():
            return _kernel_kquant(kquants, array, qt, weights, first_row)
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


def default_engine() -> str:
    """"ggml" when libggml loads (unless ``HFSTREAM_QUANT_ENGINE=numpy``), else "numpy"."""
    wanted = settings.quant_engine()
    if wanted == "numpy":
        return "numpy"
    if ggml.library() is not None:
        return "ggml"
    if wanted == "ggml":
        raise errors.UnsupportedOptionError("HFSTREAM_QUANT_ENGINE=ggml but libggml could not be loaded")
    return "numpy"


def compiled_q8_0() -> bool:
    """Whether Q8_0 goes through hfstream's compiled encoder (under the ggml engine): built, run by
    this CPU, and not switched off (``settings.linux_path("q8_0_avx2")``)."""
    return _KERNEL is not None and settings.linux_path("q8_0_avx2")


def compiled_kquants() -> bool:
    """Whether Q4_K, Q5_K and Q6_K go through hfstream's compiled encoders (under the ggml engine): built,
    run by this CPU, not switched off (``settings.linux_path("kquants_avx2")``), and the loaded ggml is
    one whose K-quant code they follow (``KQUANT_GGML_VERSIONS``)."""
    if _KQUANTS is None or not settings.linux_path("kquants_avx2"):
        return False
    low, high = KQUANT_GGML_VERSIONS
    version = ggml.version_tuple()
    return version is not None and low <= version <= high


def _kernel_kquant(kernel: ModuleType, array: np.ndarray, qt: QT, weights: Weights | None,
                   first_row: int) -> np.ndarray:
    """``array`` as ``qt`` through the compiled encoder; the blocks it hands back are encoded by ggml."""
    src = _contiguous_f32(array)
    n_per_row = src.shape[-1]
    rows = src.reshape(-1, n_per_row)
    out = np.empty(gguf.quant_shape_to_byte_shape(src.shape, qt), dtype=np.uint8)
    out_rows = out.reshape(rows.shape[0], -1)
    pieces = [(0, rows.shape[0], None)] if weights is None else [
        (a - first_row, b - first_row, vec) for a, b, vec in weights.pieces(first_row, first_row + rows.shape[0])]
    for a, b, vec in pieces:
        imatrix = None if vec is None else np.ascontiguousarray(vec, dtype=np.float32)
        odd = np.zeros((b - a) * (n_per_row // 256), dtype=np.uint8)
        if kernel.quantize(int(qt), rows[a:b].reshape(-1), out_rows[a:b].reshape(-1), n_per_row, imatrix, odd):
            _ggml_blocks(rows[a:b], out_rows[a:b], qt, imatrix, odd)
    return out


def _ggml_blocks(rows: np.ndarray, out_rows: np.ndarray, qt: QT, imatrix: np.ndarray | None,
                 flagged: np.ndarray) -> None:
    """Encode the flagged 256-value blocks of ``rows`` with ggml into ``out_rows``: each block is encoded
    on its own (with its slice of the importance weights), as it is within its row."""
    per_row = rows.shape[1] // 256
    size = gguf.GGML_QUANT_SIZES[qt][1]
    for k in np.flatnonzero(flagged):
        r, c = divmod(int(k), per_row)
        vec = None if imatrix is None else imatrix[256 * c:256 * (c + 1)]
        out_rows[r, size * c:size * (c + 1)] = _ggml_quantize(rows[r:r + 1, 256 * c:256 * (c + 1)], qt, vec).reshape(-1)


def _kernel_q8_0(kernel: ModuleType, array: np.ndarray) -> np.ndarray | None:
    """``array`` as Q8_0 through the compiled encoder, or None when ggml must encode it (see _q8_0.c)."""
    src = _contiguous_f32(array)
    out = np.empty(gguf.quant_shape_to_byte_shape(src.shape, QT.Q8_0), dtype=np.uint8)
    return out if kernel.quantize(src.reshape(-1), out.reshape(-1)) == 0 else None


def _contiguous_f32(array: np.ndarray) -> np.ndarray:
    return floats.f16_to_f32(array) if array.dtype == np.float16 else np.ascontiguousarray(array, dtype=np.float32)


def _ggml_quantize(array: np.ndarray, qt: QT, imatrix: np.ndarray | None = None) -> np.ndarray:
    lib = ggml.library()
    if lib is None:
        raise errors.UnsupportedOptionError("the ggml engine was asked for but libggml could not be loaded")
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
