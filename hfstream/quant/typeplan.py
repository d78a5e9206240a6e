"""Which GGUF type each output tensor gets, with which importance weights: decided once, here.

The plan calls ``plan_types`` with every output tensor (name, shape, kind, the type its family
forces) and the metadata so far, before it lays out a single tensor info, and takes the answer as
final: each tensor's type and importance weights, the file order, and the keys to set last.

- The reference converter's outtypes (f32, f16, bf16, q8_0; ``auto`` is one of them by then):
  ``rules``, tensor by tensor, in the order given.
- llama-quantize's mixes: ``mixplan``, over all tensors at once, since its rules count layers and
  attention tensors and it writes the tensors in an order of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from .mixplan import LastKey, QuantOptions, check_options, plan_mix
from .outtypes import OutType
from .rules import OutputTensor, TensorType, converter_type


@dataclass(frozen=True)
class TypePlan:
    """Every output tensor's type, in file order, and the keys that go after all others."""

    tensors: tuple[TensorType, ...]
    #: (key, value, GGUF value type) to set last, in this order; a key set before moves here
    last_keys: tuple[LastKey, ...] = ()


def plan_types(out: OutType, tensors: Sequence[OutputTensor], keys: Mapping[str, object],
               opts: QuantOptions | None = None) -> TypePlan:
    """The types of ``tensors`` (in the plan's order) under ``out``.

    ``keys``: the file's metadata values so far, which a mix's rules read the model's shape from;
    ``opts``: a mix's overrides and importance matrix (UnsupportedOptionError for other outtypes).
    """
    check_options(out, opts)
    if out.mix:
        types, last = plan_mix(out, tensors, keys, opts)
        return TypePlan(tuple(types), tuple(last))
    return TypePlan(tuple(TensorType(t.name, converter_type(out, t)) for t in tensors))
