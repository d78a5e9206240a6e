"""llama-quantize's quantization mixes: which GGML type each tensor of a Q4_K_M (etc.) file gets.

A mix (``--outtype q4_k_m``) names a llama.cpp file type (``general.file_type``) and a default
tensor type; per-tensor rules then move some tensors up or down (attn_v and ffn_down get more
bits in some layers, the output gets Q6_K, ...). This module is those rules as data, transcribed
from ``llama_tensor_get_type`` and its helpers in llama.cpp's ``src/llama-quant.cpp`` (the
llama-cpp-python 0.3.36 sdist), so a reader can hold each table next to the C++:

- ``MIXES``: one ``Mix`` per file type: default type, token-embedding and output types, and a
  table ``{category: rule}`` for the tensors the mix treats specially;
- ``GENERAL_FIRST`` / ``GENERAL_AFTER``: what every mix outside the IQ1/IQ2 family gets before
  and after its own rule (8-expert models, 70B-class models);
- ``FALLBACK``: the type used when a row length is not a multiple of the chosen type's block;
- ``choose_types``: walks the tensors in llama-quantize's order, keeping its counters, and
  applies overrides, rules and fallbacks exactly as ``llama_tensor_get_type`` does.

The reference is what ``llama-quantize`` writes from the reference converter's F32 GGUF, so the
starting point of a tensor is its type in that file: F32, or the type its model family forces.
Tensors llama-quantize does not quantize keep it.
Rules for architectures hfstream does not convert (Falcon, GLM5-Next) and the MXFP4 MoE mix
are left out.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import gguf
from gguf import GGMLQuantizationType as QT
from gguf import LlamaFileType as FT

# ----------------------------------------------------------------------------- categories


class Cat(enum.Enum):
    """Broad tensor roles, found by name as ``tensor_get_category`` does (first match wins)."""

    OUTPUT = "output"
    TOKEN_EMBD = "token_embd"
    ATTN_QKV = "attn_qkv"
    ATTN_KV_B = "attn_kv_b"
    ATTN_V = "attn_v"
    ATTN_K = "attn_k"
    ATTN_Q = "attn_q"
    ATTN_OUTPUT = "attn_output"
    FFN_UP = "ffn_up"
    FFN_GATE = "ffn_gate"
    FFN_DOWN = "ffn_down"
    OTHER = "other"


#: (category, test on the name), in llama.cpp's order
_CATEGORY_TESTS: tuple[tuple[Cat, Callable[[str], bool]], ...] = (
    (Cat.OUTPUT, lambda n: n == "output.weight"),
    (Cat.TOKEN_EMBD, lambda n: n in ("token_embd.weight", "per_layer_token_embd.weight")),
    (Cat.ATTN_QKV, lambda n: "attn_qkv.weight" in n),
    (Cat.ATTN_KV_B, lambda n: "attn_kv_b.weight" in n),
    (Cat.ATTN_V, lambda n: "attn_v.weight" in n),
    (Cat.ATTN_K, lambda n: "attn_k.weight" in n),
    (Cat.ATTN_Q, lambda n: "attn_q.weight" in n),
    (Cat.ATTN_OUTPUT, lambda n: "attn_output.weight" in n),
    (Cat.FFN_UP, lambda n: "ffn_up" in n),
    (Cat.FFN_GATE, lambda n: "ffn_gate" in n),
    (Cat.FFN_DOWN, lambda n: "ffn_down" in n),
)

#: "attn_v-like": the fused qkv and MLA's kv_b follow the attn_v rules and share its counter
ATTN_V_LIKE = (Cat.ATTN_V, Cat.ATTN_QKV, Cat.ATTN_KV_B)


def category(name: str) -> Cat:
    return next((cat for cat, test in _CATEGORY_TESTS if test(name)), Cat.OTHER)


# ----------------------------------------------------------------------------- what is quantized

#: Name parts that keep a tensor in its input type (``tensor_allows_quantization``), besides
#: 1-D tensors, names not ending in "weight" and ``*_norm.weight``.
KEEP_SUBSTRINGS = (
    "_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel",
    "per_layer_model_proj", "ssm_conv1d", "shortconv.conv.weight", "indexer.k_proj.weight",
    "indexer.q_proj.weight", "time_mix_first.weight", "time_mix_w0.weight", "time_mix_w1.weight",
    "time_mix_w2.weight", "time_mix_v0.weight", "time_mix_v1.weight", "time_mix_v2.weight",
    "time_mix_a0.weight", "time_mix_a1.weight", "time_mix_a2.weight", "time_mix_g1.weight",
    "time_mix_g2.weight", "time_mix_decay_w1.weight", "time_mix_decay_w2.weight",
    "time_mix_lerp_fused.weight", "attn_rel_b.weight", ".position_embd", "sam.pos_embd", "sam.neck.",
    "sam.net_", ".rel_pos", ".patch_embd", ".patch_merger", "a.rvq.codebook", "mm.a.code_embd",
)
#: Whole names that stay as they are (LLM_TENSOR_POS_EMBD and LLM_TENSOR_TOKEN_TYPES).
KEEP_NAMES = ("position_embd.weight", "token_types.weight")


def n_dims(ne: Sequence[int]) -> int:
    """``ggml_n_dims``: dimensions up to the last one longer than 1 (``ne`` in GGUF order)."""
    n = 1
    for i, d in enumerate(ne):
        if d > 1:
            n = i + 1
    return n


def allows_quantization(name: str, ne: Sequence[int]) -> bool:
    """Whether llama-quantize quantizes this tensor at all (else it keeps the type it has)."""
    if n_dims(ne) < 2 or not name.endswith("weight"):
        return False
    return name not in KEEP_NAMES and not any(s in name for s in KEEP_SUBSTRINGS)


# ----------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class ModelFacts:
    """What the rules read from the model's hyperparameters."""

    arch: str
    n_layer: int
    n_head: int
    n_head_kv: int
    n_expert: int = 0

    @property
    def n_gqa(self) -> int:
        return self.n_head // self.n_head_kv if self.n_head_kv else 0

    @property
    def is_70b(self) -> bool:
        """llama.cpp's LLM_TYPE_70B for the architectures hfstream converts (models/llama.cpp, qwen2.cpp)."""
        if self.arch == "llama":
            return self.n_expert != 8 and self.n_layer == 80 and self.n_head != self.n_head_kv
        return self.arch == "qwen2" and self.n_layer == 80

    @classmethod
    def from_kv(cls, kv: Mapping[str, Any]) -> "ModelFacts":
        """From the GGUF keys (``{arch}.block_count`` ...), as llama.cpp's loader reads them."""
        arch = str(kv["general.architecture"])

        def first(key: str, default: int) -> int:
            v = kv.get(f"{arch}.{key}", default)
            if isinstance(v, (list, tuple)):
                v = v[0] if v else default
            return int(v)

        n_head = first("attention.head_count", 0)
        return cls(arch=arch, n_layer=first("block_count", 0), n_head=n_head,
                   n_head_kv=first("attention.head_count_kv", n_head), n_expert=first("expert_count", 0))


