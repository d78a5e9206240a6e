"""The plan: headers + config + options -> every output tensor, its type, and all metadata.

Pure: no network, no files. The pipeline fetches what the plan needs and executes it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import gguf
import numpy as np
from gguf import GGMLQuantizationType as QT

from . import errors, jsonfile, meta, quant
from .arch import family_class, projector_class
from .arch.base import TextFamily
from .graph import Node, decode, same_array, same_graph
from .hfconfig import RecordedReads, as_written, load_config, normalize
from .kv import KeyWriter, Metadata, same_entries
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
    #: importance weights of the rows (llama-quantize mixes with --imatrix), else None
    weights: quant.Weights | None = None


@dataclass
class Plan:
    #: every output tensor, in file order
    tensors: list[PlannedTensor]
    #: the keys in file order (``layout`` serializes them); a draft's stop where its vocabulary's go
    metadata: Metadata
    outtype: quant.OutType
    default_filename: str
    hf_arch: str
    #: ``general.architecture``, which arch-prefixed keys are named after
    arch: str
    #: a split output (``layout`` cuts it as gguf's writer does): at most this many tensors, or bytes
    #: of tensor data, per file; 0: no limit
    split_max_tensors: int = 0
    split_max_size: int = 0
    #: a draft plan's vocabulary, still to be built (``with_vocab``), and the keys that go after it
    pending_vocab: Callable[[KeyWriter], None] | None = None
    after_vocab: Metadata = field(default_factory=Metadata)
    #: the vocabulary is the model's, whatever the outtype: drafts of one model share one (``with_vocab``);
    #: a projector has none
    shares_vocab: bool = True
    #: the hparams the vocabulary is built from (its family's); a provisional draft's note what is read
    #: (``hfconfig.RecordedReads``)
    hparams: Mapping[str, Any] = field(default_factory=dict)

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
    data = jsonfile.load(index, _INDEX, expect=dict)
    wm = data.get("weight_map")
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


_INDEX = jsonfile.INDEX_FILE


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
              source: tuple[str, str] | None = None, quant_opts: quant.QuantOptions | None = None,
              split_max_tensors: int = 0, split_max_size: int = 0,
              values: Mapping[SourceTensor, bytes | memoryview] | None = None) -> Plan:
    """Decide every output tensor and all metadata: ``with_vocab(draft_plan(...))``."""
    return with_vocab(draft_plan(repo_name=repo_name, files=files, headers=headers, shards=shards, outtype=outtype,
                                 bpe_pre=bpe_pre, source=source, quant_opts=quant_opts,
                                 split_max_tensors=split_max_tensors, split_max_size=split_max_size, values=values))


def value_sources(files: Mapping[str, bytes], headers: Mapping[str, Sequence[SourceTensor]]) -> list[SourceTensor]:
    """The source tensors whose values the plan needs (the family's ``value_tensors``), to be read before
    ``draft_plan`` and given to it as ``values``. Each must hold one float (the reference takes
    ``.item()``), so that what is read before the plan stays a few bytes whatever the file says."""
    config_blob = files.get("config.json")
    pattern = family_class(load_config(config_blob)).value_tensors if config_blob is not None else None
    if not pattern:
        return []
    wanted = []
    for shard in sorted(headers):
        for src in headers[shard]:
            if re.fullmatch(pattern, src.name):
                if math.prod(src.shape) != 1 or src.dtype not in _VALUE_DTYPES:
                    raise errors.InvalidHeaderError(
                        f"{src.file}: tensor {_short(src.name)} should hold one number, not {src.dtype} {list(src.shape)}")
                wanted.append(src)
    return wanted


_VALUE_DTYPES = ("BF16", "F16", "F32", "F64")


def with_vocab(plan: Plan, vocab: Metadata | None = None) -> Plan:
    """Build a draft plan's vocabulary (the slow part of planning: ~1 s for a 128k-token BPE) into its
    metadata, in place; the keys land where the reference writes them, as if added in order.

    ``vocab``: the keys already built for another draft of the same model (another outtype): the
    vocabulary does not depend on the outtype.
    """
    if plan.pending_vocab is None:
        return plan
    if vocab is None:
        vocab = build_vocab(plan)
    plan.metadata.merge(vocab)
    plan.metadata.merge(plan.after_vocab)
    plan.pending_vocab, plan.after_vocab = None, Metadata()
    return plan


def build_vocab(plan: Plan) -> Metadata:
    """A draft plan's vocabulary keys, built but not merged."""
    vocab = Metadata()
    if plan.pending_vocab is not None:
        plan.pending_vocab(KeyWriter(vocab, plan.arch))
    return vocab


def draft_plan(*, repo_name: str, files: Mapping[str, bytes], headers: Mapping[str, Sequence[SourceTensor]],
               shards: Sequence[str], outtype: str, bpe_pre: str | None = None,
               source: tuple[str, str] | None = None, quant_opts: quant.QuantOptions | None = None,
               split_max_tensors: int = 0, split_max_size: int = 0, projector: bool = False,
               values: Mapping[SourceTensor, bytes | memoryview] | None = None,
               provisional: bool = False) -> Plan:
    """Every output tensor (name, shape, type, order: final) and all metadata but the vocabulary.

    ``files``: small repo files by name; ``headers``: parsed tensors per shard; ``shards``:
    shard order; ``source``: (repo id, commit sha) to record in our own keys; ``quant_opts``:
    type overrides and importance matrix of a llama-quantize mix (``quant.mixplan``); ``projector``:
    the vision projector (``mmproj-*.gguf``) of a multimodal repo instead of its text model; ``values``:
    the bytes of the tensors ``value_sources`` names; ``provisional``: read config.json as written
    whatever the family reads, so as not to wait for transformers: a plan to start fetching by, of
    which only what the real plan confirms (``same_tensors``) may be kept.
    """
    config_blob = files.get("config.json")
    if config_blob is None:
        raise errors.MissingFileError(f"{repo_name}: config.json is missing")
    config = load_config(config_blob)
    family_cls: type[TextFamily] = projector_class(config) if projector else family_class(config)
    _check_layer_count(config, headers)  # before transformers builds anything per layer
    # the reference reads config.json through transformers' AutoConfig: defaults and rope normalization
    if family_cls.config_source == "config.json" or provisional:
        hparams = as_written(config_blob)
    else:
        hparams = normalize(config_blob, name_or_path=repo_name, model_types=family_cls.model_types)
    family = family_cls(hparams, hparams["architectures"][0])
    family.use_files(files)
    family.use_values({src.name: decode(src, raw).astype(np.float32) for src, raw in (values or {}).items()})

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
    out = family.output_type(out)
    quant.check_options(out, quant_opts)
    if projector and out.mix:
        raise errors.UnsupportedOptionError(
            f"--outtype {out.name}: a vision projector is written as f32, f16, bf16 or q8_0, as the reference's "
            "--mmproj writes it")
    family.use_outtype(out)

    outputs: dict[str, tuple[quant.OutputTensor, Node]] = {}
    family.use_sources(sources)
    generated = ((name, node) for name, node in family.extra_tensors())
    from_sources = iter(nodes)
    for name, node in chain(generated, from_sources):
        bid = _block_id(name)
        try:
            converted = list(family.convert(name, node, bid))
        except errors.UnusedTensorError as e:  # the line names the file the tensor is in
            leaf = next(iter(node.leaves()), None)
            raise errors.UnusedTensorError(f"{leaf.file}: {e.message}" if leaf is not None else e.message) from None
        for new_name, new_node in converted:
            _add(outputs, family, new_name, new_node, bid, name)
    for new_name, new_node in family.finish():
        _add(outputs, family, new_name, new_node, None, None)
    family.check_tensors({name: node for name, (_, node) in outputs.items()}, sources)

    arch = family.gguf_arch_name()
    metadata = Metadata()
    w = KeyWriter(metadata, arch)
    w.add_architecture()
    family.add_tensor_time_hparams(w)
    if not outputs:
        raise errors.NoWeightsError(f"{repo_name}: no tensors to convert")

    total, shared, expert, expert_count = _parameter_counts(t for t, _ in outputs.values()
                                                             if t.name not in family.uncounted_tensors)
    md = meta.build(repo_name, files, total)
    if md.size_label is None and total > 0:
        md.size_label = gguf.size_label(total, shared, expert, expert_count)

    w.add_type(family.gguf_type)
    md.set_gguf_meta_model(w)
    family.add_hparams(w, int(out.file_type))
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    # the vocabulary's keys go here (``with_vocab``), then these
    after_vocab = Metadata()
    if source is not None:
        tail = KeyWriter(after_vocab, arch)
        tail.add_string(KEY_SOURCE_REPO, source[0])
        tail.add_string(KEY_SOURCE_COMMIT, source[1])

    typed = quant.plan_types(out, [t for t, _ in outputs.values()], metadata.values_by_key(), quant_opts)
    for key, value, vtype in typed.last_keys:
        metadata.remove(key)
        after_vocab.add_last(key, value, vtype)
    planned = []
    for choice in typed.tensors:
        tensor, node = outputs[choice.name]
        shape = choice.shape or tensor.shape
        planned.append(PlannedTensor(name=choice.name, node=node, qtype=choice.qtype, shape=shape,
                                     nbytes=quant.nbytes(choice.qtype, shape), weights=choice.weights))

    if provisional:
        # from here on only the vocabulary reads them: what it reads is checked against the real hparams
        family.hparams = RecordedReads(family.hparams)  # type: ignore[assignment]
    size_label = md.size_label if family.size_label_in_filename else None
    filename = family.filename_prefix + gguf.naming_convention(md.name, md.basename, md.finetune, md.version,
                                                               size_label, out.label) + ".gguf"
    return Plan(tensors=planned, metadata=metadata, outtype=out, default_filename=filename, hf_arch=family.hf_arch,
                arch=arch, split_max_tensors=split_max_tensors, split_max_size=split_max_size,
                pending_vocab=lambda writer: family.add_vocab(writer, files, bpe_pre), after_vocab=after_vocab,
                shares_vocab=not projector, hparams=family.hparams)


def same_tensors(a: Plan, b: Plan) -> bool:
    """Whether two plans write the same tensors, in the same order and types, computed alike from the
    same source bytes (a provisional plan and the real one): units of one are units of the other."""
    return len(a.tensors) == len(b.tensors) and all(
        (x.name, x.qtype, x.shape, x.nbytes) == (y.name, y.qtype, y.shape, y.nbytes) and same_graph(x.node, y.node)
        and _same_weights(x.weights, y.weights) for x, y in zip(a.tensors, b.tensors))


def same_keys_and_names(a: Plan, b: Plan) -> bool:
    """Whether two drafts (a provisional one and the real one) have the same keys but the vocabulary's,
    file name and split: with the same tensors (``same_tensors``) and vocabulary, they lay out alike."""
    return ((a.default_filename, a.arch, a.hf_arch, a.outtype, a.split_max_tensors, a.split_max_size, a.shares_vocab)
            == (b.default_filename, b.arch, b.hf_arch, b.outtype, b.split_max_tensors, b.split_max_size, b.shares_vocab)
            and same_entries(a.metadata, b.metadata) and same_entries(a.after_vocab, b.after_vocab))


def _same_weights(a: quant.Weights | None, b: quant.Weights | None) -> bool:
    if a is None or b is None or a is b:
        return a is b
    return a.rows_per_mat == b.rows_per_mat and same_array(a.values, b.values)


def _add(outputs: dict[str, tuple[quant.OutputTensor, Node]], family: TextFamily, name: str, node: Node,
         bid: int | None, source: str | None) -> None:
    """One output tensor, as the type rules will see it."""
    if name in outputs:
        raise errors.InvalidHeaderError(f"two source tensors map to {name!r}")
    shape = tuple(int(d) for d in node.shape)
    # bytes already in a GGUF type (repacked MXFP4) keep it whatever the outtype, as in the reference
    forced = node.encoded if node.encoded is not None else family.forced_type(name, bid, source)
    tensor = quant.OutputTensor(name, shape, kind=family.tensor_kind(name, bid), forced=forced)
    outputs[name] = (tensor, node)


def _parameter_counts(tensors: Iterable[quant.OutputTensor]) -> tuple[int, int, int, int]:
    """(total, shared, per-expert, expert count) parameters, as gguf's writer counts them for the size
    label (``GGUFWriter.get_total_parameter_count``; no LoRA tensors here)."""
    total = shared = expert = expert_sum = n_expert_tensors = 0
    for t in tensors:
        size = math.prod(t.shape)
        if "_exps." in t.name and len(t.shape) >= 3:
            n = t.shape[-2 if ".bias" in t.name else -3]
            expert += size // n
            expert_sum += n
            n_expert_tensors += 1
        else:
            shared += size
        total += size
    return total, shared, expert, expert_sum // n_expert_tensors if n_expert_tensors else 0


def _block_id(name: str) -> int | None:
    """The first all-digit part of a dotted name, as the reference takes the block id (None past 9
    digits: no model has a billion layers, and Python refuses to read an int of 4,300 digits)."""
    for part in name.split("."):
        if part.isdecimal():
            return int(part) if len(part) <= 9 else None
    return None


def index_name_check(index: bytes | None) -> Callable[[str, Iterable[str]], None] | None:
    """With a shard index, a check of each header's names as it is parsed (``safetensors.parse_header``):
    a tensor the index does not list refuses the whole repo at its header, before that header's
    entries are built or the next header is read (a header of 300,000 unlisted names costs one JSON
    parse, not four). What needs every header (a tensor in two shards, or listed in another one, or
    listed and in none) is checked once they are all in: ``_check_unique_names``, ``_check_index``."""
    if index is None:
        return None
    wm = weight_map(index)

    def check(shard: str, names: Iterable[str]) -> None:
        for name in names:
            if name not in wm:
                extra = sum(1 for n in names if n not in wm) + 1  # the rest of this header's names
                raise errors.InvalidIndexError(f"{_INDEX} does not list {extra} tensor(s) of the shards, e.g. "
                                               f"{_short(name)} of {shard}")

    return check


#: the config.json spellings of the layer count (root or text_config), as families and transformers read them
_LAYER_KEYS = ("n_layers", "num_hidden_layers", "n_layer", "num_layers")


def _check_layer_count(config: Mapping, headers: Mapping[str, Sequence[SourceTensor]]) -> None:
    """The layers config.json counts must all be in the weights: a layer with no tensor is a missing
    tensor (MissingTensorError, naming one). Checked on config.json as written, before transformers
    reads it (a config class may build a list per layer), against the block numbers of the tensors'
    names, so what a config may claim is bounded by what the files hold, not by a fixed cap.
    (``TextFamily.check_tensors`` checks each layer's tensors once they are planned.)"""
    merged = {**config, **config["text_config"]} if isinstance(config.get("text_config"), dict) else config
    claims = [(k, merged[k]) for k in _LAYER_KEYS if type(merged.get(k)) is int]
    if not claims:
        return  # the family's default, or a type check_hparams refuses
    key, count = max(claims, key=lambda kv: kv[1])
    held: dict[int, SourceTensor] = {}
    for tensors in headers.values():
        for t in tensors:
            bid = _block_id(t.name)
            if bid is not None:
                held.setdefault(bid, t)
    if count <= len(held) and all(b in held for b in range(count)):
        return
    bid = next(b for b in range(len(held) + 1) if b not in held)
    like = held.get(0) or next(iter(held.values()), None)
    files = sorted(headers)
    where = files[0] if len(files) == 1 else f"the {len(files)} shards ({files[0]}, ...)"
    hint = f" (such as {_renumbered(like.name, bid)})" if like is not None else ""
    raise errors.MissingTensorError(f"config.json: {key} is {count} but {where} hold(s) no tensor of layer "
                                    f"{bid}{hint}: a layer without tensors is missing")


def _renumbered(name: str, bid: int) -> str:
    """``name`` with its first number (its block) replaced by ``bid``."""
    parts = name.split(".")
    at = next(i for i, p in enumerate(parts) if p.isdecimal())
    return _short(".".join(parts[:at] + [str(bid)] + parts[at + 1:]))[1:-1]


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
