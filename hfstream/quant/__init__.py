"""Output types: which GGUF type each tensor gets (decided once, before the layout), and the encoding.

One module per concept, arrows pointing down the list:

- ``typeplan``: the one entry point, ``plan_types``: every output tensor's type and importance
  weights, the file order, and the keys to set last;
- ``mixplan``: a llama-quantize mix applied to the tensors (order, imatrix, its key changes), and
  the options only mixes take;
- ``rules``: the reference converter's per-tensor rule (f32/f16/bf16/q8_0, forced types);
- ``outtypes``: what ``--outtype`` names, and the bytes a type takes;
- ``mixes``: llama-quantize's rules as data; ``imatrix``: importance matrix files;
- ``encode``: the encoders (libggml, the gguf package, the compiled Q8_0 and K-quant encoders
  ``_q8_0.c``, ``_kquants.c``);
- ``floats``: bf16/f16 <-> f32 through ggml-cpu; ``ggml``: which libggml is loaded.
"""

from .encode import compiled_kquants, compiled_q8_0, default_engine, quantize
from .ggml import origin as ggml_origin
from .ggml import version as ggml_version
from .imatrix import Imatrix, Weights
from .mixes import MIXES
from .mixplan import QuantOptions, check_options, options_from
from .outtypes import OUTTYPE_CHOICES, OUTTYPES, OutType, auto_outtype, bits_per_weight, nbytes, outtype
from .rules import OutputTensor, TensorType
from .typeplan import TypePlan, plan_types

__all__ = [
    "MIXES", "OUTTYPES", "OUTTYPE_CHOICES", "Imatrix", "OutType", "OutputTensor", "QuantOptions", "TensorType",
    "TypePlan", "Weights", "auto_outtype", "bits_per_weight", "check_options", "compiled_kquants", "compiled_q8_0",
    "default_engine",
    "ggml_origin", "ggml_version", "nbytes", "options_from", "outtype", "plan_types", "quantize",
]
