"""The plan: headers + config + options -> every output tensor, its type, and all metadata.

Pure: no network, no files. The pipeline fetches what the plan needs and executes it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import chain
from typing import Iterable, Mapping, Sequence

import gguf
import numpy as np
from gguf import GGMLQuantizationType as QT

from . import errors, meta, quant
from .arch import family_for
from .graph import Load, Node
from .hfconfig import normalize
from .safetensors import SourceTensor

#: Keys of our own: where the bytes came from (the reference records neither).
KEY_SOURCE_REPO = "hfstream.source.repo"
KEY_SOURCE_COMMIT = "hfstream.source.commit"


@dataclass
class PlannedTensor:
    name: str
    node: Node
    qtype: QT
    #: numpy order (the GGUF header stores it reversed)
    shape: tuple[int, ...]
    nbytes: int


@dataclass
class Plan:
    tensors: list[PlannedTensor]
    #: holds the KV metadata and tensor infos in file order (used by ``layout``)
    writer: gguf.GGUFWriter
    outtype: quant.OutType
    default_filename: str
    hf_arch: str

    @property
    def source_tensors(self) -> list[SourceTensor]:
        seen: dict[SourceTensor, None] = {}
        for t in self.tensors:
            for leaf in t.node.leaves():
                seen.setdefault(leaf, None)
        return list(seen)

    @property
    def source_bytes(self) -> int:
        return sum(s.nbytes for s in self.source_tensors)


def weight_files(files: Iterable[str], index: bytes | None) -> list[str]:
    """The safetensors shards in the reference's order: the index's files, or top-level model*.safetensors."""
    if index is not None:
        return sorted(set(weight_map(index).values()))
    return sorted(f for f in files if "/" not in f and f.startswith("model") and f.endswith(".safetensors"))


def weight_map(index: bytes) -> dict[str, str]:
    """tensor name -> shard file name from model.safetensors.index.json, validated."""
    try:
        data = json.loads(index)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise errors.InvalidIndexError("model.safetensors.index.json is not valid JSON") from None
    wm = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(wm, dict):
        raise errors.InvalidIndexError("model.safetensors.index.json has no 'weight_map' object")
    for name, shard in wm.items():
        if not isinstance(shard, str) or not _plain_file_name(shard):
            raise errors.InvalidIndexError(
                f"model.safetensors.index.json: shard {shard!r} for {name!r} is not a plain file name")
    return wm


def _plain_file_name(name: str) -> bool:
    return (bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name
            and ":" not in name and not name.startswith(".") and name.endswith(".safetensors")
            and all(c.isprintable() for c in name))


def make_plan(*, repo_name: str, files: Mapping[str, bytes], headers: Mapping[str, Sequence[SourceTensor]],
              shards: Sequence[str], outtype: str, bpe_pre: str | None = None,
              source: tuple[str, str] | None = None) -> Plan:
    """Decide every output tensor and all metadata.

    ``files``: small repo files by name; ``headers``: parsed tensors per shard; ``shards``:
    shard order; ``source``: (repo id, commit sha) to record in our own keys.
    """
    config_blob = files.get("config.json")
    if config_blob is None:
        raise errors.MissingFileError(f"{repo_name}: config.json is missing")
    try:
        hparams = json.loads(config_blob)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise errors.InvalidConfigError("config.json is not valid JSON") from None
    if not isinstance(hparams, dict):
        raise errors.InvalidConfigError("config.json is not a JSON object")
    # the reference reads config.json through transformers' AutoConfig: defaults and rope normalization
    family = family_for(normalize(hparams, name_or_path=repo_name))

    if "model.safetensors.index.json" in files:
        _check_index(weight_map(files["model.safetensors.index.json"]), headers)

    # every source tensor, in the reference's order: shards in order, names sorted inside a shard
    sources: list[tuple[str, SourceTensor]] = []
    for shard in shards:
        for src in sorted(headers[shard], key=lambda t: t.name):
            name = family.source_name(src.name)
            if name is not None:
                sources.append((name, src))

    if outtype == "auto":
        first = next((s.dtype for _, s in sources if len(s.shape) >= 2 and s.dtype in ("BF16", "F16")), None)
        out = quant.auto_outtype(first)
    else:
        out = quant.outtype(outtype)

    writer = gguf.GGUFWriter(path=None, arch=gguf.MODEL_ARCH_NAMES[family.gguf_arch])
    planned: list[PlannedTensor] = []
    generated = ((name, node) for name, node in family.extra_tensors())
    from_sources = ((name, Load(src)) for name, src in sources)
    for name, node in chain(generated, from_sources):
        bid = _block_id(name)
        outputs = list(family.convert(name, node, bid))
        for new_name, new_node in outputs:
            _add(planned, writer, family, out, new_name, new_node, bid)
    for new_name, new_node in family.finish():
        _add(planned, writer, family, out, new_name, new_node, None)
    if not planned:
        raise errors.NoWeightsError(f"{repo_name}: no tensors to convert")

    total, shared, expert, expert_count = writer.get_total_parameter_count()
    md = meta.build(repo_name, files, total)
    if md.size_label is None and total > 0:
        md.size_label = gguf.size_label(total, shared, expert, expert_count)

    writer.add_type(gguf.GGUFType.MODEL)
    md.set_gguf_meta_model(writer)
    family.add_hparams(writer, int(out.file_type))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    family.add_vocab(writer, files, bpe_pre)
    if source is not None:
        writer.add_string(KEY_SOURCE_REPO, source[0])
        writer.add_string(KEY_SOURCE_COMMIT, source[1])

    filename = gguf.naming_convention(md.name, md.basename, md.finetune, md.version, md.size_label, out.label) + ".gguf"
    return Plan(tensors=planned, writer=writer, outtype=out, default_filename=filename, hf_arch=family.hf_arch)


def _add(planned, writer, family, out, name, node, bid) -> None:
    shape = tuple(int(d) for d in node.shape)
    qt = quant.tensor_type(out, family.tensor_kind(name, bid), name, shape)
    size = quant.nbytes(qt, shape)
    try:
        writer.add_tensor_info(name, shape, np.dtype(np.float32), size, raw_dtype=qt)
    except ValueError as e:  # duplicated name
        raise errors.InvalidHeaderError(f"two source tensors map to {name!r} ({e})") from None
    planned.append(PlannedTensor(name=name, node=node, qtype=qt, shape=shape, nbytes=size))


def _block_id(name: str) -> int | None:
    """The first all-digit part of a dotted name, as the reference takes the block id."""
    for part in name.split("."):
        if part.isdecimal():
            return int(part)
    return None


def _check_index(wm: Mapping[str, str], headers: Mapping[str, Sequence[SourceTensor]]) -> None:
    in_headers = {t.name: shard for shard, ts in headers.items() for t in ts}
    missing = sorted(set(wm) - set(in_headers))
    if missing:
        raise errors.InvalidIndexError(
            f"model.safetensors.index.json lists {len(missing)} tensor(s) not found in the shards, e.g. {missing[0]!r}")
    extra = sorted(set(in_headers) - set(wm))
    if extra:
        raise errors.InvalidIndexError(
            f"shard tensor {extra[0]!r} is missing from model.safetensors.index.json ({len(extra)} in all)")
    for name, shard in wm.items():
        if in_headers[name] != shard:
            raise errors.InvalidIndexError(
                f"model.safetensors.index.json puts {name!r} in {shard} but it is in {in_headers[name]}")
