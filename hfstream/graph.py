"""Lazy expressions from source byte ranges to output arrays, evaluated a block of rows at a time.

An output tensor is a small tree: leaves are source tensors (byte ranges of a safetensors
file) or constants, inner nodes are cheap array transforms. A tree knows its shape and dtype
without any data, so the plan and the layout are made before a byte is fetched.

Rows: a tensor of shape (..., n) has ``rows`` = product of the leading dims, each row n long.
Every GGUF type encodes rows independently (quantization blocks never cross a row), so rows
[r0, r1) of a tensor are bytes [r0, r1) x row size of its output: a work unit can be a block
of rows. ``row_align`` says at which row counts a node can be cut (None: only whole), and
``spans(r0, r1)`` which source bytes those rows need, so big tensors and MoE stacks are
fetched and processed one block (one expert) at a time.

Numeric conventions follow the reference converter: a source that is neither F16 nor F32
becomes F32 first (BF16 and FP8 -> F32 are exact), F16 and F32 stay as they are.

Some sources are already quantized in a layout GGML has (gpt-oss's MXFP4 experts): their node
gives rows of bytes in that GGUF type (``encoded``), which pass to the file as they are.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from functools import cache, cached_property
from typing import Any, ClassVar, NamedTuple

import numpy as np
from gguf import GGMLQuantizationType as QT

from . import errors
from .quant import floats
from .safetensors import DTYPE_SIZES, SourceTensor

_NUMPY_DTYPES: dict[str, np.dtype[Any]] = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U8": np.dtype("u1"), "U16": np.dtype("<u2"), "U32": np.dtype("<u4"), "U64": np.dtype("<u8"),
    "BOOL": np.dtype("?"),
}

F32 = np.dtype(np.float32)
F16 = np.dtype(np.float16)


def _float8_values(exp_bits: int, man_bits: int, ieee_specials: bool) -> np.ndarray:
    """The float32 value of each of the 256 codes of an 8-bit float (sign, exponent, mantissa).

    ``ieee_specials``: the top exponent holds infinities and NaNs (E5M2); otherwise only the
    all-ones code of each sign is NaN and the rest of the top exponent are numbers (E4M3 "fn").
    """
    bias = (1 << (exp_bits - 1)) - 1
    code = np.arange(256)
    sign = np.where(code & 0x80, -1.0, 1.0)
    exp = (code >> man_bits) & ((1 << exp_bits) - 1)
    man = code & ((1 << man_bits) - 1)
    frac = man / float(1 << man_bits)
    values = sign * np.where(exp == 0, frac * 2.0 ** (1 - bias), (1.0 + frac) * 2.0 ** (exp - bias))
    top = exp == (1 << exp_bits) - 1
    if ieee_specials:
        values = np.where(top & (man == 0), sign * np.inf, np.where(top, np.nan, values))
    else:
        values = np.where(top & (man == (1 << man_bits) - 1), np.nan, values)
    return values.astype(np.float32)


#: safetensors' 8-bit float dtypes -> the float32 value of every byte (torch's ``.float()``, exact)
FLOAT8_VALUES = {
    "F8_E4M3": _float8_values(4, 3, ieee_specials=False),
    "F8_E5M2": _float8_values(5, 2, ieee_specials=True),
    # E8M0 (OCP MX scales, DeepSeek-V4's ``scale_fmt: ue8m0``): a bare biased exponent, 2^(code - 127);
    # code 255 is NaN
    "F8_E8M0": np.where(np.arange(256) == 255, np.nan, np.exp2(np.arange(256) - 127.0)).astype(np.float32),
}


class Span(NamedTuple):
    """A byte range of a source file that a block of rows needs (absolute offsets, end exclusive)."""

    src: SourceTensor
    start: int
    end: int

    @property
    def file(self) -> str:
        return self.src.file

    @property
    def nbytes(self) -> int:
        return self.end - self.start


SpanData = Mapping[Span, "bytes | memoryview"]


def _rows(shape: tuple[int, ...]) -> int:
    return math.prod(shape[:-1]) if len(shape) >= 1 else 1


def _cols(shape: tuple[int, ...]) -> int:
    return shape[-1] if shape else 1


class Node:
    """A lazy array: shape and dtype known up front, values block by block."""

    shape: tuple[int, ...]
    dtype: np.dtype
    #: the GGUF type whose bytes ``eval_rows`` already gives (one row of blocks per row of ``shape``),
    #: or None for values still to be encoded. An encoded node is a root: nothing transforms its bytes.
    encoded: ClassVar[QT | None] = None

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def rows(self) -> int:
        return _rows(self.shape)

    @property
    def cols(self) -> int:
        return _cols(self.shape)

    def leaves(self) -> Iterator[SourceTensor]:
        return iter(())

    def row_align(self) -> int | None:
        """Row counts at which this node can be cut into independent blocks (None: whole only)."""
        return None

    def spans(self, r0: int, r1: int) -> list[Span]:
        """Source bytes needed for rows [r0, r1)."""
        raise NotImplementedError

    def eval_rows(self, data: SpanData, r0: int, r1: int) -> np.ndarray:
        """Rows [r0, r1) as a (r1 - r0, cols) array, from the bytes of ``spans(r0, r1)``."""
        raise NotImplementedError

    def evaluate(self, data: SpanData) -> np.ndarray:
        """The whole tensor, from the bytes of ``spans(0, rows)``."""
        return self.eval_rows(data, 0, self.rows).reshape(self.shape)


def same_graph(a: Node, b: Node) -> bool:
    """Whether two nodes compute the same values from the same source bytes: the same classes with
    equal fields, all the way down (nodes compare by identity otherwise: ``eq=False``)."""
    if a is b:
        return True
    node: Any = a  # every concrete node is a dataclass
    return type(a) is type(b) and all(same_value(getattr(a, f.name), getattr(b, f.name)) for f in fields(node))


def same_array(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal bit for bit (NaN payloads and the sign of zero included), dtype and shape too."""
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def same_value(a: Any, b: Any) -> bool:
    """Equal as they would be written or computed with: the same types, arrays and floats bit for bit
    (-0.0 is not 0.0, NaN is NaN), sequences item by item, nodes by ``same_graph``."""
    if type(a) is not type(b):
        return False
    if isinstance(a, Node):
        return same_graph(a, b)
    if isinstance(a, (np.ndarray, np.generic)):
        return same_array(np.asarray(a), np.asarray(b))
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(map(same_value, a, b))
    if isinstance(a, float):
        return a.hex() == b.hex()
    return bool(a == b)