# ----------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class Where:
    """A tensor's position as a rule sees it.

    ``pos``/``n``: for attn_v-like tensors, how many came before and how many there are; for
    ffn_* tensors, the layer and the layer count (MoE models: the layer from the name; dense
    models: how many ffn_* of that kind came before, as llama.cpp counts).
    """

    pos: int
    n: int
    model: ModelFacts
    has_imatrix: bool


#: A rule returns the tensor's type, or None to keep the type it had (the mix's default).
Rule = Callable[[Where], "QT | None"]


def _use_more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def _pick(choice: "QT | Rule | None", w: Where) -> "QT | None":
    return choice(w) if callable(choice) else choice


def to(t: QT) -> Rule:
    """Always ``t``."""
    return lambda w: t


def more_bits(t: QT) -> Rule:
    """``t`` in the first and last eighth of the positions and every third one between (use_more_bits)."""
    return lambda w: t if _use_more_bits(w.pos, w.n) else None


def first_eighth(t: QT, otherwise: "QT | Rule | None" = None) -> Rule:
    """``t`` for positions below n/8."""
    return lambda w: t if w.pos < w.n // 8 else _pick(otherwise, w)


def first_sixteenth(t: QT, otherwise: "QT | Rule | None" = None) -> Rule:
    """``t`` for positions below n/16."""
    return lambda w: t if w.pos < w.n // 16 else _pick(otherwise, w)


