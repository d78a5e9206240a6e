"""Encoding: rows of F32 or F16 values into the bytes of a GGUF type.

Three encoders give the same bytes. libggml's ``ggml_quantize_chunk`` (library found by ``ggml``)
encodes every type and releases the GIL, so threads use every core; the gguf package's numpy code
encodes the older types; for Q8_0, hfstream's compiled encoder (``_q8_0.c``, the reference's
arithmetic eight lanes at a time) is about ten times faster than ggml's, and is used under the
ggml engine when it was built and this CPU runs it.

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
