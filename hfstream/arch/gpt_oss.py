"""gpt-oss (``GptOssForCausalLM``): attention with biases and sinks, experts fused per projection.

OpenAI's checkpoints (``quantization_config.quant_method: mxfp4``) store the experts as MXFP4
``*_blocks`` / ``*_scales``. The reference does not dequantize them: it repacks the bits into GGML
``MXFP4`` tensors whatever ``--outtype`` (``graph.MXFP4``), writes them before every other tensor,
in the order their ``*_scales`` come, and records ``general.file_type`` MOSTLY_MXFP4_MOE for f32,
f16 and bf16 (the file name says ``MXFP4_MOE``); q8_0 stays q8_0. ``gate_up`` rows alternate gate,
up, gate, ...: rows ``0::2`` are the gate, ``1::2`` the up projection (``graph.StrideRows``).

bf16 re-uploads store ``gate_up_proj`` [E, hidden, 2 ff] and ``down_proj`` [E, ff, hidden] ([in, out]):
transposed per expert, gate/up split by alternate columns, then the outtype as usual. The fused
``gate_up_proj_bias`` splits the same way. Sinks are ``self_attn.sinks`` (one per head), kept F32.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Iterator, Sequence

import gguf
from gguf import LlamaFileType as FT

from .. import errors
from ..graph import MXFP4, Bytes, Load, Node, StrideCols, StrideRows, SwapLastAxes
from ..quant import OutType
from ..safetensors import SourceTensor
from . import register
from .base import DECODER_SHAPES, LAYER, SIZES, TextFamily

_PACKED = ("_blocks", "_scales")
_EXPERTS = LAYER + r"mlp\.experts\."


@register
class GptOss(TextFamily):
    hf_architectures = ("GptOssForCausalLM",)
    model_types = ("gpt_oss",)
    gguf_arch = gguf.MODEL_ARCH.GPT_OSS
    vocab_strategies = ("bpe",)
    shape_sizes = {**SIZES, "experts": ("num_local_experts",)}
    shape_rules = DECODER_SHAPES + (
        (LAYER + r"self_attn\.o_proj\.bias", ("hidden",)),
        (LAYER + r"self_attn\.sinks\.weight", ("heads",)),
        (LAYER + r"mlp\.router\.weight", ("experts", "hidden")),
        (LAYER + r"mlp\.router\.bias", ("experts",)),
        (_EXPERTS + r"down_proj", ("experts", "ffn", "hidden")),
        (_EXPERTS + r"down_proj_bias", ("experts", "hidden")),
    )

    def __init__(self, hparams, hf_arch):
        super().__init__(hparams, hf_arch)
        quant = self.hparams.get("quantization_config")
        self.mxfp4 = isinstance(quant, dict) and quant.get("quant_method") == "mxfp4"
        self._repacked: list[tuple[str, Node]] = []

    def output_type(self, out: OutType) -> OutType:
        if self.mxfp4 and out.file_type in (FT.ALL_F32, FT.MOSTLY_F16, FT.MOSTLY_BF16):
            return dataclasses.replace(out, file_type=FT.MOSTLY_MXFP4_MOE)
        return out

    def check_shapes(self, sources: Iterable[tuple[str, SourceTensor]]) -> None:
        """The rules, then the fused and packed expert tensors: twice the ffn rows for gate_up, and
        for MXFP4 rows of blocks of 32 values (16 code bytes, one exponent)."""
        sources = list(sources)
        super().check_shapes(sources)
        n_exp, hidden, ffn = (self.find((key,)) for key in ("num_local_experts", "hidden_size", "intermediate_size"))
        want = {"gate_up_proj": (n_exp, hidden, 2 * ffn), "gate_up_proj_bias": (n_exp, 2 * ffn),
                "gate_up_proj_blocks": (n_exp, 2 * ffn, hidden // 32, 16),
                "gate_up_proj_scales": (n_exp, 2 * ffn, hidden // 32),
                "down_proj_blocks": (n_exp, hidden, ffn // 32, 16), "down_proj_scales": (n_exp, hidden, ffn // 32)}
        for name, src in sources:
            kind = name.rpartition(".mlp.experts.")[2] if ".mlp.experts." in name else None
            if kind not in want:
                continue
            blocked = kind.endswith(_PACKED) and (hidden if kind.startswith("gate_up") else ffn) % 32
            if tuple(src.shape) != want[kind] or blocked:
                raise errors.ConfigMismatchError(
                    f"{src.file}: tensor {src.name!r} has shape {list(src.shape)} but config.json makes it "
                    f"{list(want[kind])} (num_local_experts {n_exp}, hidden_size {hidden}, intermediate_size {ffn}"
                    f"{', MXFP4 rows in blocks of 32' if kind.endswith(_PACKED) else ''})")

    def source_name(self, name: str) -> str | None:
        kept = super().source_name(name)
        if kept is not None and kept.endswith(".self_attn.sinks"):
            return kept + ".weight"  # a bare parameter: the name map wants a suffix
        return kept

    def source_nodes(self, sources: Sequence[tuple[str, SourceTensor]]) -> list[tuple[str, Node]]:
        """``quant_method: mxfp4`` is this family's own (``use_sources`` repacks the experts): the
        other tensors are plain loads, not a dequantization."""
        if self.mxfp4:
            return [(name, Load(src)) for name, src in sources]
        return super().source_nodes(sources)

    def use_sources(self, sources: Sequence[tuple[str, SourceTensor]]) -> None:
        """Pair each ``*_blocks`` with its ``*_scales`` (any shard) and plan the MXFP4 tensors, in the
        order the reference repacks them: when it meets the scales."""
        blocks = {name.removesuffix("_blocks"): src for name, src in sources if name.endswith("_blocks")}
        seen = set()
        for name, src in sources:
            if not name.endswith("_scales"):
                continue
            stem = name.removesuffix("_scales")
            if stem not in blocks:
                raise errors.InvalidHeaderError(f"MXFP4 scales {name!r} have no {stem + '_blocks'!r}")
            seen.add(stem)
            self._repacked += self._repack(stem, blocks[stem], src)
        if missing := sorted(set(blocks) - seen):
            raise errors.InvalidHeaderError(f"MXFP4 blocks {missing[0] + '_blocks'!r} have no scales")

    def _repack(self, stem: str, blocks: SourceTensor, scales: SourceTensor) -> list[tuple[str, Node]]:
        if not stem.endswith(("mlp.experts.down_proj", "mlp.experts.gate_up_proj")):
            raise errors.UnsupportedArchitectureError(f"MXFP4 tensor {stem + '_blocks'!r} is not an expert projection")
        if (len(blocks.shape) != 4 or blocks.shape[-1] != 16 or tuple(scales.shape) != tuple(blocks.shape[:-1])
                or scales.dtype != "U8"):
            raise errors.InvalidHeaderError(
                f"MXFP4 {stem}: blocks {blocks.dtype} {list(blocks.shape)} and scales {scales.dtype} "
                f"{list(scales.shape)} are not [E, rows, n, 16] and [E, rows, n] of U8")
        n_exp, rows, n_blocks, _ = blocks.shape
        codes = Bytes(blocks, (n_exp, rows, n_blocks * 16))
        exps = Bytes(scales, (n_exp, rows, n_blocks))
        if stem.endswith("down_proj"):
            return [(self.map_name(stem + ".weight"), MXFP4(codes, exps))]
        if rows % 2:
            raise errors.InvalidHeaderError(f"MXFP4 {stem}: {rows} rows do not pair into gate and up")
        base = stem.removesuffix("gate_up_proj")
        return [(self.map_name(base + proj + ".weight"), MXFP4(StrideRows(codes, i, 2), StrideRows(exps, i, 2)))
                for i, proj in enumerate(("gate_proj", "up_proj"))]

    def extra_tensors(self):
        return self._repacked

    def convert(self, name: str, node: Node, bid: int | None) -> Iterator[tuple[str, Node]]:
        if name.endswith(_PACKED):
            return  # planned by use_sources
        if "mlp.experts.down_proj" in name:
            if name.endswith("down_proj_bias"):
                yield self.map_name(name.replace("down_proj_bias", "down_proj.bias")), node
            else:
                yield self.map_name(name.replace("down_proj", "down_proj.weight")), SwapLastAxes(node)
        elif "mlp.experts.gate_up_proj" in name:
            base = name.rsplit("gate_up_proj", 1)[0]
            if name.endswith("gate_up_proj_bias"):
                for i, proj in enumerate(("gate_proj", "up_proj")):
                    yield self.map_name(f"{base}{proj}.bias"), StrideCols(node, i, 2)
            else:
                for i, proj in enumerate(("gate_proj", "up_proj")):
                    yield self.map_name(f"{base}{proj}.weight"), StrideRows(SwapLastAxes(node), i, 2)
        else:
            yield self.map_name(name), node

    def add_hparams(self, w: gguf.GGUFWriter, file_type: int) -> None:
        super().add_hparams(w, file_type)
        w.add_sliding_window(self.find(("sliding_window",)))
        w.add_expert_feed_forward_length(self.find(("intermediate_size",)))
