"""Mamba-2 hybrids: Granite 4.0-H (``GraniteMoeHybridForCausalLM``), Nemotron-H (``NemotronHForCausalLM``)
and Falcon-H1 (``FalconH1ForCausalLM``).

Every Mamba-2 mixer converts the same way (the reference's ``Mamba2Model.modify_tensors``):
``A_log`` becomes ``A = -exp(A_log)`` and, like ``D``, a column [n_heads, 1]; ``dt_bias`` is
``ssm_dt.bias``; the depthwise ``conv1d`` weight [C, 1, K] is squeezed to [C, K]; the gated norm
[d_inner] is viewed as [n_groups, d_inner / n_groups]. The keys give the SSM sizes
(``ssm.conv_kernel``, ``ssm.state_size``, ``ssm.group_count``, ``ssm.inner_size``,
``ssm.time_step_rank`` = the number of heads).

The three families around it:

- Granite 4.0-H: Mamba-2 or attention per ``layer_types`` (q/k rows permuted, as Llama); in every
  layer a JetMoE block whose fused ``input_linear`` [E, 2 ff, h] splits into gate and up halves, and a
  shared MLP (the shared expert, or the dense FFN when there are no experts); per-layer KV head counts
  (0 for Mamba-2 layers); no rope when it has Mamba-2 layers. The reference reads config.json as
  written (not through AutoConfig) and pads the vocab to a multiple of 8.
- Nemotron-H: one mixer per layer (``backbone.layers.N.mixer``: Mamba-2, attention, an MLP, or MoE
  experts stacked per layer), by ``layers_block_type`` (transformers' reading of
  ``hybrid_override_pattern``); per-layer feed-forward lengths; the vocab padded to a multiple of 8.
  Read through AutoConfig, whose Nemotron-H class always sets ``num_experts_per_tok``: the reference
  then takes every Nemotron-H for the MoE architecture.
- Falcon-H1: attention and Mamba-2 side by side in every layer, then an MLP; the muP multipliers of
  the config are folded into the weights (``graph.Scale``, ``graph.ScaleRowBlocks``); config.json as
  written.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, ClassVar, Iterator, Sequence

import gguf

from .. import errors
from ..graph import (
    NegExp,
    Node,
    PermuteHeads,
    Reshape,
    Scale,
    ScaleRowBlocks,
    SliceInner,
    SliceRows,
)
from . import register
from .base import DECODER_SHAPES, HYBRID_REQUIRED_TENSORS, LAYER, SIZES, ExpertStacks, ShapeRule, TextFamily

T = gguf.MODEL_TENSOR


def _mixer_shapes(prefix: str, inner: str) -> tuple[ShapeRule, ...]:
    """The Mamba-2 mixer tensors whose shapes the transforms rely on: one A, D and dt bias per head, the
    gated norm over the inner size (viewed as [groups, inner / groups])."""
    return (
        (prefix + r"(A_log|D|dt_proj\.bias)", ("ssm_heads",)),
        (prefix + r"norm\.weight", (inner,)),
    )


class _Mamba2Hybrid(TextFamily):
    """What the Mamba-2 families share: the mixer's tensors, hparams looked up with a ``mamba_`` prefix."""

    #: config keys are also looked up with these prefixes (``mamba_d_state`` for ``d_state``)
    hparam_prefixes: tuple[str, ...] = ("mamba",)
    #: the SSM's groups and inner size (each family reads them from its own keys)
    n_group: int
    d_inner: int

    def find(self, keys: Sequence[str], optional: bool = False) -> Any:
        prefixed = [f"{p}_{k}" for p in self.hparam_prefixes for k in keys]
        return super().find([*keys, *prefixed], optional)

    def source_name(self, name: str) -> str | None:
        kept = super().source_name(name)
        if kept is not None and kept.endswith(".dt_bias"):
            return kept.removesuffix(".dt_bias") + ".dt_proj.bias"
        return kept

    def _mamba2(self, new_name: str, node: Node, bid: int | None, source: str) -> Node:
        """One Mamba-2 mixer tensor, already named ``new_name``, as the reference shapes it."""
        if self._is(new_name, T.SSM_CONV1D, bid):
            node = Reshape(node, tuple(d for d in node.shape if d != 1) or (1,))  # torch's squeeze()
        elif self._is(new_name, T.SSM_A, bid, "") or self._is(new_name, T.SSM_D, bid, ""):
            node = Reshape(node, (*node.shape, 1))
        elif self._is(new_name, T.SSM_NORM, bid):
            node = Reshape(node, (self.n_group, self.d_inner // self.n_group))
        if source.endswith(".A_log"):
            node = NegExp(node)
        return node

    def _is(self, new_name: str, kind: gguf.MODEL_TENSOR, bid: int | None, suffix: str = ".weight") -> bool:
        if kind not in gguf.MODEL_TENSORS[self.gguf_arch]:
            return False
        template = gguf.TENSOR_NAMES[kind]
        if "{bid}" in template:
            if bid is None:
                return False
            template = template.format(bid=bid)
        elif bid is not None:
            return False
        return new_name == template + suffix

    def _check_ssm_sizes(self) -> None:
        if type(self.n_group) is not int or self.n_group <= 0 or type(self.d_inner) is not int \
                or self.d_inner % self.n_group:
            raise errors.InvalidConfigError(
                f"config.json: the Mamba-2 inner size {self.d_inner!r} is not a multiple of its {self.n_group!r} groups")

    def _padded_vocab_size(self, multiple: int) -> int:
        vocab_size = self.find(("vocab_size",))
        return -(vocab_size // -multiple) * multiple


# --- Granite 4.0-H --------------------------------------------------------------------------------


@register
class GraniteHybrid(_Mamba2Hybrid):
    hf_architectures: ClassVar[tuple[str, ...]] = ("GraniteMoeHybridForCausalLM",)
    model_types: ClassVar[tuple[str, ...]] = ("granitemoehybrid",)
    config_source = "config.json"
    gguf_arch = gguf.MODEL_ARCH.GRANITE_HYBRID
    vocab_strategies: ClassVar[tuple[str, ...]] = ("spm", "bpe")
    shape_sizes = {**SIZES, "ssm_heads": ("mamba_n_heads",), "ssm_expand": ("mamba_expand",),
                   "experts": ("num_local_experts",), "shared_ffn": ("shared_intermediate_size",)}
    shape_rules = DECODER_SHAPES + _mixer_shapes(LAYER + r"mamba\.", "ssm_expand*hidden") + (
        (LAYER + r"block_sparse_moe\.input_linear\.weight", ("experts", "2*ffn", "hidden")),
        (LAYER + r"block_sparse_moe\.output_linear\.weight", ("experts", "hidden", "ffn")),
        (LAYER + r"shared_mlp\.input_linear\.weight", ("2*shared_ffn", "hidden")),
        (LAYER + r"shared_mlp\.output_linear\.weight", ("hidden", "shared_ffn")),
    )
    required_tensors = HYBRID_REQUIRED_TENSORS
    #: the layers with attention, from the config (the others are Mamba-2)
    attn_layers: list[int]

    def layer_kind(self, bid: int) -> str:
        return "attention" if bid in self._attention_set else "ssm"

    @cached_property
    def _attention_set(self) -> frozenset[int]:
        return frozenset(self.attn_layers)

    def __init__(self, hparams, hf_arch):
        super().__init__(hparams, hf_arch)
        self.attn_layers = self._attention_layers()
        self.ssm_layers = [i for i in range(self.block_count) if i not in self.attn_layers]
        if not self.ssm_layers:
            # an all-attention Granite 4 (granite-4.0-micro) is written as plain Granite by the reference
            raise errors.UnsupportedArchitectureError(
                f"{hf_arch} without Mamba-2 layers (the reference writes it as granite/granitemoe) is not supported")
        self.d_model = self.find(("mamba_head_dim", "hidden_size", "d_model"))
        self.n_group = self.find(("n_groups", "num_groups"))
        self.d_inner = self.find(("expand", "num_heads")) * self.d_model
        self._check_ssm_sizes()
        self.head_dim = self.find(("hidden_size",)) // self.find(("num_attention_heads",))

    def _attention_layers(self) -> list[int]:
        if types := self.hparams.get("layer_types"):
            if not isinstance(types, list):
                raise errors.InvalidConfigError("config.json: layer_types must be a list")
            return [i for i, kind in enumerate(types) if kind == "attention"]
        indices = self.hparams.get("attn_layer_indices") or []
        if indices:
            return list(indices)
        period, offset = self.hparams.get("attn_layer_period"), self.hparams.get("attn_layer_offset")
        if not period or offset is None:
            raise errors.InvalidConfigError(
                "config.json: none of layer_types, attn_layer_indices, attn_layer_period/offset says which "
                "layers have attention")
        return [i for i in range(self.block_count) if i % period == offset]

    @property
    def _has_experts(self) -> bool:
        return bool(self.hparams.get("num_local_experts"))

    def add_hparams(self, w: gguf.GGUFWriter, file_type: int) -> None:
        hp = self.hparams
        # Granite ignores head_dim (the reference pops it before the shared keys)
        self.hparams = {k: v for k, v in hp.items() if k != "head_dim"}
        super().add_hparams(w, file_type)
        w.add_vocab_size(self.find(("vocab_size",)))
        w.add_rope_dimension_count(self.head_dim)
        for key, add in (("attention_multiplier", w.add_attention_scale), ("embedding_multiplier", w.add_embedding_scale),
                         ("residual_multiplier", w.add_residual_scale), ("logits_scaling", w.add_logit_scale)):
            if value := hp.get(key):
                add(value)
        if shared := hp.get("shared_intermediate_size"):
            w.add_expert_shared_feed_forward_length(shared)
        w.add_ssm_conv_kernel(self.find(("conv_kernel", "d_conv")))
        w.add_ssm_state_size(self.find(("state_size", "d_state", "state_dim", "ssm_state_size")))
        w.add_ssm_group_count(self.n_group)
        w.add_ssm_inner_size(self.d_inner)
        w.add_ssm_time_step_rank(self.find(("n_heads", "num_heads")))
        n_kv = self.find(("num_key_value_heads", "n_head_kv"))
        if rope_dim := hp.get("attn_rotary_emb"):
            w.add_rope_dimension_count(rope_dim)
        w.add_head_count_kv([n_kv if i in self.attn_layers else 0 for i in range(self.block_count)])
        w.add_rope_scaling_finetuned(False)  # a Mamba-2 hybrid uses no rope
        w.add_context_length(2**20)
        if hp.get("hidden_act") not in (None, "silu"):
            raise errors.UnsupportedArchitectureError(f"config.json: hidden_act {hp['hidden_act']!r}; only silu is supported")
        d_head = self.find(("d_head",), optional=True) or 64
        if self.d_inner % d_head:
            raise errors.InvalidConfigError(f"config.json: the SSM inner size {self.d_inner} is not a multiple of {d_head}")

    def convert(self, name: str, node: Node, bid: int | None) -> Iterator[tuple[str, Node]]:
        if name.endswith("block_sparse_moe.input_linear.weight"):
            ff = self.find(("intermediate_size",))
            if node.ndim != 3 or node.shape[-2] != 2 * ff:
                raise errors.ConfigMismatchError(
                    f"tensor {name!r} has shape {list(node.shape)}; config.json makes its rows 2 x intermediate_size {ff}")
            yield self._format(T.FFN_GATE_EXP, bid), SliceInner(node, 0, ff)
            yield self._format(T.FFN_UP_EXP, bid), SliceInner(node, ff, 2 * ff)
            return
        if name.endswith("shared_mlp.input_linear.weight"):
            ff = self.find(("shared_intermediate_size",))
            if node.ndim != 2 or node.shape[0] != 2 * ff:
                raise errors.ConfigMismatchError(f"tensor {name!r} has shape {list(node.shape)}; config.json makes "
                                                 f"its rows 2 x shared_intermediate_size {ff}")
            gate, up = (T.FFN_GATE_SHEXP, T.FFN_UP_SHEXP) if self._has_experts else (T.FFN_GATE, T.FFN_UP)
            yield self._format(gate, bid), SliceRows(node, 0, ff)
            yield self._format(up, bid), SliceRows(node, ff, 2 * ff)
            return
        if name.endswith("shared_mlp.output_linear.weight") and not self._has_experts:
            yield self._format(T.FFN_DOWN, bid), node
            return
        new_name = self.map_name(name)
        if bid in self.ssm_layers:
            yield new_name, self._mamba2(new_name, node, bid, name)
            return
        if bid in self.attn_layers:
            if name.endswith(("q_proj.weight", "q_proj.bias")):
                node = PermuteHeads(node, self.find(("num_attention_heads",)))
            elif name.endswith(("k_proj.weight", "k_proj.bias")):
                node = PermuteHeads(node, self.find(("num_key_value_heads",)))
        yield new_name, node

    def _format(self, kind: gguf.MODEL_TENSOR, bid: int | None) -> str:
        return gguf.TENSOR_NAMES[kind].format(bid=bid) + ".weight"

    def add_vocab(self, w: gguf.GGUFWriter, files, bpe_pre: str | None) -> None:
        from ..vocab import add_vocab

        hparams = {**self.hparams, "vocab_size": self._padded_vocab_size(8)}
        add_vocab(w, files, hparams, strategies=self.vocab_strategies, bpe_pre=bpe_pre)


# --- Falcon-H1 ------------------------------------------------------------------------------------

#: (source name part, config keys of the multipliers applied in order), first match wins, as the reference tests them
_FALCON_MULTIPLIERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("down_proj", ("mlp_multipliers[1]",)),
    ("gate_proj", ("mlp_multipliers[0]",)),
    ("k_proj", ("key_multiplier", "attention_in_multiplier")),
    ("q_proj", ("attention_in_multiplier",)),
    ("v_proj", ("attention_in_multiplier",)),
    ("o_proj", ("attention_out_multiplier",)),
    ("out_proj", ("ssm_out_multiplier",)),
    ("in_proj", ("ssm_in_multiplier",)),
    ("lm_head", ("lm_head_multiplier",)),
    ("embed_tokens", ("embedding_multiplier",)),
)


@register
class FalconH1(_Mamba2Hybrid):
    hf_architectures = ("FalconH1ForCausalLM",)
    model_types = ("falcon_h1",)
    config_source = "config.json"
    gguf_arch = gguf.MODEL_ARCH.FALCON_H1
    vocab_strategies = ("bpe",)
    shape_sizes = {**SIZES, "ssm_heads": ("mamba_n_heads",), "ssm_inner": ("mamba_d_ssm",)}
    shape_rules = DECODER_SHAPES + _mixer_shapes(LAYER + r"mamba\.", "ssm_inner") + (
        (LAYER + r"feed_forward\.(gate|up)_proj\.weight", ("ffn", "hidden")),
        (LAYER + r"feed_forward\.down_proj\.weight", ("hidden", "ffn")),
    )

    def __init__(self, hparams, hf_arch):
        super().__init__(hparams, hf_arch)
        self.d_model = self.find(("hidden_size", "d_model", "dim"))
        self.n_group = self.find(("n_groups",))
        self.d_inner = self.find(("mamba_d_ssm",))
        self.d_head = self.find(("d_head",))
        self._check_ssm_sizes()

    def _number(self, key: str) -> float:
        """A multiplier of the config: ``key`` or ``key[i]`` (an element of a list)."""
        base, _, index = key.partition("[")
        value = self.hparams.get(base)
        if index:
            i = int(index.rstrip("]"))
            value = value[i] if isinstance(value, list) and len(value) > i else None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise errors.InvalidConfigError(f"config.json: Falcon-H1 needs the number {key}, not {value!r}")
        return value

    def add_hparams(self, w: gguf.GGUFWriter, file_type: int) -> None:
        hp = self.hparams
        head_dim = self.find(("mamba_d_head", "head_dim"), optional=True) or 64
        if self.d_inner % self.d_head:
            raise errors.InvalidConfigError(
                f"config.json: the SSM inner size {self.d_inner} is not a multiple of its head size {self.d_head}")
        # Mamba2Model's keys first ...
        w.add_context_length(2**20)
        w.add_embedding_length(self.d_model)
        w.add_feed_forward_length(0)
        w.add_head_count(0)
        w.add_block_count(self.block_count)
        w.add_ssm_conv_kernel(self.find(("conv_kernel", "d_conv"), optional=True) or 4)
        w.add_ssm_inner_size(self.d_inner)
        w.add_ssm_state_size(self.find(("state_size", "d_state"), optional=True) or 128)
        w.add_ssm_time_step_rank(self.d_inner // head_dim)
        w.add_ssm_group_count(self.n_group)
        w.add_layer_norm_rms_eps(self.find(("layer_norm_epsilon", "rms_norm_eps"), optional=True) or 1e-5)
        w.add_file_type(file_type)
        # ... then Falcon-H1's, some of them again (a key keeps its first place)
        for key in ("vocab_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "head_dim"):
            if key not in hp:
                raise errors.InvalidConfigError(f"config.json: {key} is not set")
        w.add_vocab_size(hp["vocab_size"])
        w.add_block_count(self.block_count)
        w.add_context_length(hp.get("max_position_embeddings", 0))
        w.add_feed_forward_length(hp["intermediate_size"])
        w.add_head_count(hp["num_attention_heads"])
        w.add_head_count_kv(hp["num_key_value_heads"])
        w.add_key_length(hp["head_dim"])
        w.add_value_length(hp["head_dim"])
        if hp.get("hidden_act") not in (None, "silu"):
            raise errors.UnsupportedArchitectureError(f"config.json: hidden_act {hp['hidden_act']!r}; only silu is supported")
        if "rope_theta" not in self.rope:
            raise errors.InvalidConfigError("config.json: rope_theta is not set")
        w.add_rope_freq_base(self.rope["rope_theta"])

    def convert(self, name: str, node: Node, bid: int | None) -> Iterator[tuple[str, Node]]:
        new_name = self.map_name(name)
        node = self._mamba2(new_name, node, bid, name)
        part, keys = next(((part, keys) for part, keys in _FALCON_MULTIPLIERS if part in name), ("", ()))
        for key in keys:
            node = Scale(node, self._number(key))
        if part == "in_proj":
            node = ScaleRowBlocks(node, self._in_proj_blocks(node))
        yield new_name, node

    def _in_proj_blocks(self, node: Node) -> tuple[tuple[int, float], ...]:
        """The z, x, B, C and dt rows of the fused in_proj, each with its ``ssm_multipliers`` factor."""
        inner = self._int("mamba_d_ssm")
        bc = self._int("mamba_n_groups") * self._int("mamba_d_state")
        ends = (inner, 2 * inner, 2 * inner + bc, 2 * inner + 2 * bc, node.rows)
        if node.ndim != 2 or ends[3] > node.rows:
            raise errors.ConfigMismatchError(
                f"the Mamba-2 in_proj has shape {list(node.shape)}; config.json makes it at least {ends[3]} rows")
        return tuple(zip(ends, (self._number(f"ssm_multipliers[{i}]") for i in range(5))))

    def _int(self, key: str) -> int:
        value = self.hparams.get(key)
        if type(value) is not int or value <= 0:
            raise errors.InvalidConfigError(f"config.json: {key} is {value!r}; expected a positive integer")
        return value


# --- Nemotron-H -----------------------------------------------------------------------------------

_NEMOTRON_SSM = frozenset({"mamba", "linear_attention"})
_NEMOTRON_ATTENTION = frozenset({"attention", "full_attention"})


@register
class NemotronH(GraniteHybrid):
    hf_architectures: ClassVar[tuple[str, ...]] = ("NemotronHForCausalLM",)
    model_types: ClassVar[tuple[str, ...]] = ("nemotron_h",)
    config_source = "transformers"
    gguf_arch = gguf.MODEL_ARCH.NEMOTRON_H_MOE
    vocab_strategies: ClassVar[tuple[str, ...]] = ("bpe",)
    shape_sizes = {**SIZES, "ssm_heads": ("mamba_num_heads",), "ssm_head_dim": ("mamba_head_dim",),
                   "experts": ("n_routed_experts",), "moe_ffn": ("moe_intermediate_size",),
                   "shared_ffn": ("moe_shared_expert_intermediate_size",)}
    shape_rules = _mixer_shapes(r"backbone\.layers\.\d+\.mixer\.", "ssm_heads*ssm_head_dim") + (
        (r"backbone\.embeddings\.weight", ("vocab", "hidden")),
        (r"lm_head\.weight", ("vocab", "hidden")),
        (r"backbone\.layers\.\d+\.mixer\.q_proj\.weight", ("heads*head_dim", "hidden")),
        (r"backbone\.layers\.\d+\.mixer\.[kv]_proj\.weight", ("kv_heads*head_dim", "hidden")),
        (r"backbone\.layers\.\d+\.mixer\.gate\.weight", ("experts", "hidden")),
        (r"backbone\.layers\.\d+\.mixer\.experts\.\d+\.up_proj\.weight", ("moe_ffn", "hidden")),
        (r"backbone\.layers\.\d+\.mixer\.experts\.\d+\.down_proj\.weight", ("hidden", "moe_ffn")),
        (r"backbone\.layers\.\d+\.mixer\.shared_experts\.up_proj\.weight", ("shared_ffn", "hidden")),
        (r"backbone\.(layers\.\d+\.norm|norm_f)\.weight", ("hidden",)),
    )

    def layer_kind(self, bid: int) -> str:
        return "moe" if bid in self._moe_set else super().layer_kind(bid)

    @cached_property
    def _moe_set(self) -> frozenset[int]:
        return frozenset(self.moe_layers)

    def __init__(self, hparams, hf_arch):
        hparams = {**hparams, **(hparams.get("llm_config") or {})} if "llm_config" in hparams else dict(hparams)
        pattern = hparams.get("hybrid_override_pattern") or hparams.get("layers_block_type")
        if not isinstance(pattern, (str, list)) or not pattern:
            raise errors.InvalidConfigError("config.json: Nemotron-H needs hybrid_override_pattern (or layers_block_type)")
        if "num_experts_per_tok" not in hparams:
            # transformers' Nemotron-H config always sets it; without it the reference writes nemotron_h
            raise errors.UnsupportedArchitectureError(
                "a Nemotron-H config without num_experts_per_tok (read by transformers < 5) is not supported")
        if isinstance(pattern, list):
            hparams["num_hidden_layers"] = len(pattern)
        self.pattern = pattern
        _Mamba2Hybrid.__init__(self, hparams, hf_arch)
        if len(pattern) != self.block_count:
            raise errors.InvalidConfigError(
                f"config.json: the layer pattern has {len(pattern)} layers, num_hidden_layers {self.block_count}")
        if isinstance(pattern, str):
            kinds = {"M": "mamba", "*": "attention", "E": "moe", "-": "mlp"}
            pattern = [kinds.get(c, c) for c in pattern]
        if "mlp" in pattern:
            # the reference takes every Nemotron-H for the MoE architecture (transformers' config always has
            # num_experts_per_tok) and then gives its dense MLP layers no feed-forward length: llama.cpp
            # cannot load what it writes for Nemotron-H v1/v2 and Nemotron Nano 9B/12B v2
            raise errors.UnsupportedArchitectureError(
                f"{hf_arch} with dense MLP layers (Nemotron-H, Nemotron Nano v2) is not supported: llama.cpp's "
                "converter writes it as nemotron_h_moe with zero feed-forward lengths, which llama.cpp cannot load")
        if self.hparams.get("num_nextn_predict_layers"):
            raise errors.UnsupportedArchitectureError(f"{hf_arch} with multi-token prediction layers is not supported")
        if self.hparams.get("moe_latent_size") is not None:
            raise errors.UnsupportedArchitectureError(f"{hf_arch} with latent MoE projections is not supported")
        self.ssm_layers = [i for i, kind in enumerate(pattern) if kind in _NEMOTRON_SSM]
        self.attn_layers = [i for i, kind in enumerate(pattern) if kind in _NEMOTRON_ATTENTION]
        self.moe_layers = [i for i, kind in enumerate(pattern) if kind == "moe"]
        self.head_dim_kv = self.hparams.get("head_dim", self.hparams.get("attention_head_dim"))
        if self.head_dim_kv is None:
            raise errors.InvalidConfigError("config.json: Nemotron-H needs head_dim")
        self.d_model = self.find(("mamba_head_dim", "hidden_size", "d_model"))
        self.n_group = self.find(("n_groups", "num_groups"))
        self.d_inner = self.find(("num_heads",)) * self.d_model
        self._check_ssm_sizes()
        self.head_dim = self.find(("hidden_size",)) // self.find(("num_attention_heads",))
        self._stacks = ExpertStacks(self.find(("n_routed_experts",)), ("down_proj", "up_proj"),
                                    "backbone.layers.{bid}.mixer.experts.{xid}.{proj}.weight",
                                    "model.layers.{bid}.mlp.experts.{proj}.weight")

    def source_name(self, name: str) -> str | None:
        if name.startswith("mtp."):
            raise errors.UnsupportedArchitectureError(f"{self.hf_arch} with multi-token prediction layers is not supported")
        if name.startswith("model.layers.") and ".mixer." in name:
            name = name.replace("model.layers.", "backbone.layers.", 1)  # PEFT's names
        return super().source_name(name)

    def add_hparams(self, w: gguf.GGUFWriter, file_type: int) -> None:
        super().add_hparams(w, file_type)
        hp = self.hparams
        w.add_key_length(self.head_dim_kv)
        w.add_value_length(self.head_dim_kv)
        w.add_feed_forward_length([self._required("moe_intermediate_size") if i in self.moe_layers else 0
                                   for i in range(self.block_count)])
        w.add_expert_used_count(self._required("num_experts_per_tok"))
        w.add_expert_feed_forward_length(self._required("moe_intermediate_size"))
        w.add_expert_shared_feed_forward_length(self._required("moe_shared_expert_intermediate_size"))
        w.add_expert_count(self._required("n_routed_experts"))
        w.add_expert_shared_count(self._required("n_shared_experts"))
        w.add_expert_weights_norm(self._required("norm_topk_prob"))
        w.add_expert_weights_scale(self._required("routed_scaling_factor"))
        w.add_expert_group_count(self._required("n_group"))
        w.add_expert_used_count(hp["num_experts_per_tok"])

    def _required(self, key: str) -> Any:
        if self.hparams.get(key) is None:
            raise errors.InvalidConfigError(f"config.json: Nemotron-H MoE needs {key}")
        return self.hparams[key]

    def convert(self, name: str, node: Node, bid: int | None) -> Iterator[tuple[str, Node]]:
        if bid is not None and ".mixer.experts." in name:
            yield from self._stacks.add(name, node, bid, self.map_name)
            return
        yield from super().convert(name, node, bid)

    def finish(self) -> Iterator[tuple[str, Node]]:
        self._stacks.check_complete()
        return iter(())
