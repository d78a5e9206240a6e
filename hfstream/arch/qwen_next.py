"""Qwen3-Next and Qwen3.5 (dense and MoE; text, and the text model of the multimodal checkpoints):
hybrid stacks of gated-delta-net (linear attention) and gated full-attention layers, with the
multi-token-prediction (MTP) block the checkpoints ship.

What the reference does to them, and so what is done here:

- Gated delta nets (``linear_attn.*``): ``A_log`` is written as ``ssm_a = -exp(A_log)``, ``dt_bias`` as
  ``ssm_dt.bias``, the conv1d weight (channels, 1, kernel) squeezed to (channels, kernel). Every other
  ``*norm.weight`` gets +1 (these RMSNorms scale by 1 + w, like Gemma's); the gated-delta-net norm does not.
- Qwen3-Next fuses the input projections per key head: ``in_proj_qkvz`` holds, for each key head, its
  q and k rows and the v and z rows of its value heads. The reference regroups the rows into
  ``attn_qkv`` (every q, every k, every v) and ``attn_gate`` (every z); ``in_proj_ba`` stays as it is.
- Qwen3.5 keeps them apart (``in_proj_qkv``, ``in_proj_z``, ``in_proj_b``, ``in_proj_a``) and stores the
  value heads of each key head together ("grouped"). With more value heads than key heads, the
  reference interleaves them ("tiled": the first value head of every key head, then the second, ...)
  wherever a value head indexes rows or columns: the v rows of ``in_proj_qkv`` and of the conv1d, the
  rows of ``in_proj_z``/``b``/``a``, the columns of ``out_proj``, and ``A_log``/``dt_bias``.
- MoE layers: experts one tensor each are stacked per layer (``ffn_*_exps``); a fused stack
  (``mlp.experts.gate_up_proj``, as Qwen3.5-MoE's layers are stored) is cut into its gate and up halves.
  The shared expert and its gate map one to one.
- MTP: ``mtp.layers.{i}.*`` become layer ``num_hidden_layers + i`` and ``mtp.fc`` /
  ``pre_fc_norm_embedding`` / ``pre_fc_norm_hidden`` / ``norm`` that layer's ``nextn.eh_proj`` / ``enorm`` /
  ``hnorm`` / ``shared_head_norm``. There are ``mtp_num_hidden_layers`` MTP layers (Qwen3.5's config),
  else as many as the checkpoint holds (Qwen3-Next's config does not say); they count in ``block_count``.
  A checkpoint without any ``mtp.*`` tensor (a text model saved by transformers, which drops them, while
  its config still counts them) is converted as the reference's ``--no-mtp`` converts it: by default the
  reference counts the missing layers and writes a file llama.cpp refuses to load (or, with no count in
  the config either, stops).
- Keys: the common ones, the expert feed-forward lengths, the number of MTP layers, the ssm sizes, which
  layers are recurrent (from ``layer_types``; MTP layers are not), the full-attention interval, the rope
  dimension count (``head_dim * partial_rotary_factor``); Qwen3.5 always writes mrope sections (a
  default when its config has none).

gguf 0.19 (PyPI) lacks the ``nextn`` tensor names of these architectures and the recurrent-layers
key, so both are spelled here. The vision tower of the multimodal checkpoints is left out
(``TextFamily.source_name``); so is nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from typing import ClassVar

import gguf

from .. import errors
from ..graph import AddScalar, GatherRows, NegExp, Node, PermuteCols, Reshape
from ..hfconfig import check_hparams
from ..safetensors import SourceTensor
from . import register
from .base import DECODER_SHAPES, HYBRID_REQUIRED_TENSORS, LAYER
from .qwen import Qwen2Moe

MT = gguf.MODEL_TENSOR

#: ``mtp.{part}.weight`` -> the part's name in the MTP layer (which the tensor map then names ``nextn.*``)
_MTP_PARTS = {"fc": "eh_proj", "pre_fc_norm_embedding": "enorm", "pre_fc_norm_hidden": "hnorm",
              "norm": "shared_head.norm"}
#: the MTP layer's own tensors, which gguf 0.19's map lacks for these architectures
_NEXTN = {"eh_proj.weight": MT.NEXTN_EH_PROJ, "enorm.weight": MT.NEXTN_ENORM, "hnorm.weight": MT.NEXTN_HNORM,
          "shared_head.norm.weight": MT.NEXTN_SHARED_HEAD_NORM}
_NEXTN_NAME = re.compile(r"model\.layers\.(\d+)\.(" + "|".join(re.escape(k) for k in _NEXTN) + ")")
#: an MTP layer index beyond this is refused (real checkpoints have one)
MAX_MTP_LAYERS = 64
KEY_RECURRENT_LAYERS = "{arch}.attention.recurrent_layers"
_LAYER_PREFIX = re.compile(LAYER)

_LINEAR_INTS = {
    "linear key heads": (("linear_num_key_heads",), 1, 1 << 12),
    "linear value heads": (("linear_num_value_heads",), 1, 1 << 12),
    "linear key head size": (("linear_key_head_dim",), 1, 1 << 16),
    "linear value head size": (("linear_value_head_dim",), 1, 1 << 16),
    "conv kernel": (("linear_conv_kernel_dim",), 1, 1 << 10),
    "full attention interval": (("full_attention_interval",), 1, 4096),
    "mtp layers": (("mtp_num_hidden_layers",), 0, MAX_MTP_LAYERS),
}
_LINEAR_DIVISIBLE = (("linear value heads", "linear key heads", None),)


@register
class Qwen3Next(Qwen2Moe):
    hf_architectures: ClassVar[tuple[str, ...]] = ("Qwen3NextForCausalLM",)
    model_types: ClassVar[tuple[str, ...]] = ("qwen3_next",)
    gguf_arch = gguf.MODEL_ARCH.QWEN3NEXT
    vocab_strategies = ("bpe",)
    # the gated q_proj is twice the usual rows: checked with the linear attention in check_shapes
    shape_rules = tuple(rule for rule in DECODER_SHAPES if "q_proj\\.weight" not in rule[0])
    required_tensors = HYBRID_REQUIRED_TENSORS
    #: whether value heads are reordered from grouped to tiled (Qwen3.5; Qwen3-Next keeps them grouped)
    tiled_value_heads = False

    def __init__(self, hparams, hf_arch):
        super().__init__(hparams, hf_arch)
        check_hparams(self.hparams, ints=_LINEAR_INTS, floats=("partial_rotary_factor",), divisible=_LINEAR_DIVISIBLE)
        hp = self.find
        self.n_k_heads = hp(("linear_num_key_heads",))
        self.n_v_heads = hp(("linear_num_value_heads",))
        self.k_head_dim = hp(("linear_key_head_dim",))
        self.v_head_dim = hp(("linear_value_head_dim",))
        self.conv_kernel = hp(("linear_conv_kernel_dim",))
        #: the decoder's own layers; MTP layers come after them
        self.n_layer = self.block_count
        self._recurrent = self._recurrent_layers()
        self._mtp_tensors = False  # any mtp.* tensor in the checkpoint
        self._mtp_in_checkpoint = 0  # MTP layers it holds (mtp.layers.{i}.*)
        self._mtp_layers: int | None = None

    def _recurrent_layers(self) -> list[bool] | None:
        """Which decoder layers are linear attention, from ``layer_types`` (None when it is not set)."""
        types = self.hparams.get("layer_types")
        if types is None:
            return None
        if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
            raise errors.InvalidConfigError("config.json: layer_types must be a list of layer type names")
        if len(types) != self.n_layer:
            raise errors.InvalidConfigError(
                f"config.json: layer_types has {len(types)} entries, num_hidden_layers is {self.n_layer}")
        return [t == "linear_attention" for t in types]

    def layer_kind(self, bid: int) -> str:
        if bid >= self.n_layer:
            return "mtp"
        return "linear" if self._recurrent is not None and self._recurrent[bid] else "attention"

    # -- names ------------------------------------------------------------------

    def source_name(self, name: str) -> str | None:
        mapped = super().source_name(name)
        if mapped is None:
            return None
        name = mapped
        if name.startswith("model.mtp."):
            name = name[len("model."):]
        if not name.startswith("mtp."):
            return name
        self._mtp_tensors = True
        parts = name.split(".", 3)
        if len(parts) == 4 and parts[1] == "layers" and parts[2].isdecimal():
            i = int(parts[2])
            if i >= MAX_MTP_LAYERS:
                raise errors.UnsupportedArchitectureError(
                    f"tensor {name[:80]!r}: MTP layer {i}; at most {MAX_MTP_LAYERS} MTP layers are supported")
            self._mtp_in_checkpoint = max(self._mtp_in_checkpoint, i + 1)
            return f"model.layers.{self.n_layer + i}.{parts[3]}"
        if len(parts) == 3 and parts[1] in _MTP_PARTS:
            return f"model.layers.{self.n_layer}.{_MTP_PARTS[parts[1]]}.{parts[2]}"
        return name  # not a name the reference knows either: mapping it fails

    def mtp_layers(self) -> int:
        """How many MTP layers follow the decoder's (known once every source name was seen); the first
        call also sets ``block_count`` and the tensor map, which cover them."""
        if self._mtp_layers is None:
            n = 0  # no mtp.* tensor: as the reference's --no-mtp (see the module docstring)
            if self._mtp_tensors:
                # the config's count, else the checkpoint's (Qwen3-Next's config does not say)
                n = self.hparams.get("mtp_num_hidden_layers", 0) or self._mtp_in_checkpoint
                if not n:
                    raise errors.UnsupportedArchitectureError(
                        f"{self.hf_arch}: mtp.* tensors but no MTP layer (no mtp.layers.* tensors, no "
                        "mtp_num_hidden_layers in config.json); llama.cpp's converter refuses it too")
            self._mtp_layers = n
            self.block_count = self.n_layer + n
            self.tensor_map = gguf.get_tensor_name_map(self.gguf_arch, self.block_count)
        return self._mtp_layers

    def map_name(self, name: str, suffixes: Sequence[str] = (".weight", ".bias")) -> str:
        if (m := _NEXTN_NAME.fullmatch(name)) and int(m.group(1)) < self.block_count:
            return gguf.TENSOR_NAMES[_NEXTN[m.group(2)]].format(bid=int(m.group(1))) + ".weight"
        return super().map_name(name, suffixes)

    # -- shapes -----------------------------------------------------------------

    def check_shapes(self, sources: Iterable[tuple[str, SourceTensor]]) -> None:
        sources = list(sources)
        super().check_shapes(sources)
        expected = self._expected_shapes()
        for name, src in sources:
            layer = _LAYER_PREFIX.match(name)
            want = expected.get(name[layer.end():]) if layer else None
            if want is not None and tuple(src.shape) != want[0]:
                raise errors.ConfigMismatchError(
                    f"{src.file}: tensor {name[:80]!r} has shape {list(src.shape)} but config.json "
                    f"makes it {list(want[0])} ({want[1]})")

    def use_sources(self, sources: Sequence[tuple[str, SourceTensor]]) -> None:
        self.mtp_layers()  # every name is known now: refuse MTP tensors without MTP layers before any fetch

    def _expected_shapes(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """The shapes the transforms below rely on, as config.json makes them, by name within a layer."""
        h = self.find(("hidden_size",))
        nk, nv, dk, dv = self.n_k_heads, self.n_v_heads, self.k_head_dim, self.v_head_dim
        linear = (f"hidden_size {h}, linear_num_key_heads {nk}, linear_num_value_heads {nv}, "
                  f"linear_key_head_dim {dk}, linear_value_head_dim {dv}")
        conv = 2 * nk * dk + nv * dv
        p = "linear_attn."
        shapes = {
            p + "in_proj_qkvz.weight": ((2 * nk * dk + 2 * nv * dv, h), linear),
            p + "in_proj_ba.weight": ((2 * nv, h), linear),
            p + "in_proj_qkv.weight": ((conv, h), linear),
            p + "in_proj_z.weight": ((nv * dv, h), linear),
            p + "in_proj_a.weight": ((nv, h), linear),
            p + "in_proj_b.weight": ((nv, h), linear),
            p + "conv1d.weight": ((conv, 1, self.conv_kernel), f"{linear}, linear_conv_kernel_dim {self.conv_kernel}"),
            p + "A_log": ((nv,), f"linear_num_value_heads {nv}"),
            p + "dt_bias": ((nv,), f"linear_num_value_heads {nv}"),
            p + "norm.weight": ((dv,), f"linear_value_head_dim {dv}"),
            p + "out_proj.weight": ((h, nv * dv), linear),
        }
        heads, head_dim = self.find(("num_attention_heads",)), self.hparams.get("head_dim")
        if head_dim is not None:  # queries and their output gate
            shapes["self_attn.q_proj.weight"] = ((2 * heads * head_dim, h),
                                                 f"2 x num_attention_heads {heads} x head_dim {head_dim}")
        experts, ffn = self.hparams.get("num_experts"), self.hparams.get("moe_intermediate_size")
        if experts and ffn:
            why = f"num_experts {experts}, moe_intermediate_size {ffn}, hidden_size {h}"
            for suffix in ("", ".weight"):
                shapes["mlp.experts.gate_up_proj" + suffix] = ((experts, 2 * ffn, h), why)
                shapes["mlp.experts.down_proj" + suffix] = ((experts, h, ffn), why)
        return shapes

    # -- tensors ----------------------------------------------------------------

    def convert(self, name: str, node: Node, bid: int | None) -> Iterator[tuple[str, Node]]:
        self.mtp_layers()  # the tensor map must cover the MTP layers
        if "linear_attn." in name and self.tiled_value_heads and self.n_v_heads != self.n_k_heads:
            node = self._tile_value_heads(name, node)
        if name.endswith(".A_log"):
            node = NegExp(node)
        elif name.endswith(".dt_bias"):
            name = name.removesuffix(".dt_bias") + ".dt_proj.bias"
        elif "conv1d" in name:
            node = Reshape(node, tuple(d for d in node.shape if d != 1))
        elif name.endswith("norm.weight") and not name.endswith("linear_attn.norm.weight"):
            node = AddScalar(node, 1.0)

        if name.endswith("in_proj_qkvz.weight"):
            qkv, z = self._split_qkvz(node)
            yield gguf.TENSOR_NAMES[MT.ATTN_QKV].format(bid=bid) + ".weight", qkv
            yield gguf.TENSOR_NAMES[MT.ATTN_GATE].format(bid=bid) + ".weight", z
        elif name.endswith(("mlp.experts.gate_up_proj", "mlp.experts.gate_up_proj.weight")):
            base = name.removesuffix(".weight").removesuffix(".gate_up_proj")
            n_expert, rows, cols = node.shape
            half = rows // 2
            for proj, first in (("gate_proj", 0), ("up_proj", half)):
                runs = tuple((e * rows + first, half) for e in range(n_expert))
                yield self.map_name(f"{base}.{proj}.weight"), GatherRows(node, runs, (n_expert, half, cols))
        elif name.endswith(("mlp.experts.down_proj", "mlp.experts.down_proj.weight")):
            yield self.map_name(name.removesuffix(".weight") + ".weight"), node
        elif "experts" in name:
            yield from self._collect_expert(name, node, bid)
        else:
            yield self.map_name(name), node

    def _split_qkvz(self, node: Node) -> tuple[Node, Node]:
        """Qwen3-Next's rows [q, k, v, z] per key head regrouped as [every q, every k, every v] and [every z]."""
        dk = self.k_head_dim
        dvg = self.n_v_heads // self.n_k_heads * self.v_head_dim  # v (and z) rows of one key head
        group = 2 * dk + 2 * dvg
        cols = node.shape[1]
        groups = range(self.n_k_heads)
        qkv = tuple((g * group, dk) for g in groups) + tuple((g * group + dk, dk) for g in groups) \
            + tuple((g * group + 2 * dk, dvg) for g in groups)
        z = tuple((g * group + 2 * dk + dvg, dvg) for g in groups)
        return (GatherRows(node, qkv, (self.n_k_heads * (2 * dk + dvg), cols)),
                GatherRows(node, z, (self.n_k_heads * dvg, cols)))

    def _tile_value_heads(self, name: str, node: Node) -> Node:
        """Qwen3.5's value heads from grouped by key head to tiled, along what they index in ``name``."""
        nk, per_k, dk, dv = self.n_k_heads, self.n_v_heads // self.n_k_heads, self.k_head_dim, self.v_head_dim
        if ".in_proj_qkv." in name:
            return GatherRows(node, ((0, 2 * nk * dk),) + tiled_runs(nk, per_k, dv, 2 * nk * dk), node.shape)
        if ".in_proj_z." in name:
            return GatherRows(node, tiled_runs(nk, per_k, dv), node.shape)
        if ".in_proj_b." in name or ".in_proj_a." in name:
            return GatherRows(node, tiled_runs(nk, per_k, 1), node.shape)
        if ".A_log" in name or ".dt_bias" in name or ".dt_proj" in name:  # one value per value head
            if node.cols != self.n_v_heads:
                raise errors.ConfigMismatchError(
                    f"tensor {name[:80]!r} has shape {list(node.shape)}: expected {self.n_v_heads} values "
                    "per row (linear_num_value_heads)")
            return PermuteCols(node, tiled_order(nk, per_k, 1))
        if ".conv1d" in name:
            squeezed = Reshape(node, tuple(d for d in node.shape if d != 1))
            return GatherRows(squeezed, ((0, 2 * nk * dk),) + tiled_runs(nk, per_k, dv, 2 * nk * dk), squeezed.shape)
        if ".out_proj." in name:
            return PermuteCols(node, tiled_order(nk, per_k, dv))
        return node

    # -- keys -------------------------------------------------------------------

    def add_hparams(self, w: gguf.GGUFWriter, file_type: int) -> None:
        n_mtp = self.mtp_layers()
        super().add_hparams(w, file_type)
        if n_mtp:
            w.add_nextn_predict_layers(n_mtp)
        w.add_ssm_conv_kernel(self.conv_kernel)
        w.add_ssm_state_size(self.k_head_dim)
        w.add_ssm_group_count(self.n_k_heads)
        w.add_ssm_time_step_rank(self.n_v_heads)
        w.add_ssm_inner_size(self.v_head_dim * self.n_v_heads)
        if self._recurrent is not None:
            w.add_array(KEY_RECURRENT_LAYERS.format(arch=w.arch), self._recurrent + [False] * n_mtp)
        w.add_full_attention_interval(self.hparams.get("full_attention_interval", 4))
        head_dim = self.hparams.get("head_dim")
        if head_dim is None:
            head_dim = self.find(("hidden_size",)) // self.find(("num_attention_heads",))
        w.add_rope_dimension_count(int(head_dim * self.rope.get("partial_rotary_factor", 0.25)))


