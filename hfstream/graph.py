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
becomes F32 first (BF16 -> F32 is exact), F16 and F32 stay as they are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Mapping, NamedTuple

import numpy as np

from . import floats
from .safetensors import DTYPE_SIZES, SourceTensor

_NUMPY_DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U8": np.dtype("u1"), "U16": np.dtype("<u2"), "U32": np.dtype("<u4"), "U64": np.dtype("<u8"),
    "BOOL": np.dtype("?"),
}

F32 = np.dtype(np.float32)
F16 = np.dtype(np.float16)


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


def decode(src: SourceTensor, raw: bytes | memoryview, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Source bytes to an array: F16/F32 as they are, everything else as F32."""
    if src.dtype == "BF16":
        out = floats.bf16_to_f32(np.frombuffer(raw, dtype="<u2"))
    elif src.dtype in ("F16", "F32"):
        out = np.frombuffer(raw, dtype=_NUMPY_DTYPES[src.dtype])
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
class PermuteHeads(Node):
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
    def dtype(self):  # type: ignore[override]
        return self.x.dtype

    def leaves(self):
        return self.x.leaves()

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
class AddScalar(Node):
    """x + c in the dtype of x (Gemma stores norm weights as w - 1)."""

    x: Node
    c: float

    @property
    def shape(self):  # type: ignore[override]
        return self.x.shape

    @property
    def dtype(self):  # type: ignore[override]
        return self.x.dtype

    def leaves(self):
        return self.x.leaves()

    def row_align(self):
        return self.x.row_align()

    def spans(self, r0, r1):
        return self.x.spans(r0, r1)

    def eval_rows(self, data, r0, r1):
        w = self.x.eval_rows(data, r0, r1)
        return w + np.asarray(self.c, dtype=w.dtype)


@dataclass(frozen=True, eq=False)
class Transpose(Node):
    """The transpose of a 2-D tensor (GPT-2's Conv1D weights are stored as in x out). Whole only."""

    x: Node

    @property
    def shape(self):  # type: ignore[override]
        return tuple(reversed(self.x.shape))

    @property
    def dtype(self):  # type: ignore[override]
        return self.x.dtype

    def leaves(self):
        return self.x.leaves()

    def spans(self, r0, r1):
        return self.x.spans(0, self.x.rows)

    def eval_rows(self, data, r0, r1):
        w = self.x.evaluate(data)
        return np.ascontiguousarray(w.T).reshape(self.rows, self.cols)[r0:r1]


@dataclass(frozen=True, eq=False)
class SliceRows(Node):
    """Rows [start, stop) of a tensor's first axis (e.g. an embedding cut to the real vocab size)."""

    x: Node
    start: int
    stop: int

    @property
    def shape(self):  # type: ignore[override]
        return (self.stop - self.start, *self.x.shape[1:])

    @property
    def dtype(self):  # type: ignore[override]
        return self.x.dtype

    def leaves(self):
        return self.x.leaves()

    @property
    def _per_first(self) -> int:
        return self.rows // self.shape[0] if self.shape[0] else 1

    def row_align(self):
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
class PadRows(Node):
    """A tensor's first axis lengthened to ``length`` with zeros (e.g. Gemma 3n's embeddings, padded
    to the vocab size with rows for the image and audio tokens). Zero rows need no source bytes."""

    x: Node
    length: int

    @property
    def shape(self):  # type: ignore[override]
        return (self.length, *self.x.shape[1:])

    @property
    def dtype(self):  # type: ignore[override]
        return self.x.dtype

    def leaves(self):
        return self.x.leaves()

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
