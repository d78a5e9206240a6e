"""A small, comparable JSON digest of a GGUF file (what the golden files hold).

``digest_gguf(path)`` reads any (little-endian) GGUF and returns::

    {
      "size": <file size>, "sha256": <sha256 of the whole file>, "version": <GGUF version>,
      "data_offset": <absolute offset of the tensor data section>,
      "kv": [[key, value type name, value], ...]          # file order
      "tensors": [{"name", "shape" (GGUF order, ne0 first), "type", "offset" (relative to the
                   data section), "nbytes", "sha256"}, ...]  # file order
    }

Scalars are plain JSON values (strings, ints, floats, bools). An array is
``{"type": <element type name>, "len": n, "values": [...]}`` when it has at most ``ARRAY_INLINE_MAX``
elements, else ``{"type": ..., "len": n, "sha256": <hex>}`` over the canonical bytes of the array:
its elements exactly as GGUF stores them (little-endian; a string is its uint64 byte length then its
UTF-8 bytes; a bool one byte), without the element type and count (``canonical_array_bytes``).

``digest_gguf`` parses the file directly (fast); ``digest_gguf_via_reader`` builds the same dict with
``gguf.GGUFReader`` and exists to cross-check it.

Tests compare ``digest_gguf(our_file)`` with the digest part of a golden (``DIGEST_KEYS``);
``diff_digests`` says where two digests part ways, in words.
"""

from __future__ import annotations

import hashlib
import mmap
import struct
from pathlib import Path
from typing import Any

import numpy as np

ARRAY_INLINE_MAX = 64
DIGEST_KEYS = ("size", "sha256", "version", "data_offset", "kv", "tensors")
# Fields GGUFReader synthesises from the file header; they are not key-value pairs.
_HEADER_FIELDS = ("GGUF.version", "GGUF.tensor_count", "GGUF.kv_count")


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def canonical_array_bytes(field: Any) -> bytes:
    """The bytes an array's hash is taken over: its elements as GGUF stores them, little-endian,
    without the element type and count. A string element is its uint64 byte length followed by its
    raw UTF-8 bytes; a number is its fixed-width little-endian encoding; a bool is one byte."""
    from gguf import GGUFValueType

    elem_type = field.types[-1]
    if elem_type == GGUFValueType.STRING:
        out = bytearray()
        for idx in field.data:
            raw = field.parts[idx].tobytes()
            out += len(raw).to_bytes(8, "little") + raw
        return bytes(out)
    if not field.data:
        return b""
    values = np.concatenate([field.parts[idx] for idx in field.data])
    return values.astype(values.dtype.newbyteorder("<"), copy=False).tobytes()


def _scalar(value: Any) -> Any:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value)
    return value


def _field_entry(field: Any) -> list:
    from gguf import GGUFValueType

    main = field.types[0]
    if main != GGUFValueType.ARRAY:
        return [field.name, main.name, _scalar(field.contents())]
    if len(field.types) > 2:
        raise ValueError(f"{field.name}: nested arrays are not supported by the digest")
    elem = field.types[-1] if len(field.types) > 1 else None
    n = len(field.data)
    arr: dict[str, Any] = {"type": elem.name if elem is not None else None, "len": n}
    if n <= ARRAY_INLINE_MAX:
        arr["values"] = [_scalar(v) for v in field.contents()] if n else []
    else:
        arr["sha256"] = hashlib.sha256(canonical_array_bytes(field)).hexdigest()
    return [field.name, main.name, arr]


def digest_gguf_via_reader(path: str | Path) -> dict[str, Any]:
    """The same digest as ``digest_gguf``, built with ``gguf.GGUFReader`` (slow on big vocabularies:
    about 12 s for a 128k-token one); kept to cross-check the fast parser."""
    from gguf import GGUFReader

    path = Path(path)
    reader = GGUFReader(path, "r")
    version_field = reader.get_field("GGUF.version")
    kv = [_field_entry(f) for name, f in reader.fields.items() if name not in _HEADER_FIELDS]
    tensors = []
    for t in reader.tensors:
        data = reader.data[t.data_offset : t.data_offset + t.n_bytes]
        tensors.append({
            "name": t.name,
            "shape": [int(d) for d in t.shape],
            "type": t.tensor_type.name,
            "offset": int(t.data_offset - reader.data_offset),
            "nbytes": int(t.n_bytes),
            "sha256": hashlib.sha256(np.ascontiguousarray(data).tobytes()).hexdigest(),
        })
    return {
        "size": path.stat().st_size,
        "sha256": file_sha256(path),
        "version": int(version_field.contents()) if version_field is not None else None,
        "data_offset": int(reader.data_offset),
        "kv": kv,
        "tensors": tensors,
    }



# --------------------------------------------------------------------------- fast parser
# GGUFReader builds one numpy view per string, which takes seconds on a 128k vocabulary with 280k
# merges; this direct parse of the (little-endian) format gives the same digest in well under one.

_SCALAR_FORMATS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
                   10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


class _Cursor:
    def __init__(self, buf: memoryview) -> None:
        self.buf = buf
        self.pos = 0

    def unpack(self, fmt: str) -> Any:
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def raw_string(self) -> bytes:
        n = self.unpack("<Q")
        raw = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return raw

    def value(self, vtype: int) -> Any:
        if vtype == _STRING:
            return self.raw_string().decode("utf-8")
        return self.unpack(_SCALAR_FORMATS[vtype])

    def array(self) -> tuple[int, int, list[Any] | None, bytes]:
        """(element type, count, values when count <= ARRAY_INLINE_MAX, raw element bytes)."""
        elem, n = self.unpack("<I"), self.unpack("<Q")
        start = self.pos
        if elem == _STRING:
            if n <= ARRAY_INLINE_MAX:
                values = [self.value(_STRING) for _ in range(n)]
            else:
                values = None
                buf, pos = self.buf, self.pos
                for _ in range(n):
                    pos += 8 + int.from_bytes(buf[pos : pos + 8], "little")
                self.pos = pos
        elif elem == _ARRAY:
            raise ValueError("nested arrays are not supported by the digest")
        else:
            fmt = _SCALAR_FORMATS[elem]
            size = struct.calcsize(fmt)
            values = [v for (v,) in struct.iter_unpack(fmt, self.buf[start : start + n * size])] if n <= ARRAY_INLINE_MAX else None
            self.pos += n * size
        return elem, n, values, bytes(self.buf[start : self.pos])