def first(k: int, t: QT, otherwise: "QT | Rule | None" = None) -> Rule:
    """``t`` for the first ``k`` positions."""
    return lambda w: t if w.pos < k else _pick(otherwise, w)


def middle(t: QT) -> Rule:
    """``t`` for positions in [n/8, 7n/8)."""
    return lambda w: t if w.n // 8 <= w.pos < 7 * w.n // 8 else None


def gqa(k: int, t: QT, otherwise: "QT | Rule | None" = None) -> Rule:
    """``t`` when at least ``k`` query heads share a kv head (n_head / n_head_kv)."""
    return lambda w: t if w.model.n_gqa >= k else _pick(otherwise, w)


def gqa_or_experts(k: int, e: int, t: QT, otherwise: "QT | Rule | None" = None) -> Rule:
    """``t`` when n_gqa >= ``k`` or the model has at least ``e`` experts."""
    return lambda w: t if w.model.n_gqa >= k or w.model.n_expert >= e else _pick(otherwise, w)


def experts8(t: "QT | Rule | None", otherwise: "QT | Rule | None" = None) -> Rule:
    """``t`` for models with exactly 8 experts (Mixtral), else ``otherwise``."""
    return lambda w: _pick(t, w) if w.model.n_expert == 8 else _pick(otherwise, w)


def with_imatrix(t: "QT | Rule", otherwise: "QT | Rule | None" = None) -> Rule:
    """``t`` when an importance matrix is used."""
    return lambda w: _pick(t, w) if w.has_imatrix else _pick(otherwise, w)


def without_imatrix(t: "QT | Rule", otherwise: "QT | Rule | None" = None) -> Rule:
    """``t`` when no importance matrix is used."""
    return lambda w: _pick(otherwise, w) if w.has_imatrix else _pick(t, w)


def any_of(*rules: Rule) -> Rule:
    """The first rule that picks a type."""
    return lambda w: next((t for r in rules if (t := r(w)) is not None), None)


# ----------------------------------------------------------------------------- the mixes

A, K, Q, O = ATTN_V_LIKE, Cat.ATTN_K, Cat.ATTN_Q, Cat.ATTN_OUTPUT
DOWN, GATE, UP = Cat.FFN_DOWN, Cat.FFN_GATE, Cat.FFN_UP


@dataclass(frozen=True)
class Mix:
    """One llama-quantize file type."""

    name: str
    ftype: FT
    default: QT
    #: the untied token embedding's type (None: the default)
    token_embd: QT | None = None
    #: the output (and a tied token embedding) is Q5_K rather than Q6_K
    output_q5_k: bool = False
    #: the IQ1/IQ2 family: llama-quantize's own branch (no GENERAL_FIRST/AFTER, ffn_down by count)
    low_bit: bool = False
    #: rules by category (a tuple key covers several categories)
    rules: Mapping[Cat, Rule] = field(default_factory=dict)
    #: its Q2_K tensors need an importance matrix too (Q2_K_S only; see NEEDS_IMATRIX for the rest)
    q2_k_needs_imatrix: bool = False

    @property
    def label(self) -> str:
        """The FTYPE part of the default file name (``Q4_K_M``)."""
        return self.ftype.name.partition("_")[2]


def _rules(table: Mapping[object, Rule]) -> dict[Cat, Rule]:
    out: dict[Cat, Rule] = {}
    for key, rule in table.items():
        for cat in key if isinstance(key, tuple) else (key,):
            out[cat] = rule
    return out


def _mix(name: str, default: QT, table: Mapping[object, Rule] | None = None, **kw) -> Mix:
    return Mix(name=name, ftype=FT[f"MOSTLY_{name.upper()}"], default=default, rules=_rules(table or {}), **kw)


_LOW_BIT = dict(low_bit=True, output_q5_k=True)

