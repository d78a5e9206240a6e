"""DeepSeek V2, V3 (and R1, V3.1) and V3.2: multi-head latent attention, leading dense blocks, shared experts.

MLA compresses keys and values into a low-rank latent: ``kv_b_proj`` up-projects it to every head's
non-rotary key part and value, fused as (heads, nope + v, rank). llama.cpp wants the two apart and
the key part transposed (it absorbs them into the query and the output), so one source tensor
becomes ``attn_k_b`` and ``attn_v_b``, split with the config's own KV head count; the GGUF then
declares a single KV head (MLA runs as MQA over the latent). The first ``first_k_dense_replace``
blocks are dense; the others stack their routed experts into ``ffn_*_exps`` beside the shared
experts, and V3's sigmoid router carries a per-expert bias (``e_score_correction_bias`` ->
``exp_probs_b.bias``). Checkpoints append the multi-token-prediction block(s) past
``num_hidden_layers``; the reference leaves them out, and so do we (their bytes are never fetched).
V3 ships FP8 weights with block scales: ``prequant`` hands them over already dequantized.

V3.2 (``deepseek32``) adds a "lightning indexer" to every block's attention (``indexer.wq_b``/``wk``,
FP8 like the other projections; ``weights_proj``, kept F32 as the reference keeps it; a LayerNorm
``k_norm`` with a bias), and the reference keeps its MTP block: one more GGUF block whose extra
tensors are the ``nextn.*`` ones. Neither the indexer nor the MTP kinds are under DeepSeek-V2 in
PyPI's gguf, so the family adds them (``extra_tensor_kinds``).
"""

from __future__ import annotations

import re
from typing import ClassVar, Iterator

import gguf

from .. import errors, vocab
from ..graph import HeadSlice, Node
from ..hfconfig import INT_HPARAMS, check_hparams
from . import register
from .base import LAYER, SIZES, ExpertStacks, ShapeRule, TextFamily

#: the projections of one expert, in the order the reference writes their stacks
_EXPERT_PROJS = ("down_proj", "gate_proj", "up_proj")
_LAYER = re.compile(r"model.layers.(\d+)")  # the reference's pattern, unescaped dot and all

#: MLA sizes, checked like the other integer hyperparameters before any is used
_MLA_HPARAMS = {
    **INT_HPARAMS,
    "kv lora rank": (("kv_lora_rank",), 1, 1 << 20),
    "q lora rank": (("q_lora_rank",), 1, 1 << 20),
    "mla head sizes": (("qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"), 1, 1 << 16),
    "leading dense blocks": (("first_k_dense_replace",), 0, 4096),
    "shared experts": (("n_shared_experts",), 0, 1 << 16),
    "expert groups": (("n_group", "topk_group"), 1, 1 << 16),
}



