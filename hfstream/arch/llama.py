"""Llama and Mistral: rotary q/k rows permuted per head; Mixtral experts stacked per layer. Also the
families the reference converts with its Llama converter under another llama.cpp architecture:

- SmolLM3: nothing else (llama.cpp knows its NoPE layers by their position).
- Apertus: no q/k permute; the xIELU activation's four scalars per layer (``mlp.act_fn.alpha_n``,
  ``alpha_p``, ``beta``, ``eps``) are not tensors of the output but keys (``xielu.*``, one value per
  layer), which the reference writes as it meets them: right after ``general.architecture``, each
  key once the last layer's scalar of its kind has come by.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import ClassVar

import gguf
import numpy as np

from .. import errors
from ..graph import Constant, Node, PermuteHeads
from . import register
from .base import ExpertStacks, TextFamily


@register
class Llama(TextFamily):
    hf_architectures: ClassVar[tuple[str, ...]] = (
        "LlamaForCausalLM", "LLaMAForCausalLM", "MistralForCausalLM", "MixtralForCausalLM")
    model_types: ClassVar[tuple[str, ...]] = ("llama", "mistral", "ministral", "mixtral")
    gguf_arch = gguf.MODEL_ARCH.LLAMA
    vocab_strategies: ClassVar[tuple[str, ...]] = ("spm", "llama_hf", "bpe")
    #: the reference's ``undo_permute``: q/k rows reordered for llama.cpp's rotary layout
    permute_qk = True
    #: ``factor`` of a ``rope_type: llama3`` config that does not say
    llama3_default_factor = 8.0

    def __init__(self, hparams, hf_arch):
        super().__init__(hparams, hf_arch)
        self._stacks: ExpertStacks | None = None

    def add_hparams(self, w: gguf.GGUFWriter, file_type: int) -> None:
        super().add_hparams(w, file_type)
        if "vocab_size" not in self.hparams:
            raise errors.InvalidConfigError("config.json: vocab_size is not set")
        w.add_vocab_size(self.hparams["vocab_size"])
        rope_dim = self.hparams.get("head_dim")
        if rope_dim is None:
            rope_dim = self.find(("hidden_size",)) // self.find(("num_attention_heads",))
        w.add_rope_dimension_count(rope_dim)

    def extra_tensors(self) -> Iterable[tuple[str, Node]]:
        return llama3_rope_freqs(self, self.llama3_default_factor)

    def convert(self, name: str, node: Node, bid: int | None) -> Iterator[tuple[str, Node]]:
        if self.permute_qk:
            n_head = self.find(("n_heads", "num_attention_heads"))
            n_kv_head = self.find(("n_kv_heads", "num_key_value_heads"))
            if name.endswith(("q_proj.weight", "q_proj.bias")):
                node = PermuteHeads(node, n_head)
            elif name.endswith(("k_proj.weight", "k_proj.bias")):
                node = PermuteHeads(node, n_kv_head)

        if "block_sparse_moe.experts" in name:
            yield from self._collect_expert(name, node, bid)
            return
        yield self.map_name(name), node

    def _collect_expert(self, name: str, node: Node, bid: int | None) -> Iterator[tuple[str, Node]]:
        """Mixtral: once all experts of a layer arrived, stack w1/w2/w3 into ffn_*_exps."""
        if self._stacks is None:
            self._stacks = ExpertStacks(self.find(("num_local_experts",)), ("w1", "w2", "w3"),
                                        "model.layers.{bid}.block_sparse_moe.experts.{xid}.{proj}.weight",
                                        "layers.{bid}.feed_forward.experts.{proj}.weight")
        yield from self._stacks.add(name, node, bid, self.map_name)

    def finish(self) -> Iterator[tuple[str, Node]]:
        if self._stacks is not None:
            self._stacks.check_complete()
        return iter(())


@register
class SmolLM3(Llama):
    hf_architectures = ("SmolLM3ForCausalLM",)
    model_types = ("smollm3",)
    gguf_arch = gguf.MODEL_ARCH.SMOLLM3


#: Apertus' xIELU scalars: (source name suffix, the GGUFWriter method of their key)
_XIELU: Mapping[str, Callable[[gguf.GGUFWriter, list[float]], None]] = {
    "alpha_n": gguf.GGUFWriter.add_xielu_alpha_n, "alpha_p": gguf.GGUFWriter.add_xielu_alpha_p,
    "beta": gguf.GGUFWriter.add_xielu_beta, "eps": gguf.GGUFWriter.add_xielu_eps,
}


@register
class Apertus(Llama):
    hf_architectures = ("ApertusForCausalLM",)
    model_types = ("apertus",)
    gguf_arch = gguf.MODEL_ARCH.APERTUS
    permute_qk = False
    value_tensors = r"model\.layers\.(\d+)\.mlp\.act_fn\.(alpha_n|alpha_p|beta|eps)"

    def __init__(self, hparams, hf_arch):
        super().__init__(hparams, hf_arch)
        self._values: Mapping[str, np.ndarray] = {}
        self._xielu: dict[str, dict[int, float]] = {kind: {} for kind in _XIELU}
        self._xielu_done: list[str] = []  # kinds whose key is complete, in the order they completed

    def use_values(self, values: Mapping[str, np.ndarray]) -> None:
        self._values = values

    def convert(self, name: str, node: Node, bid: int | None) -> Iterator[tuple[str, Node]]:
        match = re.fullmatch(self.value_tensors, name)
        if match is None:
            yield from super().convert(name, node, bid)
            return
        (src,) = node.leaves()
        if src.name not in self._values:
            raise RuntimeError(f"the value of {src.name!r} was not read before the plan")
        layer, kind = int(match.group(1)), match.group(2)
        self._xielu[kind][layer] = float(self._values[src.name].reshape(()))
        if len(self._xielu[kind]) == self.find(("num_hidden_layers",)) and kind not in self._xielu_done:
            self._xielu_done.append(kind)

    def add_tensor_time_hparams(self, w: gguf.GGUFWriter) -> None:
        for kind in self._xielu_done:
            per_layer = self._xielu[kind]
            _XIELU[kind](w, [per_layer[b] for b in sorted(per_layer)])


def llama3_rope_freqs(family: TextFamily, default_factor: float) -> tuple[tuple[str, Node], ...]:
    """Llama 3.1+ ``rope_type: llama3``: the per-dimension rope frequency factors, as ``rope_freqs``
    (Llama and the families whose converters copied it; EXAONE 4's ``factor`` defaults to 16)."""
    rope = family.rope.get("full_attention", family.rope)
    if not rope or str(rope.get("rope_type") or "").lower() != "llama3":
        return ()
    dim = family.hparams.get("head_dim")
    if dim is None:
        dim = family.find(("hidden_size",)) // family.find(("num_attention_heads",))
    factors = llama3_rope_factors(
        rope_base_freqs(rope.get("rope_theta", 10000.0), dim), factor=rope.get("factor", default_factor),
        low_freq_factor=rope.get("low_freq_factor", 1.0), high_freq_factor=rope.get("high_freq_factor", 4.0),
        original_context=rope.get("original_max_position_embeddings", 8192))
    return ((gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", Constant(factors)),)


def rope_base_freqs(theta: float, dim: int) -> np.ndarray:
    """``1 / theta ** (arange(0, dim, 2) / dim)`` in float32, as the reference computes it with torch.

    Every step is an IEEE float32 operation except the power: torch's float32 ``pow`` is libm's
    ``powf`` or SLEEF's vectorized one depending on the CPU and the element's position, and neither
    is correctly rounded. We take the correctly rounded power, which agrees with both on every
    released Llama 3 configuration; elsewhere an element can differ by one ulp (see
    tests/test_rope_factors.py).
    """
    f32 = np.float32
    exponents = np.arange(0, dim, 2, dtype=f32) / f32(dim)
    powers = np.power(np.float64(f32(theta)), exponents.astype(np.float64)).astype(f32)
    return f32(1.0) / powers


def llama3_rope_factors(freqs: np.ndarray, *, factor: float, low_freq_factor: float, high_freq_factor: float,
                        original_context: float) -> np.ndarray:
    """Llama 3.1's rope frequency scaling: one float32 factor per base frequency, bit for bit as the reference.

    The reference loops over 0-d float32 tensors and mixes in Python numbers, which torch rounds to
    float32 before each operation: the wavelength ``2 pi / f`` is a reciprocal times 2 pi; the
    factor is 1 below ``original / high``, ``factor`` above ``original / low``, and a smooth blend
    between. The same float32 steps, in the same order, in numpy.
    """
    f32 = np.float32
    low_wavelen = original_context / low_freq_factor
    high_wavelen = original_context / high_freq_factor
    out = np.empty(len(freqs), dtype=f32)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for i, freq in enumerate(np.asarray(freqs, dtype=f32)):
            wavelen = (f32(1.0) / freq) * f32(2 * math.pi)
            if wavelen < f32(high_wavelen):
                out[i] = 1.0
            elif wavelen > f32(low_wavelen):
                out[i] = f32(factor)
            else:
                smooth = ((f32(1.0) / wavelen) * f32(original_context) - f32(low_freq_factor)) / f32(
                    high_freq_factor - low_freq_factor)
                out[i] = f32(1.0) / ((f32(1.0) - smooth) / f32(factor) + smooth)
    return out