def tiled_order(n_k_heads: int, per_k: int, head_dim: int) -> tuple[int, ...]:
    """Old positions in new order when value heads go from grouped (head ``g * per_k + j`` is the j-th of
    key head g) to tiled (``j * n_k_heads + g``), each head ``head_dim`` long."""
    return tuple((g * per_k + j) * head_dim + d
                 for j in range(per_k) for g in range(n_k_heads) for d in range(head_dim))


def tiled_runs(n_k_heads: int, per_k: int, head_dim: int, offset: int = 0) -> tuple[tuple[int, int], ...]:
    """The same reorder as ``GatherRows`` runs: one run of ``head_dim`` rows per value head."""
    return tuple((offset + (g * per_k + j) * head_dim, head_dim) for j in range(per_k) for g in range(n_k_heads))


@register
class Qwen35(Qwen3Next):
    hf_architectures = ("Qwen3_5ForCausalLM", "Qwen3_5ForConditionalGeneration")
    model_types = ("qwen3_5_text", "qwen3_5")
    gguf_arch = gguf.MODEL_ARCH.QWEN35
    tiled_value_heads = True
    #: written when the config has no mrope sections: llama.cpp requires them and Qwen3.5 always uses them
    default_mrope_sections = (11, 11, 10, 0)

    def add_hparams(self, w: gguf.GGUFWriter, file_type: int) -> None:
        super().add_hparams(w, file_type)
        if "mrope_section" not in self.rope:
            w.add_rope_dimension_sections(list(self.default_mrope_sections))


@register
class Qwen35Moe(Qwen35):
    hf_architectures = ("Qwen3_5MoeForCausalLM", "Qwen3_5MoeForConditionalGeneration")
    model_types = ("qwen3_5_moe_text", "qwen3_5_moe")
    gguf_arch = gguf.MODEL_ARCH.QWEN35MOE