@register
class DeepseekV2(TextFamily):
    hf_architectures: ClassVar[tuple[str, ...]] = ("DeepseekV2ForCausalLM", "DeepseekV3ForCausalLM")
    gguf_arch = gguf.MODEL_ARCH.DEEPSEEK2
    vocab_strategies = ("bpe",)
    model_types: ClassVar[tuple[str, ...]] = ("deepseek_v2", "deepseek_v3")
    shape_sizes = {**SIZES, "nope": ("qk_nope_head_dim",), "rope": ("qk_rope_head_dim",), "v": ("v_head_dim",),
                   "q_rank": ("q_lora_rank",), "kv_rank": ("kv_lora_rank",), "experts": ("n_routed_experts",),
                   "moe_ffn": ("moe_intermediate_size",), "n_shared": ("n_shared_experts",)}
    shape_rules: ClassVar[tuple[ShapeRule, ...]] = (
        (r"model\.embed_tokens\.weight", ("vocab", "hidden")),
        (r"lm_head\.weight", ("vocab", "hidden")),
        (LAYER + r"self_attn\.q_proj\.weight", ("heads*nope+rope", "hidden")),
        (LAYER + r"self_attn\.q_a_proj\.weight", ("q_rank", "hidden")),
        (LAYER + r"self_attn\.q_a_layernorm\.weight", ("q_rank",)),
        (LAYER + r"self_attn\.q_b_proj\.weight", ("heads*nope+rope", "q_rank")),
        (LAYER + r"self_attn\.kv_a_proj_with_mqa\.weight", ("kv_rank+rope", "hidden")),
        (LAYER + r"self_attn\.kv_a_layernorm\.weight", ("kv_rank",)),
        (LAYER + r"self_attn\.kv_b_proj\.weight", ("kv_heads*nope+v", "kv_rank")),
        (LAYER + r"self_attn\.o_proj\.weight", ("hidden", "heads*v")),
        (LAYER + r"mlp\.(gate|up)_proj\.weight", ("ffn", "hidden")),
        (LAYER + r"mlp\.down_proj\.weight", ("hidden", "ffn")),
        (LAYER + r"mlp\.experts\.\d+\.(gate|up)_proj\.weight", ("moe_ffn", "hidden")),
        (LAYER + r"mlp\.experts\.\d+\.down_proj\.weight", ("hidden", "moe_ffn")),
        (LAYER + r"mlp\.shared_experts\.(gate|up)_proj\.weight", ("moe_ffn*n_shared", "hidden")),
        (LAYER + r"mlp\.shared_experts\.down_proj\.weight", ("hidden", "moe_ffn*n_shared")),
        (LAYER + r"mlp\.gate\.weight", ("experts", "hidden")),
        (LAYER + r"mlp\.gate\.e_score_correction\.bias", ("experts",)),
        (r"model\.norm\.weight", ("hidden",)),
        (LAYER + r"(input|post_attention)_layernorm\.weight", ("hidden",)),
    )

    #: the reference converts the MTP blocks past ``num_hidden_layers`` (V3.2) or leaves them out
    keeps_mtp: bool = False

    def __init__(self, hparams, hf_arch):
        super().__init__(hparams, hf_arch)
        check_hparams(self.hparams, ints=_MLA_HPARAMS)
        self._stacks: ExpertStacks | None = None

    # -- tensors --------------------------------------------------------------

    def layer_kind(self, bid: int) -> str:
        # the first ``first_k_dense_replace`` layers have a dense MLP, the others experts and a router;
        # a multi-token-prediction block kept after them (V3.2) has its own tensors besides
        if bid >= self.find(("num_hidden_layers",)):
            return "mtp+moe"
        return "dense" if bid < (self.hparams.get("first_k_dense_replace") or 0) else "moe"

    def source_name(self, name: str) -> str | None:
        # left out on purpose (the base's completeness check holds the family to it): a tied lm_head,
        # and the multi-token-prediction blocks after the last layer
        if self.hparams.get("tie_word_embeddings", False) and name in ("lm_head.weight", "model.lm_head.weight"):
            return None
        layer = _LAYER.match(name)
        if not self.keeps_mtp and layer and int(layer.group(1)) >= self.find(("num_hidden_layers",)):
            return None
        return super().source_name(name)

    def convert(self, name: str, node: Node, bid: int | None) -> Iterator[tuple[str, Node]]:
        if "mlp.experts" in name:
            yield from self._collect_expert(name, node, bid)
            return
        if name.endswith("kv_b_proj.weight"):
            yield from self._split_kv_b(name, node)
            return
        yield self.map_name(name), node

    def _split_kv_b(self, name: str, node: Node) -> Iterator[tuple[str, Node]]:
        """(heads * (nope + v), rank) -> k_b (heads, rank, nope) and v_b (heads, v, rank)."""
        n_head_kv = self.find(("num_key_value_heads",))
        nope, v = self.find(("qk_nope_head_dim",)), self.find(("v_head_dim",))
        if node.ndim != 2 or node.shape[0] != n_head_kv * (nope + v):
            raise errors.ConfigMismatchError(
                f"tensor {name!r} has shape {list(node.shape)} but config.json makes it "
                f"[{n_head_kv * (nope + v)}, kv_lora_rank] (num_key_value_heads {n_head_kv} x "
                f"(qk_nope_head_dim {nope} + v_head_dim {v}))")
        yield self.map_name(name.replace("kv_b_proj", "k_b_proj")), HeadSlice(node, n_head_kv, 0, nope, transpose=True)
        yield self.map_name(name.replace("kv_b_proj", "v_b_proj")), HeadSlice(node, n_head_kv, nope, nope + v)

    def _collect_expert(self, name: str, node: Node, bid: int | None) -> Iterator[tuple[str, Node]]:
        if self._stacks is None:
            self._stacks = ExpertStacks(self.find(("n_routed_experts",)), _EXPERT_PROJS,
                                        "model.layers.{bid}.mlp.experts.{xid}.{proj}.weight",
                                        "model.layers.{bid}.mlp.experts.{proj}.weight")
        yield from self._stacks.add(name, node, bid, self.map_name)

    def finish(self) -> Iterator[tuple[str, Node]]:
        if self._stacks is not None:
            self._stacks.check_complete()
        return iter(())

    # -- hyperparameters ------------------------------------------------------

    def add_hparams(self, w: gguf.GGUFWriter, file_type: int) -> None:
        hp = self.hparams
        # MLA runs as MQA over the latent: one KV head (set after the tensors are split, as the reference)
        self.hparams = {**hp, "num_key_value_heads": 1, "rms_norm_eps": hp.get("rms_norm_eps", 1e-6)}
        try:
            super().add_hparams(w, file_type)
        finally:
            self.hparams = hp
        has_moe = hp.get("n_routed_experts") is not None
        dense = hp.get("first_k_dense_replace")
        w.add_leading_dense_block_count(
            dense if dense is not None else (0 if has_moe else self.find(("num_hidden_layers",))))
        kv_lora_rank = hp.get("kv_lora_rank", 512)
        if "vocab_size" not in hp:
            raise errors.InvalidConfigError("config.json: vocab_size is not set")
        w.add_vocab_size(hp["vocab_size"])
        if hp.get("q_lora_rank") is not None:
            w.add_q_lora_rank(hp["q_lora_rank"])
        rope_dim = self.find(("qk_rope_head_dim",))
        w.add_kv_lora_rank(kv_lora_rank)
        w.add_key_length(kv_lora_rank + rope_dim)
        w.add_value_length(kv_lora_rank)
        w.add_key_length_mla(self.find(("qk_nope_head_dim",)) + rope_dim)
        w.add_value_length_mla(self.find(("v_head_dim",)))
        w.add_expert_feed_forward_length(self.find(("moe_intermediate_size", "intermediate_size")))
        if has_moe:
            w.add_expert_count(hp["n_routed_experts"])
        w.add_expert_shared_count(hp.get("n_shared_experts", 0))
        if (scale := hp.get("routed_scaling_factor")) is not None:
            w.add_expert_weights_scale(scale)
        if hp.get("norm_topk_prob"):
            w.add_expert_weights_norm(hp["norm_topk_prob"])
        w.add_rope_dimension_count(rope_dim)
        if (mscale_all_dim := self.rope.get("mscale_all_dim")) is not None:
            # the reference's legacy DeepSeek2 convention: 0.1 x mscale_all_dim
            w.add_rope_scaling_yarn_log_mul(0.1 * mscale_all_dim)

    # -- vocab ----------------------------------------------------------------

    def add_vocab(self, w: gguf.GGUFWriter, files, bpe_pre: str | None) -> None:
        if "tokenizer.json" not in files:
            # the reference then builds the tokenizer with the repo's own code (Kimi-K2's tiktoken)
            raise errors.UnsupportedTokenizerError(
                f"{self.hf_arch} without tokenizer.json: its tokenizer needs the repo's own code "
                "(trust_remote_code), which hfstream never runs")
        super().add_vocab(w, files, bpe_pre)


