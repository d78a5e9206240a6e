"""Importance matrices (``--imatrix FILE``): llama.cpp's ``llama-imatrix`` output, read as llama-quantize reads it.

Two formats (both written by ``tools/imatrix``, read by ``common/imatrix-loader.cpp``):

- GGUF (current): keys ``imatrix.datasets`` (string array), ``imatrix.chunk_count`` and
  ``imatrix.chunk_size``; per weight two F32 tensors, ``{name}.in_sum2`` (ne = [n_per_row, n_mat])
  and ``{name}.counts`` (ne = [1, n_mat]), ``n_mat`` being the number of experts (1 for a dense
  weight). Values are sums of squared activations; the value used is ``in_sum2 / count`` per
  expert, and 1 for an expert that saw no token (count 0).
- legacy ``.dat``: int32 entry count, then per entry int32 name length, the name, int32 ``ncall``,
  int32 value count, float32 values (already ``mean * ncall``); optionally int32 chunk count,
  int32 length and the dataset name. The value used is ``value / ncall`` (``ncall`` > 0).

Names are GGUF tensor names (``blk.0.attn_q.weight``, ``blk.0.ffn_up_exps.weight``); an MoE stack
has ``n_expert x n_per_row`` values, expert ``e`` using values ``[e * n_per_row, (e + 1) * n_per_row)``.
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .. import errors

KEY_DATASETS = "imatrix.datasets"
KEY_CHUNK_COUNT = "imatrix.chunk_count"
KEY_CHUNK_SIZE = "imatrix.chunk_size"

#: what llama-quantize records in the quantized file
KV_FILE = "quantize.imatrix.file"
KV_DATASET = "quantize.imatrix.dataset"
KV_N_ENTRIES = "quantize.imatrix.entries_count"
KV_N_CHUNKS = "quantize.imatrix.chunks_count"


@dataclass(frozen=True)
class Weights:
    """Importance weights of one tensor's rows: row ``r`` uses ``values[r // rows_per_mat]``.

    ``values`` is (n_mat, n_per_row): one vector for a 2-D tensor, one per expert for an MoE stack.
    """

    values: np.ndarray
    rows_per_mat: int

    def pieces(self, r0: int, r1: int) -> Iterator[tuple[int, int, np.ndarray]]:
        """(start, end, vector) covering rows [r0, r1), never crossing a matrix (expert)."""
        while r0 < r1:
            k = r0 // self.rows_per_mat
            end = min(r1, (k + 1) * self.rows_per_mat)
            yield r0, end, self.values[k]
            r0 = end


@dataclass
class Imatrix:
    """A loaded importance matrix: per GGUF tensor name, the values quantization weighs rows with."""

    #: the path as the user gave it (llama-quantize records it as given)
    path: str
    #: name -> float32 values, n_mat * n_per_row of them, already divided by the counts
    entries: dict[str, np.ndarray]
    datasets: list[str] = field(default_factory=list)
    chunk_count: int = 0
    legacy: bool = False

    def weights_for(self, name: str, ne: Sequence[int]) -> np.ndarray | None:
        """The values for tensor ``name`` of GGUF shape ``ne`` as (n_mat, ne[0]), or None when the file
        has none. A size that fits neither is an error, except for the token embedding (which
        llama-quantize then quantizes without)."""
        values = self.entries.get(name)
        if values is None:
            return None
        n_mat = ne[2] if len(ne) > 2 else 1
        if values.size != ne[0] * n_mat:
            if name in ("token_embd.weight", "per_layer_token_embd.weight"):
                return None
            raise errors.InvalidImatrixError(
                f"{self.path}: {values.size} values for {name}, which needs {ne[0] * n_mat} "
                f"({n_mat} x {ne[0]}): the imatrix was made for another model")
        return values.reshape(n_mat, ne[0])

    def kv(self) -> list[tuple[str, str | int]]:
        """The keys llama-quantize adds to a file quantized with this matrix, in its order."""
        out: list[tuple[str, str | int]] = [(KV_FILE, _cut(self.path))]
        if self.datasets:
            out.append((KV_DATASET, _cut(self.datasets[0])))
        out.append((KV_N_ENTRIES, len(self.entries)))
        if self.chunk_count > 0:
            out.append((KV_N_CHUNKS, self.chunk_count))
        return out


def _cut(text: str) -> str:
    """llama-quantize copies strings into a 128-byte field: at most 127 bytes survive."""
    raw = text.encode("utf-8")
    return raw[:127].decode("utf-8", errors="ignore") if len(raw) > 127 else text


def load(path: str | os.PathLike) -> Imatrix:
    """Read a GGUF or legacy imatrix file (InvalidImatrixError if it cannot be used)."""
    given = os.fspath(path)
    try:
        with open(given, "rb") as f:
            data = f.read()
    except OSError as e:
        raise errors.InvalidImatrixError(f"cannot read the imatrix {given}: {e.strerror or e}") from None
    try:
        im = _load_gguf(given, data) if data[:4] == b"GGUF" else _load_legacy(given, data)
    except errors.InvalidImatrixError:
        raise
    except (ValueError, KeyError, IndexError, struct.error, UnicodeDecodeError, OverflowError) as e:
        raise errors.InvalidImatrixError(f"{given} is not a valid imatrix file ({e})") from None
    for name, values in im.entries.items():
        if not np.isfinite(values).all():
            raise errors.InvalidImatrixError(f"{given}: the values for {name} are not all finite")
    return im


def _load_gguf(path: str, data: bytes) -> Imatrix:
    from gguf import GGUFReader, GGUFValueType

    reader = GGUFReader(Path(path), "r")
    if not reader.tensors:
        raise errors.InvalidImatrixError(f"{path}: no imatrix entries")
    fields = reader.fields
    if not all(k in fields for k in (KEY_DATASETS, KEY_CHUNK_COUNT, KEY_CHUNK_SIZE)):
        raise errors.InvalidImatrixError(
            f"{path}: not an imatrix (missing {KEY_DATASETS}, {KEY_CHUNK_COUNT} or {KEY_CHUNK_SIZE})")
    datasets: list[str] = []
    f = fields[KEY_DATASETS]
    if f.types and f.types[0] == GGUFValueType.ARRAY and f.types[-1] == GGUFValueType.STRING:
        datasets = [str(v) for v in f.contents()]
    chunk_count = int(fields[KEY_CHUNK_COUNT].contents())

    sums: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    for t in reader.tensors:
        for suffix, into in ((".in_sum2", sums), (".counts", counts)):
            if t.name.endswith(suffix) and len(t.name) > len(suffix):
                if t.tensor_type.name != "F32":
                    raise errors.InvalidImatrixError(f"{path}: {t.name} is {t.tensor_type.name}, not F32")
                into[t.name[: -len(suffix)]] = np.array(t.data, dtype=np.float32).reshape(-1)
    entries: dict[str, np.ndarray] = {}
    for name in sorted(set(sums) | set(counts)):
        if name not in sums or name not in counts:
            raise errors.InvalidImatrixError(f"{path}: {name} has in_sum2 without counts or the reverse")
        s, c = sums[name], counts[name]
        if c.size == 0 or s.size % c.size:
            raise errors.InvalidImatrixError(f"{path}: {name}: {s.size} sums do not split into {c.size} counts")
        per = s.size // c.size
        out = np.empty_like(s)
        for j, raw in enumerate(c.tolist()):
            count = np.float32(_lround(raw))
            block = slice(j * per, (j + 1) * per)
            out[block] = s[block] / count if count > 0 else np.float32(1.0)
        entries[name] = out
    return Imatrix(path=path, entries=entries, datasets=datasets, chunk_count=chunk_count)


def _lround(x: float) -> int:
    """C's lround: halves away from zero."""
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


