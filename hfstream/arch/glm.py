"""GLM-4-0414 (``Glm4ForCausalLM``) and GLM-4.5 / 4.6 / 4.5-Air (``Glm4MoeForCausalLM``).

Both rotate the first ``partial_rotary_factor`` (0.5 when the config has none) of each head, NEOX
style, so nothing is permuted, and both take some special token ids from the tokenizer's added tokens
by content, for the types the tokenizer files do not name (the reference looks them up in
``get_added_vocab()``); a tokenizer without one of them is refused.

GLM-4-0414, beyond the shared decoder:

- tensors are mapped as they are: the fused ``gate_up_proj`` stays one ``ffn_up`` (llama.cpp splits it),
  ``post_self_attn_layernorm`` / ``post_mlp_layernorm`` become ``post_attention_norm`` / ``post_ffw_norm``;
  a config with M-RoPE sections (GLM-4V's) would need a permute: refused;
- vocab: ``<|endoftext|>`` as EOS, UNK and BOS and ``<|user|>`` as EOT. The reference loads that
  tokenizer with ``trust_remote_code``; one that names its own code (``auto_map``) is refused.

GLM-4.5: leading dense blocks, then routed and shared experts under a sigmoid router; grouped-query
attention with q/k/v biases (and per-head q/k norms on 4.5 and 4.6). Each MoE block stacks its
per-expert ``gate/up/down_proj`` into ``ffn_*_exps`` beside the shared experts; the router's float32
``e_score_correction_bias`` becomes ``exp_probs_b.bias``. Unlike DeepSeek, the checkpoints' NextN
layers past ``num_hidden_layers`` (``eh_proj``, ``enorm``, ``hnorm``, ``shared_head.norm`` and a whole
MoE layer) stay in the file as the last blocks, as the reference writes them by default: llama.cpp
loads them for speculative decoding (``nextn_predict_layers``). Its four named specials make
``[gMASK]`` the BOS.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

import gguf

from .. import errors, jsonfile
from ..graph import Node
from ..hfconfig import INT_HPARAMS, check_hparams
from . import register
from .base import DECODER_SHAPES, LAYER, SIZES, ExpertStacks, TextFamily

if TYPE_CHECKING:
    from ..vocab import SpecialTokens

#: special token types GLM-4-0414 takes from the added tokens, in the reference's order
_GLM4_SPECIALS = (("eos", "<|endoftext|>"), ("eot", "<|user|>"), ("unk", "<|endoftext|>"), ("bos", "<|endoftext|>"))
#: what the reference's ``_set_vocab_glm`` sets by token content for GLM-4.5
_GLM45_SPECIALS = (("bos", "[gMASK]"), ("eot", "<|user|>"), ("unk", "<|endoftext|>"), ("eom", "<|observation|>"))


def _specials_by_content(hf_arch: str, pairs: tuple[tuple[str, str], ...]
                         ) -> Callable[[gguf.GGUFWriter, SpecialTokens], None]:
    """The vocab hook giving each type in ``pairs`` the id of the added token of that content."""
    def hook(_: gguf.GGUFWriter, special: SpecialTokens) -> None:
        for typ, content in pairs:
            if content not in special.added:
                raise errors.UnsupportedTokenizerError(
                    f"{hf_arch}: the tokenizer has no added token {content!r}, which its vocabulary needs "
                    f"as its {typ} token")
        for typ, content in pairs:
            special.set_default(typ, special.added[content])
    return hook


def _rope_dims(family: TextFamily) -> int:
    head_dim = family.hparams.get("head_dim")
    if head_dim is None:
        head_dim = family.find(("hidden_size",)) // family.find(("num_attention_heads",))
    return int(head_dim * family.rope.get("partial_rotary_factor", 0.5))


@register
class Glm4(TextFamily):
    hf_architectures = ("Glm4ForCausalLM",)
    model_types = ("glm4",)
    gguf_arch = gguf.MODEL_ARCH.GLM4
    vocab_strategies = ("bpe",)

    def __init__(self, hparams, hf_arch):
        super().__init__(hparams, hf_arch)
        if "mrope_section" in self.rope:
            raise errors.UnsupportedArchitectureError(
                f"{hf_arch} with M-RoPE sections (rope mrope_section) is not supported")

    def add_hparams(self, w: gguf.GGUFWriter, file_type: int) -> None:
        super().add_hparams(w, file_type)
        w.add_rope_dimension_count(_rope_dims(self))

    def add_vocab(self, w: gguf.GGUFWriter, files: Mapping[str, bytes], bpe_pre: str | None) -> None:
        from ..vocab import add_vocab  # tokenizers loads only where a vocab is built

        tok_config = jsonfile.load(files["tokenizer_config.json"], "tokenizer_config.json") \
            if "tokenizer_config.json" in files else None
        if isinstance(tok_config, dict) and "auto_map" in tok_config:
            raise errors.UnsupportedTokenizerError(
                f"{self.hf_arch}: tokenizer_config.json names the repo's own tokenizer code (auto_map), which "
                "the reference runs (trust_remote_code) and hfstream never runs")
        add_vocab(w, files, self.hparams, strategies=self.vocab_strategies, bpe_pre=bpe_pre,
                  special=_specials_by_content(self.hf_arch, _GLM4_SPECIALS))


#: the projections of one expert, in the order the reference writes their stacks
_EXPERT_PROJS = ("down_proj", "gate_proj", "up_proj")
_GLM_HPARAMS = {
    **INT_HPARAMS,
    "nextn layers": (("num_nextn_predict_layers",), 0, 64),
    "leading dense blocks": (("first_k_dense_replace",), 0, 4096),
    "shared experts": (("n_shared_experts",), 0, 1 << 16),
}


@register
class Glm4Moe(TextFamily):
    hf_architectures = ("Glm4MoeForCausalLM",)
    model_types = ("glm4_moe",)
    gguf_arch = gguf.MODEL_ARCH.GLM4_MOE
    vocab_strategies = ("bpe",)
    shape_sizes = {**SIZES, "experts": ("n_routed_experts",), "moe_ffn": ("moe_intermediate_size",),
                   "n_shared": ("n_shared_experts",)}
    shape_rules = DECODER_SHAPES + (
        (LAYER + r"mlp\.shared_experts\.(gate|up)_proj\.weight", ("moe_ffn*n_shared", "hidden")),
        (LAYER + r"mlp\.shared_experts\.down_proj\.weight", ("hidden", "moe_ffn*n_shared")),
        (LAYER + r"mlp\.gate\.weight", ("experts", "hidden")),
        (LAYER + r"mlp\.gate\.e_score_correction\.bias", ("experts",)),
        (LAYER + r"(enorm|hnorm|shared_head\.norm)\.weight", ("hidden",)),
    )

    def __init__(self, hparams, hf_arch):
        super().__init__(hparams, hf_arch)
        check_hparams(self.hparams, ints=_GLM_HPARAMS)
        # the NextN layers are blocks of their own, after the main ones
        self.block_count += self.hparams.get("num_nextn_predict_layers") or 0
        self.tensor_map = gguf.get_tensor_name_map(self.gguf_arch, self.block_count)
        self._stacks: ExpertStacks | None = None

    def layer_kind(self, bid: int) -> str:
        if bid >= self.find(("num_hidden_layers",)):
            return "nextn+moe"
        return "dense" if bid < self.find(("first_k_dense_replace",)) else "moe"

    def add_hparams(self, w: gguf.GGUFWriter, file_type: int) -> None:
        super().add_hparams(w, file_type)
        hp = self.hparams
        w.add_rope_dimension_count(_rope_dims(self))
        if (v := hp.get("n_routed_experts")) is not None:
            w.add_expert_count(v)
        if (v := hp.get("moe_intermediate_size")) is not None:
            w.add_expert_feed_forward_length(v)
        if (v := hp.get("n_shared_experts")) is not None:
            w.add_expert_shared_count(v)
        if (v := hp.get("first_k_dense_replace")) is not None:
            w.add_leading_dense_block_count(v)
        w.add_expert_gating_func(gguf.ExpertGatingFuncType.SIGMOID)
        if (v := hp.get("routed_scaling_factor")) is not None:
            w.add_expert_weights_scale(v)
        if (v := hp.get("norm_topk_prob")) is not None:
            w.add_expert_weights_norm(v)
        if (v := hp.get("num_nextn_predict_layers")) is not None:
            w.add_nextn_predict_layers(v)

    def convert(self, name: str, node: Node, bid: int | None) -> Iterator[tuple[str, Node]]:
        if "mlp.experts" in name:
            if self._stacks is None:
                self._stacks = ExpertStacks(self.find(("n_routed_experts",)), _EXPERT_PROJS,
                                            "model.layers.{bid}.mlp.experts.{xid}.{proj}.weight",
                                            "model.layers.{bid}.mlp.experts.{proj}.weight")
            yield from self._stacks.add(name, node, bid, self.map_name)
            return
        yield self.map_name(name), node

    def finish(self) -> Iterator[tuple[str, Node]]:
        if self._stacks is not None:
            self._stacks.check_complete()
        return iter(())

    def add_vocab(self, w: gguf.GGUFWriter, files: Mapping[str, bytes], bpe_pre: str | None) -> None:
        from ..vocab import add_vocab  # tokenizers loads only where a vocab is built

        add_vocab(w, files, self.hparams, strategies=self.vocab_strategies, bpe_pre=bpe_pre,
                  special=_specials_by_content(self.hf_arch, _GLM45_SPECIALS))
