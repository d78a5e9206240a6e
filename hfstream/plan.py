"""The plan: headers + config + options -> every output tensor, its type, and all metadata.

Pure: no network, no files. The pipeline fetches what the plan needs and executes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain
from typing import Callable, Iterable, Mapping, Sequence

import gguf
import numpy as np
from gguf import GGMLQuantizationType as QT

from . import errors, meta, mixplan, quant
from .arch import family_class
from .graph import Node
from .hfconfig import load_config, normalize
from .safetensors import DuplicateKeyError, SourceTensor, loads_unique

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
    #: importance weights of the rows (llama-quantize mixes with --imatrix), else None
    weights: quant.Weights | None = None


@dataclass
class Plan:
    tensors: list[PlannedTensor]
    #: holds the KV metadata and tensor infos in file order (used by ``layout``)
    writer: gguf.GGUFWriter
    outtype: quant.OutType
    default_filename: str
    hf_arch: str
    #: a draft plan's vocabulary, still to be built (``with_vocab``); its keys go where ``VOCAB_SLOT`` is
    pending_vocab: Callable[[gguf.GGUFWriter], None] | None = None

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
    names = sorted(f for f in files if "/" not in f and f.startswith("model") and f.endswith(".safetensors"))
    for name in names:
        if not name.isprintable():  # lone surrogates: the listing had bytes that are not UTF-8
            raise errors.ProtocolError(f"the Hub lists a weight file whose name is not valid text: {_short(name)}")
    return names


def weight_map(index: bytes) -> dict[str, str]:
    """tensor name -> shard file name from model.safetensors.index.json, validated.

    A tensor listed twice is refused (json.loads would keep the last silently), and so is an
    empty map; shard names must be plain file names (no path, no URL) ending in ``.safetensors``.
    """
    try:
        data = loads_unique(index)
    except DuplicateKeyError as e:
        raise errors.InvalidIndexError(f"{_INDEX}: the key {_short(e.args[0])} appears twice") from None
    except UnicodeDecodeError as e:
        raise errors.InvalidIndexError(f"{_INDEX} is not valid UTF-8 (byte {e.start})") from None
    except (ValueError, RecursionError):  # JSONDecodeError, too deep, ints over int_max_str_digits
        raise errors.InvalidIndexError(f"{_INDEX} is not valid JSON") from None
    wm = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(wm, dict):
        raise errors.InvalidIndexError(f"{_INDEX} has no 'weight_map' object")
    if not wm:
        raise errors.InvalidIndexError(f"{_INDEX}: 'weight_map' is empty")
    checked: set[str] = set()  # a few hundred shard names among ~100k tensors (DeepSeek-V3): each checked once
    for name, shard in wm.items():
        if isinstance(shard, str) and shard in checked:
            continue
        if not isinstance(shard, str) or not _plain_file_name(shard):
            raise errors.InvalidIndexError(
                f"{_INDEX}: shard {_short(shard)} for {_short(name)} is not a plain file name")
        checked.add(shard)
    return wm


_INDEX = "model.safetensors.index.json"


def _short(value: object, limit: int = 60) -> str:
    """repr of a value from a file, cut so a hostile one cannot flood the error line."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _plain_file_name(name: str) -> bool:
    return (bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name
            and ":" not in name and not name.startswith(".") and name.endswith(".safetensors")
            and all(c.isprintable() for c in name))


def make_plan(*, repo_name: str, files: Mapping[str, bytes], headers: Mapping[str, Sequence[SourceTensor]],
              shards: Sequence[str], outtype: str, bpe_pre: str | None = None,
              source: tuple[str, str] | None = None, quant_opts: mixplan.QuantOptions | None = None,
              split_max_tensors: int = 0, split_max_size: int = 0) -> Plan:
    """Decide every output tensor and all metadata: ``with_vocab(draft_plan(...))``."""
    return with_vocab(draft_plan(repo_name=repo_name, files=files, headers=headers, shards=shards, outtype=outtype,
                                 bpe_pre=bpe_pre, source=source, quant_opts=quant_opts,
                                 split_max_tensors=split_max_tensors, split_max_size=split_max_size))


#: Placeholder key of a draft plan's metadata: where the vocabulary's keys will go.
VOCAB_SLOT = "\0vocab"


def with_vocab(plan: Plan) -> Plan:
    """Build a draft plan's vocabulary (the slow part of planning: ~1 s for a 128k-token BPE) into its
    metadata, in place; the keys land where the reference writes them, as if added in order."""
    if plan.pending_vocab is None:
        return plan
    scratch = gguf.GGUFWriter(path=None, arch=plan.writer.arch)
    inherited = set(scratch.kv_data[0])  # general.architecture, which every writer starts with
    plan.pending_vocab(scratch)
    kv = plan.writer.kv_data[0]
    keys = list(kv)
    slot = keys.index(VOCAB_SLOT)
    # Replays the adds in their original order: a key added again keeps its first place and takes the
    # new value, as GGUFWriter.add_key_value does.
    merged = {k: kv[k] for k in keys[:slot]}
    merged.update((k, v) for k, v in scratch.kv_data[0].items() if k not in inherited)
    merged.update((k, kv[k]) for k in keys[slot + 1:])
    plan.writer.kv_data[0] = merged
    plan.pending_vocab = None
    return plan


