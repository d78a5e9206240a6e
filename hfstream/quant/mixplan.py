"""A llama-quantize mix, planned: what ``llama-quantize`` makes of the reference converter's F32 file.

The reference output of a mix takes two tools: the reference converter writes an F32 file, then
llama-quantize quantizes it. Both steps are decided here at once, before any tensor info exists:

- every tensor gets the type ``mixes.choose_types`` picks from the type it has in that F32 file
  (F32, or what its model family forces), in llama-quantize's order (non-block tensors first, then
  block by block, names sorted);
- rows are weighted with the importance matrix's values when one is given (per expert for MoE
  stacks), and a type that needs one and has none is refused before anything is fetched;
- ``general.quantization_version`` and ``general.file_type`` move to the end of the keys (it
  sets them again), followed by the ``quantize.imatrix.*`` keys when an imatrix is used;
- a shape ends at its last dimension longer than 1, as llama.cpp's GGUF writer records it (a
  (1, hidden) shared-expert gate becomes 1-D).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import gguf
from gguf import GGMLQuantizationType as QT
from gguf import GGUFValueType

from .. import errors
from . import imatrix as imatrix_files
from . import mixes
from .imatrix import Imatrix, Weights
from .outtypes import OUTTYPES, OutType
from .rules import OutputTensor, TensorType, converter_type

#: A key set after all the others: (key, value, GGUF value type).
LastKey = tuple[str, object, GGUFValueType]


@dataclass(frozen=True)
class QuantOptions:
    """The options that only mixes take: type overrides and an importance matrix."""

    overrides: mixes.Overrides = field(default_factory=mixes.Overrides)
    imatrix: Imatrix | None = None

    def __bool__(self) -> bool:
        return bool(self.overrides) or self.imatrix is not None


def check_options(out: OutType, opts: QuantOptions | None) -> None:
    """Overrides and --imatrix apply to the llama-quantize types only."""
    if opts and not out.mix:
        what = "--imatrix" if opts.imatrix is not None else "--tensor-type/--output-tensor-type/--token-embedding-type"
        raise errors.UnsupportedOptionError(
            f"{what} applies to the llama-quantize types (q4_k_m, iq4_xs, ...), not to --outtype {out.name}, "
            "which follows the reference converter")


def options_from(tensor_types: Sequence[str] = (), output_tensor_type: str | None = None,
                 token_embedding_type: str | None = None, imatrix_path: str | None = None) -> QuantOptions | None:
    """QuantOptions from the command-line spellings (UnsupportedOptionError on a bad one); None when none is set."""
    try:
        overrides = mixes.Overrides(
            tensor_types=tuple(mixes.parse_tensor_type(t) for t in tensor_types),
            output=mixes.parse_type(output_tensor_type) if output_tensor_type else None,
            token_embd=mixes.parse_type(token_embedding_type) if token_embedding_type else None)
    except ValueError as e:
        raise errors.UnsupportedOptionError(str(e)) from None
    im = imatrix_files.load(imatrix_path) if imatrix_path else None
    opts = QuantOptions(overrides=overrides, imatrix=im)
    return opts if opts else None


def plan_mix(out: OutType, tensors: Sequence[OutputTensor], keys: Mapping[str, object],
             opts: QuantOptions | None) -> tuple[list[TensorType], list[LastKey]]:
    """The mix ``out`` for ``tensors``: their types in llama-quantize's order, and the keys it sets last.

    ``keys``: the file's metadata values so far (the rules read the model's shape from them).
    """
    opts = opts or QuantOptions()
    mix = mixes.MIXES[out.name]
    # what the reference converter's F32 file holds where it is not F32: the types families force
    f32_file = {t.name: qt for t in tensors if (qt := converter_type(OUTTYPES["f32"], t)) != QT.F32}
    ne_of = {t.name: tuple(reversed(t.shape)) for t in tensors}
    try:
        choices = mixes.choose_types(mix, list(ne_of.items()), mixes.ModelFacts.from_kv(keys), opts.overrides,
                                     has_imatrix=opts.imatrix is not None, input_types=f32_file)
    except ValueError as e:
        raise errors.UnsupportedOptionError(f"--outtype {out.name}: {e}") from None

    planned = []
    for c in choices:
        ne, was = ne_of[c.name], f32_file.get(c.name, QT.F32)
        if ne[0] % mixes.block_size(c.qtype):
            raise errors.UnsupportedOptionError(
                f"{c.name} cannot be {c.qtype.name}: its rows of {ne[0]} values do not split into "
                f"blocks of {mixes.block_size(c.qtype)}")
        shape = _written_shape(ne)
        if c.qtype == was:  # llama-quantize copies it as it is
            planned.append(TensorType(c.name, c.qtype, shape=shape))
            continue
        if was != QT.F32:
            refusal = ("llama-quantize does not requantize it" if was not in (QT.F16, QT.BF16)
                       else f"quantizing from {was.name} is not supported")
            raise errors.UnsupportedOptionError(
                f"--outtype {out.name} makes {c.name} {c.qtype.name}, but its model keeps it {was.name} "
                f"in the converter's output and {refusal}")
        weights = _weights(opts.imatrix, c.name, ne)
        if weights is None and mixes.needs_imatrix(c.name, c.qtype, mix):
            if opts.imatrix is None:
                raise errors.ImatrixRequiredError(
                    f"--outtype {out.name} quantizes {c.name} to {c.qtype.name}, which needs an importance "
                    "matrix: pass --imatrix FILE (the output of llama.cpp's llama-imatrix)")
            raise errors.ImatrixRequiredError(
                f"{opts.imatrix.path} has no entry for {c.name}, which {c.qtype.name} needs")
        planned.append(TensorType(c.name, c.qtype, weights, shape))
    return planned, _last_keys(mix, opts.imatrix)


def _written_shape(ne: tuple[int, ...]) -> tuple[int, ...] | None:
    """The numpy-order shape llama.cpp records for a tensor of GGUF dims ``ne`` (``ggml_n_dims`` dims),
    or None when that is its own."""
    n = mixes.n_dims(ne)
    return tuple(reversed(ne[:n])) if n < len(ne) else None


def _weights(im: Imatrix | None, name: str, ne: tuple[int, ...]) -> Weights | None:
    vectors = im.weights_for(name, ne) if im is not None else None
    return None if vectors is None else Weights(vectors, rows_per_mat=ne[1] if len(ne) > 1 else 1)


def _last_keys(mix: mixes.Mix, im: Imatrix | None) -> list[LastKey]:
    """The keys llama-quantize sets, in its order; an empty string is left out, as gguf's writer does."""
    out: list[LastKey] = [(gguf.Keys.General.QUANTIZATION_VERSION, gguf.GGML_QUANT_VERSION, GGUFValueType.UINT32),
                          (gguf.Keys.General.FILE_TYPE, int(mix.ftype), GGUFValueType.UINT32)]
    for key, value in im.kv() if im is not None else ():
        if isinstance(value, str):
            if value:
                out.append((key, value, GGUFValueType.STRING))
        else:
            out.append((key, int(value), GGUFValueType.UINT32))
    return out
