"""What every text model family shares: hyperparameter keys, tensor naming, vocab choice.

A family module subclasses ``TextFamily``, names the HF architectures it takes, and
overrides only what differs (extra hyperparameters, tensor transforms).
"""

from __future__ import annotations

from typing import Any, ClassVar, Iterable, Iterator, Mapping, Sequence

import gguf

from .. import errors, prequant
from ..graph import Node, Stack
from ..hfconfig import check_hparams
from ..safetensors import SourceTensor

#: Source tensors the reference drops without mapping them.
_IGNORED_SUFFIXES = (".attention.masked_bias", ".attention.bias", ".rotary_emb.inv_freq")
#: Multimodal parts a text conversion leaves out.
_MULTIMODAL_PREFIXES = ("mlp", "vit.", "vpm.", "siglip2.", "conformer.", "merger.", "resampler.",
                        "sound_encoder.", "sound_projection.", "speech_embeddings.")
_MULTIMODAL_PARTS = ("visual.", "vision.", "audio.", "talker.", "vision_", "audio_", "token2wav.",
                     "code2wav.", "projector.", "pre_mm_projector_norm", "image_newline", "view_seperator",
                     "patch_embed", "patch_embedding", "patch_merger.", "patch_merge_mlp.", "model.connector.")


class ExpertStacks:
    """MoE experts arrive one tensor at a time (maybe across shards); once a layer's are all there,
    each projection becomes one ``Stack`` over the experts, written expert by expert.

    ``source`` and ``output`` are name templates with ``{bid}``, ``{xid}`` (source only) and ``{proj}``.
    """

    def __init__(self, n_experts: int, projections: Sequence[str], source: str, output: str):
        self.n_experts = n_experts
        self.projections = tuple(projections)
        self.source = source
        self.output = output
        self._layers: dict[int, dict[str, Node]] = {}

    def add(self, name: str, node: Node, bid: int | None, map_name) -> Iterator[tuple[str, Node]]:
        """Keep ``name``; when its layer is complete, yield (output name, stack) per projection."""
        if bid is None:
            raise errors.UnsupportedArchitectureError(f"expert tensor {name!r} has no layer number")
        layer = self._layers.setdefault(bid, {})
        layer[name] = node
        if len(layer) < self.n_experts * len(self.projections):
            return
        for proj in self.projections:
            parts = []
            for xid in range(self.n_experts):
                key = self.source.format(bid=bid, xid=xid, proj=proj)
                if key not in layer:
                    raise errors.InvalidHeaderError(f"expert tensor {key!r} is missing")
                parts.append(layer.pop(key))
            yield map_name(self.output.format(bid=bid, proj=proj)), Stack(tuple(parts))
        if layer:
            raise errors.InvalidHeaderError(f"unexpected expert tensor {sorted(layer)[0]!r}")
        del self._layers[bid]

    def check_complete(self) -> None:
        """After the last source tensor: every collected expert must have been stacked."""
        left = sorted(n for layer in self._layers.values() for n in layer)
        if left:
            raise errors.InvalidHeaderError(f"incomplete expert set, e.g. {left[0]!r}")