#: Every mix, as in llama_tensor_get_type_impl. Tables list only what differs from the default.
MIXES: dict[str, Mix] = {m.name: m for m in (
    _mix("q4_0", QT.Q4_0, {DOWN: with_imatrix(first_eighth(QT.Q4_1))}),
    _mix("q4_1", QT.Q4_1),
    _mix("q5_0", QT.Q5_0, {DOWN: with_imatrix(first_eighth(QT.Q5_1))}),
    _mix("q5_1", QT.Q5_1),
    _mix("q2_k", QT.Q2_K, {
        A: gqa(4, QT.Q4_K, QT.Q3_K),
        DOWN: to(QT.Q3_K),
        O: experts8(QT.Q5_K, QT.Q3_K),
    }),
    _mix("q2_k_s", QT.Q2_K, {
        A: gqa(4, QT.Q4_K),
        DOWN: first_eighth(QT.Q4_K),
    }, q2_k_needs_imatrix=True),
    _mix("q3_k_s", QT.Q3_K, {O: experts8(QT.Q5_K)}),
    _mix("q3_k_m", QT.Q3_K, {
        A: first(2, QT.Q5_K, QT.Q4_K),
        DOWN: first_sixteenth(QT.Q5_K, QT.Q4_K),
        O: experts8(QT.Q5_K, QT.Q4_K),
    }),
    _mix("q3_k_l", QT.Q3_K, {
        A: to(QT.Q5_K),
        DOWN: to(QT.Q5_K),
        O: experts8(None, QT.Q5_K),
    }),
    _mix("q4_k_s", QT.Q4_K, {
        A: first(4, QT.Q5_K),
        DOWN: first_eighth(QT.Q5_K),
        O: experts8(QT.Q5_K),
    }),
    _mix("q4_k_m", QT.Q4_K, {
        A: more_bits(QT.Q6_K),
        DOWN: more_bits(QT.Q6_K),
        O: experts8(QT.Q5_K),
    }),
    _mix("q5_k_s", QT.Q5_K),
    _mix("q5_k_m", QT.Q5_K, {
        A: more_bits(QT.Q6_K),
        DOWN: more_bits(QT.Q6_K),
    }),
    _mix("q6_k", QT.Q6_K),
    _mix("iq4_nl", QT.IQ4_NL, {
        A: gqa(4, QT.Q5_K),
        DOWN: without_imatrix(first_eighth(QT.Q5_K)),
        O: experts8(QT.Q5_K),
    }),
    _mix("iq4_xs", QT.IQ4_XS, {
        A: gqa(4, QT.Q5_K),
        DOWN: without_imatrix(first_eighth(QT.Q5_K)),
        O: experts8(QT.Q5_K),
    }),
    _mix("tq1_0", QT.TQ1_0, token_embd=QT.Q4_K),
    _mix("tq2_0", QT.TQ2_0, token_embd=QT.Q4_K),
    _mix("iq3_xxs", QT.IQ3_XXS, {
        A: gqa(4, QT.Q4_K, without_imatrix(QT.IQ3_S, QT.IQ3_XXS)),
        (K, Q): to(QT.IQ2_S),
        DOWN: without_imatrix(first_eighth(QT.Q4_K, QT.Q3_K)),
        O: experts8(QT.Q5_K, QT.IQ3_S),
    }, token_embd=QT.IQ3_S, output_q5_k=True),
    _mix("iq3_xs", QT.IQ3_S, {
        A: gqa(4, QT.Q4_K),
        (K, Q): to(QT.IQ3_XXS),
        (GATE, UP): middle(QT.IQ3_XXS),
        O: experts8(QT.Q5_K),
    }),
    _mix("iq3_s", QT.IQ3_S, {
        A: gqa(4, QT.Q4_K),
        O: experts8(QT.Q5_K),
    }),
    _mix("iq3_m", QT.IQ3_S, {
        A: to(QT.Q4_K),
        DOWN: any_of(first_eighth(QT.Q4_K), experts8(more_bits(QT.Q4_K))),
        O: experts8(QT.Q5_K, QT.Q4_K),
    }),
    # the IQ1/IQ2 family (low_bit): a branch of its own in llama_tensor_get_type_impl
    _mix("iq2_xxs", QT.IQ2_XXS, {
        A: gqa_or_experts(4, 4, QT.Q4_K, QT.Q2_K),
        K: experts8(QT.Q4_K),
        DOWN: first_eighth(QT.Q2_K),
        O: experts8(QT.Q5_K),
    }, token_embd=QT.Q2_K, **_LOW_BIT),
    _mix("iq2_xs", QT.IQ2_XS, {
        A: gqa_or_experts(4, 4, QT.Q4_K, QT.Q2_K),
        K: experts8(QT.Q4_K),
        DOWN: first_eighth(QT.Q2_K),
        O: experts8(QT.Q5_K),
    }, token_embd=QT.Q2_K, **_LOW_BIT),
    _mix("iq2_s", QT.IQ2_XS, {
        A: gqa_or_experts(4, 4, QT.Q4_K, QT.IQ3_S),
        K: experts8(QT.Q4_K),
        DOWN: first_eighth(QT.IQ3_S),
        O: experts8(QT.Q5_K, QT.IQ3_S),
    }, token_embd=QT.IQ3_S, **_LOW_BIT),
    _mix("iq2_m", QT.IQ2_S, {
        A: gqa_or_experts(4, 4, QT.Q4_K, QT.IQ3_S),
        K: experts8(QT.Q4_K),
        DOWN: first_eighth(QT.IQ3_S),
        O: experts8(QT.Q5_K, QT.IQ3_S),
    }, token_embd=QT.IQ3_S, **_LOW_BIT),
    _mix("iq1_s", QT.IQ1_S, {
        A: gqa_or_experts(4, 4, QT.Q4_K, QT.Q2_K),
        K: experts8(QT.Q4_K),
        DOWN: first_eighth(QT.Q2_K),
        O: experts8(QT.Q5_K, QT.IQ2_XXS),
    }, token_embd=QT.Q2_K, **_LOW_BIT),
    _mix("iq1_m", QT.IQ1_M, {
        A: gqa_or_experts(4, 4, QT.Q4_K, QT.Q2_K),
        K: experts8(QT.Q4_K),
        DOWN: first_eighth(QT.Q2_K),
        O: experts8(QT.Q5_K, QT.IQ2_XXS),
    }, token_embd=QT.Q2_K, **_LOW_BIT),
)}