def decode(src: SourceTensor, raw: bytes | memoryview, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Source bytes to an array: F16/F32 as they are, everything else as F32."""
    if src.dtype == "BF16":
        out = floats.bf16_to_f32(np.frombuffer(raw, dtype="<u2"))
    elif src.dtype in ("F16", "F32"):
        out = np.frombuffer(raw, dtype=_NUMPY_DTYPES[src.dtype])
    elif src.dtype in FLOAT8_VALUES:
        out = FLOAT8_VALUES[src.dtype][np.frombuffer(raw, dtype=np.uint8)]
    elif src.dtype in _NUMPY_DTYPES:
        out = np.frombuffer(raw, dtype=_NUMPY_DTYPES[src.dtype]).astype(np.float32)
    else:
        raise ValueError(f"cannot decode {src.dtype} tensor {src.name!r}")
    return out.reshape(src.shape if shape is None else shape)


@dataclass(frozen=True, eq=False)
class Load(Node):
    """A source tensor, decoded."""

    src: SourceTensor

    @property
    def shape(self) -> tuple[int, ...]:  # type: ignore[override]
        return self.src.shape

    @property
    def dtype(self) -> np.dtype:  # type: ignore[override]
        return F16 if self.src.dtype == "F16" else F32

    def leaves(self) -> Iterator[SourceTensor]:
        yield self.src

    def row_align(self) -> int | None:
        return 1

    def spans(self, r0, r1):
        row_bytes = self.cols * DTYPE_SIZES[self.src.dtype]
        return [Span(self.src, self.src.start + r0 * row_bytes, self.src.start + r1 * row_bytes)]

    def eval_rows(self, data, r0, r1):
        (span,) = self.spans(r0, r1)
        return decode(self.src, data[span], (r1 - r0, self.cols))


@dataclass(frozen=True, eq=False)
class Constant(Node):
    """A tensor computed at plan time (e.g. rope frequency factors)."""

    value: np.ndarray

    @property
    def shape(self):  # type: ignore[override]
        return tuple(self.value.shape)

    @property
    def dtype(self):  # type: ignore[override]
        return self.value.dtype

    def row_align(self):
        return 1

    def spans(self, r0, r1):
        return []

    def eval_rows(self, data, r0, r1):
        return self.value.reshape(self.rows, self.cols)[r0:r1]


@dataclass(frozen=True, eq=False)
class _Unary(Node):
    """A node of one input, ``x``: its dtype and its source tensors are the input's."""

    x: Node

    @property
    def dtype(self):  # type: ignore[override]
        return self.x.dtype

    def leaves(self):
        return self.x.leaves()


@dataclass(frozen=True, eq=False)
class PermuteHeads(_Unary):
    """Llama's q/k row order for rotary embeddings: within each head, interleave the two halves.

    Rows of each head are grouped as (2, head_dim/2) and regrouped as (head_dim/2, 2); a block
    of whole heads needs exactly the same rows of the source.
    """

    x: Node
    n_head: int

    @property
    def shape(self):  # type: ignore[override]
        return self.x.shape

    @property
    def _head_rows(self) -> int:
        return self.shape[0] // self.n_head * (self.rows // self.shape[0])

    def row_align(self):
        inner = self.x.row_align()
        if self.ndim != 2 or inner is None or self._head_rows % inner:
            return None
        return self._head_rows

    def spans(self, r0, r1):
        if self.row_align() is None:
            return self.x.spans(0, self.x.rows)
        return self.x.spans(r0, r1)

    def eval_rows(self, data, r0, r1):
        if self.row_align() is None:
            w = self.x.evaluate(data)
            return self._permute(w, self.n_head).reshape(self.rows, self.cols)[r0:r1]
        w = self.x.eval_rows(data, r0, r1)
        return self._permute(w, (r1 - r0) // self._head_rows)

    @staticmethod
    def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
        rows = w.shape[0]
        return (w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:])
                .swapaxes(1, 2)
                .reshape(w.shape))


@dataclass(frozen=True, eq=False)
class Stack(Node):
    """Same-shaped tensors stacked on a new first axis (MoE experts); each part is its own block."""

    parts: tuple[Node, ...]

    @property
    def shape(self):  # type: ignore[override]
        return (len(self.parts), *self.parts[0].shape)

    @property
    def dtype(self):  # type: ignore[override]
        return np.result_type(*(p.dtype for p in self.parts))

    @property
    def part_rows(self) -> int:
        return self.parts[0].rows

    def leaves(self):
        for p in self.parts:
            yield from p.leaves()

    def row_align(self):
        aligns = [p.row_align() for p in self.parts]
        if any(a is None for a in aligns):
            return self.part_rows
        a = math.lcm(*aligns)
        return a if self.part_rows % a == 0 else self.part_rows

    def _pieces(self, r0: int, r1: int):
        """(part index, local r0, local r1) covering [r0, r1)."""
        n = self.part_rows
        k = r0 // n
        while r0 < r1:
            end = min(r1, (k + 1) * n)
            yield k, r0 - k * n, end - k * n
            r0, k = end, k + 1

    def spans(self, r0, r1):
        out = []
        for k, a, b in self._pieces(r0, r1):
            part = self.parts[k]
            out += part.spans(a, b) if part.row_align() is not None else part.spans(0, part.rows)
        return out

    def eval_rows(self, data, r0, r1):
        blocks = []
        for k, a, b in self._pieces(r0, r1):
            part = self.parts[k]
            if part.row_align() is None:
                blocks.append(part.evaluate(data).reshape(part.rows, part.cols)[a:b])
            else:
                blocks.append(part.eval_rows(data, a, b))
        out = np.concatenate(blocks) if len(blocks) > 1 else blocks[0]
        return out.astype(self.dtype, copy=False)


@dataclass(frozen=True, eq=False)
class AddScalar(_Unary):
    """x + c in the dtype of x (Gemma stores norm weights as w - 1)."""

    x: Node
    c: float

    @property
    def shape(self):  # type: ignore[override]
        return self.x.shape

    def row_align(self):
        return self.x.row_align()

    def spans(self, r0, r1):
        return self.x.spans(r0, r1)

    def eval_rows(self, data, r0, r1):
        w = self.x.eval_rows(data, r0, r1)
        return w + np.asarray(self.c, dtype=w.dtype)