def _load_legacy(path: str, data: bytes) -> Imatrix:
    pos = 0

    def take(fmt: str):
        nonlocal pos
        values = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return values

    (n_entries,) = take("<i")
    if n_entries < 1:
        raise errors.InvalidImatrixError(f"{path}: not an imatrix (neither GGUF nor a legacy file with entries)")
    entries: dict[str, np.ndarray] = {}
    for i in range(n_entries):
        (length,) = take("<i")
        if length < 0 or pos + length > len(data):
            raise errors.InvalidImatrixError(f"{path}: entry {i + 1} has a bad name length")
        name = data[pos:pos + length].split(b"\0", 1)[0].decode("utf-8")
        pos += length
        ncall, nval = take("<ii")
        if nval < 1 or pos + 4 * nval > len(data):
            raise errors.InvalidImatrixError(f"{path}: entry {name!r} has a bad value count")
        values = np.frombuffer(data, dtype="<f4", count=nval, offset=pos).astype(np.float32)
        pos += 4 * nval
        entries[name] = values / np.float32(ncall) if ncall > 0 else values
    chunk_count, datasets = 0, []
    if pos + 4 <= len(data):
        (chunk_count,) = take("<i")
        if pos + 4 <= len(data):
            (length,) = take("<i")
            if length > 0 and pos + length <= len(data):
                datasets.append(data[pos:pos + length].split(b"\0", 1)[0].decode("utf-8", errors="replace"))
    return Imatrix(path=path, entries=entries, datasets=datasets, chunk_count=chunk_count, legacy=True)