def _bump_70b(t: QT, w: Where) -> QT:
    """70B-class models: attn_v is 8x smaller than attn_q, so Q3_K/Q4_K become Q5_K."""
    return QT.Q5_K if w.model.is_70b and t in (QT.Q3_K, QT.Q4_K) else t


def _experts8_q8_0(t: QT, w: Where) -> QT:
    """8-expert models: attn_v is Q8_0 (costs ~128 MB on Mixtral)."""
    return QT.Q8_0 if w.model.n_expert == 8 else t


#: Every mix outside the IQ1/IQ2 family: rules tried before the mix's own (a pick wins) ...
GENERAL_FIRST: dict[Cat, Rule] = {Cat.ATTN_K: experts8(QT.Q8_0)}
#: ... and adjustments of the result, in this order.
GENERAL_AFTER: tuple[tuple[tuple[Cat, ...], Callable[[QT, Where], QT]], ...] = (
    (ATTN_V_LIKE, _bump_70b),
    (ATTN_V_LIKE, _experts8_q8_0),
)

#: What a type becomes when a row length is not a multiple of its block (tensor_type_fallback);
#: F16 when the fallback does not fit either. 32-block types have no smaller block: F16 directly.
FALLBACK: dict[QT, QT] = {
    QT.IQ1_S: QT.IQ4_NL, QT.IQ1_M: QT.IQ4_NL, QT.IQ2_XXS: QT.IQ4_NL, QT.IQ2_XS: QT.IQ4_NL,
    QT.IQ2_S: QT.IQ4_NL, QT.IQ3_XXS: QT.IQ4_NL, QT.IQ3_S: QT.IQ4_NL, QT.IQ4_XS: QT.IQ4_NL,
    QT.Q2_K: QT.Q4_0, QT.Q3_K: QT.Q4_0, QT.TQ1_0: QT.Q4_0, QT.TQ2_0: QT.Q4_0,
    QT.Q4_K: QT.Q5_0, QT.Q5_K: QT.Q5_1, QT.Q6_K: QT.Q8_0,
}