def draft_plan(*, repo_name: str, files: Mapping[str, bytes], headers: Mapping[str, Sequence[SourceTensor]],
               shards: Sequence[str], outtype: str, bpe_pre: str | None = None,
               source: tuple[str, str] | None = None, quant_opts: mixplan.QuantOptions | None = None,
               split_max_tensors: int = 0, split_max_size: int = 0) -> Plan:
    """Every output tensor (name, shape, type, order: final) and all metadata but the vocabulary.

    ``files``: small repo files by name; ``headers``: parsed tensors per shard; ``shards``:
    shard order; ``source``: (repo id, commit sha) to record in our own keys; ``quant_opts``:
    type overrides and importance matrix of a llama-quantize mix (``mixplan``).
    """
    config_blob = files.get("config.json")
    if config_blob is None:
        raise errors.MissingFileError(f"{repo_name}: config.json is missing")
    family_cls = family_class(load_config(config_blob))
    # the reference reads config.json through transformers' AutoConfig: defaults and rope normalization
    hparams = normalize(config_blob, name_or_path=repo_name, model_types=family_cls.model_types)
    family = family_cls(hparams, hparams["architectures"][0])
    family.use_files(files)

    _check_unique_names(shards, headers)
    if "model.safetensors.index.json" in files:
        _check_index(weight_map(files["model.safetensors.index.json"]), headers)

    # every source tensor, in the reference's order: shards in order, names sorted inside a shard
    sources: list[tuple[str, SourceTensor]] = []
    for shard in shards:
        for src in sorted(headers[shard], key=lambda t: t.name):
            name = family.source_name(src.name)
            if name is not None:
                sources.append((name, src))
    family.check_shapes(sources)
    # pre-quantized weights (FP8 + block scales) as weight x scale; refuses methods it cannot convert
    nodes = family.source_nodes(sources)

    if outtype == "auto":
        first = next((s.dtype for _, s in sources if len(s.shape) >= 2 and s.dtype in ("BF16", "F16")), None)
        out = quant.auto_outtype(first)
    else:
        out = quant.outtype(outtype)
    mixplan.check_options(out, quant_opts)

    # the writer also decides where a split output starts a new shard, as the reference's does
    writer = gguf.GGUFWriter(path=None, arch=gguf.MODEL_ARCH_NAMES[family.gguf_arch],
                             split_max_tensors=split_max_tensors, split_max_size=split_max_size)
    planned: list[PlannedTensor] = []
    generated = ((name, node) for name, node in family.extra_tensors())
    from_sources = iter(nodes)
    for name, node in chain(generated, from_sources):
        bid = _block_id(name)
        outputs = list(family.convert(name, node, bid))
        for new_name, new_node in outputs:
            _add(planned, writer, family, out, new_name, new_node, bid)
    for new_name, new_node in family.finish():
        _add(planned, writer, family, out, new_name, new_node, None)
    family.add_tensor_time_hparams(writer)
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
    writer.add_key_value(VOCAB_SLOT, "", gguf.GGUFValueType.STRING)
    if source is not None:
        writer.add_string(KEY_SOURCE_REPO, source[0])
        writer.add_string(KEY_SOURCE_COMMIT, source[1])
    if out.mix:  # the F32 plan above, then what llama-quantize does to it
        planned = mixplan.apply(out, planned, writer, quant_opts)

    filename = gguf.naming_convention(md.name, md.basename, md.finetune, md.version, md.size_label, out.label) + ".gguf"
    return Plan(tensors=planned, writer=writer, outtype=out, default_filename=filename, hf_arch=family.hf_arch,
                pending_vocab=lambda w: family.add_vocab(w, files, bpe_pre))


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
            f"{_INDEX} lists {len(missing)} tensor(s) not found in the shards, e.g. {_short(missing[0])} "
            f"in {wm[missing[0]]}")
    extra = sorted(set(in_headers) - set(wm))
    if extra:
        raise errors.InvalidIndexError(
            f"{_INDEX} does not list {len(extra)} tensor(s) of the shards, e.g. {_short(extra[0])} "
            f"of {in_headers[extra[0]]}")
    for name, shard in wm.items():
        if in_headers[name] != shard:
            raise errors.InvalidIndexError(f"{_INDEX} puts {_short(name)} in {shard} but it is in {in_headers[name]}")


def _check_unique_names(shards: Sequence[str], headers: Mapping[str, Sequence[SourceTensor]]) -> None:
    """A tensor name may appear in one shard only (which copy would the reference take?)."""
    owner: dict[str, str] = {}
    for shard in shards:
        for t in headers[shard]:
            if t.name in owner:
                raise errors.InvalidHeaderError(f"tensor {_short(t.name)} is in both {owner[t.name]} and {shard}")
            owner[t.name] = shard
