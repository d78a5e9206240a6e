"""What every text model family shares: hyperparameter keys, tensor naming, shape checks, vocab choice.

A family module subclasses ``TextFamily``, names the HF architectures and config ``model_type``s it
takes, and overrides only what differs (extra hyperparameters, shape rules, tensor transforms,
expert stacks, vocabulary).

Every family gets the completeness check (``TextFamily.check_tensors``) after its tensors are
planned: each layer config.json counts has tensors, each layer has every tensor the other layers
of its kind have and those the family requires (``required_tensors``; ``optional_tensors`` names
the ones a layer may lack), and every source tensor is converted, read as a value
(``value_tensors``) or left out on purpose (``source_name`` returns None). Otherwise one line names
the first tensor missing, or unused: llama.cpp would refuse the file, or the conversion would
silently drop weights. The default is strict: one kind of layer. A family with layers of several
kinds (attention and recurrent, dense and MoE) names each layer's kind from its config
(``layer_kind``), and each kind is held to its own tensors.

Names are mapped one at a time (``map_name``): gguf's name map for one block, the block number
put back, so planning costs the same per tensor whatever config.json claims about the layers.
"""

from __future__ import annotations

import functools
import math
import re
from functools import cached_property
from typing import Any, ClassVar, Iterable, Iterator, Mapping, Sequence

import gguf
import numpy as np

from .. import errors, jsonfile, prequant
from ..graph import Node, Stack
from ..hfconfig import INT_HPARAMS, check_hparams
from ..quant import OutType
from ..safetensors import SourceTensor

#: Source tensors the reference drops without mapping them.
_IGNORED_SUFFIXES = (".attention.masked_bias", ".attention.bias", ".rotary_emb.inv_freq")
#: Multimodal parts a text conversion leaves out.
_MULTIMODAL_PREFIXES = ("mlp", "vit.", "vpm.", "siglip2.", "conformer.", "merger.", "resampler.",
                        "sound_encoder.", "sound_projection.", "speech_embeddings.")
_MULTIMODAL_PARTS = ("visual.", "vision.", "audio.", "talker.", "vision_", "audio_", "token2wav.",
                     "code2wav.", "projector.", "pre_mm_projector_norm", "image_newline", "view_seperator",
                     "patch_embed", "patch_embedding", "patch_merger.", "patch_merge_mlp.", "model.connector.")
#: the same, one search per name (a header may hold hundreds of thousands)
_MULTIMODAL_SEARCH = re.compile("|".join(map(re.escape, _MULTIMODAL_PARTS)))


# --- tensor shapes that config.json fixes ------------------------------------------------------

#: Sizes a source tensor's shape is made of: the config.json spellings (first one set wins).
SIZES: Mapping[str, tuple[str, ...]] = {
    "vocab": ("vocab_size",),
    "hidden": ("hidden_size", "n_embd"),
    "heads": ("num_attention_heads", "n_head"),
    "kv_heads": ("num_key_value_heads", "n_head_kv", "num_attention_heads", "n_head"),
    "head_dim": ("head_dim",),  # hidden / heads when not set
    "ffn": ("intermediate_size",),
    "moe_ffn": ("moe_intermediate_size", "intermediate_size"),
    "shared_ffn": ("shared_expert_intermediate_size",),
}
LAYER = r"model\.layers\.\d+\."
#: A shape rule: a regular expression matched against a whole source tensor name (after the family's
#: ``source_name``), and the tensor's dimensions, each a product of SIZES joined by ``*``, where a factor
#: may be a sum joined by ``+`` (``heads*nope+rope`` is heads x (nope + rope): MLA's query heads); a size may
#: also be a literal number (``2*ffn``: a fused gate and up projection).
ShapeRule = tuple[str, tuple[str, ...]]
#: The standard transformers names of a llama-like decoder. A checkpoint that disagrees with config.json
#: would not load in transformers, and here it would crash a transform (the q/k permute) or write a
#: GGUF llama.cpp refuses. A dimension whose sizes the config does not set is not checked; names of
#: other layouts (fused qkv, GPT-2's c_attn, ...) match no rule.
DECODER_SHAPES: tuple[ShapeRule, ...] = (
    (r"model\.embed_tokens\.weight", ("vocab", "hidden")),
    (r"lm_head\.weight", ("vocab", "hidden")),
    (LAYER + r"self_attn\.q_proj\.weight", ("heads*head_dim", "hidden")),
    (LAYER + r"self_attn\.[kv]_proj\.weight", ("kv_heads*head_dim", "hidden")),
    (LAYER + r"self_attn\.o_proj\.weight", ("hidden", "heads*head_dim")),
    (LAYER + r"self_attn\.q_proj\.bias", ("heads*head_dim",)),
    (LAYER + r"self_attn\.[kv]_proj\.bias", ("kv_heads*head_dim",)),
    (LAYER + r"self_attn\.[qk]_norm\.weight", ("head_dim",)),
    (LAYER + r"mlp\.(gate|up)_proj\.weight", ("ffn", "hidden")),
    (LAYER + r"mlp\.down_proj\.weight", ("hidden", "ffn")),
    (LAYER + r"mlp\.experts\.\d+\.(gate|up)_proj\.weight", ("moe_ffn", "hidden")),
    (LAYER + r"mlp\.experts\.\d+\.down_proj\.weight", ("hidden", "moe_ffn")),
    (LAYER + r"mlp\.shared_expert\.(gate|up)_proj\.weight", ("shared_ffn", "hidden")),
    (LAYER + r"mlp\.shared_expert\.down_proj\.weight", ("hidden", "shared_ffn")),
    (LAYER + r"block_sparse_moe\.experts\.\d+\.w[13]\.weight", ("ffn", "hidden")),
    (LAYER + r"block_sparse_moe\.experts\.\d+\.w2\.weight", ("hidden", "ffn")),
    (r"model\.norm\.weight", ("hidden",)),
    (LAYER + r"(input|post_attention|pre_feedforward|post_feedforward)_layernorm\.weight", ("hidden",)),
)