#: DeepSeek-V3.2's tensors that DeepSeek-V2 lacks (the reference's gguf-py lists them for ``deepseek32``)
_V32_KINDS = (
    gguf.MODEL_TENSOR.INDEXER_K_NORM, gguf.MODEL_TENSOR.INDEXER_PROJ, gguf.MODEL_TENSOR.INDEXER_ATTN_K,
    gguf.MODEL_TENSOR.INDEXER_ATTN_Q_B, gguf.MODEL_TENSOR.NEXTN_EH_PROJ, gguf.MODEL_TENSOR.NEXTN_EMBED_TOKENS,
    gguf.MODEL_TENSOR.NEXTN_ENORM, gguf.MODEL_TENSOR.NEXTN_HNORM, gguf.MODEL_TENSOR.NEXTN_SHARED_HEAD_HEAD,
    gguf.MODEL_TENSOR.NEXTN_SHARED_HEAD_NORM,
)
_INDEXER = LAYER + r"self_attn\.indexer\."


@register
class DeepseekV32(DeepseekV2):
    hf_architectures = ("DeepseekV32ForCausalLM",)
    model_types = ("deepseek_v32",)
    arch_name = "deepseek32"
    extra_tensor_kinds = _V32_KINDS
    keeps_mtp = True
    shape_sizes = {**DeepseekV2.shape_sizes, "index_heads": ("index_n_heads",), "index_dim": ("index_head_dim",)}
    shape_rules = DeepseekV2.shape_rules + (
        (_INDEXER + r"wq_b\.weight", ("index_heads*index_dim", "q_rank")),
        (_INDEXER + r"wk\.weight", ("index_dim", "hidden")),
        (_INDEXER + r"k_norm\.(weight|bias)", ("index_dim",)),
        (_INDEXER + r"weights_proj\.weight", ("index_heads", "hidden")),
        (LAYER + r"(embed_tokens|shared_head\.head)\.weight", ("vocab", "hidden")),
        (LAYER + r"(enorm|hnorm|shared_head\.norm)\.weight", ("hidden",)),
        (LAYER + r"eh_proj\.weight", ("hidden", "hidden+hidden")),
    )

    def __init__(self, hparams, hf_arch):
        super().__init__(hparams, hf_arch)
        check_hparams(self.hparams, ints={"indexer sizes": (("index_n_heads", "index_head_dim", "index_topk"), 1, 1 << 24),
                                          "MTP layers": (("num_nextn_predict_layers",), 0, 64)})
        # the MTP block(s) are blocks of the GGUF too
        self.block_count += self.hparams.get("num_nextn_predict_layers", 0)
        self.tensor_map = self.name_map(self.block_count)

    def add_hparams(self, w: gguf.GGUFWriter, file_type: int) -> None:
        super().add_hparams(w, file_type)
        if (n_mtp := self.hparams.get("num_nextn_predict_layers")) is not None:
            w.add_nextn_predict_layers(n_mtp)
        w.add_indexer_head_count(self.find(("index_n_heads",)))
        w.add_indexer_key_length(self.find(("index_head_dim",)))
        w.add_indexer_top_k(self.find(("index_topk",)))

    def add_vocab(self, w: gguf.GGUFWriter, files, bpe_pre: str | None) -> None:
        # the reference reads V3.2's tokenizer without repo code and stops unless it adds BOS
        if vocab.tokenizer_config(files).get("add_bos_token") is not True:
            raise errors.UnsupportedTokenizerError(
                f"{self.hf_arch}: tokenizer_config.json does not set add_bos_token to true, which "
                "llama.cpp's converter requires of DeepSeek-V3.2 (it stops there too)")
        if "tokenizer.json" not in files:
            raise errors.MissingFileError(f"{self.hf_arch} needs tokenizer.json, and the repo has none")
        TextFamily.add_vocab(self, w, files, bpe_pre)
