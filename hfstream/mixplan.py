"""A llama-quantize mix applied to a plan: what ``llama-quantize`` does to the reference's F32 file.

The plan of a mix starts as the reference converter's F32 output (same tensors, all F32, same
keys). ``apply`` then does to it what llama-quantize does to that file:

- every tensor gets the type ``mixes.choose_types`` picks, and the tensors are put in
  llama-quantize's order (non-block tensors first, then block by block, names sorted);
- rows are weighted with the importance matrix's values when one is given (per expert for
  MoE stacks), and a type that needs one and has none is refused before anything is fetched;
- ``general.quantization_version`` and ``general.file_type`` move to the end of the keys (it
  sets them again), followed by the ``quantize.imatrix.*`` keys when an imatrix is used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import gguf
import numpy as np
from gguf import GGMLQuantizationType as QT

from . import errors, mixes, quant
from .imatrix import Imatrix


@dataclass(frozen=True)
class QuantOptions:
    """The options that only mixes take: type overrides and an importance matrix."""

    overrides: mixes.Overrides = field(default_factory=mixes.Overrides)
    imatrix: Imatrix | None = None

    def __bool__(self) -> bool:
        return bool(self.overrides) or self.imatrix is not None


def check_options(out: quant.OutType, opts: QuantOptions | None) -> None:
    """Overrides and --imatrix apply to the llama-quantize types only."""
    if opts and not out.mix:
        what = "--imatrix" if opts.imatrix is not None else "--tensor-type/--output-tensor-type/--token-embedding-type"
        raise errors.UnsupportedOptionError(
            f"{what} applies to the llama-quantize types (q4_k_m, iq4_xs, ...), not to --outtype {out.name}, "
            "which follows the reference converter")


def apply(out: quant.OutType, planned: list, writer: gguf.GGUFWriter, opts: QuantOptions | None) -> list:
    """Types, order and keys of the mix ``out``; returns the tensors in their new order."""
    opts = opts or QuantOptions()
    mix = mixes.MIXES[out.name]
    kv = {k: v.value for k, v in writer.kv_data[0].items()}
    model = mixes.ModelFacts.from_kv(kv)
    by_name = {t.name: t for t in planned}
    ne_of = {t.name: tuple(reversed(t.shape)) for t in planned}
    try:
        choices = mixes.choose_types(mix, list(ne_of.items()), model, opts.overrides,
                                     has_imatrix=opts.imatrix is not None)
    except ValueError as e:
        raise errors.UnsupportedOptionError(f"--outtype {out.name}: {e}") from None

    ordered = []
    for c in choices:
        t, ne = by_name[c.name], ne_of[c.name]
        if t.node.encoded is not None and c.qtype != t.qtype:
            # the reference's F32 file keeps these bytes (gpt-oss's MXFP4 experts), and llama-quantize
            # stops there: "requantizing from type mxfp4 is disabled"
            raise errors.UnsupportedOptionError(
                f"--outtype {out.name} would requantize {c.name}, which the source stores as {t.qtype.name} "
                f"(kept as it is, as the reference converter keeps it); llama-quantize refuses to requantize "
                f"{t.qtype.name}: use --outtype f32, f16, bf16, q8_0 or auto")
        if ne[0] % mixes.block_size(c.qtype):
            raise errors.UnsupportedOptionError(
                f"{c.name} cannot be {c.qtype.name}: its rows of {ne[0]} values do not split into "
                f"blocks of {mixes.block_size(c.qtype)}")
        weights = None
        if c.quantized and c.qtype != QT.F32 and opts.imatrix is not None:
            vectors = opts.imatrix.weights_for(c.name, ne)
            if vectors is not None:
                weights = quant.Weights(vectors, rows_per_mat=ne[1] if len(ne) > 1 else 1)
        if c.quantized and c.qtype != QT.F32 and weights is None and mixes.needs_imatrix(c.name, c.qtype, mix):
            if opts.imatrix is None:
                raise errors.ImatrixRequiredError(
                    f"--outtype {out.name} quantizes {c.name} to {c.qtype.name}, which needs an importance "
                    "matrix: pass --imatrix FILE (the output of llama.cpp's llama-imatrix)")
            raise errors.ImatrixRequiredError(
                f"{opts.imatrix.path} has no entry for {c.name}, which {c.qtype.name} needs")
        t.qtype = c.qtype
        t.nbytes = quant.nbytes(c.qtype, t.shape)
        t.weights = weights
        ordered.append(t)

    writer.tensors = [{}]
    for t in ordered:
        writer.add_tensor_info(t.name, t.shape, np.dtype(np.float32), t.nbytes, raw_dtype=t.qtype)

    kv_data = writer.kv_data[0]
    kv_data.pop(gguf.Keys.General.QUANTIZATION_VERSION, None)
    kv_data.pop(gguf.Keys.General.FILE_TYPE, None)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_file_type(int(mix.ftype))
    if opts.imatrix is not None:
        for key, value in opts.imatrix.kv():
            if isinstance(value, str):
                writer.add_string(key, value)
            else:
                writer.add_uint32(key, int(value))
    return ordered


def bits_per_weight(tensors: Sequence[tuple[Sequence[int], int]]) -> float:
    """Bits per weight of tensors given as (shape, bytes)."""
    n = sum(_count(shape) for shape, _ in tensors)
    return 8.0 * sum(b for _, b in tensors) / n if n else 0.0


def _count(shape: Sequence[int]) -> int:
    out = 1
    for d in shape:
        out *= int(d)
    return out


def options_from(tensor_types: Sequence[str] = (), output_tensor_type: str | None = None,
                 token_embedding_type: str | None = None, imatrix_path: str | None = None) -> QuantOptions | None:
    """QuantOptions from the command-line spellings (UnsupportedOptionError on a bad one); None when none is set."""
    from . import imatrix as imatrix_mod

    try:
        overrides = mixes.Overrides(
            tensor_types=tuple(mixes.parse_tensor_type(t) for t in tensor_types),
            output=mixes.parse_type(output_tensor_type) if output_tensor_type else None,
            token_embd=mixes.parse_type(token_embedding_type) if token_embedding_type else None)
    except ValueError as e:
        raise errors.UnsupportedOptionError(str(e)) from None
    im = imatrix_mod.load(imatrix_path) if imatrix_path else None
    opts = QuantOptions(overrides=overrides, imatrix=im)
    return opts if opts else None