def check_shapes(hparams: Mapping[str, Any], rules: Sequence[ShapeRule], sizes: Mapping[str, tuple[str, ...]],
                 sources: Iterable[tuple[str, SourceTensor]]) -> None:
    """Refuse a source tensor whose shape disagrees with config.json (ConfigMismatchError)."""
    known: dict[str, tuple[str, int]] = {}
    for size, keys in sizes.items():
        key = next((k for k in keys if type(hparams.get(k)) is int), None)
        if key is not None:
            known[size] = (key, hparams[key])
    if "head_dim" not in known and "hidden" in known and "heads" in known and known["heads"][1] > 0:
        known["head_dim"] = (f"{known['hidden'][0]} / {known['heads'][0]}", known["hidden"][1] // known["heads"][1])
    pattern, rule_dims = _compiled(tuple(rules))
    for name, src in sources:
        match = pattern.fullmatch(name)
        if match is None or match.lastgroup is None:  # (every alternative is a named group)
            continue
        dims = rule_dims[int(match.lastgroup[1:])]
        factors = [[f.split("+") for f in dim.split("*")] for dim in dims]
        used_sizes = [s for fs in factors for f in fs for s in f if not s.isdecimal()]
        if any(s not in known for s in used_sizes):
            continue
        want = [math.prod(sum(int(s) if s.isdecimal() else known[s][1] for s in f) for f in fs) for fs in factors]
        if list(src.shape) != want:
            used = ", ".join(dict.fromkeys(f"{known[s][0]} {known[s][1]}" for s in used_sizes))
            raise errors.ConfigMismatchError(
                f"{src.file}: tensor {_short(src.name)} has shape {list(src.shape)} but config.json "
                f"makes it {want} ({used})")


@functools.cache
def _compiled(rules: tuple[ShapeRule, ...]) -> tuple[re.Pattern[str], list[tuple[str, ...]]]:
    """One regex for a rule table, a group per rule (the first rule that matches wins): checking a name
    is one match, not one per rule (DeepSeek-V3 has ~92k source tensors)."""
    return re.compile("|".join(f"(?P<r{i}>{p})" for i, (p, _) in enumerate(rules))), [d for _, d in rules]


def _short(value: object, limit: int = 60) -> str:
    """repr of a value from a file, cut so a hostile one cannot flood the error line."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."



#: what llama.cpp's loader needs of every decoder: embedding, final norm, and in each layer the
#: attention's input norm and output projection (the rest differ: fused or split, MoE or dense)
REQUIRED_TENSORS: tuple[gguf.MODEL_TENSOR, ...] = (
    gguf.MODEL_TENSOR.TOKEN_EMBD, gguf.MODEL_TENSOR.OUTPUT_NORM, gguf.MODEL_TENSOR.ATTN_NORM,
    gguf.MODEL_TENSOR.ATTN_OUT)


#: what a hybrid requires of every layer: some of its layers have no attention (their kind holds
#: them to their own)
HYBRID_REQUIRED_TENSORS: tuple[gguf.MODEL_TENSOR, ...] = REQUIRED_TENSORS[:3]

_T = gguf.MODEL_TENSOR
#: the tensors a layer of each kind (``TextFamily.layer_kind``, its ``+``-joined tags) must have, even
#: when it is the only layer of its kind; kinds its architecture does not have are ignored
LAYER_KIND_TENSORS: dict[str, tuple[gguf.MODEL_TENSOR, ...]] = {
    "attention": (_T.ATTN_Q, _T.ATTN_K, _T.ATTN_V, _T.ATTN_OUT),
    "dense": (_T.FFN_UP, _T.FFN_DOWN),
    "moe": (_T.FFN_GATE_INP, _T.FFN_UP_EXP, _T.FFN_DOWN_EXP),
    "ssm": (_T.SSM_IN, _T.SSM_CONV1D, _T.SSM_OUT),  # Mamba-2
    "linear": (_T.ATTN_QKV, _T.ATTN_GATE, _T.SSM_CONV1D, _T.SSM_OUT),  # a gated delta net
    "conv": (_T.SHORTCONV_CONV, _T.SHORTCONV_INPROJ, _T.SHORTCONV_OUTPROJ),  # LFM2's short convolution
}


#: a vision tower block's tensor in a projector (``v.blk.{bid}.``)
_VISION_BLOCK = re.compile(r"v\.blk\.(\d{1,9})\.")


def _first_number(name: str) -> int | None:
    """The first all-digit part of a dotted name (the block, as the reference reads it), if short."""
    for part in name.split("."):
        if part.isdecimal():
            return int(part) if len(part) <= 9 else None
    return None


def _with_bid_field(name: str, bid: int) -> str:
    """``name`` with its first dotted part that is ``bid`` written ``{bid}`` (``blk.7.attn_q.weight`` ->
    ``blk.{bid}.attn_q.weight``). String operations, not a pattern made per block: a pattern per block
    number overflows ``re``'s cache on a model with thousands of layers, and compiling is most of the time."""
    parts = name.split(".")
    digits = str(bid)
    for i, part in enumerate(parts):
        if part == digits:
            parts[i] = "{bid}"
            return ".".join(parts)
    return name


def _usual_source(kind: gguf.MODEL_TENSOR, prefixes: set[str], bid: int | None) -> str:
    """A Hugging Face name gguf knows for ``kind`` that starts as the repo's names do (``model.`` ...)."""
    keys = [*gguf.TensorNameMap.mappings_cfg.get(kind, ()), *gguf.TensorNameMap.block_mappings_cfg.get(kind, ())]
    keys = [k.format(bid=bid) if "{bid}" in k else k for k in keys if ("{bid}" in k) == (bid is not None)]
    match = next((k for k in keys if k.split(".", 1)[0] in prefixes), keys[0] if keys else "")
    return match + ".weight" if match else ""


class ExpertStacks:
    """MoE experts arrive one tensor at a time (maybe across shards); once a layer's are all there,
    each projection becomes one ``Stack`` over the experts, written expert by expert.

    ``source`` and ``output`` are name templates with ``{bid}``, ``{xid}`` (source only) and ``{proj}``.
    """

    def __init__(self, n_experts: int, projections: Sequence[str], source: str, output: str):
        self.n_experts = n_experts
        self.projections = tuple(projections)
        self.source = source
        self.output = output
        self._layers: dict[int, dict[str, Node]] = {}

    def add(self, name: str, node: Node, bid: int | None, map_name) -> Iterator[tuple[str, Node]]:
        """Keep ``name``; when its layer is complete, yield (output name, stack) per projection."""
        if bid is None:
            raise errors.UnsupportedArchitectureError(f"expert tensor {name!r} has no layer number")
        layer = self._layers.setdefault(bid, {})
        layer[name] = node
        if len(layer) < self.n_experts * len(self.projections):
            return
        for proj in self.projections:
            parts = []
            for xid in range(self.n_experts):
                key = self.source.format(bid=bid, xid=xid, proj=proj)
                if key not in layer:
                    raise errors.InvalidHeaderError(f"expert tensor {key!r} is missing")
                parts.append(layer.pop(key))
            yield map_name(self.output.format(bid=bid, proj=proj)), Stack(tuple(parts))
        if layer:
            raise errors.InvalidHeaderError(f"unexpected expert tensor {sorted(layer)[0]!r}")
        del self._layers[bid]

    def check_complete(self) -> None:
        """After the last source tensor: every collected expert must have been stacked."""
        left = sorted(n for layer in self._layers.values() for n in layer)
        if left:
            raise errors.InvalidHeaderError(f"incomplete expert set, e.g. {left[0]!r}")

# --- sentence-transformers: the pooling of an embedding model --------------------------------------

_POOLING_MODES = {"mean": gguf.PoolingType.MEAN, "cls": gguf.PoolingType.CLS, "lasttoken": gguf.PoolingType.LAST}
_POOLING_FLAGS = (("pooling_mode_mean_tokens", gguf.PoolingType.MEAN), ("pooling_mode_cls_token", gguf.PoolingType.CLS),
                  ("pooling_mode_lasttoken", gguf.PoolingType.LAST))


def sentence_transformers_pooling(files: Mapping[str, bytes]) -> gguf.PoolingType | None:
    """The pooling of a sentence-transformers repo: the first ``*Pooling`` module of ``modules.json``
    and its ``config.json`` (mean, CLS or last token); None without ``modules.json``."""
    if "modules.json" not in files:
        return None
    modules = jsonfile.load(files["modules.json"], "modules.json", expect=list)
    path = next((m.get("path") for m in modules
                 if isinstance(m, dict) and str(m.get("type", "")).endswith("Pooling")), None)
    if path is None:
        return None
    name = f"{path}/config.json"
    if name not in files:
        raise errors.UnsupportedArchitectureError(
            f"modules.json puts the pooling config in {name!r}; hfstream reads it only from 1_Pooling/config.json")
    pooling = jsonfile.load(files[name], name, expect=dict)
    for flag, kind in _POOLING_FLAGS:
        if pooling.get(flag):
            return kind
    if (mode := pooling.get("pooling_mode")) in _POOLING_MODES:
        return _POOLING_MODES[mode]
    raise errors.UnsupportedArchitectureError(f"{name}: only mean, CLS and last-token pooling are supported")


class TextFamily:
    """A decoder-only text model family. Subclasses set the class attributes below."""

    #: HF ``architectures[0]`` values this family converts
    hf_architectures: ClassVar[tuple[str, ...]] = ()
    #: config.json ``model_type``s this family is written for. transformers' config class of each
    #: gives the hparams (``hfconfig.normalize``); if the installed transformers does not know one, the
    #: conversion is refused rather than done on the raw config.json the reference would fall back to.
    model_types: ClassVar[tuple[str, ...]] = ()
    #: where the hparams come from: "transformers" (``AutoConfig``, as ``ModelBase.load_hparams``) or
    #: "config.json" as written (reference classes that open it themselves, e.g. the Mamba-2 ones)
    config_source: ClassVar[str] = "transformers"
    #: the llama.cpp architecture written to ``general.architecture``
    gguf_arch: ClassVar[gguf.MODEL_ARCH]
    #: an architecture newer than PyPI's gguf (0.19.0) knows: its name for ``general.architecture`` and
    #: its keys, and the tensor kinds it has beyond ``gguf_arch``'s, whose names it otherwise shares
    #: (DeepSeek-V3.2 is ``deepseek32``: DeepSeek-V2's tensors plus the indexer and MTP ones)
    arch_name: ClassVar[str | None] = None
    extra_tensor_kinds: ClassVar[tuple[gguf.MODEL_TENSOR, ...]] = ()
    #: vocab kinds to try, in order (see ``hfstream.vocab.add_vocab``)
    vocab_strategies: ClassVar[tuple[str, ...]] = ("bpe",)

    #: output tensors every model of the family has (the block ones in every layer): llama.cpp's loader
    #: needs them. Kinds the architecture does not have are ignored.
    required_tensors: ClassVar[tuple[gguf.MODEL_TENSOR, ...]] = REQUIRED_TENSORS
    #: block tensors a layer may lack although other layers have them (say MoE layers between dense
    #: ones); every other block tensor must be in every layer once it is in one
    optional_tensors: ClassVar[tuple[gguf.MODEL_TENSOR, ...]] = ()
    #: output tensors left out of the parameter count (``general.size_label``): ones hfstream writes
    #: beyond the reference's file (a projector's ``[IMG_BREAK]`` row), which must not move its keys
    uncounted_tensors: ClassVar[frozenset[str]] = frozenset()
    #: ``general.type``, and what the default file name looks like: ``{prefix}{Name}-{SizeLabel}-{FTYPE}.gguf``
    gguf_type: ClassVar[str] = gguf.GGUFType.MODEL
    filename_prefix: ClassVar[str] = ""
    size_label_in_filename: ClassVar[bool] = True

    #: shapes config.json fixes, checked on every source tensor before anything is fetched
    shape_rules: ClassVar[tuple[ShapeRule, ...]] = DECODER_SHAPES
    #: the config.json spellings of the sizes ``shape_rules`` use
    shape_sizes: ClassVar[Mapping[str, tuple[str, ...]]] = SIZES
    #: integer hyperparameters checked before any is used (``hfconfig.check_hparams``)
    hparam_ints: ClassVar[Mapping[str, tuple[tuple[str, ...], int, int]]] = INT_HPARAMS
    #: the sentence-transformers pooling of an embedding model (``read_pooling``), else None
    pooling: gguf.PoolingType | None = None
    #: source tensors (a regular expression matched against the whole stored name) whose values the
    #: reference writes as keys, e.g. Apertus' xIELU scalars: the pipeline reads them before the plan
    #: (each must be a single number, ``plan.value_sources``) and ``use_values`` gets them
    value_tensors: ClassVar[str | None] = None

    def __init__(self, hparams: Mapping[str, Any], hf_arch: str):
        self.hf_arch = hf_arch
        merged = dict(hparams)
        if isinstance(merged.get("text_config"), dict):
            merged = {**merged, **merged["text_config"]}
        self.hparams = merged
        check_hparams(merged, ints=self.hparam_ints)  # before any value is used: types, bounds, divisibility
        self.block_count = int(self.find(("n_layers", "num_hidden_layers", "n_layer", "num_layers")))
        self.rope = self._rope_parameters()

    @cached_property
    def tensor_map(self) -> gguf.TensorNameMap:
        """gguf's name map for every block (its size grows with the block count: 2M entries and a minute
        for 7,000 layers); ``map_name`` does not need it."""
        return self.name_map(self.mapped_blocks)

    @property
    def mapped_blocks(self) -> int:
        """The blocks whose tensor names ``map_name`` maps: ``block_count``."""
        return self.block_count

    @cached_property
    def _block_map(self) -> gguf.TensorNameMap:
        return self.name_map(1)

    @classmethod
    def gguf_arch_name(cls) -> str:
        """What ``general.architecture`` says (and every architecture key starts with)."""
        return cls.arch_name or gguf.MODEL_ARCH_NAMES[cls.gguf_arch]

    @classmethod
    def tensor_kinds(cls) -> tuple[gguf.MODEL_TENSOR, ...]:
        return tuple(gguf.MODEL_TENSORS.get(cls.gguf_arch, ())) + cls.extra_tensor_kinds

    def name_map(self, n_blocks: int) -> gguf.TensorNameMap:
        """gguf's map from HF names to GGUF names for ``gguf_arch``, with ``extra_tensor_kinds``' names
        (gguf 0.19.0 has their HF spellings, only not under the newer architecture)."""
        names = gguf.get_tensor_name_map(self.gguf_arch, n_blocks)
        for kind in self.extra_tensor_kinds:
            template = gguf.TENSOR_NAMES[kind]
            block = "{bid}" in template
            keys = (names.block_mappings_cfg if block else names.mappings_cfg).get(kind, ())
            for bid in range(n_blocks) if block else (None,):
                new = template.format(bid=bid) if block else template
                for key in (new, *(k.format(bid=bid) for k in keys)):
                    names.mapping[key] = (kind, new)
        return names

    # -- hyperparameters ------------------------------------------------------

    def find(self, keys: Sequence[str], optional: bool = False) -> Any:
        for k in keys:
            if k in self.hparams:
                return self.hparams[k]
        if optional:
            return None
        raise errors.InvalidConfigError(f"config.json: none of {', '.join(keys)} is set")

    def _rope_parameters(self) -> dict[str, Any]:
        """rope_parameters (or legacy rope_scaling) with the global keys mirrored in, as the reference does."""
        rope = dict(self.hparams.get("rope_parameters", self.hparams.get("rope_scaling")) or {})
        if "full_attention" in rope or "sliding_attention" in rope:
            return rope
        theta = self.find(("global_rope_theta", "rope_global_theta", "rope_theta_global", "rope_theta",
                           "rotary_emb_base"), optional=True)
        local_theta = self.find(("local_rope_theta", "rope_local_theta", "rope_theta_local", "swa_rope_theta",
                                 "rope_local_base_freq"), optional=True)
        partial = self.find(("partial_rotary_factor", "rope_pct", "rope_percent"), optional=True)
        orig_ctx = self.find(("original_max_position_embeddings",), optional=True)
        if local_theta is not None:
            rope["sliding_attention"] = {"rope_theta": local_theta}
        if "rope_theta" not in rope and theta is not None:
            rope["rope_theta"] = theta
        if "rope_type" not in rope and rope.get("type") is not None:
            rope["rope_type"] = rope["type"]
        if "partial_rotary_factor" not in rope and partial is not None:
            rope["partial_rotary_factor"] = partial
        if "original_max_position_embeddings" not in rope and orig_ctx is not None:
            rope["original_max_position_embeddings"] = orig_ctx
        return rope

    def add_hparams(self, w: gguf.GGUFWriter, file_type: int) -> None:
        """The architecture keys, in the reference's order; ``general.file_type`` last."""
        f = lambda keys: self.find(keys, optional=True)  # noqa: E731
        w.add_block_count(self.block_count)
        if (v := f(("max_position_embeddings", "n_ctx", "n_positions", "max_length", "max_sequence_length",
                    "model_max_length"))) is not None:
            w.add_context_length(v)
        if (v := f(("hidden_size", "n_embd", "dim"))) is not None:
            w.add_embedding_length(v)
        if (v := f(("prefix_dense_intermediate_size", "dense_intermediate_size", "intermediate_size", "n_inner",
                    "hidden_dim"))) is not None:
            w.add_feed_forward_length(v)
        if (v := f(("num_attention_heads", "n_head", "n_heads"))) is not None:
            w.add_head_count(v)
        if (v := f(("num_key_value_heads", "n_kv_heads"))) is not None:
            w.add_head_count_kv(v)
        if self.hparams.get("is_causal") is False:
            w.add_causal_attention(False)
        self._add_rope_scaling(w)
        rope = self.rope.get("full_attention", self.rope)
        if "mrope_section" in self.rope:
            sections = list(self.rope["mrope_section"])
            sections += [0] * (4 - len(sections))
            w.add_rope_dimension_sections(sections[:4])
        if (v := rope.get("rope_theta")) is not None:
            w.add_rope_freq_base(v)
        if (v := self.rope.get("sliding_attention", {}).get("rope_theta")) is not None:
            w.add_rope_freq_base_swa(v)
        if (v := f(("rms_norm_eps", "norm_eps"))) is not None:
            w.add_layer_norm_rms_eps(v)
        if (v := f(("layer_norm_eps", "layer_norm_epsilon", "norm_epsilon"))) is not None:
            w.add_layer_norm_eps(v)
        if (v := f(("num_local_experts", "num_experts", "n_routed_experts"))) is not None:
            w.add_expert_count(v)
        if (v := f(("num_experts_per_tok", "num_experts_per_token", "top_k_experts"))) is not None:
            w.add_expert_used_count(v)
        if (v := self.hparams.get("n_group")) is not None:
            w.add_expert_group_count(v)
        if (v := self.hparams.get("topk_group")) is not None:
            w.add_expert_group_used_count(v)
        score = f(("score_function", "scoring_func", "score_func", "moe_router_activation",
                   "moe_router_activation_func", "expert_selection_fn"))
        if score is not None:
            # the reference's ExpertGatingFuncType values (gguf 0.19 lacks SQRTSOFTPLUS, DeepSeek-V4's)
            gating = {"softmax": 1, "sigmoid": 2, "sqrtsoftplus": 4}
            if score not in gating:
                raise errors.InvalidConfigError(f"config.json: unsupported expert gating function {score!r}")
            w.add_uint32(gguf.Keys.LLM.EXPERT_GATING_FUNC.format(arch=w.arch), gating[score])
        if (v := self.hparams.get("head_dim")) is not None:
            w.add_key_length(v)
            w.add_value_length(v)
        w.add_file_type(file_type)

    def _add_rope_scaling(self, w: gguf.GGUFWriter) -> None:
        rope = self.rope.get("full_attention", self.rope)
        rope_type = rope.get("rope_type")
        if rope_type is None:
            return
        factor = rope.get("factor")
        if rope_type == "linear" and factor is not None:
            w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            w.add_rope_scaling_factor(factor)
        elif rope_type == "yarn" and factor is not None:
            w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
            w.add_rope_scaling_factor(factor)
            if "original_max_position_embeddings" not in rope:
                raise errors.InvalidConfigError("config.json: yarn rope scaling needs original_max_position_embeddings")
            w.add_rope_scaling_orig_ctx_len(rope["original_max_position_embeddings"])
            if (v := rope.get("extrapolation_factor")) is not None:
                w.add_rope_scaling_yarn_ext_factor(v)
            if (v := rope.get("attention_factor", rope.get("attn_factor"))) is not None:
                w.add_rope_scaling_yarn_attn_factor(v)
            if (v := rope.get("beta_fast")) is not None:
                w.add_rope_scaling_yarn_beta_fast(v)
            if (v := rope.get("beta_slow")) is not None:
                w.add_rope_scaling_yarn_beta_slow(v)
        elif rope_type in ("su", "longrope"):
            w.add_rope_scaling_type(gguf.RopeScalingType.LONGROPE)
        # "dynamic" and "llama3" are handled by the families that use them

    # -- tensors --------------------------------------------------------------

    def check_shapes(self, sources: Iterable[tuple[str, SourceTensor]]) -> None:
        """Refuse a source tensor (converted name, tensor) whose shape disagrees with config.json."""
        check_shapes(self.hparams, self.shape_rules, self.shape_sizes, sources)

    def source_name(self, name: str) -> str | None:
        """The name a source tensor is converted under, or None to leave it out."""
        if name.startswith(_MULTIMODAL_PREFIXES) or _MULTIMODAL_SEARCH.search(name):
            return None
        if name.endswith("e_score_correction_bias"):
            name = name.replace("e_score_correction_bias", "e_score_correction.bias")
        name = name.replace("language_model.", "")
        if name.endswith(_IGNORED_SUFFIXES):
            return None
        return name

    def source_nodes(self, sources: Sequence[tuple[str, SourceTensor]]) -> list[tuple[str, Node]]:
        """Each source tensor (name after ``source_name``) as the node ``convert`` gets, in order: a load,
        or for a pre-quantized checkpoint the dequantized weight, its scales dropped (``prequant``)."""
        return prequant.source_nodes(self.hparams, sources)

    def use_files(self, files: Mapping[str, bytes]) -> None:
        """Called once with the repo's small files (config, tokenizer, ...) before any tensor is
        converted, for families whose tensors depend on them (e.g. Gemma 3 cuts the embedding to the
        tokenizer's size)."""

    def use_sources(self, sources: Sequence[tuple[str, SourceTensor]]) -> None:
        """Called once with every source tensor (its ``source_name`` and header entry), in the
        reference's order, before ``extra_tensors``: for families whose generated tensors are made
        from source tensors (gpt-oss repacks its MXFP4 experts ahead of every other tensor)."""

    def use_values(self, values: Mapping[str, np.ndarray]) -> None:
        """Called once, before any tensor is converted, with the float32 values of the source tensors
        ``value_tensors`` selects, by stored name."""

    def extra_tensors(self) -> Iterable[tuple[str, Node]]:
        """Tensors generated from the config (and the sources); they come first in the file."""
        return ()

    def output_type(self, out: OutType) -> OutType:
        """The ``--outtype`` as this model writes it (gpt-oss's MXFP4 checkpoints record another
        ``general.file_type`` for f32, f16 and bf16)."""
        return out

    def use_outtype(self, out: OutType) -> None:
        """Called once with the outtype decided (``output_type``'s), before any tensor is converted:
        for families whose forced types depend on it (a projector's patch embedding)."""
        self.out = out

    def read_pooling(self, files: Mapping[str, bytes]) -> None:
        """Remember the sentence-transformers pooling of the repo (``add_pooling`` writes it); for families
        that may be embedding models, from their ``use_files``."""
        self.pooling = sentence_transformers_pooling(files)

    def add_pooling(self, w: gguf.GGUFWriter) -> None:
        """The pooling keys of an embedding model, as the reference's ``_try_set_pooling_type`` writes
        them: the sentence-transformers pooling (``read_pooling``), then the pooling before a
        classification head (config ``classifier_pooling``)."""
        if self.pooling is not None:
            w.add_pooling_type(self.pooling)
        if (mode := self.hparams.get("classifier_pooling")) is not None:
            if mode not in ("cls", "mean"):
                raise errors.InvalidConfigError(f"config.json: unsupported classifier_pooling {mode!r}")
            w.add_uint32(f"{w.arch}.classifier.pooling_type", int(_POOLING_MODES[mode]))

    def add_tensor_time_hparams(self, w: gguf.GGUFWriter) -> None:
        """Keys the reference writes while it converts tensors, hence right after ``general.architecture``
        and before ``general.type`` (e.g. Phi-3's LongRoPE attention factor). Called once, after ``finish``."""

    def convert(self, name: str, node: Node, bid: int | None) -> Iterator[tuple[str, Node]]:
        """Output tensors for one source tensor (none, if it is buffered for a later one)."""
        yield self.map_name(name), node

    def finish(self) -> Iterator[tuple[str, Node]]:
        """Called after the last source tensor; raises if something buffered was never used."""
        return iter(())

    def map_name(self, name: str, suffixes: Sequence[str] = (".weight", ".bias")) -> str:
        """The llama.cpp name of source tensor ``name`` (after ``source_name``), as gguf's name map for
        ``block_count`` blocks gives it, ``suffixes`` kept as they are; UnusedTensorError when it has none."""
        new = self._lookup(name, tuple(suffixes))
        if new is None:
            raise errors.UnusedTensorError(
                f"cannot map tensor {_short(name)} of {self.hf_arch} to a llama.cpp tensor name")
        return new

    def _lookup(self, name: str, suffixes: tuple[str, ...] = (".weight", ".bias")) -> str | None:
        parts = name.split(".")
        at = next((i for i, p in enumerate(parts) if p.isdecimal()), None)
        if at is not None and 0 < len(parts[at]) <= 9 and 0 < int(parts[at]) < self.mapped_blocks:
            # as block 0, then the block number put back (the first number of a name is its block, as
            # the reference reads it; no gguf key has a number before its {bid})
            hit = self._block_map.get_type_and_name(".".join(parts[:at] + ["0"] + parts[at + 1:]), suffixes)
            if hit is not None:  # a block key (some name a tensor of no block: rope_freqs)
                template = gguf.TENSOR_NAMES[hit[0]]
                return template.format(bid=int(parts[at])) + hit[1][len(template.format(bid=0)):]
        hit = self._block_map.get_type_and_name(name, suffixes)
        if hit is None or ("{bid}" in gguf.TENSOR_NAMES[hit[0]] and (at is None or parts[at] != "0"
                                                                      or self.mapped_blocks < 1)):
            return None
        return hit[1]

    def tensor_kind(self, gguf_name: str, bid: int | None) -> gguf.MODEL_TENSOR | None:
        """The kind of an output ``*.weight`` tensor (for the type rules), or None.

        ``bid`` is the block id of the source tensor, as the reference matches it.
        """
        for kind in self.tensor_kinds():
            template = gguf.TENSOR_NAMES[kind]
            if "{bid}" in template:
                if bid is None:
                    continue
                template = template.format(bid=bid)
            elif bid is not None:
                continue
            if gguf_name == template + ".weight":
                return kind
        return None

    def forced_type(self, gguf_name: str, bid: int | None, source_name: str | None) -> gguf.GGMLQuantizationType | None:
        """The type output tensor ``gguf_name`` must have whatever the outtype, or None to follow the
        type rules (``hfstream.quant``). The reference's ``tensor_force_quant``: e.g. MXFP4 experts
        repacked from the checkpoint stay MXFP4, a projector's patch embedding stays F16/F32. 1-D
        tensors and ``*_norm.weight`` are F32 even so, as there.

        ``source_name``: the source tensor it was converted from (None for one a family builds in
        ``finish``); ``bid``: that tensor's block id.
        """
        return None

    # -- completeness -----------------------------------------------------------

    def check_tensors(self, outputs: Mapping[str, Node], sources: Sequence[tuple[str, SourceTensor]]) -> None:
        """Refuse a model whose tensors are not all there, or not all used (see the module docstring).

        ``outputs``: every planned output tensor by GGUF name; ``sources``: every source tensor kept by
        ``source_name``. Linear in the tensors, whatever config.json claims. Raises MissingTensorError
        naming the first missing tensor (and the source tensor it would come from), or UnusedTensorError.
        """
        used = {leaf for node in outputs.values() for leaf in node.leaves()}
        for name, src in sources:
            if src not in used and not (self.value_tensors and re.fullmatch(self.value_tensors, name)):
                raise errors.UnusedTensorError(
                    f"{src.file}: tensor {_short(src.name)} is not used by the {self.hf_arch} conversion "
                    "(hfstream does not know what it is for)")
        kinds = {t: gguf.TENSOR_NAMES[t] for t in self.tensor_kinds()}
        blocks: dict[int, set[str]] = {}  # block -> its tensors' names with the block number as {bid}
        # (layer kind, such a name) -> (a block of that kind that has it, its output name)
        example: dict[tuple[str, str], tuple[int, str]] = {}
        for out in outputs:
            bid = self.output_block(out)
            if bid is None or bid >= self.block_count:
                continue
            generic = _with_bid_field(out, bid)
            blocks.setdefault(bid, set()).add(generic)
            example.setdefault((self.layer_kind(bid), generic), (bid, out))
        optional = {kinds[t] + suffix for t in self.optional_tensors if t in kinds for suffix in (".weight", ".bias")}
        required = [kinds[t] + ".weight" for t in self.required_tensors if t in kinds and "{bid}" in kinds[t]]
        def of_kind(kind: str) -> set[str]:
            return {*required, *(kinds[t] + ".weight" for tag in kind.split("+") for t in LAYER_KIND_TENSORS.get(tag, ())
                                 if t in kinds and "{bid}" in kinds[t])}

        everywhere: dict[str, set[str]] = {}  # layer kind -> the tensors each layer of that kind has
        for kind, generic in example:
            if kind not in everywhere:
                everywhere[kind] = of_kind(kind)
            if generic not in optional:
                everywhere[kind].add(generic)
        for t in self.required_tensors:
            if t in kinds and "{bid}" not in kinds[t] and kinds[t] + ".weight" not in outputs:
                self._missing(kinds[t] + ".weight", None, outputs, sources)
        # a layer with no tensors at all is found among the first len(blocks) + 1: linear in the data
        for bid in range(min(self.block_count, len(blocks) + 1)):
            kind = self.layer_kind(bid)
            lacking = (everywhere.get(kind) or of_kind(kind)) - blocks.get(bid, set())
            if lacking:  # the family's own required tensors first (a layer's first: its attention norm)
                first = next((g for g in required if g in lacking), min(lacking))
                self._missing(first.format(bid=bid), example.get((kind, first)), outputs, sources, bid)

    def output_block(self, gguf_name: str) -> int | None:
        """The block (layer) output tensor ``gguf_name`` belongs to for the completeness check: its first
        number, as the reference reads it."""
        return _first_number(gguf_name)

    def layer_kind(self, bid: int) -> str:
        """The kind of layer ``bid`` for the completeness check: each layer has every tensor the other
        layers of its kind have, and those ``LAYER_KIND_TENSORS`` lists for its tags (``"attention"``,
        ``"ssm+moe"``). One kind by default; a hybrid (attention and recurrent layers) or a model with
        dense and MoE layers names its kinds from its config, so that each kind is held to its own
        tensors (an attention layer without ``o_proj`` is still refused)."""
        return ""

    def _missing(self, name: str, like: tuple[int, str] | None, outputs: Mapping[str, Node],
                 sources: Sequence[tuple[str, SourceTensor]], bid: int | None = None) -> None:
        """Raise MissingTensorError for output ``name``, naming the source tensor it would be made from:
        ``like`` another block's tensor of its kind (its sources, the block number changed), else the
        usual spelling of the kind among gguf's names that looks like the repo's own."""
        hint = ""
        if like is not None:
            leaf = next(iter(outputs[like[1]].leaves()), None)
            if leaf is not None:
                hint = re.sub(rf"(^|\.){like[0]}(\.|$)", rf"\g<1>{bid}\g<2>", leaf.name, count=1)
        else:
            kind = next((t for t, n in gguf.TENSOR_NAMES.items() if n + ".weight" == name.replace(f".{bid}.", ".{bid}.")),
                        None)
            hint = _usual_source(kind, {src.name.split(".", 1)[0] for _, src in sources}, bid) if kind else ""
        files = sorted({src.file for _, src in sources}) or ["the weights"]
        where = files[0] if len(files) == 1 else f"the {len(files)} shards ({files[0]}, ...)"
        layers = f"; config.json counts {self.block_count} layers" if bid is not None else ""
        source = f" ({hint} is not in {where}{layers})" if hint else f" (not in {where}{layers})"
        raise errors.MissingTensorError(f"{self.hf_arch} needs tensor {name}, which is missing{source}")

    # -- vocab ----------------------------------------------------------------

    def add_vocab(self, w: gguf.GGUFWriter, files: Mapping[str, bytes], bpe_pre: str | None) -> None:
        from ..vocab import add_vocab

        add_vocab(w, files, self.hparams, strategies=self.vocab_strategies, bpe_pre=bpe_pre)


class ProjectorFamily(TextFamily):
    """The vision (or audio) encoder and projector of a multimodal checkpoint: llama.cpp's ``clip``
    model, the second file ``mmproj-*.gguf`` its multimodal runtime loads beside the text model (the
    reference's ``--mmproj``, its ``MmprojModel``).

    ``hparams`` is the vision config (``vision_config``); ``global_config`` the whole config.json as
    read; ``n_embd_text`` the text model's width the projector outputs. Image mean and std come from
    ``preprocessor_config.json`` and ``processor_config.json`` (``use_files``). Every tensor of the
    language model is left out. Subclasses register with ``@register_projector`` and name the
    projector type; everything not vision-specific is ``TextFamily``'s.

    A family with ``has_audio_encoder`` also converts the audio encoder of a repo whose config.json
    has an ``audio_config`` (``hparams_audio``, else None), into the same file, as the reference does.
    """

    gguf_arch = gguf.MODEL_ARCH.MMPROJ
    gguf_type = gguf.GGUFType.MMPROJ
    filename_prefix = "mmproj-"
    size_label_in_filename = False
    vocab_strategies = ()
    shape_rules = ()
    #: where a vision config says its layer count (the reference's ``n_block_keys``)
    block_keys: ClassVar[tuple[str, ...]] = ("n_layers", "num_hidden_layers", "n_layer", "num_layers", "depth",
                                             "layers", "encoder_layers", "vt_num_hidden_layers")
    #: source tensors the projector converts start with one of these (after ``language_model.`` is left out)
    tensor_prefixes: ClassVar[tuple[str, ...]] = ()
    #: the model may have an audio encoder too (``audio_config``), which goes in the same file
    has_audio_encoder: ClassVar[bool] = False

    def __init__(self, hparams: Mapping[str, Any], hf_arch: str):
        self.hf_arch = hf_arch
        self.global_config = dict(hparams)
        nested = hparams.get("text_config")
        text = {**hparams, **(nested if isinstance(nested, dict) else {})}
        self.n_embd_text = text.get("hidden_size", text.get("n_embd", 0))
        if type(self.n_embd_text) is not int or self.n_embd_text <= 0:
            raise errors.InvalidConfigError("config.json: the text model's hidden_size is not set")
        vision = hparams.get("vision_config")
        if not isinstance(vision, dict):
            raise errors.InvalidConfigError(f"config.json: {hf_arch} has no vision_config")
        self.hparams = dict(vision)
        check_hparams(self.hparams, name="config.json vision_config")
        audio = hparams.get("audio_config")
        self.hparams_audio: dict[str, Any] | None = None
        if self.has_audio_encoder and isinstance(audio, dict) and audio:
            self.hparams_audio = dict(audio)
            check_hparams(self.hparams_audio, name="config.json audio_config")
        self.block_count = int(self.find(self.block_keys))
        self.rope = {}
        self.preprocessor: dict[str, Any] = {}

    @property
    def mapped_blocks(self) -> int:
        # the reference maps the names of a two-encoder model for 128 blocks, whatever each has
        return max(128, self.block_count) if self.has_audio_encoder else self.block_count

    def _lookup(self, name: str, suffixes: tuple[str, ...] = (".weight", ".bias")) -> str | None:
        # gguf's whole map, as the reference: a tower's names may put the block number inside a part
        # (Gemma 4's conformer.subsample_conv_projection.layer0), and a tower has few blocks
        return self.tensor_map.get_name(key=name, try_suffixes=suffixes)

    def output_block(self, gguf_name: str) -> int | None:
        # only the vision tower's blocks (v.blk.N), the ones block_count counts: other numbers are no
        # block (the second frame's patch kernel v.patch_embd.weight.1, the merger's mm.0 / mm.2, a
        # deepstack merger after the block it reads), and an audio tower counts its own blocks
        m = _VISION_BLOCK.match(gguf_name)
        return int(m.group(1)) if m else None

    def use_files(self, files: Mapping[str, bytes]) -> None:
        """Image mean and std (and the rest of the image processing): ``preprocessor_config.json``
        (with ``media_proc_cfg`` lifted to the top), then ``processor_config.json`` over it (with its
        ``image_processor`` lifted), as the reference merges them."""
        from .. import jsonfile

        for name, nested in (("preprocessor_config.json", "media_proc_cfg"), ("processor_config.json", "image_processor")):
            if name in files:
                cfg = jsonfile.load(files[name], name, expect=dict)
                if isinstance(cfg.get(nested), dict):
                    cfg = {**cfg, **cfg[nested]}
                self.preprocessor.update(cfg)

    def preprocessor_value(self, key: str) -> Any:
        if key not in self.preprocessor:
            raise errors.MissingFileError(
                f"the vision projector needs {key} from preprocessor_config.json or processor_config.json, "
                "and the repo's have none")
        return self.preprocessor[key]

    def source_name(self, name: str) -> str | None:
        if "language_model." in name or name.endswith(_IGNORED_SUFFIXES):
            return None
        if name.endswith("e_score_correction_bias"):
            name = name.replace("e_score_correction_bias", "e_score_correction.bias")
        return name if name.startswith(self.tensor_prefixes) else None

    def add_hparams(self, w: gguf.GGUFWriter, file_type: int) -> None:
        """The vision keys every projector writes (``MmprojModel.set_gguf_parameters``), then the family's."""
        f = lambda keys: self.find(keys)  # noqa: E731
        w.add_file_type(file_type)
        w.add_clip_has_vision_encoder(True)
        w.add_vision_projection_dim(self.n_embd_text)
        w.add_vision_image_size(f(("image_size",)))
        w.add_vision_patch_size(f(("patch_size",)))
        w.add_vision_embedding_length(f(("hidden_size", "width", "vt_hidden_size")))
        w.add_vision_feed_forward_length(f(("intermediate_size", "vt_intermediate_size")))
        w.add_vision_block_count(f(self.block_keys))
        w.add_vision_head_count(f(("num_attention_heads", "num_heads", "heads", "vt_num_attention_heads")))
        w.add_vision_image_mean(self.preprocessor_value("image_mean"))
        w.add_vision_image_std(self.preprocessor_value("image_std"))
        if self.hparams_audio is not None:
            a = lambda keys: self.find_audio(keys)  # noqa: E731
            w.add_clip_has_audio_encoder(True)
            w.add_audio_projection_dim(self.n_embd_text)
            w.add_audio_embedding_length(a(("hidden_size",)))
            w.add_audio_feed_forward_length(a(("intermediate_size",)))
            w.add_audio_block_count(a(self.block_keys))
            w.add_audio_head_count(a(("num_attention_heads",)))

    def add_activation(self, w: gguf.GGUFWriter) -> None:
        """The tower's ``hidden_act`` as clip reads it, for a family whose tower may run either: a flag for
        SiLU or for GELU; anything else is refused."""
        act = self.hparams.get("hidden_act")
        if act == "silu":
            w.add_vision_use_silu(True)
        elif act == "gelu":
            w.add_vision_use_gelu(True)
        else:
            raise errors.InvalidConfigError(f"config.json: vision_config hidden_act {act!r} is neither silu nor gelu")

    def find_audio(self, keys: Sequence[str]) -> Any:
        """The first of ``keys`` the audio config sets (``find`` for the audio encoder)."""
        assert self.hparams_audio is not None
        for k in keys:
            if k in self.hparams_audio:
                return self.hparams_audio[k]
        raise errors.InvalidConfigError(f"config.json audio_config: none of {', '.join(keys)} is set")

    def forced_type(self, gguf_name: str, bid: int | None, source_name: str | None) -> gguf.GGMLQuantizationType | None:
        # the patch embedding (a convolution llama.cpp runs in F16 at most) and the patch merger
        if ".patch_embd.weight" in gguf_name or ".patch_merger.weight" in gguf_name:
            f16 = self.out.file_type == gguf.LlamaFileType.MOSTLY_F16
            return gguf.GGMLQuantizationType.F16 if f16 else gguf.GGMLQuantizationType.F32
        return None

    def add_vocab(self, w: gguf.GGUFWriter, files: Mapping[str, bytes], bpe_pre: str | None) -> None:
        """A projector has no vocabulary."""