@dataclass(frozen=True, eq=False)
class Transpose(_Unary):
    """The transpose of a 2-D tensor (GPT-2's Conv1D weights are stored as in x out). Whole only."""

    x: Node

    @property
    def shape(self):  # type: ignore[override]
        return tuple(reversed(self.x.shape))

    def spans(self, r0, r1):
        return self.x.spans(0, self.x.rows)

    def eval_rows(self, data, r0, r1):
        w = self.x.evaluate(data)
        return np.ascontiguousarray(w.T).reshape(self.rows, self.cols)[r0:r1]


@dataclass(frozen=True, eq=False)
class SliceRows(_Unary):
    """Rows [start, stop) of a tensor's first axis (e.g. an embedding cut to the real vocab size; a
    third of a fused q/k/v weight or bias)."""

    x: Node
    start: int
    stop: int

    @property
    def shape(self):  # type: ignore[override]
        return (self.stop - self.start, *self.x.shape[1:])

    @property
    def _per_first(self) -> int:
        return self.rows // self.shape[0] if self.shape[0] else 1

    def row_align(self):
        if self.ndim == 1:  # one row: its columns are cut, so only whole
            return None
        inner = self.x.row_align()
        return self._per_first if inner is not None and self._per_first % inner == 0 else None

    def spans(self, r0, r1):
        if self.row_align() is None:
            return self.x.spans(0, self.x.rows)
        off = self.start * self._per_first
        return self.x.spans(r0 + off, r1 + off)

    def eval_rows(self, data, r0, r1):
        if self.row_align() is None:
            return self.x.evaluate(data)[self.start:self.stop].reshape(self.rows, self.cols)[r0:r1]
        off = self.start * self._per_first
        return self.x.eval_rows(data, r0 + off, r1 + off)


@dataclass(frozen=True, eq=False)
class PadRows(_Unary):
    """A tensor's first axis lengthened to ``length`` with zeros (e.g. Gemma 3n's embeddings, padded
    to the vocab size with rows for the image and audio tokens). Zero rows need no source bytes."""

    x: Node
    length: int

    @property
    def shape(self):  # type: ignore[override]
        return (self.length, *self.x.shape[1:])

    def row_align(self):
        inner = self.x.row_align()
        per_first = self.rows // self.shape[0] if self.shape[0] else 1
        return per_first if inner is not None and per_first % inner == 0 else None

    def spans(self, r0, r1):
        if self.row_align() is None:
            return self.x.spans(0, self.x.rows)
        end = min(r1, self.x.rows)
        return self.x.spans(r0, end) if r0 < end else []

    def eval_rows(self, data, r0, r1):
        out = np.zeros((r1 - r0, self.cols), dtype=self.dtype)
        end = min(r1, self.x.rows)
        if r0 < end:
            if self.row_align() is None:
                out[:end - r0] = self.x.evaluate(data).reshape(self.x.rows, self.cols)[r0:end]
            else:
                out[:end - r0] = self.x.eval_rows(data, r0, end)
        return out


@dataclass(frozen=True, eq=False)
class Bytes(Node):
    """A source tensor of bytes (U8, or I8 / F8_E8M0 holding packed codes and exponents) as it is
    stored, viewed with ``view`` as its shape (e.g. MXFP4 blocks [E, R, nb, 16] as [E, R, nb * 16]:
    one row of bytes per weight row)."""

    src: SourceTensor
    view: tuple[int, ...]

    def __post_init__(self):
        if self.src.dtype not in ("U8", "I8", "F8_E8M0") or math.prod(self.view) != math.prod(self.src.shape):
            raise ValueError(f"{self.src.name!r} ({self.src.dtype} {list(self.src.shape)}) is not bytes "
                             f"(U8, I8 or F8_E8M0) of {math.prod(self.view)} elements")

    @property
    def shape(self):  # type: ignore[override]
        return self.view

    @property
    def dtype(self):  # type: ignore[override]
        return np.dtype(np.uint8)

    def leaves(self):
        yield self.src

    def row_align(self):
        return 1

    def spans(self, r0, r1):
        return [Span(self.src, self.src.start + r0 * self.cols, self.src.start + r1 * self.cols)]

    def eval_rows(self, data, r0, r1):
        (span,) = self.spans(r0, r1)
        return np.frombuffer(data[span], dtype=np.uint8).reshape(r1 - r0, self.cols)


@dataclass(frozen=True, eq=False)
class SwapLastAxes(_Unary):
    """Each matrix of a stack transposed: [..., a, b] -> [..., b, a] (gpt-oss's bf16 experts are
    stored [in, out]). A block is whole matrices (one expert), which need the same source matrices."""

    x: Node

    @property
    def shape(self):  # type: ignore[override]
        return (*self.x.shape[:-2], self.x.shape[-1], self.x.shape[-2])

    def row_align(self):
        inner = self.x.row_align()
        return self.shape[-2] if inner is not None and self.x.shape[-2] % inner == 0 else None

    def spans(self, r0, r1):
        if self.row_align() is None:
            return self.x.spans(0, self.x.rows)
        m0, m1 = self._matrices(r0, r1)
        a = self.x.shape[-2]
        return self.x.spans(m0 * a, m1 * a)

    def _matrices(self, r0: int, r1: int) -> tuple[int, int]:
        b = self.shape[-2]
        return r0 // b, -(-r1 // b)

    def eval_rows(self, data, r0, r1):
        a, b = self.x.shape[-2], self.shape[-2]
        if self.row_align() is None:
            m0, m1 = 0, self.rows // b
            w = self.x.eval_rows(data, 0, self.x.rows)
        else:
            m0, m1 = self._matrices(r0, r1)
            w = self.x.eval_rows(data, m0 * a, m1 * a)
        w = np.ascontiguousarray(w.reshape(m1 - m0, a, b).swapaxes(1, 2)).reshape(-1, a)
        return w[r0 - m0 * b:r1 - m0 * b]


