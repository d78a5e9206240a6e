"""DeepSeek-V4 (V4-Flash, V4-Pro): DeepSeek's own tensor names, FP8 layers, MXFP4 experts, hyper-connections.

The release keeps DeepSeek's inference names (``embed``, ``layers.{i}.attn.wq_a``, ``ffn.experts.{e}.w1``,
``hc_attn_fn``, ...), which no HF name map knows, so this module maps them itself, as the reference
does. Three storage formats meet in one checkpoint and the reference treats each its own way:

- linear layers are F8_E4M3 with an E8M0 ``.scale`` per 128 x 128 block: dequantized (weight x 2^(e -
  127), float32, edge blocks partial) and then written as Q8_0 *whatever the outtype* (the reference
  forces it; rows that do not split into blocks of 32 fall back to F16);
- routed experts are MXFP4 (I8, two E2M1 codes a byte, and an E8M0 ``.scale`` per 32 values): repacked,
  bits only, into GGML ``MXFP4`` stacks (``graph.MXFP4``), written first, expert by expert;
- everything else keeps its source type: bf16 matrices stay BF16, float32 tensors (hyper-connection
  mixers, sinks, the compressors' positional biases, the router bias) stay F32.

So the outtype barely matters, and the file always says ``MOSTLY_MXFP4_MOE``. The first
``num_hash_layers`` layers route by a token -> expert table (``ffn.gate.tid2eid``, I64), written as
I32 before the experts; their router bias is unused and left out. The MTP block (``mtp.*``) is left
out, as the reference leaves it by default (its bytes are never fetched).

The reference merges config.json's raw keys under transformers' (``compress_ratios`` and
``num_hash_layers`` exist only there, transformers folds them into layer types) and takes the yarn
keys from the raw ``rope_scaling``; ``use_files`` does the same. It also writes its own bundled chat
template right after ``general.architecture``, which the repo's template then overwrites in place: a
repo with a chat template converts byte for byte; one without would need llama.cpp's bundled text,
which hfstream does not carry: it is refused unless ``--chat-template`` gives a template (the bundled
file gives the reference's bytes).
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, ClassVar, Iterable, Iterator, Mapping, Sequence

import gguf
from gguf import MODEL_TENSOR as MT
from gguf import GGMLQuantizationType as QT
from gguf import LlamaFileType as FT

from .. import errors, jsonfile, vocab
from ..graph import MXFP4, BlockScale, Bytes, EncodedStack, Int32, Load, Node
from ..hfconfig import INT_HPARAMS
from ..quant import OutType
from ..safetensors import SourceTensor
from . import register
from .base import SIZES, ShapeRule, TextFamily

_FP8 = ("F8_E4M3", "F8_E5M2")
#: the reference dequantizes V4's FP8 with 128 x 128 blocks whatever weight_block_size says
_FP8_BLOCK = (128, 128)
_EXPERT = re.compile(r"layers\.\d+\.ffn\.experts\.\d+\.w[123]\.(weight|scale)")
_LAYER_NAME = re.compile(r"layers\.(\d+)\.(.+)")
#: (projection, GGUF name) of the routed experts, in the order the reference writes their stacks
_EXPERT_STACKS = (("w1", "blk.{bid}.ffn_gate_exps.weight"), ("w2", "blk.{bid}.ffn_down_exps.weight"),
                  ("w3", "blk.{bid}.ffn_up_exps.weight"))
_TID2EID = "blk.{bid}.ffn_gate_tid2eid.weight"

# GGUF names as the reference's gguf-py spells them (PyPI's gguf lacks most of these kinds)
_ROOT: Mapping[str, str] = {
    "embed.weight": "token_embd.weight",
    "norm.weight": "output_norm.weight",
    "head.weight": "output.weight",
    "hc_head_fn": "output_hc_fn.weight",
    "hc_head_base": "output_hc_base.weight",
    "hc_head_scale": "output_hc_scale.weight",
}
_PER_LAYER: Mapping[str, str] = {
    "hc_attn_fn": "hc_attn_fn.weight",
    "hc_attn_base": "hc_attn_base.weight",
    "hc_attn_scale": "hc_attn_scale.weight",
    "hc_ffn_fn": "hc_ffn_fn.weight",
    "hc_ffn_base": "hc_ffn_base.weight",
    "hc_ffn_scale": "hc_ffn_scale.weight",
    "attn.attn_sink": "attn_sinks.weight",
    "attn.wq_a.weight": "attn_q_a.weight",
    "attn.wq_b.weight": "attn_q_b.weight",
    "attn.q_norm.weight": "attn_q_a_norm.weight",
    "attn.wkv.weight": "attn_kv.weight",
    "attn.kv_norm.weight": "attn_kv_a_norm.weight",
    "attn.wo_a.weight": "attn_output_a.weight",
    "attn.wo_b.weight": "attn_output_b.weight",
    "attn.compressor.ape": "attn_compressor_ape.weight",
    "attn.compressor.wkv.weight": "attn_compressor_kv.weight",
    "attn.compressor.wgate.weight": "attn_compressor_gate.weight",
    "attn.compressor.norm.weight": "attn_compressor_norm.weight",
    "attn.indexer.wq_b.weight": "indexer.attn_q_b.weight",
    "attn.indexer.weights_proj.weight": "indexer.proj.weight",
    "attn.indexer.compressor.ape": "indexer_compressor_ape.weight",
    "attn.indexer.compressor.wkv.weight": "indexer_compressor_kv.weight",
    "attn.indexer.compressor.wgate.weight": "indexer_compressor_gate.weight",
    "attn.indexer.compressor.norm.weight": "indexer_compressor_norm.weight",
    "attn_norm.weight": "attn_norm.weight",
    "ffn_norm.weight": "ffn_norm.weight",
    "ffn.gate.weight": "ffn_gate_inp.weight",
    "ffn.gate.bias": "exp_probs_b.bias",
    "ffn.gate.bias_vl": "exp_probs_b_vl.bias",
    "ffn.gate.tid2eid": "ffn_gate_tid2eid.weight",
    "ffn.shared_experts.w1.weight": "ffn_gate_shexp.weight",
    "ffn.shared_experts.w2.weight": "ffn_down_shexp.weight",
    "ffn.shared_experts.w3.weight": "ffn_up_shexp.weight",
}
#: the kinds of the reference's ``deepseek4`` tensor list that PyPI's gguf has, for the type rules
#: (the router kept F32 and the embedding Q8_0 unless forced; the others are forced or 1-D)
_KINDS = tuple(getattr(MT, k) for k in (
    "TOKEN_EMBD", "OUTPUT_NORM", "OUTPUT", "ATTN_NORM", "ATTN_SINKS", "ATTN_Q_A", "ATTN_Q_B", "ATTN_Q_A_NORM",
    "INDEXER_PROJ", "INDEXER_ATTN_Q_B", "FFN_GATE_INP", "FFN_EXP_PROBS_B", "FFN_NORM", "FFN_GATE_EXP",
    "FFN_DOWN_EXP", "FFN_UP_EXP", "FFN_GATE_SHEXP", "FFN_DOWN_SHEXP", "FFN_UP_SHEXP") if hasattr(MT, k))

_L = r"layers\.\d+\."
_V4_HPARAMS = {
    **INT_HPARAMS,
    "V4 sizes": (("q_lora_rank", "o_lora_rank", "o_groups", "hc_mult", "moe_intermediate_size", "head_dim",
                  "index_n_heads", "index_head_dim", "index_topk", "qk_rope_head_dim", "sliding_window"), 1, 1 << 24),
    "V4 counts": (("n_shared_experts", "hc_sinkhorn_iters"), 0, 1 << 16),
}


@register
class DeepseekV4(TextFamily):
    hf_architectures: ClassVar[tuple[str, ...]] = ("DeepseekV4ForCausalLM",)
    model_types: ClassVar[tuple[str, ...]] = ("deepseek_v4",)
    # not in PyPI's gguf: the name is written as such, the tensor names come from _ROOT/_PER_LAYER
    gguf_arch = gguf.MODEL_ARCH.DEEPSEEK2
    arch_name = "deepseek4"
    vocab_strategies = ("bpe",)
    hparam_ints = _V4_HPARAMS
    shape_sizes = {**SIZES, "q_rank": ("q_lora_rank",), "head_dim": ("head_dim",), "experts": ("n_routed_experts",),
                   "moe_ffn": ("moe_intermediate_size",), "n_shared": ("n_shared_experts",),
                   "o_groups": ("o_groups",), "o_rank": ("o_lora_rank",), "index_heads": ("index_n_heads",),
                   "index_dim": ("index_head_dim",), "hc": ("hc_mult",)}
    shape_rules: ClassVar[tuple[ShapeRule, ...]] = (
        (r"(embed|head)\.weight", ("vocab", "hidden")),
        (r"norm\.weight", ("hidden",)),
        (_L + r"(attn_norm|ffn_norm)\.weight", ("hidden",)),
        (_L + r"attn\.wq_a\.weight", ("q_rank", "hidden")),
        (_L + r"attn\.q_norm\.weight", ("q_rank",)),
        (_L + r"attn\.wq_b\.weight", ("heads*head_dim", "q_rank")),
        (_L + r"attn\.wkv\.weight", ("head_dim", "hidden")),
        (_L + r"attn\.kv_norm\.weight", ("head_dim",)),
        (_L + r"attn\.wo_b\.weight", ("hidden", "o_groups*o_rank")),
        (_L + r"attn\.attn_sink", ("heads",)),
        (_L + r"attn\.indexer\.wq_b\.weight", ("index_heads*index_dim", "q_rank")),
        (_L + r"attn\.indexer\.weights_proj\.weight", ("index_heads", "hidden")),
        (_L + r"ffn\.gate\.weight", ("experts", "hidden")),
        (_L + r"ffn\.gate\.bias", ("experts",)),
        (_L + r"ffn\.shared_experts\.w[13]\.weight", ("moe_ffn*n_shared", "hidden")),
        (_L + r"ffn\.shared_experts\.w2\.weight", ("hidden", "moe_ffn*n_shared")),
    )

    def __init__(self, hparams, hf_arch):
        super().__init__(hparams, hf_arch)
        self._sources: dict[str, SourceTensor] = {}
        self._dequantized: set[str] = set()
        self._generated: list[tuple[str, Node]] = []
        self._generated_names: set[str] = set()
        self._chat_template: str | None = None

    @classmethod
    def tensor_kinds(cls) -> tuple[gguf.MODEL_TENSOR, ...]:
        return _KINDS

    def check_shapes(self, sources: Iterable[tuple[str, SourceTensor]]) -> None:
        """The rules, then what they cannot spell: the hyper-connection mixers ((2 + hc) x hc outputs
        from hc x hidden) and the compressors (twice the head width, with an indexer, at ratio 4)."""
        sources = list(sources)
        super().check_shapes(sources)
        hp = self.hparams
        hidden, hc, ratios = hp["hidden_size"], hp["hc_mult"], hp.get("compress_ratios")
        mix = (2 + hc) * hc
        want: dict[str, tuple[int, ...]] = {
            "hc_head_fn": (hc, hc * hidden), "hc_head_base": (hc,), "hc_head_scale": (1,)}
        for bid in range(self.block_count):
            for part in ("attn", "ffn"):
                p = f"layers.{bid}.hc_{part}"
                want.update({p + "_fn": (mix, hc * hidden), p + "_base": (mix,), p + "_scale": (3,)})
            ratio = ratios[bid] if isinstance(ratios, list) and bid < len(ratios) and type(ratios[bid]) is int else 0
            for prefix, head in (("attn.compressor.", hp["head_dim"]), ("attn.indexer.compressor.", hp["index_head_dim"])):
                width = (2 if ratio == 4 else 1) * head
                p = f"layers.{bid}.{prefix}"
                want.update({p + "ape": (ratio, width), p + "wkv.weight": (width, hidden),
                             p + "wgate.weight": (width, hidden), p + "norm.weight": (head,)})
        for name, src in sources:
            if name in want and tuple(src.shape) != want[name]:
                raise errors.ConfigMismatchError(
                    f"{src.file}: tensor {name!r} has shape {list(src.shape)} but config.json makes it "
                    f"{list(want[name])} (hidden_size {hidden}, hc_mult {hc}, head_dim {hp['head_dim']}, "
                    f"index_head_dim {hp['index_head_dim']}, compress_ratios)")

    # -- config ---------------------------------------------------------------

    def use_files(self, files: Mapping[str, bytes]) -> None:
        """config.json's own keys under transformers' (as the reference merges them), the yarn keys from
        its raw ``rope_scaling``, and the chat template the reference's bundled one gives way to."""
        raw = jsonfile.load(files["config.json"], "config.json", expect=dict) if "config.json" in files else {}
        for key, value in raw.items():
            self.hparams.setdefault(key, value)
        self.rope = self._rope_parameters()
        scaling = raw.get("rope_scaling")
        if self.rope.get("full_attention", self.rope).get("rope_type") is None and isinstance(scaling, dict):
            scaling = dict(scaling)
            if "rope_type" not in scaling and scaling.get("type") is not None:
                scaling["rope_type"] = scaling["type"]
            self.rope.update(scaling)
        self._check_config()
        self._chat_template = _repo_chat_template(files)
        if self._chat_template is None:
            raise errors.UnsupportedTokenizerError(
                f"{self.hf_arch} repo without a chat template: llama.cpp's converter writes its own bundled "
                "DeepSeek-V4 template, which hfstream does not carry; give it with --chat-template FILE "
                "(llama.cpp's models/templates/deepseek-ai-DeepSeek-V4.jinja gives the reference's file)")

    def _check_config(self) -> None:
        hp = self.hparams
        ratios, n_hash = hp.get("compress_ratios"), hp.get("num_hash_layers")
        if (not isinstance(ratios, list) or len(ratios) < self.block_count
                or not all(type(r) is int and r >= 0 for r in ratios)):
            raise errors.InvalidConfigError(
                "config.json: compress_ratios must list a non-negative integer per layer (num_hidden_layers "
                f"{self.block_count})")
        if type(n_hash) is not int or not 0 <= n_hash <= self.block_count:
            raise errors.InvalidConfigError(
                f"config.json: num_hash_layers must be an integer from 0 to num_hidden_layers, not {n_hash!r}")
        for key in ("swiglu_limit", "routed_scaling_factor", "compress_rope_theta", "hc_eps"):
            if type(hp.get(key)) not in (int, float) or not math.isfinite(hp[key]):
                raise errors.InvalidConfigError(f"config.json: {key} must be a number")

    def output_type(self, out: OutType) -> OutType:
        if out.mix:
            raise errors.UnsupportedOptionError(
                f"--outtype {out.name}: DeepSeek-V4 is written as llama.cpp's converter writes it (f32, f16, bf16, "
                "q8_0 or auto: FP8 layers Q8_0, MXFP4 experts); its K-quant mixes are not checked against "
                "llama-quantize")
        # the reference records MXFP4_MOE whatever the outtype (after choosing the tensor types by it)
        return dataclasses.replace(out, file_type=FT.MOSTLY_MXFP4_MOE)

    # -- tensors --------------------------------------------------------------

    def layer_kind(self, bid: int) -> str:
        # a layer's compressor (and indexer) come with its compression ratio; hash layers route by a table
        ratio = self.hparams["compress_ratios"][bid]
        return f"ratio{ratio}" + ("+hash" if bid < self.hparams["num_hash_layers"] else "")

    def source_name(self, name: str) -> str | None:
        if name.startswith(("mtp.", "aligner.", "image_")):
            return None  # the MTP block, and the vision parts of V4-Flash-Vision
        layer = _LAYER_NAME.fullmatch(name)
        if layer is not None and layer.group(2) == "ffn.gate.bias" and int(layer.group(1)) < self.hparams["num_hash_layers"]:
            return None  # hash layers route by their table: their router bias is unused (the reference drops it)
        return super().source_name(name)

    def source_nodes(self, sources: Sequence[tuple[str, SourceTensor]]) -> list[tuple[str, Node]]:
        """FP8 weights times their E8M0 ``.scale`` (dropped); the experts' ``.scale`` stay for the repack."""
        by_name = dict(sources)
        scale_of: dict[str, str] = {}  # FP8 weight -> its scale
        for name, _ in sources:
            weight = name.removesuffix(".scale") + ".weight"
            if name.endswith(".scale") and weight in by_name and by_name[weight].dtype in _FP8:
                scale_of[weight] = name
        dropped = set(scale_of.values())
        out: list[tuple[str, Node]] = []
        for name, src in sources:
            if name in dropped:
                continue
            if name in scale_of:
                scale = _fp8_scale(name, src, by_name[scale_of[name]])
                out.append((name, BlockScale(Load(src), Load(scale), _FP8_BLOCK)))
                self._dequantized.add(name)
            else:
                out.append((name, Load(src)))
        return out

    def use_sources(self, sources: Sequence[tuple[str, SourceTensor]]) -> None:
        """The tensors the reference writes before all others: each hash layer's token -> expert table
        (I32), then every layer's routed experts repacked into MXFP4 (gate, down, up)."""
        self._sources = dict(sources)
        n_hash, n_exp = self.hparams["num_hash_layers"], self.find(("n_routed_experts",))
        for bid in range(n_hash):
            name = f"layers.{bid}.ffn.gate.tid2eid"
            if name not in self._sources:
                raise errors.InvalidHeaderError(f"hash-routed layer {bid} has no {name!r}")
            self._generated.append((_TID2EID.format(bid=bid), Int32(self._sources[name])))
        for bid in range(self.block_count):
            for proj, out_name in _EXPERT_STACKS:
                parts = [self._mxfp4(f"layers.{bid}.ffn.experts.{xid}.{proj}") for xid in range(n_exp)]
                self._generated.append((out_name.format(bid=bid), EncodedStack(tuple(parts))))
        for name in self._sources:
            if _EXPERT.fullmatch(name) and (int(name.split(".")[1]) >= self.block_count
                                            or int(name.split(".")[4]) >= n_exp):
                raise errors.InvalidHeaderError(f"unexpected expert tensor {name!r} (num_hidden_layers "
                                                f"{self.block_count}, n_routed_experts {n_exp})")

    def _mxfp4(self, stem: str) -> Node:
        weight, scale = self._sources.get(stem + ".weight"), self._sources.get(stem + ".scale")
        if weight is None or scale is None:
            raise errors.InvalidHeaderError(f"routed expert tensor {stem + ('.weight' if weight is None else '.scale')!r} "
                                            "is missing (DeepSeek-V4 experts are MXFP4: a weight and its scale)")
        if (weight.dtype not in ("I8", "U8") or scale.dtype not in ("F8_E8M0", "U8") or len(weight.shape) != 2
                or weight.shape[1] % 16 or tuple(scale.shape) != (weight.shape[0], weight.shape[1] // 16)):
            raise errors.InvalidHeaderError(
                f"{weight.file}: expert {stem}: weight {weight.dtype} {list(weight.shape)} and scale {scale.dtype} "
                f"{list(scale.shape)} are not MXFP4 (I8 [rows, cols / 2] and E8M0 [rows, cols / 32])")
        rows, n_blocks = scale.shape
        return MXFP4(Bytes(weight, (rows, n_blocks * 16)), Bytes(scale, (rows, n_blocks)))

    def extra_tensors(self) -> Iterable[tuple[str, Node]]:
        self._generated_names = {name for name, _ in self._generated}
        return self._generated

    def convert(self, name: str, node: Node, bid: int | None) -> Iterator[tuple[str, Node]]:
        if name in self._generated_names:
            yield name, node  # from use_sources, named already
            return
        if _EXPERT.fullmatch(name):
            return  # repacked in use_sources
        if name.endswith(".ffn.gate.tid2eid"):
            return  # written in use_sources
        yield self._gguf_name(name, bid), node

    def _gguf_name(self, name: str, bid: int | None) -> str:
        if name in _ROOT:
            return _ROOT[name]
        layer = _LAYER_NAME.fullmatch(name)
        if layer is not None and int(layer.group(1)) == bid and layer.group(2) in _PER_LAYER:
            return f"blk.{bid}.{_PER_LAYER[layer.group(2)]}"
        raise errors.UnsupportedArchitectureError(f"cannot map tensor {name!r} of {self.hf_arch} to a llama.cpp tensor name")

    def forced_type(self, gguf_name: str, bid: int | None, source_name: str | None) -> QT | None:
        """The reference keeps each tensor in its source's kind: dequantized FP8 as Q8_0, bf16 matrices
        as BF16, float32 as F32."""
        src = self._sources.get(source_name) if source_name is not None else None
        if src is None:
            return None
        matrix = len(src.shape) >= 2
        if source_name in self._dequantized and matrix:
            return QT.Q8_0
        if src.dtype == "F32":
            return QT.F32
        if src.dtype == "BF16" and matrix:
            return QT.BF16
        return None

    # -- hyperparameters ------------------------------------------------------

    def add_tensor_time_hparams(self, w: gguf.GGUFWriter) -> None:
        # the reference's bundled template goes here; the repo's (written with the vocabulary) takes its place
        if self._chat_template is not None:
            w.add_chat_template(self._chat_template)

    def add_hparams(self, w: gguf.GGUFWriter, file_type: int) -> None:
        super().add_hparams(w, file_type)
        hp, n = self.hparams, self.block_count
        w.add_rope_dimension_count(hp["qk_rope_head_dim"])
        w.add_q_lora_rank(hp["q_lora_rank"])
        w.add_sliding_window(hp["sliding_window"])
        w.add_expert_feed_forward_length(hp["moe_intermediate_size"])
        w.add_expert_shared_count(hp["n_shared_experts"])
        w.add_expert_weights_scale(hp["routed_scaling_factor"])
        w.add_expert_weights_norm(hp["norm_topk_prob"])
        w.add_swiglu_clamp_exp([hp["swiglu_limit"]] * n)
        w.add_swiglu_clamp_shexp([hp["swiglu_limit"]] * n)
        w.add_indexer_head_count(hp["index_n_heads"])
        w.add_indexer_key_length(hp["index_head_dim"])
        w.add_indexer_top_k(hp["index_topk"])
        # keys PyPI's gguf has no writer method for (the reference's gguf-py names)
        arch = w.arch
        w.add_uint32(f"{arch}.attention.output_group_count", hp["o_groups"])
        w.add_uint32(f"{arch}.attention.output_lora_rank", hp["o_lora_rank"])
        w.add_array(f"{arch}.attention.compress_ratios", hp["compress_ratios"])
        w.add_float32(f"{arch}.attention.compress_rope_freq_base", hp["compress_rope_theta"])
        w.add_uint32(f"{arch}.hyper_connection.count", hp["hc_mult"])
        w.add_uint32(f"{arch}.hyper_connection.sinkhorn_iterations", hp["hc_sinkhorn_iters"])
        w.add_float32(f"{arch}.hyper_connection.epsilon", hp["hc_eps"])
        w.add_uint32(f"{arch}.hash_layer_count", hp["num_hash_layers"])
        w.add_embedding_length_out(hp["hidden_size"] * hp["hc_mult"])


def _fp8_scale(name: str, weight: SourceTensor, scale: SourceTensor) -> SourceTensor:
    """The scale of an FP8 weight, checked: E8M0, one per 128 x 128 block (edge blocks partial)."""
    want = tuple(-(-d // b) for d, b in zip(weight.shape, _FP8_BLOCK))
    if scale.dtype not in ("F8_E8M0", "U8") or len(weight.shape) != 2 or tuple(scale.shape) != want:
        raise errors.ConfigMismatchError(
            f"{scale.file}: scale {scale.name!r} ({scale.dtype} {list(scale.shape)}) does not fit FP8 weight {name!r} "
            f"{list(weight.shape)}: DeepSeek-V4 scales are E8M0, one per 128 x 128 block")
    if scale.dtype == "U8":  # the same bytes; decode them as exponents
        scale = dataclasses.replace(scale, dtype="F8_E8M0")
    return scale


def _repo_chat_template(files: Mapping[str, bytes]) -> str | None:
    """The single chat template the repo's tokenizer files give, as gguf-py's SpecialVocab finds it
    (tokenizer_config.json's ``chat_template``, else chat_template.jinja / .json), or None."""
    config: Any = vocab.tokenizer_config(files).get("chat_template")
    if config is None and "chat_template.jinja" in files:
        config = files["chat_template.jinja"].decode("utf-8", errors="replace")
    elif config is None and "chat_template.json" in files:
        config = jsonfile.load(files["chat_template.json"], "chat_template.json", expect=dict).get("chat_template")
    return config if isinstance(config, str) else None
