"""The plan: headers + config + options -> every output tensor, its type, and all metadata.

Pure: no network, no files. The pipeline fetches what the plan needs and executes it.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from itertools import chain
from typing import Callable, Iterable, Mapping, Sequence

import gguf
import numpy as np
from gguf import GGMLQuantizationType as QT

from . import errors, meta, mixplan, quant
from .arch import family_for
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
    hparams = load_config(config_blob)
    # the reference reads config.json through transformers' AutoConfig: defaults and rope normalization
    family = family_for(normalize(hparams, name_or_path=repo_name))
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
    check_shapes(family.hparams, sources, rules=family.shape_rules or SHAPE_RULES,
                 sizes={**_SIZES, **family.shape_sizes})
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


# --- tensor shapes that config.json fixes ------------------------------------------------------

#: Sizes a source tensor's shape is made of: the config.json spellings (first one set wins). A family
#: with other shapes adds its own (``TextFamily.shape_sizes``).
_SIZES: dict[str, tuple[str, ...]] = {
    "vocab": ("vocab_size",),
    "hidden": ("hidden_size", "n_embd"),
    "heads": ("num_attention_heads", "n_head"),
    "kv_heads": ("num_key_value_heads", "n_head_kv", "num_attention_heads", "n_head"),
    "head_dim": ("head_dim",),  # hidden / heads when not set
    "ffn": ("intermediate_size",),
    "moe_ffn": ("moe_intermediate_size", "intermediate_size"),
    "shared_ffn": ("shared_expert_intermediate_size",),
}
_L = r"model\.layers\.\d+\."
#: Source tensors (standard transformers names, after the family's ``source_name``) whose shape
#: config.json fixes, as transformers builds the modules: a checkpoint that disagrees would not load
#: there, and here it would crash a transform (the q/k permute) or write a GGUF llama.cpp refuses.
#: Each dimension is a product of factors, each a size of _SIZES or a sum of them (``heads*nope+rope`` is
#: heads x (nope + rope)); a dimension whose sizes the config does not set is skipped. Names of other
#: families (fused qkv, GPT-2's c_attn, ...) match no rule; a family with its own shapes has its own
#: rules (``TextFamily.shape_rules``).
SHAPE_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (r"model\.embed_tokens\.weight", ("vocab", "hidden")),
    (r"lm_head\.weight", ("vocab", "hidden")),
    (_L + r"self_attn\.q_proj\.weight", ("heads*head_dim", "hidden")),
    (_L + r"self_attn\.[kv]_proj\.weight", ("kv_heads*head_dim", "hidden")),
    (_L + r"self_attn\.o_proj\.weight", ("hidden", "heads*head_dim")),
    (_L + r"self_attn\.q_proj\.bias", ("heads*head_dim",)),
    (_L + r"self_attn\.[kv]_proj\.bias", ("kv_heads*head_dim",)),
    (_L + r"self_attn\.[qk]_norm\.weight", ("head_dim",)),
    (_L + r"mlp\.(gate|up)_proj\.weight", ("ffn", "hidden")),
    (_L + r"mlp\.down_proj\.weight", ("hidden", "ffn")),
    (_L + r"mlp\.experts\.\d+\.(gate|up)_proj\.weight", ("moe_ffn", "hidden")),
    (_L + r"mlp\.experts\.\d+\.down_proj\.weight", ("hidden", "moe_ffn")),
    (_L + r"mlp\.shared_expert\.(gate|up)_proj\.weight", ("shared_ffn", "hidden")),
    (_L + r"mlp\.shared_expert\.down_proj\.weight", ("hidden", "shared_ffn")),
    (_L + r"block_sparse_moe\.experts\.\d+\.w[13]\.weight", ("ffn", "hidden")),
    (_L + r"block_sparse_moe\.experts\.\d+\.w2\.weight", ("hidden", "ffn")),
    (r"model\.norm\.weight", ("hidden",)),
    (_L + r"(input|post_attention|pre_feedforward|post_feedforward)_layernorm\.weight", ("hidden",)),
)


@functools.cache
def _patterns(rules: tuple[tuple[str, tuple[str, ...]], ...]) -> tuple[re.Pattern, list[tuple[str, ...]]]:
    """One regex for a rule table (a group per rule, the first rule that matches wins): checking a
    name is one match, not one per rule (DeepSeek-V3 has ~92k source tensors)."""
    return re.compile("|".join(f"(?P<r{i}>{p})" for i, (p, _) in enumerate(rules))), [d for _, d in rules]


def check_shapes(hparams: Mapping[str, object], sources: Iterable[tuple[str, SourceTensor]], *,
                 rules: tuple[tuple[str, tuple[str, ...]], ...] = SHAPE_RULES,
                 sizes: Mapping[str, tuple[str, ...]] = _SIZES) -> None:
    """Refuse a source tensor whose shape disagrees with config.json (ConfigMismatchError)."""
    known: dict[str, tuple[str, int]] = {}
    for size, keys in sizes.items():
        key = next((k for k in keys if type(hparams.get(k)) is int), None)
        if key is not None:
            known[size] = (key, hparams[key])
    if "head_dim" not in known and "hidden" in known and "heads" in known and known["heads"][1] > 0:
        known["head_dim"] = (f"{known['hidden'][0]} / {known['heads'][0]}", known["hidden"][1] // known["heads"][1])
    pattern, rule_dims = _patterns(rules)
    for name, src in sources:
        match = pattern.fullmatch(name)
        if match is None:
            continue
        dims = rule_dims[int(match.lastgroup[1:])]
        factors = [[f.split("+") for f in dim.split("*")] for dim in dims]
        used_sizes = [s for fs in factors for f in fs for s in f]
        if any(s not in known for s in used_sizes):
            continue
        want = [math.prod(sum(known[s][1] for s in f) for f in fs) for fs in factors]
        if list(src.shape) != want:
            used = ", ".join(dict.fromkeys(f"{known[s][0]} {known[s][1]}" for s in used_sizes))
            raise errors.ConfigMismatchError(
                f"{src.file}: tensor {_short(src.name)} has shape {list(src.shape)} but config.json "
                f"makes it {want} ({used})")