@dataclass(frozen=True, eq=False)
class StrideRows(_Unary):
    """Rows ``start::step`` of each matrix of a stack ([..., R, n] -> [..., R / step, n]): one half of
    gpt-oss's fused ``gate_up`` experts, whose gate and up rows alternate.

    As R is a multiple of ``step``, output row r is input row r * step + start across the whole
    stack: rows [r0, r1) need input rows [r0 * step, r1 * step), the same span for every ``start``,
    so the gate and up halves of a block read the very same bytes.
    """

    x: Node
    start: int
    step: int

    def __post_init__(self):
        if self.x.shape[-2] % self.step or not 0 <= self.start < self.step:
            raise ValueError(f"cannot take rows {self.start}::{self.step} of {self.x.shape[-2]}")

    @property
    def shape(self):  # type: ignore[override]
        return (*self.x.shape[:-2], self.x.shape[-2] // self.step, self.x.shape[-1])

    def row_align(self):
        inner = self.x.row_align()
        # r0 * step must be a cut point of the input
        return None if inner is None else inner // math.gcd(inner, self.step)

    def spans(self, r0, r1):
        if self.row_align() is None:
            return self.x.spans(0, self.x.rows)
        return self.x.spans(r0 * self.step, r1 * self.step)

    def eval_rows(self, data, r0, r1):
        if self.row_align() is None:
            return self.x.eval_rows(data, 0, self.x.rows)[self.start::self.step][r0:r1]
        return self.x.eval_rows(data, r0 * self.step, r1 * self.step)[self.start::self.step]


@dataclass(frozen=True, eq=False)
class _Elementwise(_Unary):
    """A node whose rows are its input's rows, each transformed on its own."""

    @property
    def shape(self):  # type: ignore[override]
        return self.x.shape

    def row_align(self):
        return self.x.row_align()

    def spans(self, r0, r1):
        return self.x.spans(r0, r1) if self.row_align() is not None else self.x.spans(0, self.x.rows)

    def _input(self, data: SpanData, r0: int, r1: int) -> np.ndarray:
        if self.row_align() is not None:
            return self.x.eval_rows(data, r0, r1)
        return self.x.evaluate(data).reshape(self.rows, self.cols)[r0:r1]


@dataclass(frozen=True, eq=False)
class StrideCols(_Elementwise):
    """Columns ``start::step`` of every row (the gate and up halves of gpt-oss's fused expert biases)."""

    x: Node
    start: int
    step: int

    def __post_init__(self):
        if self.x.shape[-1] % self.step or not 0 <= self.start < self.step:
            raise ValueError(f"cannot take columns {self.start}::{self.step} of {self.x.shape[-1]}")

    @property
    def shape(self):  # type: ignore[override]
        return (*self.x.shape[:-1], self.x.shape[-1] // self.step)

    def eval_rows(self, data, r0, r1):
        w = self._input(data, r0, r1)
        return np.ascontiguousarray(w[:, self.start::self.step])


@dataclass(frozen=True, eq=False)
class SliceCols(_Elementwise):
    """Columns [start, stop) of every row: one half of a fused [in, out] projection whose outputs are
    the concatenated halves (Llama 4's experts ``gate_up_proj``, gate columns first). Rows are cut
    where the input is; both halves of a block read the very same rows."""

    x: Node
    start: int
    stop: int

    def __post_init__(self):
        if not 0 <= self.start < self.stop <= self.x.shape[-1]:
            raise ValueError(f"cannot take columns [{self.start}, {self.stop}) of {self.x.shape[-1]}")

    @property
    def shape(self):  # type: ignore[override]
        return (*self.x.shape[:-1], self.stop - self.start)

    def eval_rows(self, data, r0, r1):
        w = self._input(data, r0, r1)
        return np.ascontiguousarray(w[:, self.start:self.stop])


@dataclass(frozen=True, eq=False)
class MXFP4(Node):
    """MX-format FP4 weights (OCP MX: per 32 values, one E8M0 exponent and 32 E2M1 codes) repacked,
    bits only, into GGML's ``block_mxfp4`` rows.

    ``blocks``: U8 rows of 16 bytes per 32 values, value 2i in the low nibble of byte i and 2i+1
    in the high one (gpt-oss's ``*_blocks``); ``scales``: U8 rows of one exponent per 32 values.
    A GGML block is the exponent byte, then 16 bytes holding values j (low nibble) and j + 16 (high
    nibble). The codes index the same E2M1 table on both sides (ggml doubles the table and halves
    the scale: the same values), so nothing is rounded: the output is the source's information.
    """

    blocks: Node
    scales: Node
    encoded = QT.MXFP4

    def __post_init__(self):
        if (self.blocks.rows != self.scales.rows or self.blocks.cols != 16 * self.scales.cols
                or self.blocks.dtype != np.uint8 or self.scales.dtype != np.uint8):
            raise ValueError(f"MXFP4 blocks {list(self.blocks.shape)} do not fit scales {list(self.scales.shape)}")

    @property
    def shape(self):  # type: ignore[override]
        return (*self.scales.shape[:-1], 32 * self.scales.shape[-1])

    @property
    def dtype(self):  # type: ignore[override]
        return np.dtype(np.uint8)

    def leaves(self):
        yield from self.blocks.leaves()
        yield from self.scales.leaves()

    def row_align(self):
        a, b = self.blocks.row_align(), self.scales.row_align()
        return None if a is None or b is None else math.lcm(a, b)

    def spans(self, r0, r1):
        if self.row_align() is None:
            return self.blocks.spans(0, self.rows) + self.scales.spans(0, self.rows)
        return self.blocks.spans(r0, r1) + self.scales.spans(r0, r1)

    def eval_rows(self, data, r0, r1):
        lo, hi = (r0, r1) if self.row_align() is not None else (0, self.rows)
        blocks = self.blocks.eval_rows(data, lo, hi)[r0 - lo:r1 - lo]
        scales = self.scales.eval_rows(data, lo, hi)[r0 - lo:r1 - lo]
        return repack_mxfp4(blocks, scales)


def repack_mxfp4(blocks: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """(n, nb * 16) code bytes and (n, nb) exponents -> (n, nb * 17) bytes of ``block_mxfp4`` (see ``MXFP4``).

    Source byte i holds values 2i (low nibble) and 2i + 1; GGML byte j holds values j and j + 16. So
    GGML byte 2i is the low nibbles of source bytes i and i + 8, and byte 2i + 1 their high nibbles.
    """
    n, nb = scales.shape
    codes = blocks.reshape(n, nb, 16)
    first, second = codes[:, :, :8], codes[:, :, 8:]  # values 0..15 and 16..31
    out = np.empty((n, nb, 17), dtype=np.uint8)
    out[:, :, 0] = scales
    out[:, :, 1::2] = (first & 0x0F) | (second << 4)
    out[:, :, 2::2] = (first >> 4) | (second & 0xF0)
    return out.reshape(n, nb * 17)


@dataclass(frozen=True, eq=False)
class BlockScale(Node):
    """``weight * scale`` in float32, one scale value per block of the weight: how pre-quantized
    checkpoints store a weight (FP8 with ``weight_block_size``: one scale per 128 x 128 block;
    a per-channel or per-tensor scale is a block of a whole row, or of everything).

    ``block`` has one size per weight dimension and the scale's shape is the weight's divided by it,
    rounded up: an edge block may be partial and uses its block's scale, as the reference repeats
    each scale ``block`` times and cuts the result to the weight's shape. Rows [r0, r1) need the
    same weight rows and the scale rows of their blocks (which may sit in another shard), so a
    block of scale rows is the natural unit.
    """

    weight: Node
    scale: Node
    block: tuple[int, ...]

    @property
    def shape(self):  # type: ignore[override]
        return self.weight.shape

    @property
    def dtype(self):  # type: ignore[override]
        return F32

    def leaves(self):
        yield from self.weight.leaves()
        yield from self.scale.leaves()

    @property
    def _scale_shape(self) -> tuple[int, ...]:
        return tuple(-(-d // b) for d, b in zip(self.shape, self.block))

    @property
    def _scale_cols(self) -> int:
        return _cols(self._scale_shape)

    @property
    def _scale_by_rows(self) -> bool:
        """The scale has the weight's rank, so its rows can be fetched a block at a time."""
        return tuple(self.scale.shape) == self._scale_shape and self.scale.row_align() == 1

    def _scale_row(self, rows: np.ndarray) -> np.ndarray:
        """The scale row of each weight row (weight rows run over the leading dimensions)."""
        lead = self.shape[:-1]
        if not lead:
            return np.zeros(len(rows), dtype=np.int64)
        idx = np.unravel_index(rows, lead)
        return np.ravel_multi_index(tuple(i // b for i, b in zip(idx, self.block)), self._scale_shape[:-1])

    def _scale_span(self, r0: int, r1: int) -> tuple[int, int]:
        first, last = self._scale_row(np.array([r0, r1 - 1]))
        return int(first), int(last) + 1

    def row_align(self):
        if self.weight.row_align() != 1:
            return None
        if self.ndim <= 1:
            return 1
        if any(b != 1 for b in self.block[:-2]):
            return None  # scale blocks across matrices: only whole
        rows_per_block = self.block[-2]
        if self.ndim > 2 and self.shape[-2] % rows_per_block:
            return self.shape[-2]  # a partial block ends every matrix: whole matrices
        return rows_per_block

    def spans(self, r0, r1):
        if self.row_align() is None:
            r0, r1 = 0, self.rows
        out = self.weight.spans(r0, r1)
        if r1 <= r0:
            return out
        if self._scale_by_rows:
            return out + self.scale.spans(*self._scale_span(r0, r1))
        return out + self.scale.spans(0, self.scale.rows)

    def eval_rows(self, data, r0, r1):
        if self.row_align() is None:
            return self._scaled(self.weight.evaluate(data).reshape(self.rows, self.cols), data, 0, self.rows)[r0:r1]
        return self._scaled(self.weight.eval_rows(data, r0, r1), data, r0, r1)

    def _scaled(self, w: np.ndarray, data, r0: int, r1: int) -> np.ndarray:
        if w.dtype != F32 or not w.flags.writeable:
            w = w.astype(F32)
        if r1 <= r0 or not self.cols:
            return w
        s0, s1 = self._scale_span(r0, r1)
        if self._scale_by_rows:
            scale = self.scale.eval_rows(data, s0, s1)
        else:
            scale = self.scale.evaluate(data).reshape(-1, self._scale_cols)[s0:s1]
        per_row = scale.astype(F32, copy=False)[self._scale_row(np.arange(r0, r1)) - s0]
        # one multiply per element, in float32, scale broadcast over its block's columns (in place)
        width = self.block[-1]
        full = self.cols // width
        if full:
            blocks = np.lib.stride_tricks.as_strided(
                w, shape=(len(w), full, width), strides=(w.strides[0], width * w.strides[1], w.strides[1]),
                writeable=True)
            blocks *= per_row[:, :full, None]
        if full * width < self.cols:
            w[:, full * width:] *= per_row[:, full:full + 1]
        return w


@dataclass(frozen=True, eq=False)
class HeadSlice(_Unary):
    """Rows [start, stop) of every head of a (n_head * group, cols) tensor, as (n_head, stop - start, cols),
    or each head's slice transposed, (n_head, cols, stop - start).

    MLA checkpoints fuse each head's key and value up-projections into one ``kv_b_proj``; llama.cpp
    wants them apart, the key part transposed. A block of whole heads needs one run of source rows.
    """

    x: Node
    n_head: int
    start: int
    stop: int
    transpose: bool = False

    @property
    def _group(self) -> int:
        return self.x.shape[0] // self.n_head

    @property
    def shape(self):  # type: ignore[override]
        width = self.stop - self.start
        cols = self.x.shape[-1]
        return (self.n_head, cols, width) if self.transpose else (self.n_head, width, cols)

    @property
    def _head_rows(self) -> int:
        return self.shape[1]

    def row_align(self):
        return None if self.x.row_align() is None else self._head_rows

    def _source_rows(self, h0: int, h1: int) -> tuple[int, int]:
        """Source rows for heads [h0, h1), widened to where the source can be cut."""
        a0, a1 = h0 * self._group + self.start, (h1 - 1) * self._group + self.stop
        align = self.x.row_align()
        if align is None:
            return 0, self.x.rows
        return a0 // align * align, min(-(-a1 // align) * align, self.x.rows)

    def _heads(self, r0: int, r1: int) -> tuple[int, int]:
        return r0 // self._head_rows, -(-r1 // self._head_rows)

    def spans(self, r0, r1):
        if r1 <= r0:
            return []
        return self.x.spans(*self._source_rows(*self._heads(r0, r1)))

    def eval_rows(self, data, r0, r1):
        h0, h1 = self._heads(r0, r1)
        s0, s1 = self._source_rows(h0, h1)
        if self.x.row_align() is None:
            src = self.x.evaluate(data).reshape(self.x.rows, self.x.cols)
        else:
            src = self.x.eval_rows(data, s0, s1)
        rows = np.arange(h0, h1)[:, None] * self._group + np.arange(self.start, self.stop)[None, :] - s0
        heads = src[rows.ravel()].reshape(h1 - h0, self.stop - self.start, self.x.cols)
        if self.transpose:
            heads = heads.transpose(0, 2, 1)
        out = np.ascontiguousarray(heads).reshape((h1 - h0) * self._head_rows, self.cols)
        return out[r0 - h0 * self._head_rows:r1 - h0 * self._head_rows]


@dataclass(frozen=True, eq=False)
class SliceStackRows(_Unary):
    """Rows [start, stop) of every matrix of a 3-D stack, i.e. axis 1 (GraniteMoE stores each expert's
    gate and up projections as one (experts, 2 * ffn, hidden) tensor, which becomes two stacks).

    A block of output rows inside one matrix is one contiguous run of source rows, so the stack is
    still fetched a block (an expert) at a time.
    """

    x: Node
    start: int
    stop: int

    @property
    def shape(self):  # type: ignore[override]
        return (self.x.shape[0], self.stop - self.start, self.x.shape[2])

    def row_align(self):
        inner = self.x.row_align()
        if inner is None or any(n % inner for n in (self.x.shape[1], self.start, self.stop - self.start)):
            return None
        return inner

    def _source_runs(self, r0: int, r1: int) -> Iterator[tuple[int, int]]:
        """Source row ranges, in order, holding output rows [r0, r1)."""
        n, m = self.stop - self.start, self.x.shape[1]
        while r0 < r1:
            k, a = divmod(r0, n)
            end = min(r1, (k + 1) * n)
            yield k * m + self.start + a, k * m + self.start + end - k * n
            r0 = end

    def spans(self, r0, r1):
        if self.row_align() is None:
            return self.x.spans(0, self.x.rows)
        return [s for a, b in self._source_runs(r0, r1) for s in self.x.spans(a, b)]

    def eval_rows(self, data, r0, r1):
        if self.row_align() is None:
            whole = self.x.evaluate(data)[:, self.start:self.stop]
            return np.ascontiguousarray(whole).reshape(self.rows, self.cols)[r0:r1]
        blocks = [self.x.eval_rows(data, a, b) for a, b in self._source_runs(r0, r1)]
        return np.concatenate(blocks) if len(blocks) > 1 else blocks[0]


@dataclass(frozen=True, eq=False)
class Reshape(_Unary):
    """The same values in the same (row-major) order under another shape: a scalar as a 1-element
    vector, a depthwise convolution's (C, 1, K) as (C, K), a flat patch projection (n, p*p*3) as
    (n, p*p, 3) before its channels are moved.

    Output rows [r0, r1) are the elements [r0 * cols, r1 * cols); a block can be cut where that is
    a whole number of input rows at one of the input's own cut points.
    """

    x: Node
    new_shape: tuple[int, ...]

    def __post_init__(self):
        if math.prod(self.new_shape) != math.prod(self.x.shape):
            raise ValueError(f"cannot reshape {list(self.x.shape)} to {list(self.new_shape)}")

    @property
    def shape(self):  # type: ignore[override]
        return self.new_shape

    def row_align(self):
        inner = self.x.row_align()
        if inner is None or self.cols == 0:
            return None
        step = self.x.cols * inner  # elements between two cut points of the input
        return step // math.gcd(step, self.cols)

    def _input_rows(self, r0: int, r1: int) -> tuple[int, int]:
        return r0 * self.cols // self.x.cols, r1 * self.cols // self.x.cols

    def spans(self, r0, r1):
        if self.row_align() is None:
            return self.x.spans(0, self.x.rows)
        return self.x.spans(*self._input_rows(r0, r1))

    def eval_rows(self, data, r0, r1):
        if self.row_align() is None:
            return self.x.evaluate(data).reshape(self.rows, self.cols)[r0:r1]
        return self.x.eval_rows(data, *self._input_rows(r0, r1)).reshape(r1 - r0, self.cols)


@dataclass(frozen=True, eq=False)
class GatherRows(_Unary):
    """Rows of ``x`` in another order or selection: ``runs`` lists (first source row, row count), and
    the output is those rows one run after the other, in ``shape`` (the same row length as ``x``).

    Splitting a fused projection (Qwen3-Next's q/k/v/z rows, interleaved per key head; the gate and up
    halves of each expert of a fused stack) and reordering heads are such gathers. Every output row is
    one source row, so a block of output rows needs only its own source rows: its runs, sorted and
    joined where they touch, are its spans (the whole tensor, gathered at once, is one span).
    """

    x: Node
    runs: tuple[tuple[int, int], ...]
    shape: tuple[int, ...]

    def __post_init__(self):
        if _cols(self.shape) != self.x.cols or sum(n for _, n in self.runs) != _rows(self.shape):
            raise ValueError(f"runs of {self.x.shape} do not make {self.shape}")
        if any(n <= 0 or start < 0 or start + n > self.x.rows for start, n in self.runs):
            raise ValueError(f"a run is outside the {self.x.rows} rows of {self.x.shape}")

    @cached_property
    def _firsts(self) -> list[int]:
        """The output row each run starts at."""
        return list(itertools.accumulate((n for _, n in self.runs), initial=0))[:-1]

    def _pieces(self, r0: int, r1: int) -> Iterator[tuple[int, int]]:
        """Source row ranges [a, b) giving output rows [r0, r1), in output order."""
        k = bisect.bisect_right(self._firsts, r0) - 1
        while r0 < r1:
            start, n = self.runs[k]
            first = self._firsts[k]
            end = min(r1, first + n)
            yield start + r0 - first, start + end - first
            r0, k = end, k + 1

    def _intervals(self, r0: int, r1: int) -> list[tuple[int, int]]:
        """The source rows of output rows [r0, r1) as sorted ranges, touching ones joined."""
        merged: list[list[int]] = []
        for a, b in sorted(self._pieces(r0, r1)):
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        return [(a, b) for a, b in merged]

    def row_align(self):
        return 1 if self.x.row_align() == 1 else None

    def spans(self, r0, r1):
        if self.row_align() is None:
            return self.x.spans(0, self.x.rows)
        return [s for a, b in self._intervals(r0, r1) for s in self.x.spans(a, b)]

    def eval_rows(self, data, r0, r1):
        if self.row_align() is None:
            rows = self.x.evaluate(data).reshape(self.x.rows, self.x.cols)
            return np.concatenate([rows[a:b] for a, b in self._pieces(r0, r1)])
        blocks = [(a, self.x.eval_rows(data, a, b)) for a, b in self._intervals(r0, r1)]
        out = []
        for a, b in self._pieces(r0, r1):
            first, block = next((first, block) for first, block in blocks if first <= a < first + len(block))
            out.append(block[a - first:b - first])
        return np.concatenate(out) if len(out) > 1 else out[0]


@dataclass(frozen=True, eq=False)
class PermuteCols(_Elementwise):
    """Every row with its values reordered: ``out[..., j] = x[..., perm[j]]`` (heads reordered along
    the input dimension of a projection, or along a 1-D per-head parameter). Rows stay rows."""

    x: Node
    perm: tuple[int, ...]

    def __post_init__(self):
        if sorted(self.perm) != list(range(self.x.cols)):
            raise ValueError(f"not a permutation of the {self.x.cols} columns of {self.x.shape}")

    def eval_rows(self, data, r0, r1):
        return self._input(data, r0, r1)[:, np.asarray(self.perm)]


@dataclass(frozen=True, eq=False)
class NegExp(_Elementwise):
    """``-exp(x)`` in the dtype of x (a gated delta net's decay ``A = -exp(A_log)``), as ``reference_exp``."""

    x: Node

    def eval_rows(self, data, r0, r1):
        return -reference_exp(self._input(data, r0, r1))


def reference_exp(x: np.ndarray) -> np.ndarray:
    """``exp`` of float32 or float16 values, as the reference's torch gives it where that is known.

    torch's float32 ``exp`` is not correctly rounded and not the same everywhere: the x86-64 wheels
    call MKL's vector exp, one ulp off for about 1% of float32 inputs; other builds use SLEEF or libm.
    For the inputs a bfloat16 holds (every value of a bf16 checkpoint), torch 2.13's results on x86-64
    are known (``data/torch_exp_bf16.json``, 45 differ from the correctly rounded value) and used;
    any other input gets the correctly rounded value, the one every implementation approximates.
    float16 is rounded once from the exact value too (torch rounds its float32 result).
    """
    with np.errstate(over="ignore"):
        out = np.exp(x.astype(np.float64)).astype(x.dtype)
    if x.dtype == np.float32 and x.size:
        keys, values = _torch_exp_bf16()
        bits = x.view(np.uint32)
        known = (bits & 0xFFFF) == 0
        at = np.searchsorted(keys, bits >> 16)
        hit = known & (at < len(keys)) & (keys[np.minimum(at, len(keys) - 1)] == bits >> 16)
        out.view(np.uint32)[hit] = values[at[hit]]
    return out


@cache
def _torch_exp_bf16() -> tuple[np.ndarray, np.ndarray]:
    """(sorted bfloat16 bits, torch's float32 exp bits) where torch's exp is not correctly rounded."""
    import json
    from pathlib import Path

    table = json.loads((Path(__file__).parent / "data" / "torch_exp_bf16.json").read_text())["exceptions"]
    keys = np.array(sorted(int(k, 16) for k in table), dtype=np.uint32)
    return keys, np.array([int(table[f"{k:04x}"], 16) for k in keys], dtype=np.uint32)


def _same_rows(node: Node, x: Node) -> bool:
    """True when ``node`` has the rows of ``x`` one for one (same row count and length)."""
    return node.rows == x.rows and node.cols == x.cols


def _mul(w: np.ndarray, c: float) -> np.ndarray:
    """w * c as torch computes it for a Python float c: in F32 (c rounded to F32), F16 rounded back."""
    return (w.astype(F32, copy=False) * np.float32(c)).astype(w.dtype, copy=False)


@dataclass(frozen=True, eq=False)
class Scale(_Elementwise):
    """x * c (Falcon-H1's muP multipliers folded into the weights)."""

    x: Node
    c: float

    def eval_rows(self, data, r0, r1):
        return _mul(self._input(data, r0, r1), self.c)


@dataclass(frozen=True, eq=False)
class ScaleRowBlocks(_Elementwise):
    """Each block of rows times its own factor: ``blocks`` is ((end row, factor), ...) in order, the
    first block starting at row 0 and the last ending at the last row (Falcon-H1's in_proj, whose
    z, x, B, C and dt rows carry five multipliers)."""

    x: Node
    blocks: tuple[tuple[int, float], ...]

    def __post_init__(self):
        ends = [end for end, _ in self.blocks]
        if ends != sorted(ends) or not ends or ends[-1] != self.x.rows or ends[0] < 0:
            raise ValueError(f"row blocks {ends} do not cover the {self.x.rows} rows of {list(self.x.shape)}")

    def eval_rows(self, data, r0, r1):
        w = self._input(data, r0, r1).copy()
        start = 0
        for end, factor in self.blocks:
            a, b = max(start, r0), min(end, r1)
            if a < b:
                w[a - r0:b - r0] = _mul(w[a - r0:b - r0], factor)
            start = end
        return w


@dataclass(frozen=True, eq=False)
class SliceInner(_Unary):
    """Rows [start, stop) of each matrix of a stack ([..., R, n] -> [..., stop - start, n]): one half
    of Granite's fused expert ``input_linear`` [E, 2 ff, h], gate first. Output rows map to source rows
    one for one (row r of matrix m is source row m * R + start + r), so a block of rows reads only the
    half it takes: the gate and up halves of an expert never fetch each other's bytes."""

    x: Node
    start: int
    stop: int

    def __post_init__(self):
        if self.x.ndim < 2 or not 0 <= self.start < self.stop <= self.x.shape[-2]:
            raise ValueError(f"cannot take rows {self.start}:{self.stop} of each matrix of {list(self.x.shape)}")

    @property
    def shape(self):  # type: ignore[override]
        return (*self.x.shape[:-2], self.stop - self.start, self.x.shape[-1])

    def row_align(self):
        inner = self.x.row_align()
        if inner is None or any(v % inner for v in (self.x.shape[-2], self.start, self.stop)):
            return None
        return inner

    def _pieces(self, r0: int, r1: int) -> Iterator[tuple[int, int]]:
        """Source row ranges holding output rows [r0, r1), in order (one per matrix touched)."""
        n, whole = self.shape[-2], self.x.shape[-2]
        while r0 < r1:
            m, local = divmod(r0, n)
            take = min(r1 - r0, n - local)
            first = m * whole + self.start + local
            yield first, first + take
            r0 += take

    def spans(self, r0, r1):
        if self.row_align() is None:
            return self.x.spans(0, self.x.rows)
        return [span for a, b in self._pieces(r0, r1) for span in self.x.spans(a, b)]

    def eval_rows(self, data, r0, r1):
        if self.row_align() is None:
            w = self.x.evaluate(data).reshape(-1, self.x.shape[-2], self.cols)[:, self.start:self.stop]
            return w.reshape(-1, self.cols)[r0:r1]
        blocks = [self.x.eval_rows(data, a, b) for a, b in self._pieces(r0, r1)]
        return np.concatenate(blocks) if len(blocks) > 1 else blocks[0]


@dataclass(frozen=True, eq=False)
class Select(_Unary):
    """Index ``index`` of axis ``axis``, that axis dropped (a Conv3D's kernel at one time step, as
    (out, in, kh, kw): Qwen-VL's patch embedding becomes two Conv2D kernels). ``axis`` is not the last.

    Each index of the axes before ``axis`` is a run of output rows that needs its run of input rows
    (all of ``axis``'s indexes); the kernels of the other time steps read the very same bytes.
    """

    x: Node
    axis: int
    index: int

    def __post_init__(self):
        if not 0 <= self.axis < self.x.ndim - 1 or not 0 <= self.index < self.x.shape[self.axis]:
            raise ValueError(f"cannot select index {self.index} of axis {self.axis} of {list(self.x.shape)}")

    @property
    def shape(self):  # type: ignore[override]
        return self.x.shape[:self.axis] + self.x.shape[self.axis + 1:]

    @property
    def _rows_per_outer(self) -> int:
        """Output rows per index of the axes before ``axis``."""
        return math.prod(self.shape[self.axis:-1])

    def row_align(self):
        inner = self.x.row_align()
        if inner is None:
            return None
        per_outer_in = self.x.shape[self.axis] * self._rows_per_outer  # input rows per outer index
        return inner // math.gcd(inner, per_outer_in) * self._rows_per_outer

    def _outer(self, r0: int, r1: int) -> tuple[int, int]:
        n = self._rows_per_outer
        return r0 // n, -(-r1 // n)

    def spans(self, r0, r1):
        if self.row_align() is None:
            return self.x.spans(0, self.x.rows)
        o0, o1 = self._outer(r0, r1)
        per_outer_in = self.x.shape[self.axis] * self._rows_per_outer
        return self.x.spans(o0 * per_outer_in, o1 * per_outer_in)

    def eval_rows(self, data, r0, r1):
        n, steps = self._rows_per_outer, self.x.shape[self.axis]
        if self.row_align() is None:
            o0, o1 = 0, self.rows // n if n else 0
            w = self.x.evaluate(data)
        else:
            o0, o1 = self._outer(r0, r1)
            w = self.x.eval_rows(data, o0 * steps * n, o1 * steps * n)
        picked = w.reshape(o1 - o0, steps, n * self.cols)[:, self.index]
        return np.ascontiguousarray(picked).reshape(-1, self.cols)[r0 - o0 * n:r1 - o0 * n]


@dataclass(frozen=True, eq=False)
class Softplus(_Elementwise):
    """log(1 + exp(x)) in float32, as torch's ``softplus`` (beta 1: x itself above 20) computes it on
    a float32 tensor: exp rounded to float32, then log1p of that rounded to float32 (each step done in
    float64 and rounded once, which is the correctly rounded float32 result torch's vector math gives)."""

    x: Node
    threshold: float = 20.0

    @property
    def dtype(self):  # type: ignore[override]
        return F32

    def eval_rows(self, data, r0, r1):
        w = self._input(data, r0, r1).astype(np.float32)
        with np.errstate(over="ignore"):
            e = np.exp(w.astype(np.float64)).astype(np.float32)
        out = np.log1p(e.astype(np.float64)).astype(np.float32)
        return np.where(w > self.threshold, w, out)


@dataclass(frozen=True, eq=False)
class EncodedStack(Stack):
    """Parts whose rows are already in one GGUF type (e.g. experts repacked into MXFP4 one by one),
    stacked as they are: the stack is in that type too."""

    def __post_init__(self):
        kinds = {p.encoded for p in self.parts}
        if len(kinds) != 1 or None in kinds:
            raise ValueError(f"parts in {sorted(str(k) for k in kinds)}: not one GGUF type")

    @property
    def encoded(self):  # type: ignore[override]
        return self.parts[0].encoded


@dataclass(frozen=True, eq=False)
class Int32(Node):
    """An integer source tensor (I64, I32, ...) written as GGML ``I32``: e.g. a hash router's token ->
    expert table. Values outside int32 are refused, not wrapped."""

    src: SourceTensor
    encoded = QT.I32

    def __post_init__(self):
        if self.src.dtype not in ("I64", "I32", "I16", "I8", "U8", "U16", "U32", "U64"):
            raise ValueError(f"{self.src.name!r} is {self.src.dtype}, not an integer tensor")

    @property
    def shape(self):  # type: ignore[override]
        return self.src.shape

    @property
    def dtype(self):  # type: ignore[override]
        return np.dtype(np.int32)

    def leaves(self):
        yield self.src

    def row_align(self):
        return 1

    def spans(self, r0, r1):
        row_bytes = self.cols * DTYPE_SIZES[self.src.dtype]
        return [Span(self.src, self.src.start + r0 * row_bytes, self.src.start + r1 * row_bytes)]

    def eval_rows(self, data, r0, r1):
        (span,) = self.spans(r0, r1)
        values = np.frombuffer(data[span], dtype=_NUMPY_DTYPES[self.src.dtype])
        if values.size and (values.min() < -(1 << 31) or values.max() >= 1 << 31):
            raise errors.InvalidHeaderError(f"{self.src.file}: tensor {self.src.name!r} holds values outside int32")
        return values.astype(np.int32).reshape(r1 - r0, self.cols)
