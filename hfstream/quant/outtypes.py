"""What ``--outtype`` names, and what a GGML type costs in bytes.

Two families of output types share one option: the reference converter's own (f32, f16, bf16,
q8_0, and ``auto`` picking f16 or bf16), whose per-tensor rules are in ``rules``, and llama-quantize's
mixes (q4_k_m, iq4_xs, ...), whose rules are in ``mixes``. An ``OutType`` says which it is, the file
type recorded in ``general.file_type`` and the label in the default file name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import gguf
import numpy as np
from gguf import GGMLQuantizationType as QT
from gguf import LlamaFileType as FT

from .. import errors
from .mixes import MIXES


@dataclass(frozen=True)
class OutType:
    """One ``--outtype``: the file type recorded in the GGUF and the default tensor type."""

    name: str
    file_type: FT
    tensor_type: QT
    #: a llama-quantize mix: types per tensor come from ``mixes``, as llama-quantize picks them from
    #: the reference converter's f32 output
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


def outtype(name: str) -> OutType:
    try:
        return OUTTYPES[name.lower()]
    except KeyError:
        raise errors.UnsupportedOptionError(
            f"unknown --outtype {name!r}; choose one of {', '.join(OUTTYPE_CHOICES)}") from None


def auto_outtype(first_2d_dtype: str | None) -> OutType:
    """``--outtype auto``: bf16 for a bf16 checkpoint, else f16 (the reference's heuristic)."""
    return OUTTYPES["bf16"] if first_2d_dtype == "BF16" else OUTTYPES["f16"]


_FLOAT_BYTES = {QT.F32: 4, QT.F16: 2, QT.BF16: 2}


def nbytes(qt: QT, shape: Sequence[int]) -> int:
    """Size in bytes of a tensor of numpy ``shape`` stored as ``qt``."""
    if qt in _FLOAT_BYTES:
        return int(np.prod(shape, dtype=np.int64)) * _FLOAT_BYTES[qt]
    return int(np.prod(gguf.quant_shape_to_byte_shape(tuple(shape), qt), dtype=np.int64))


def bits_per_weight(tensors: Sequence[tuple[Sequence[int], int]]) -> float:
    """Bits per weight of tensors given as (shape, bytes)."""
    n = sum(math.prod(int(d) for d in shape) for shape, _ in tensors)
    return 8.0 * sum(b for _, b in tensors) / n if n else 0.0
