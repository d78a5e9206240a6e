"""Deterministic synthetic importance matrices for the K-quant goldens, in both llama.cpp formats.

``make_entries(weights, seed)`` gives, for every weight a real ``llama-imatrix`` run would collect
(every matrix multiplied with activations: all 2-D+ ``*.weight`` tensors but norms and the token
embedding, which is a lookup, unless the output is tied to it), per-expert sums of squared
activations and token counts. The values are chosen so that both formats load to the same floats:

- every mean ``sum / count`` is a multiple of 2**-12 in (0, 4], counts are powers of two, so
  ``sum = mean * count`` and the GGUF loader's ``sum / count`` are exact;
- the legacy file stores ``mean * ncall`` with ``ncall`` a power of two, and its loader divides
  by ``ncall``, exactly again;
- in one MoE stack one expert has count 0 ("saw no token"): both loaders then use 1.0.

``write_gguf`` writes what ``llama-imatrix`` writes (tools/imatrix/imatrix.cpp ``save_imatrix``):
``general.type = imatrix``, ``imatrix.datasets``, ``imatrix.chunk_count``, ``imatrix.chunk_size``,
and per weight ``{name}.in_sum2`` (F32, ne [n_per_row, n_mat]) and ``{name}.counts`` (F32,
ne [1, n_mat]), names sorted. ``write_dat`` writes ``save_imatrix_legacy``'s layout.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

DATASET = "hfstream-synthetic-imatrix.txt"
CHUNK_SIZE = 512
CHUNK_COUNT = 4


@dataclass
class Entry:
    sums: np.ndarray    # float32, n_mat * n_per_row
    counts: np.ndarray  # int, n_mat


def _uniform_ints(seed: str, n: int, high: int) -> np.ndarray:
    key = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:16], "little")
    return (np.random.PCG64(key).random_raw(n) % np.uint64(high)).astype(np.int64)


def collected(name: str, ne: Sequence[int], tied: bool) -> bool:
    """Whether llama-imatrix would have an entry for this tensor (a matmul weight)."""
    if not name.endswith(".weight") or "_norm" in name or sum(1 for d in ne if d > 1) < 2:
        return False
    if name == "token_embd.weight":
        return tied  # a tied output multiplies with the embedding matrix
    return True


def make_entries(weights: Sequence[tuple[str, Sequence[int]]], seed: str) -> dict[str, Entry]:
    """Synthetic entries for the (GGUF name, ne) weights of a model."""
    tied = not any(n == "output.weight" for n, _ in weights)
    out: dict[str, Entry] = {}
    zero_done = False
    for name, ne in sorted(weights):
        if not collected(name, ne, tied):
            continue
        n_per_row = int(ne[0])
        n_mat = int(ne[2]) if len(ne) > 2 else 1
        means = (_uniform_ints(f"{seed}/{name}", n_mat * n_per_row, 16 * 1024) + 1).astype(np.float64) / 4096.0
        counts = np.array([2 ** (8 + int(k)) for k in _uniform_ints(f"{seed}/{name}/counts", n_mat, 3)])
        if n_mat > 1 and not zero_done:
            counts[n_mat // 2] = 0  # an expert that saw no token
            zero_done = True
        sums = means * np.repeat(np.maximum(counts, 1), n_per_row)
        out[name] = Entry(sums=sums.astype(np.float32), counts=counts)
    return out


def loaded_values(entry: Entry) -> np.ndarray:
    """What llama-quantize uses: sum / count per expert, 1 where count is 0."""
    n_mat = entry.counts.size
    per = entry.sums.size // n_mat
    out = np.empty(entry.sums.size, dtype=np.float32)
    for j, c in enumerate(entry.counts):
        block = slice(j * per, (j + 1) * per)
        out[block] = entry.sums[block] / np.float32(c) if c > 0 else np.float32(1.0)
    return out


# --------------------------------------------------------------------------- GGUF


def _str(s: str) -> bytes:
    raw = s.encode()
    return struct.pack("<Q", len(raw)) + raw


def write_gguf(path: Path, entries: dict[str, Entry], datasets: Sequence[str] = (DATASET,),
               chunk_count: int = CHUNK_COUNT, chunk_size: int = CHUNK_SIZE) -> None:
    tensors: list[tuple[str, tuple[int, ...], bytes]] = []
    for name in sorted(entries):
        e = entries[name]
        n_mat = e.counts.size
        tensors.append((f"{name}.in_sum2", (e.sums.size // n_mat, n_mat), e.sums.astype("<f4").tobytes()))
        tensors.append((f"{name}.counts", (1, n_mat), e.counts.astype("<f4").tobytes()))
    kv = b""
    kv += _str("general.type") + struct.pack("<I", 8) + _str("imatrix")
    kv += _str("imatrix.datasets") + struct.pack("<II", 9, 8) + struct.pack("<Q", len(datasets))
    kv += b"".join(_str(d) for d in datasets)
    kv += _str("imatrix.chunk_count") + struct.pack("<II", 4, chunk_count)
    kv += _str("imatrix.chunk_size") + struct.pack("<II", 4, chunk_size)
    infos, data, offset = b"", b"", 0
    for name, ne, raw in tensors:
        infos += _str(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d) for d in ne)
        infos += struct.pack("<IQ", 0, offset)
        padded = raw + b"\0" * (-len(raw) % 32)
        data += padded
        offset += len(padded)
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), 4) + kv + infos
    head += b"\0" * (-len(head) % 32)
    path.write_bytes(head + data)


# --------------------------------------------------------------------------- legacy .dat


def write_dat(path: Path, entries: dict[str, Entry], dataset: str = DATASET, chunk_count: int = CHUNK_COUNT,
              chunk_size: int = CHUNK_SIZE) -> None:
    out = bytearray(struct.pack("<i", len(entries)))
    for name in sorted(entries):
        e = entries[name]
        ncall = (int(e.counts.max()) + chunk_size - 1) // chunk_size
        raw = name.encode()
        out += struct.pack("<i", len(raw)) + raw + struct.pack("<ii", ncall, e.sums.size)
        values = loaded_values(e) * np.float32(ncall)
        out += values.astype("<f4").tobytes()
    raw = dataset.encode()
    out += struct.pack("<i", chunk_count) + struct.pack("<i", len(raw)) + raw
    path.write_bytes(bytes(out))
