"""Lazy expressions from source byte ranges to output arrays.

An output tensor is a small tree: leaves are source tensors (byte ranges of a
safetensors file) or constants, inner nodes are cheap array transforms. A tree
knows its shape and dtype without any data, so the plan and the layout are made
before a byte is fetched; ``evaluate`` runs it once the leaves' bytes arrived.

Numeric conventions follow the reference converter: a source that is neither
F16 nor F32 becomes F32 first (BF16 -> F32 is exact), F16 and F32 stay as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Mapping

import numpy as np

from .safetensors import SourceTensor

_NUMPY_DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U8": np.dtype("u1"), "U16": np.dtype("<u2"), "U32": np.dtype("<u4"), "U64": np.dtype("<u8"),
    "BOOL": np.dtype("?"),
}

F32 = np.dtype(np.float32)
F16 = np.dtype(np.float16)


class Node:
    """A lazy array: shape and dtype known up front, values on ``evaluate``."""

    shape: tuple[int, ...]
    dtype: np.dtype

    def leaves(self) -> Iterator[SourceTensor]:
        return iter(())

    def evaluate(self, data: Mapping[SourceTensor, bytes | memoryview]) -> np.ndarray:
        raise NotImplementedError

    @property
    def ndim(self) -> int:
        return len(self.shape)


def decode(src: SourceTensor, raw: bytes | memoryview) -> np.ndarray:
    """Source bytes to an array: F16/F32 as they are, everything else as F32."""
    if src.dtype == "BF16":
        u16 = np.frombuffer(raw, dtype="<u2")
        out = (u16.astype(np.uint32) << 16).view(np.float32)
    elif src.dtype in ("F16", "F32"):
        out = np.frombuffer(raw, dtype=_NUMPY_DTYPES[src.dtype])
    elif src.dtype in _NUMPY_DTYPES:
        out = np.frombuffer(raw, dtype=_NUMPY_DTYPES[src.dtype]).astype(np.float32)
    else:
        raise ValueError(f"cannot decode {src.dtype} tensor {src.name!r}")
    return out.reshape(src.shape)


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

    def evaluate(self, data):
        return decode(self.src, data[self.src])


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

    def evaluate(self, data):
        return self.value


@dataclass(frozen=True, eq=False)
class PermuteHeads(Node):
    """Llama's q/k row order for rotary embeddings: within each head, interleave the two halves.

    Rows are grouped as (n_head, 2, head_dim/2) and regrouped as (n_head, head_dim/2, 2).
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

    def evaluate(self, data):
        w = self.x.evaluate(data)
        rows = w.shape[0]
        return (w.reshape(self.n_head, 2, rows // self.n_head // 2, *w.shape[1:])
                .swapaxes(1, 2)
                .reshape(w.shape))


@dataclass(frozen=True, eq=False)
class Stack(Node):
    """Several same-shaped tensors stacked on a new first axis (MoE experts)."""

    parts: tuple[Node, ...]

    @property
    def shape(self):  # type: ignore[override]
        return (len(self.parts), *self.parts[0].shape)

    @property
    def dtype(self):  # type: ignore[override]
        return np.result_type(*(p.dtype for p in self.parts))

    def leaves(self):
        for p in self.parts:
            yield from p.leaves()

    def evaluate(self, data):
        return np.stack([p.evaluate(data) for p in self.parts])


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

    def evaluate(self, data):
        w = self.x.evaluate(data)
        return w + np.asarray(self.c, dtype=w.dtype)


@dataclass(frozen=True, eq=False)
class Transpose(Node):
    """The transpose of a 2-D tensor (GPT-2's Conv1D weights are stored as in x out)."""

    x: Node

    @property
    def shape(self):  # type: ignore[override]
        return tuple(reversed(self.x.shape))

    @property
    def dtype(self):  # type: ignore[override]
        return self.x.dtype

    def leaves(self):
        return self.x.leaves()

    def evaluate(self, data):
        return np.ascontiguousarray(self.x.evaluate(data).T)


@dataclass(frozen=True, eq=False)
class SliceRows(Node):
    """Rows [start, stop) of a tensor (e.g. an embedding cut to the real vocab size)."""

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

    def evaluate(self, data):
        return self.x.evaluate(data)[self.start:self.stop]
