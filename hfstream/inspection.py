"""``hfstream inspect``: what a model is before anyone converts it, and what a GGUF file holds.

A repo, a model directory or a cache snapshot is read as a dry run reads it: the small files and
every safetensors header, no tensor data. From them: the architecture and whether hfstream converts
it, the parameter count, the tensors by dtype, the shards, and the output size of every outtype.
Each size is that outtype's own plan (types per tensor, llama-quantize's fallbacks included) laid
out with the header of one real layout: the vocabulary, the slow part, is built once, since its
keys and the tensor infos take the same bytes whatever the types.

A ``.gguf`` file is read with gguf's reader: its keys (long arrays shown by their first values)
and its tensors.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from . import errors, hub, settings
from .options import Options

#: arrays longer than this are shown by their first ``ARRAY_HEAD`` values and their length
ARRAY_HEAD = 8


@dataclass
class ModelInspection:
    """A model repo or directory, read without its tensor data."""

    source: str
    repo_id: str
    revision: str
    commit_sha: str
    architecture: str
    supported: bool
    #: why not, when not supported
    reason: str
    #: elements of every tensor in the safetensors files
    parameters: int
    #: dtype -> {"tensors": count, "bytes": bytes}
    dtypes: dict[str, dict[str, int]]
    #: (file name, bytes) of each safetensors file, in order
    shards: list[tuple[str, int | None]]
    #: outtype -> output bytes, or why it cannot be made; "auto" names the type it picks
    outtypes: dict[str, int | str] = field(default_factory=dict)
    auto: str = ""
    #: notes on llama-quantize types whose blocks do not fit the rows (``mix_fallback``)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": "model", **asdict(self)}

    def text(self) -> str:
        from .display import size

        where = self.source + (f" (commit {self.commit_sha[:12]})" if self.commit_sha else "")
        state = "supported" if self.supported else f"not supported: {self.reason}"
        lines = [where,
                 f"architecture  {self.architecture}: {state}",
                 f"parameters    {_count(self.parameters)} ({self.parameters:,d})",
                 f"shards        {len(self.shards)}: " + ", ".join(
                     f"{name} ({size(n) if n is not None else 'size unknown'})" for name, n in self.shards),
                 "tensors       " + "; ".join(f"{dtype}: {d['tensors']} ({size(d['bytes'])})"
                                              for dtype, d in self.dtypes.items())]
        if self.outtypes:
            lines.append("output size by --outtype:")
            width = max(len(n) for n in self.outtypes)
            for name, value in self.outtypes.items():
                shown = size(value) if isinstance(value, int) else value
                auto = "  (auto)" if name == self.auto else ""
                lines.append(f"  {name:<{width}}  {shown}{auto}")
        lines += self.notes
        return "\n".join(lines)


@dataclass
class GGUFInspection:
    """A GGUF file: its keys and tensors."""

    path: str
    version: int
    size: int
    #: key -> value (an array longer than ``ARRAY_HEAD``: {"length": n, "first": [...]})
    keys: dict[str, Any]
    #: (name, GGUF shape, type name, bytes) per tensor, in file order
    tensors: list[tuple[str, tuple[int, ...], str, int]]

    def as_dict(self) -> dict[str, Any]:
        return {"kind": "gguf", **asdict(self)}

    def text(self) -> str:
        from .display import size

        lines = [(f"{self.path}: GGUF v{self.version}, {size(self.size)}, {len(self.keys)} keys, "
                  f"{len(self.tensors)} tensors"), "keys:"]
        width = max((len(k) for k in self.keys), default=0)
        for key, value in self.keys.items():
            if isinstance(value, dict) and "length" in value:
                shown = f"[{value['length']:,d} values: {', '.join(_short(v) for v in value['first'])}, ...]"
            else:
                shown = _short(value, 100)
            lines.append(f"  {key:<{width}}  {shown}")
        lines.append("tensors:")
        width = max((len(t[0]) for t in self.tensors), default=0)
        for name, shape, qtype, nbytes in self.tensors:
            lines.append(f"  {name:<{width}}  {'x'.join(map(str, shape)):>20}  {qtype:>7}  {nbytes:>14,d}")
        return "\n".join(lines)


def inspect_source(text: str, *, revision: str = "main", token: str | None = None,
                   bpe_pre: str | None = None) -> ModelInspection | GGUFInspection:
    """Inspect what ``text`` names: a ``.gguf`` file, or a model (any form ``hub.parse_source`` reads)."""
    if text.lower().endswith(".gguf") and Path(text).is_file():
        return inspect_gguf(Path(text))
    return asyncio.run(_inspect_model(text, Options(revision=revision, token=token, bpe_pre=bpe_pre)))


async def _inspect_model(text: str, opts: Options) -> ModelInspection:
    from .arch import family_class
    from .hfconfig import load_config, prepare
    from .pipeline import open_source, read_headers, small_files, weight_shards

    prepare()
    endpoint = (opts.endpoint or settings.endpoint()).rstrip("/")
    asked = hub.parse_source(text, endpoint)
    revision = "" if asked.directory is not None else hub.pick_revision(asked.revision, opts.revision)
    snapshot, source = await open_source(asked, revision, opts, endpoint)
    async with source:
        files = await small_files(source, snapshot)
        config = load_config(files["config.json"])
        archs = config.get("architectures")
        architecture = archs[0] if isinstance(archs, list) and archs and isinstance(archs[0], str) else "(none)"
        try:
            family_class(config)
            supported, reason = True, ""
        except errors.HfstreamError as e:
            supported, reason = False, e.message
        shards = weight_shards(snapshot, files)
        headers, _ = await read_headers(source, snapshot, shards)
    dtypes: dict[str, dict[str, int]] = {}
    parameters = 0
    for shard in shards:
        for t in headers[shard]:
            d = dtypes.setdefault(t.dtype, {"tensors": 0, "bytes": 0})
            d["tensors"] += 1
            d["bytes"] += t.nbytes
            parameters += math.prod(t.shape)
    result = ModelInspection(
        source=f"{snapshot.repo_id}@{revision}" if revision else snapshot.repo_id, repo_id=snapshot.repo_id,
        revision=revision, commit_sha=snapshot.sha, architecture=architecture, supported=supported, reason=reason,
        parameters=parameters, dtypes=dtypes, shards=[(s, snapshot.files.get(s)) for s in shards])
    if supported:
        _outtype_sizes(result, snapshot, files, headers, shards, opts)
    return result


def _outtype_sizes(result: ModelInspection, snapshot: hub.Snapshot, files: dict[str, bytes], headers: dict,
                   shards: list[str], opts: Options) -> None:
    from .layout import ALIGNMENT, layout
    from .plan import draft_plan, with_vocab
    from .quant import OUTTYPES

    def plan(outtype: str):
        return draft_plan(repo_name=snapshot.name, files=files, headers=headers, shards=shards, outtype=outtype,
                          bpe_pre=opts.bpe_pre, source=(snapshot.repo_id, snapshot.sha) if snapshot.sha else None)

    auto = plan("auto")
    result.auto = auto.outtype.name
    lay = layout(with_vocab(auto))
    # the same keys and tensor infos (only their types and offsets differ) in every outtype's file
    data_offset = lay.data_offset
    fallbacks: dict[tuple[int, str, str], list[str]] = {}
    for name in OUTTYPES:
        try:
            p = auto if name == result.auto else plan(name)
        except errors.ImatrixRequiredError:
            result.outtypes[name] = "needs an importance matrix (--imatrix)"
            continue
        except errors.HfstreamError as e:
            result.outtypes[name] = f"cannot: {e.message}"
            continue
        result.outtypes[name] = data_offset + sum(-(-t.nbytes // ALIGNMENT) * ALIGNMENT for t in p.tensors)
        off = _fallback(name, [(t.name, tuple(reversed(t.shape)), t.qtype.name, t.nbytes) for t in p.tensors])
        if off is not None:
            fallbacks.setdefault(off[1:], []).append(name)
    for (block, who, rows), names in fallbacks.items():
        result.notes.append(f"note: {', '.join(names)} fall back from their own types for {who}: rows of {rows} "
                            f"values do not split into blocks of {block}")


def mix_fallback(outtype: str, tensors: Sequence[tuple[str, tuple[int, ...], str, int]]) -> str | None:
    """Why a llama-quantize type's own blocks are not used: the rows of its matrices do not split into them.

    llama-quantize falls back to another type for such a tensor (``q4_k_m`` on rows of 64 values is
    mostly ``q5_0``); when it does for every matrix the file is of another type than the one asked for.
    ``tensors``: (name, GGUF shape, type, bytes) as in ``ConvertResult.tensors``.
    """
    off = _fallback(outtype, tensors)
    if off is None:
        return None
    default, block, who, rows = off
    return (f"note: {outtype} falls back from {default} for {who}: rows of {rows} values do not split into "
            f"its blocks of {block} (llama-quantize's fallback types are in the type column)")


def _fallback(outtype: str, tensors: Sequence[tuple[str, tuple[int, ...], str, int]]) -> tuple[str, int, str, str] | None:
    """(the mix's type, its block, which matrices, their row lengths) when some rows do not fit its blocks."""
    from .quant import MIXES
    from .quant.mixes import block_size

    mix = MIXES.get(outtype)
    if mix is None:
        return None
    block = block_size(mix.default)
    matrices = [t for t in tensors if len(t[1]) >= 2]
    off = [t for t in matrices if t[1][0] % block]
    if not off:
        return None
    rows = sorted({t[1][0] for t in off})
    shown = ", ".join(str(r) for r in rows[:4]) + (", ..." if len(rows) > 4 else "")
    who = "every matrix" if len(off) == len(matrices) else f"{len(off)} of {len(matrices)} matrices"
    return mix.default.name, block, who, shown


def inspect_gguf(path: Path) -> GGUFInspection:
    """Keys and tensors of a GGUF file (the first shard of a split one)."""
    from gguf import GGUFReader, GGUFValueType

    try:
        reader = GGUFReader(path)
    except (ValueError, OSError, IndexError, KeyError) as e:
        raise errors.InvalidHeaderError(f"{path}: not a readable GGUF file ({type(e).__name__}: {e})") from None
    keys: dict[str, Any] = {}
    version = 0
    for name, f in reader.fields.items():
        if name == "GGUF.version":
            version = int(f.contents())
        if name.startswith("GGUF."):
            continue
        if f.types and f.types[0] == GGUFValueType.ARRAY and len(f.data) > ARRAY_HEAD:
            keys[name] = {"length": len(f.data), "first": _plain(f.contents(slice(0, ARRAY_HEAD)))}
        else:
            keys[name] = _plain(f.contents())
    tensors = [(t.name, tuple(int(d) for d in t.shape), t.tensor_type.name, int(t.n_bytes)) for t in reader.tensors]
    return GGUFInspection(path=str(path), version=version, size=path.stat().st_size, keys=keys, tensors=tensors)


def _plain(value: Any) -> Any:
    """A key's value as JSON takes it (numpy scalars and bytes turned into plain ones)."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", "replace")
    if hasattr(value, "item"):
        return value.item()
    return value


def _short(value: Any, limit: int = 24) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _count(n: int) -> str:
    for factor, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= factor:
            return f"{n / factor:.1f}{unit}"
    return str(n)