class TextFamily:
    """A decoder-only text model family. Subclasses set the class attributes below."""

    #: HF ``architectures[0]`` values this family converts
    hf_architectures: ClassVar[tuple[str, ...]] = ()
    #: the llama.cpp architecture written to ``general.architecture``
    gguf_arch: ClassVar[gguf.MODEL_ARCH]
    #: vocab kinds to try, in order (see ``hfstream.vocab.add_vocab``)
    vocab_strategies: ClassVar[tuple[str, ...]] = ("bpe",)
    #: (source name pattern, dimensions) that config.json fixes, for shapes the generic rules of
    #: ``plan.SHAPE_RULES`` do not describe; with the extra sizes they use (config.json spellings)
    shape_rules: ClassVar[tuple[tuple[str, tuple[str, ...]], ...] | None] = None
    shape_sizes: ClassVar[dict[str, tuple[str, ...]]] = {}

    def __init__(self, hparams: Mapping[str, Any], hf_arch: str):
        self.hf_arch = hf_arch
        merged = dict(hparams)
        if isinstance(merged.get("text_config"), dict):
            merged = {**merged, **merged["text_config"]}
        self.hparams = merged
        check_hparams(merged)  # before any value is used: types, bounds, divisibility
        self.block_count = int(self.find(("n_layers", "num_hidden_layers", "n_layer", "num_layers")))
        self.tensor_map = gguf.get_tensor_name_map(self.gguf_arch, self.block_count)
        self.rope = self._rope_parameters()

    # -- hyperparameters ------------------------------------------------------

    def find(self, keys: Sequence[str], optional: bool = False) -> Any:
        for k in keys:
            if k in self.hparams:
                return self.hparams[k]
        if optional:
            return None
        raise errors.InvalidConfigError(f"config.json: none of {', '.join(keys)} is set")

    def _rope_parameters(self) -> dict[str, Any]:
        """rope_parameters (or legacy rope_scaling) with the global keys mirrored in, as the reference does."""
        rope = dict(self.hparams.get("rope_parameters", self.hparams.get("rope_scaling")) or {})
        if "full_attention" in rope or "sliding_attention" in rope:
            return rope
        theta = self.find(("global_rope_theta", "rope_global_theta", "rope_theta_global", "rope_theta",
                           "rotary_emb_base"), optional=True)
        local_theta = self.find(("local_rope_theta", "rope_local_theta", "rope_theta_local", "swa_rope_theta",
                                 "rope_local_base_freq"), optional=True)
        partial = self.find(("partial_rotary_factor", "rope_pct", "rope_percent"), optional=True)
        orig_ctx = self.find(("original_max_position_embeddings",), optional=True)
        if local_theta is not None:
            rope["sliding_attention"] = {"rope_theta": local_theta}
        if "rope_theta" not in rope and theta is not None:
            rope["rope_theta"] = theta
        if "rope_type" not in rope and rope.get("type") is not None:
            rope["rope_type"] = rope["type"]
        if "partial_rotary_factor" not in rope and partial is not None:
            rope["partial_rotary_factor"] = partial
        if "original_max_position_embeddings" not in rope and orig_ctx is not None:
            rope["original_max_position_embeddings"] = orig_ctx
        return rope

    def add_hparams(self, w: gguf.GGUFWriter, file_type: int) -> None:
        """The architecture keys, in the reference's order; ``general.file_type`` last."""
        f = lambda keys: self.find(keys, optional=True)  # noqa: E731
        w.add_block_count(self.block_count)
        if (v := f(("max_position_embeddings", "n_ctx", "n_positions", "max_length", "max_sequence_length",
                    "model_max_length"))) is not None:
            w.add_context_length(v)
        if (v := f(("hidden_size", "n_embd", "dim"))) is not None:
            w.add_embedding_length(v)
        if (v := f(("prefix_dense_intermediate_size", "dense_intermediate_size", "intermediate_size", "n_inner",
                    "hidden_dim"))) is not None:
            w.add_feed_forward_length(v)
        if (v := f(("num_attention_heads", "n_head", "n_heads"))) is not None:
            w.add_head_count(v)
        if (v := f(("num_key_value_heads", "n_kv_heads"))) is not None:
            w.add_head_count_kv(v)
        if self.hparams.get("is_causal") is False:
            w.add_causal_attention(False)
        self._add_rope_scaling(w)
        rope = self.rope.get("full_attention", self.rope)
        if "mrope_section" in self.rope:
            sections = list(self.rope["mrope_section"])
            sections += [0] * (4 - len(sections))
            w.add_rope_dimension_sections(sections[:4])
        if (v := rope.get("rope_theta")) is not None:
            w.add_rope_freq_base(v)
        if (v := self.rope.get("sliding_attention", {}).get("rope_theta")) is not None:
            w.add_rope_freq_base_swa(v)
        if (v := f(("rms_norm_eps", "norm_eps"))) is not None:
            w.add_layer_norm_rms_eps(v)
        if (v := f(("layer_norm_eps", "layer_norm_epsilon", "norm_epsilon"))) is not None:
            w.add_layer_norm_eps(v)
        if (v := f(("num_local_experts", "num_experts", "n_routed_experts"))) is not None:
            w.add_expert_count(v)
        if (v := f(("num_experts_per_tok", "num_experts_per_token", "top_k_experts"))) is not None:
            w.add_expert_used_count(v)
        if (v := self.hparams.get("n_group")) is not None:
            w.add_expert_group_count(v)
        if (v := self.hparams.get("topk_group")) is not None:
            w.add_expert_group_used_count(v)
        score = f(("score_function", "scoring_func", "score_func", "moe_router_activation",
                   "moe_router_activation_func", "expert_selection_fn"))
        if score is not None:
            gating = {"sigmoid": gguf.ExpertGatingFuncType.SIGMOID, "softmax": gguf.ExpertGatingFuncType.SOFTMAX}
            if hasattr(gguf.ExpertGatingFuncType, "SQRTSOFTPLUS"):
                gating["sqrtsoftplus"] = gguf.ExpertGatingFuncType.SQRTSOFTPLUS
            if score not in gating:
                raise errors.InvalidConfigError(f"config.json: unsupported expert gating function {score!r}")
            w.add_expert_gating_func(gating[score])
        if (v := self.hparams.get("head_dim")) is not None:
            w.add_key_length(v)
            w.add_value_length(v)
        w.add_file_type(file_type)

    def _add_rope_scaling(self, w: gguf.GGUFWriter) -> None:
        rope = self.rope.get("full_attention", self.rope)
        rope_type = rope.get("rope_type")
        if rope_type is None:
            return
        factor = rope.get("factor")
        if rope_type == "linear" and factor is not None:
            w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            w.add_rope_scaling_factor(factor)
        elif rope_type == "yarn" and factor is not None:
            w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
            w.add_rope_scaling_factor(factor)
            if "original_max_position_embeddings" not in rope:
                raise errors.InvalidConfigError("config.json: yarn rope scaling needs original_max_position_embeddings")
            w.add_rope_scaling_orig_ctx_len(rope["original_max_position_embeddings"])
            if (v := rope.get("extrapolation_factor")) is not None:
                w.add_rope_scaling_yarn_ext_factor(v)
            if (v := rope.get("attention_factor", rope.get("attn_factor"))) is not None:
                w.add_rope_scaling_yarn_attn_factor(v)
            if (v := rope.get("beta_fast")) is not None:
                w.add_rope_scaling_yarn_beta_fast(v)
            if (v := rope.get("beta_slow")) is not None:
                w.add_rope_scaling_yarn_beta_slow(v)
        elif rope_type in ("su", "longrope"):
            w.add_rope_scaling_type(gguf.RopeScalingType.LONGROPE)
        # "dynamic" and "llama3" are handled by the families that use them

    # -- tensors --------------------------------------------------------------

    def source_name(self, name: str) -> str | None:
        """The name a source tensor is converted under, or None to leave it out."""
        if name.startswith(_MULTIMODAL_PREFIXES) or any(p in name for p in _MULTIMODAL_PARTS):
            return None
        if name.endswith("e_score_correction_bias"):
            name = name.replace("e_score_correction_bias", "e_score_correction.bias")
        name = name.replace("language_model.", "")
        if name.endswith(_IGNORED_SUFFIXES):
            return None
        return name

    def source_nodes(self, sources: Sequence[tuple[str, SourceTensor]]) -> list[tuple[str, Node]]:
        """Each source tensor (name after ``source_name``) as the node ``convert`` gets, in order: a load,
        or for a pre-quantized checkpoint the dequantized weight, its scales dropped (``prequant``)."""
        return prequant.source_nodes(self.hparams, sources)

    def use_files(self, files: Mapping[str, bytes]) -> None:
        """Called once with the repo's small files (config, tokenizer, ...) before any tensor is
        converted, for families whose tensors depend on them (e.g. Gemma 3 cuts the embedding to the
        tokenizer's size)."""

    def extra_tensors(self) -> Iterable[tuple[str, Node]]:
        """Tensors generated from the config alone; they come first in the file."""
        return ()

    def add_tensor_time_hparams(self, w: gguf.GGUFWriter) -> None:
        """Keys the reference writes while it converts tensors, hence right after ``general.architecture``
        and before ``general.type`` (e.g. Phi-3's LongRoPE attention factor). Called once, after ``finish``."""

    def convert(self, name: str, node: Node, bid: int | None) -> Iterator[tuple[str, Node]]:
        """Output tensors for one source tensor (none, if it is buffered for a later one)."""
        yield self.map_name(name), node

    def finish(self) -> Iterator[tuple[str, Node]]:
        """Called after the last source tensor; raises if something buffered was never used."""
        return iter(())

    def map_name(self, name: str) -> str:
        new = self.tensor_map.get_name(key=name, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise errors.UnsupportedArchitectureError(
                f"cannot map tensor {name!r} of {self.hf_arch} to a llama.cpp tensor name")
        return new

    def tensor_kind(self, gguf_name: str, bid: int | None) -> gguf.MODEL_TENSOR | None:
        """The kind of an output ``*.weight`` tensor (for the type rules), or None.

        ``bid`` is the block id of the source tensor, as the reference matches it.
        """
        for kind in gguf.MODEL_TENSORS.get(self.gguf_arch, ()):
            template = gguf.TENSOR_NAMES[kind]
            if "{bid}" in template:
                if bid is None:
                    continue
                template = template.format(bid=bid)
            elif bid is not None:
                continue
            if gguf_name == template + ".weight":
                return kind
        return None

    # -- vocab ----------------------------------------------------------------

    def add_vocab(self, w: gguf.GGUFWriter, files: Mapping[str, bytes], bpe_pre: str | None) -> None:
        from ..vocab import add_vocab

        add_vocab(w, files, self.hparams, strategies=self.vocab_strategies, bpe_pre=bpe_pre)