def digest_gguf(path: str | Path) -> dict[str, Any]:
    """The digest of the GGUF file at ``path`` (see the module docstring for its shape)."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

    path = Path(path)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        buf = memoryview(mm)
        try:
            cur = _Cursor(buf)
            if bytes(buf[:4]) != b"GGUF":
                raise ValueError(f"{path}: not a GGUF file")
            cur.pos = 4
            version, n_tensors, n_kv = cur.unpack("<I"), cur.unpack("<Q"), cur.unpack("<Q")
            if not 1 <= version < 0x10000:
                raise ValueError(f"{path}: GGUF version {version:#x}: big-endian files are not supported")
            kv: list[list[Any]] = []
            alignment = 32
            for _ in range(n_kv):
                key = cur.raw_string().decode("utf-8")
                vtype = cur.unpack("<I")
                if vtype == _ARRAY:
                    elem, n, values, raw = cur.array()
                    arr: dict[str, Any] = {"type": GGUFValueType(elem).name, "len": n}
                    if values is not None:
                        arr["values"] = values
                    else:
                        arr["sha256"] = hashlib.sha256(raw).hexdigest()
                    kv.append([key, "ARRAY", arr])
                else:
                    value = cur.value(vtype)
                    kv.append([key, GGUFValueType(vtype).name, value])
                    if key == "general.alignment":
                        alignment = value
            infos = []
            for _ in range(n_tensors):
                name = cur.raw_string().decode("utf-8")
                n_dims = cur.unpack("<I")
                shape = [cur.unpack("<Q") for _ in range(n_dims)]
                ttype = cur.unpack("<I")
                offset = cur.unpack("<Q")
                infos.append((name, shape, ttype, offset))
            data_offset = cur.pos + (-cur.pos % alignment)
            tensors = []
            for name, shape, ttype, offset in infos:
                block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ttype)]
                n_elems = 1
                for d in shape:
                    n_elems *= d
                nbytes = n_elems // block * type_size
                start = data_offset + offset
                tensors.append({
                    "name": name,
                    "shape": shape,
                    "type": GGMLQuantizationType(ttype).name,
                    "offset": offset,
                    "nbytes": nbytes,
                    "sha256": hashlib.sha256(buf[start : start + nbytes]).hexdigest(),
                })
        finally:
            buf.release()
    return {
        "size": path.stat().st_size,
        "sha256": file_sha256(path),
        "version": version,
        "data_offset": data_offset,
        "kv": kv,
        "tensors": tensors,
    }


def digest_part(golden: dict[str, Any]) -> dict[str, Any]:
    """Only the keys of a golden that ``digest_gguf`` produces."""
    return {k: golden[k] for k in DIGEST_KEYS}


def diff_digests(expected: dict[str, Any], actual: dict[str, Any], limit: int = 20) -> list[str]:
    """Where ``actual`` differs from ``expected``, as readable lines (empty when equal).
    Either argument may be a full golden; only ``DIGEST_KEYS`` are compared, and of those only
    ``kv`` and ``tensors`` are required (the others are compared when both sides have them)."""
    out: list[str] = []
    exp_kv = {e[0]: e for e in expected["kv"]}
    act_kv = {e[0]: e for e in actual["kv"]}
    for key in exp_kv:
        if key not in act_kv:
            out.append(f"kv {key}: missing (expected {exp_kv[key][1]} {exp_kv[key][2]!r})")
        elif exp_kv[key] != act_kv[key]:
            out.append(f"kv {key}: expected {exp_kv[key][1:]!r}, got {act_kv[key][1:]!r}")
    out += [f"kv {key}: unexpected {act_kv[key][1:]!r}" for key in act_kv if key not in exp_kv]
    if not out and [e[0] for e in expected["kv"]] != [e[0] for e in actual["kv"]]:
        out.append(f"kv order differs: expected {[e[0] for e in expected['kv']]}, got {[e[0] for e in actual['kv']]}")

    exp_t = {t["name"]: t for t in expected["tensors"]}
    act_t = {t["name"]: t for t in actual["tensors"]}
    for name, t in exp_t.items():
        if name not in act_t:
            out.append(f"tensor {name}: missing")
            continue
        diffs = [f"{k} {t[k]!r} != {act_t[name][k]!r}" for k in t if t[k] != act_t[name].get(k)]
        if diffs:
            out.append(f"tensor {name}: " + "; ".join(diffs))
    out += [f"tensor {name}: unexpected" for name in act_t if name not in exp_t]
    if [t["name"] for t in expected["tensors"]] != [t["name"] for t in actual["tensors"]] and set(exp_t) == set(act_t):
        out.append("tensor order differs: expected " + ", ".join(exp_t) + "; got " + ", ".join(act_t))

    for key in ("version", "data_offset", "size", "sha256"):
        if key in expected and key in actual and expected[key] != actual[key]:
            out.append(f"{key}: expected {expected[key]!r}, got {actual[key]!r}")
    if len(out) > limit:
        out = out[:limit] + [f"... and {len(out) - limit} more differences"]
    return out