#: Types that need an importance matrix on every tensor but token_embd/output (tensor_requires_imatrix).
NEEDS_IMATRIX = (QT.IQ3_XXS, QT.IQ2_XXS, QT.IQ2_XS, QT.IQ2_S, QT.IQ1_M, QT.IQ1_S)

#: Types a --tensor-type / --output-tensor-type / --token-embedding-type may name.
OVERRIDE_TYPES: tuple[QT, ...] = (
    QT.F32, QT.F16, QT.BF16, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1, QT.Q8_0, QT.Q2_K, QT.Q3_K, QT.Q4_K,
    QT.Q5_K, QT.Q6_K, QT.IQ2_XXS, QT.IQ2_XS, QT.IQ2_S, QT.IQ3_XXS, QT.IQ3_S, QT.IQ1_S, QT.IQ1_M,
    QT.IQ4_NL, QT.IQ4_XS, QT.TQ1_0, QT.TQ2_0,
)


def block_size(t: QT) -> int:
    return gguf.GGML_QUANT_SIZES[t][0]


def fallback(t: QT, ncols: int) -> QT:
    """``t``, or what llama-quantize uses instead when rows of ``ncols`` do not split into its blocks."""
    if ncols % block_size(t) == 0:
        return t
    alt = FALLBACK.get(t, t)
    if alt is t and block_size(t) > 32:
        raise ValueError(f"no fallback type for {t.name}")
    return alt if ncols % block_size(alt) == 0 else QT.F16


def needs_imatrix(name: str, t: QT, mix: Mix) -> bool:
    """Whether quantizing ``name`` as ``t`` in ``mix`` needs an importance matrix."""
    if category(name) in (Cat.TOKEN_EMBD, Cat.OUTPUT):
        return False
    return t in NEEDS_IMATRIX or (t == QT.Q2_K and mix.q2_k_needs_imatrix)


# ----------------------------------------------------------------------------- overrides


@dataclass(frozen=True)
class Overrides:
    """``--tensor-type PATTERN=TYPE`` (regexes searched in the lowercased order given, first match
    wins), ``--output-tensor-type``, ``--token-embedding-type``; as llama-quantize's options."""

    tensor_types: tuple[tuple[str, QT], ...] = ()
    output: QT | None = None
    token_embd: QT | None = None

    def __bool__(self) -> bool:
        return bool(self.tensor_types) or self.output is not None or self.token_embd is not None

    def compiled(self) -> list[tuple[re.Pattern, QT]]:
        return [(re.compile(p.lower()), t) for p, t in self.tensor_types]


def parse_type(text: str) -> QT:
    """A GGML type name as llama-quantize takes it (any case): ``q4_k``, ``Q8_0``, ``f16``."""
    for t in OVERRIDE_TYPES:
        if t.name.lower() == text.strip().lower():
            return t
    raise ValueError(f"unknown tensor type {text!r}; choose one of {', '.join(t.name.lower() for t in OVERRIDE_TYPES)}")


def parse_tensor_type(text: str) -> tuple[str, QT]:
    """``PATTERN=TYPE`` -> (pattern, type); the pattern must compile as a regular expression."""
    pattern, sep, type_name = text.rpartition("=")
    if not sep or not pattern:
        raise ValueError(f"--tensor-type {text!r}: expected PATTERN=TYPE, e.g. attn_v=q8_0")
    try:
        re.compile(pattern.lower())
    except re.error as e:
        raise ValueError(f"--tensor-type {text!r}: bad regular expression ({e})") from None
    return pattern, parse_type(type_name)


# ----------------------------------------------------------------------------- choosing types


def _layer_of(name: str) -> int | None:
    """``sscanf(name, "blk.%d.")``."""
    m = re.match(r"blk\.([+-]?\d+)\.", name)
    return int(m.group(1)) if m else None


def quantize_order(names: Iterable[str]) -> list[str]:
    """The order llama-quantize writes tensors in (its loader's map): non-block tensors first,
    then by block number, names compared bytewise inside each group."""
    def key(n: str) -> tuple[int, bytes]:
        layer = _layer_of(n)
        return (-1 if layer is None else layer, n.encode())
    return sorted(names, key=key)


