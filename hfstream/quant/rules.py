"""The reference converter's type rule: which GGUF type one tensor gets under f32/f16/bf16/q8_0.

As ``convert_hf_to_gguf.py`` decides it while writing each tensor: 1-D tensors and
``*_norm.weight`` are F32 whatever else is said; then a type the model family forces wins (the
reference's ``tensor_force_quant``: MXFP4 experts repacked from the checkpoint, a projector's patch
embedding kept in F16/F32); then biases and other non-weights and a fixed list of small or
precision-critical tensor kinds are F32; the rest take the outtype's type. A block type falls back
to F16 when a row does not split into its blocks (the reference's quantizer refuses such a row and
it writes F16 instead).

``OutputTensor`` is what every type rule reads of a tensor and ``TensorType`` what it answers, for
these rules and for llama-quantize's mixes (``mixplan``) alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import gguf
from gguf import GGMLQuantizationType as QT
from gguf import MODEL_TENSOR as MT

from .imatrix import Weights
from .outtypes import OutType


@dataclass(frozen=True)
class OutputTensor:
    """An output tensor as the type rules see it."""

    #: GGUF name (``blk.0.attn_q.weight``)
    name: str
    #: numpy order (the GGUF header stores it reversed)
    shape: tuple[int, ...]
    #: its kind in gguf's tensor-name map, None when the map has none
    kind: MT | None = None
    #: the type its model family requires whatever the outtype (``TextFamily.forced_type``)
    forced: QT | None = None


@dataclass(frozen=True)
class TensorType:
    """The answer for one tensor: its GGUF type, and the importance weights its rows are encoded with."""

    name: str
    qtype: QT
    #: llama-quantize mixes with ``--imatrix`` only
    weights: Weights | None = None
    #: the shape the file records when it is not the tensor's own (llama-quantize's writer ends it at the
    #: last dimension longer than 1)
    shape: tuple[int, ...] | None = None


#: Tensor kinds the reference always keeps in F32 (they are small or precision-critical).
_ALWAYS_F32 = (
    MT.FFN_GATE_INP, MT.FFN_GATE_INP_SHEXP, MT.POS_EMBD, MT.TOKEN_TYPES, MT.SSM_CONV1D,
    MT.TIME_MIX_FIRST, MT.TIME_MIX_W1, MT.TIME_MIX_W2, MT.TIME_MIX_DECAY_W1, MT.TIME_MIX_DECAY_W2,
    MT.TIME_MIX_LERP_FUSED, MT.POSNET_NORM1, MT.POSNET_NORM2, MT.V_ENC_EMBD_POS, MT.A_ENC_EMBD_POS,
    MT.ALTUP_CORRECT_COEF, MT.ALTUP_PREDICT_COEF,
)
#: kinds of the reference's list that gguf 0.19 does not have yet
_OPTIONAL_F32 = ("SHORTCONV_CONV", "SSM_CONV1D_Q", "SSM_CONV1D_K", "SSM_CONV1D_V", "INDEXER_PROJ")
ALWAYS_F32_KINDS = _ALWAYS_F32 + tuple(getattr(MT, n) for n in _OPTIONAL_F32 if hasattr(MT, n))

_FLOATS = (QT.F32, QT.F16, QT.BF16)


def converter_type(out: OutType, tensor: OutputTensor) -> QT:
    """The type the reference converter writes ``tensor`` in under ``out`` (f32, f16, bf16 or q8_0)."""
    name, shape = tensor.name, tensor.shape
    if len(shape) <= 1 or name.endswith("_norm.weight"):
        return QT.F32
    if tensor.forced is not None:
        qt = tensor.forced
    elif tensor.kind in ALWAYS_F32_KINDS or not name.endswith((".weight", ".lora_a", ".lora_b")):
        return QT.F32
    else:
        qt = out.tensor_type
    if qt not in _FLOATS and shape[-1] % gguf.GGML_QUANT_SIZES[qt][0] != 0:
        return QT.F16
    return qt
