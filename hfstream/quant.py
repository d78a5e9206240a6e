"""Output types: which GGUF type each tensor gets, and the quantization itself.

The type rules mirror the reference converter's: 1-D tensors, ``*_norm.weight``,
non-weights (biases) and a fixed list of tensor kinds stay F32; the rest take the
file type, and Q8_0 falls back to F16 when a row is not a multiple of 32 long.
"""

from __future__ import annotations

from dataclasses import dataclass

import gguf
import numpy as np
from gguf import GGMLQuantizationType as QT
from gguf import LlamaFileType as FT
from gguf import MODEL_TENSOR as MT

from . import errors


@dataclass(frozen=True)
class OutType:
    """One ``--outtype``: the file type recorded in the GGUF and the default tensor type."""

    name: str
    file_type: FT
    tensor_type: QT

    @property
    def label(self) -> str:
        """The FTYPE part of the file name, as the reference spells it (``Q8_0``, ``BF16``)."""
        return self.file_type.name.partition("_")[2]


OUTTYPES = {
    "f32": OutType("f32", FT.ALL_F32, QT.F32),
    "f16": OutType("f16", FT.MOSTLY_F16, QT.F16),
    "bf16": OutType("bf16", FT.MOSTLY_BF16, QT.BF16),
    "q8_0": OutType("q8_0", FT.MOSTLY_Q8_0, QT.Q8_0),
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
    """The GGUF type of one output tensor (``kind`` from the gguf tensor-name map, ``shape`` numpy order)."""
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


def quantize(array: np.ndarray, qt: QT) -> np.ndarray:
    """Encode ``array`` (F32 or F16, numpy order) as ``qt``; returns the bytes as a uint8/float array."""
    return gguf.quants.quantize(array, qt)