@dataclass
class Choice:
    """The type of one tensor and why (for --dry-run and the tests)."""

    name: str
    qtype: QT
    quantized: bool


def choose_types(mix: Mix, tensors: Sequence[tuple[str, Sequence[int]]], model: ModelFacts,
                 overrides: Overrides = Overrides(), has_imatrix: bool = False,
                 input_types: Mapping[str, QT] | None = None) -> list[Choice]:
    """The type of every tensor, in llama-quantize's order.

    ``tensors``: (GGUF name, GGUF shape ``ne``) in any order. Mirrors llama_tensor_get_type: the
    token-embedding and output overrides come first, then ``--tensor-type`` patterns (which skip
    the mix's rules), then the mix's rules, then the row-length fallback. ``input_types``: a
    tensor's type in the file llama-quantize reads, where it is not F32 (what a tensor it does not
    quantize keeps).
    """
    input_types = input_types or {}
    shapes = {name: tuple(ne) for name, ne in tensors}
    order = quantize_order(shapes)
    patterns = overrides.compiled()
    tied = "output.weight" not in shapes
    n_attn_v = sum(1 for n in order if category(n) in ATTN_V_LIKE)
    n_expert = max(1, model.n_expert)
    counters = {Cat.ATTN_V: 0, Cat.FFN_DOWN: 0, Cat.FFN_GATE: 0, Cat.FFN_UP: 0}
    out: list[Choice] = []

    def where(cat: Cat, name: str, *, by_count: bool = False) -> Where:
        """attn_v-like: the attn_v counter; ffn_*: the layer (MoE: from the name, else the counter)."""
        if cat in ATTN_V_LIKE:
            return Where(counters[Cat.ATTN_V], n_attn_v, model, has_imatrix)
        if cat not in counters:
            return Where(0, 0, model, has_imatrix)
        pos = counters[cat]
        if n_expert > 1 and not by_count:
            layer = _layer_of(name)
            if layer is None or not 0 <= layer < model.n_layer:
                raise ValueError(f"cannot tell the layer of {name!r}")
            pos = layer
        return Where(pos, model.n_layer, model, has_imatrix)

    def count(cat: Cat) -> None:
        key = Cat.ATTN_V if cat in ATTN_V_LIKE else cat
        if key in counters:
            counters[key] += 1

    def by_rules(name: str, cat: Cat, ne: tuple[int, ...]) -> QT:
        t = mix.default
        if cat == Cat.OUTPUT or (tied and cat == Cat.TOKEN_EMBD):
            if overrides.output is not None:
                return overrides.output
            if ne[0] % block_size(t) != 0:
                return QT.Q8_0
            if mix.output_q5_k:
                return QT.Q5_K
            return t if t == QT.Q8_0 else QT.Q6_K
        if cat == Cat.TOKEN_EMBD:
            return overrides.token_embd if overrides.token_embd is not None else (mix.token_embd or t)
        rule = mix.rules.get(cat)
        if mix.low_bit:
            # only attn_v-like, attn_k, ffn_down and attn_output have rules; ffn_down goes by count
            w = where(cat, name, by_count=True)
            t = (rule(w) if rule else None) or t
            if cat in ATTN_V_LIKE or cat == Cat.FFN_DOWN:
                count(cat)
            return t
        w = where(cat, name)
        first_rule = GENERAL_FIRST.get(cat)
        picked = first_rule(w) if first_rule else None
        t = picked or (rule(w) if rule else None) or t
        for cats, adjust in GENERAL_AFTER:
            if cat in cats:
                t = adjust(t, w)
        count(cat)
        return t

    for name in order:
        ne = shapes[name]
        cat = category(name)
        if not allows_quantization(name, ne):
            out.append(Choice(name, input_types.get(name, QT.F32), False))
            continue
        if overrides.token_embd is not None and cat == Cat.TOKEN_EMBD:
            out.append(Choice(name, overrides.token_embd, True))
            continue
        if overrides.output is not None and cat == Cat.OUTPUT:
            out.append(Choice(name, overrides.output, True))
            continue
        manual = next((t for p, t in patterns if p.search(name)), None)
        t = manual if manual is not None else by_rules(name, cat, ne)
        out.append(Choice(name, fallback(t, ne[0]), True))
    return out
