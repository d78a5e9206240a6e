"""Regenerate ``tests/goldens/hfconfig/*.json``: realistic config.json variants (and every fixture's
config) with the hparams the reference converter sees for them.

    python -m tests.goldens.make_config_goldens [--check]

The reference reads hparams through ``AutoConfig.from_pretrained(dir).to_dict()`` (``reference_hparams``
below does exactly that, on a temporary directory). ``hfstream.hfconfig`` reads config.json through
the same transformers classes in a worker process, on the bytes in memory; the goldens pin what
transformers 5.23 gives, so a change of behaviour in another transformers version shows up as a
failing test rather than as silently different metadata. Needs transformers (and torch, as in the
reference environment); golden time only.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import tempfile
import warnings
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

GOLDENS_DIR = Path(__file__).resolve().parent / "hfconfig"
FIXTURE_MODELS = REPO_ROOT / "fixtures" / "models"

from fixtures.at_scale import DEEPSEEK_V3_CONFIG  # noqa: E402 (needs REPO_ROOT on the path)

LLAMA2_7B = {
    "architectures": ["LlamaForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
    "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 11008, "max_position_embeddings": 4096,
    "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 32,
    "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": None, "tie_word_embeddings": False,
    "torch_dtype": "float16", "transformers_version": "4.31.0.dev0", "use_cache": True, "vocab_size": 32000,
}
LLAMA31_8B = {
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "hidden_act": "silu", "hidden_size": 4096,
    "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 131072, "mlp_bias": False,
    "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
    "pretraining_tp": 1, "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "transformers_version": "4.43.0.dev0", "use_cache": True, "vocab_size": 128256,
}
LLAMA32_1B = {
    **LLAMA31_8B, "head_dim": 64, "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
    "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "tie_word_embeddings": True, "transformers_version": "4.45.0.dev0",
}
MISTRAL_7B_V01 = {
    "architectures": ["MistralForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
    "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 32768,
    "model_type": "mistral", "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
    "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "sliding_window": 4096, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16", "transformers_version": "4.34.0.dev0", "use_cache": True, "vocab_size": 32000,
}
MISTRAL_NEMO = {
    "architectures": ["MistralForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 1, "eos_token_id": 2,
    "head_dim": 128, "hidden_act": "silu", "hidden_size": 5120, "initializer_range": 0.02,
    "intermediate_size": 14336, "max_position_embeddings": 1024000, "model_type": "mistral",
    "num_attention_heads": 32, "num_hidden_layers": 40, "num_key_value_heads": 8, "rms_norm_eps": 1e-05,
    "rope_theta": 1000000.0, "sliding_window": None, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "transformers_version": "4.43.0.dev0", "use_cache": True, "vocab_size": 131072,
}
MIXTRAL_8X7B = {
    "architectures": ["MixtralForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 1, "eos_token_id": 2,
    "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336,
    "max_position_embeddings": 32768, "model_type": "mixtral", "num_attention_heads": 32,
    "num_experts_per_tok": 2, "num_hidden_layers": 32, "num_key_value_heads": 8, "num_local_experts": 8,
    "output_router_logits": False, "rms_norm_eps": 1e-05, "rope_theta": 1000000.0, "router_aux_loss_coef": 0.02,
    "sliding_window": None, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "transformers_version": "4.36.0.dev0", "use_cache": True, "vocab_size": 32000,
}
QWEN25_7B = {
    "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
    "eos_token_id": 151645, "hidden_act": "silu", "hidden_size": 3584, "initializer_range": 0.02,
    "intermediate_size": 18944, "max_position_embeddings": 32768, "max_window_layers": 28, "model_type": "qwen2",
    "num_attention_heads": 28, "num_hidden_layers": 28, "num_key_value_heads": 4, "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0, "sliding_window": 131072, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "transformers_version": "4.43.1", "use_cache": True, "use_sliding_window": False, "vocab_size": 152064,
}
QWEN25_05B = {
    **QWEN25_7B, "hidden_size": 896, "intermediate_size": 4864, "max_window_layers": 21,
    "num_attention_heads": 14, "num_hidden_layers": 24, "num_key_value_heads": 2, "sliding_window": 32768,
    "tie_word_embeddings": True, "vocab_size": 151936,
}
QWEN3_8B = {
    "architectures": ["Qwen3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 151643, "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu", "hidden_size": 4096,
    "initializer_range": 0.02, "intermediate_size": 12288, "max_position_embeddings": 40960,
    "max_window_layers": 36, "model_type": "qwen3", "num_attention_heads": 32, "num_hidden_layers": 36,
    "num_key_value_heads": 8, "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 1000000,
    "sliding_window": None, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "transformers_version": "4.51.0", "use_cache": True, "use_sliding_window": False, "vocab_size": 151936,
}
QWEN2_MOE = {
    "architectures": ["Qwen2MoeForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
    "decoder_sparse_step": 1, "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 2048,
    "initializer_range": 0.02, "intermediate_size": 5632, "max_position_embeddings": 8192,
    "max_window_layers": 21, "model_type": "qwen2_moe", "moe_intermediate_size": 1408, "norm_topk_prob": False,
    "num_attention_heads": 16, "num_experts": 60, "num_experts_per_tok": 4, "num_hidden_layers": 24,
    "num_key_value_heads": 16, "output_router_logits": False, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
    "router_aux_loss_coef": 0.001, "shared_expert_intermediate_size": 5632, "sliding_window": 32768,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "transformers_version": "4.39.0.dev0",
    "use_cache": True, "use_sliding_window": False, "vocab_size": 151936,
}
QWEN3_MOE = {
    "architectures": ["Qwen3MoeForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 151643, "decoder_sparse_step": 1, "eos_token_id": 151645, "head_dim": 128,
    "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 6144,
    "max_position_embeddings": 40960, "max_window_layers": 48, "mlp_only_layers": [],
    "model_type": "qwen3_moe", "moe_intermediate_size": 768, "norm_topk_prob": True,
    "num_attention_heads": 32, "num_experts": 128, "num_experts_per_tok": 8, "num_hidden_layers": 48,
    "num_key_value_heads": 4, "output_router_logits": False, "rms_norm_eps": 1e-06, "rope_scaling": None,
    "rope_theta": 1000000.0, "router_aux_loss_coef": 0.001, "sliding_window": None, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16", "transformers_version": "4.51.0", "use_cache": True, "use_sliding_window": False,
    "vocab_size": 151936,
}
QWEN3_NEXT_80B = {
    "architectures": ["Qwen3NextForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
    "decoder_sparse_step": 1, "eos_token_id": 151645, "full_attention_interval": 4, "head_dim": 256,
    "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 5120,
    "linear_conv_kernel_dim": 4, "linear_key_head_dim": 128, "linear_num_key_heads": 16, "linear_num_value_heads": 32,
    "linear_value_head_dim": 128, "max_position_embeddings": 262144, "mlp_only_layers": [], "model_type": "qwen3_next",
    "moe_intermediate_size": 512, "norm_topk_prob": True, "num_attention_heads": 16, "num_experts": 512,
    "num_experts_per_tok": 10, "num_hidden_layers": 48, "num_key_value_heads": 2, "output_router_logits": False,
    "partial_rotary_factor": 0.25, "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 10000000,
    "router_aux_loss_coef": 0.001, "shared_expert_intermediate_size": 512, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16", "transformers_version": "4.57.0.dev0", "use_cache": True, "use_sliding_window": False,
    "vocab_size": 151936,
}
QWEN35_35B_A3B = {
    "architectures": ["Qwen3_5MoeForConditionalGeneration"], "image_token_id": 248056, "model_type": "qwen3_5_moe",
    "text_config": {
        "attention_bias": False, "attention_dropout": 0.0, "attn_output_gate": True, "dtype": "bfloat16",
        "eos_token_id": 248044, "full_attention_interval": 4, "head_dim": 256, "hidden_act": "silu",
        "hidden_size": 2048, "initializer_range": 0.02,
        "layer_types": ["linear_attention", "linear_attention", "linear_attention", "full_attention"] * 10,
        "linear_conv_kernel_dim": 4, "linear_key_head_dim": 128, "linear_num_key_heads": 16,
        "linear_num_value_heads": 32, "linear_value_head_dim": 128, "mamba_ssm_dtype": "float32",
        "max_position_embeddings": 262144, "model_type": "qwen3_5_moe_text", "moe_intermediate_size": 512,
        "mtp_num_hidden_layers": 1, "mtp_use_dedicated_embeddings": False, "num_attention_heads": 16,
        "num_experts": 256, "num_experts_per_tok": 8, "num_hidden_layers": 40, "num_key_value_heads": 2,
        "output_router_logits": False, "partial_rotary_factor": 0.25, "rms_norm_eps": 1e-06,
        "rope_parameters": {"mrope_interleaved": True, "mrope_section": [11, 11, 10], "partial_rotary_factor": 0.25,
                            "rope_theta": 10000000, "rope_type": "default"},
        "router_aux_loss_coef": 0.001, "shared_expert_intermediate_size": 512, "use_cache": True,
        "vocab_size": 248320,
    },
    "tie_word_embeddings": False, "transformers_version": "4.57.0.dev0", "video_token_id": 248057,
    "vision_config": {"depth": 27, "hidden_act": "gelu_pytorch_tanh", "hidden_size": 1152, "in_channels": 3,
                      "initializer_range": 0.02, "intermediate_size": 4304, "model_type": "qwen3_5_moe",
                      "num_heads": 16, "num_position_embeddings": 2304, "out_hidden_size": 2048, "patch_size": 16,
                      "spatial_merge_size": 2, "temporal_patch_size": 2},
    "vision_end_token_id": 248054, "vision_start_token_id": 248053,
}
GEMMA_2B = {
    "architectures": ["GemmaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 2,
    "eos_token_id": 1, "head_dim": 256, "hidden_act": "gelu", "hidden_size": 2048, "initializer_range": 0.02,
    "intermediate_size": 16384, "max_position_embeddings": 8192, "model_type": "gemma",
    "num_attention_heads": 8, "num_hidden_layers": 18, "num_key_value_heads": 1, "pad_token_id": 0,
    "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 10000.0, "torch_dtype": "bfloat16",
    "transformers_version": "4.38.0.dev0", "use_cache": True, "vocab_size": 256000,
}
GEMMA2_2B = {
    "architectures": ["Gemma2ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "attn_logit_softcapping": 50.0, "bos_token_id": 2, "cache_implementation": "hybrid", "eos_token_id": [1, 107],
    "final_logit_softcapping": 30.0, "head_dim": 256, "hidden_act": "gelu_pytorch_tanh",
    "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 2304, "initializer_range": 0.02,
    "intermediate_size": 9216, "max_position_embeddings": 8192, "model_type": "gemma2",
    "num_attention_heads": 8, "num_hidden_layers": 26, "num_key_value_heads": 4, "pad_token_id": 0,
    "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06, "rope_theta": 10000.0, "sliding_window": 4096,
    "torch_dtype": "float32", "transformers_version": "4.42.4", "use_cache": True, "vocab_size": 256000,
}
GEMMA3_1B = {
    "architectures": ["Gemma3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "attn_logit_softcapping": None, "bos_token_id": 2, "cache_implementation": "hybrid", "eos_token_id": [1, 106],
    "final_logit_softcapping": None, "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh",
    "hidden_size": 1152, "initializer_range": 0.02, "intermediate_size": 6912, "max_position_embeddings": 32768,
    "model_type": "gemma3_text", "num_attention_heads": 4, "num_hidden_layers": 26, "num_key_value_heads": 1,
    "pad_token_id": 0, "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06, "rope_local_base_freq": 10000,
    "rope_scaling": None, "rope_theta": 1000000, "sliding_window": 512, "sliding_window_pattern": 6,
    "torch_dtype": "bfloat16", "transformers_version": "4.50.0.dev0", "use_cache": True, "vocab_size": 262144,
}
GEMMA3_4B_IT = {
    "architectures": ["Gemma3ForConditionalGeneration"], "boi_token_index": 255999, "eoi_token_index": 256000,
    "eos_token_id": [1, 106], "image_token_index": 262144, "initializer_range": 0.02, "mm_tokens_per_image": 256,
    "model_type": "gemma3",
    "text_config": {"hidden_size": 2560, "intermediate_size": 10240, "model_type": "gemma3_text",
                    "num_hidden_layers": 34, "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
                    "sliding_window": 1024},
    "torch_dtype": "bfloat16", "transformers_version": "4.50.0.dev0",
    "vision_config": {"hidden_size": 1152, "image_size": 896, "intermediate_size": 4304,
                      "model_type": "siglip_vision_model", "num_attention_heads": 16, "num_hidden_layers": 27,
                      "patch_size": 14, "vision_use_head": False},
}
PHI3_MINI_4K = {
    "_name_or_path": "Phi-3-mini-4k-instruct", "architectures": ["Phi3ForCausalLM"], "attention_bias": False,
    "attention_dropout": 0.0,
    "auto_map": {"AutoConfig": "configuration_phi3.Phi3Config", "AutoModelForCausalLM": "modeling_phi3.Phi3ForCausalLM"},
    "bos_token_id": 1, "embd_pdrop": 0.0, "eos_token_id": 32000, "hidden_act": "silu", "hidden_size": 3072,
    "initializer_range": 0.02, "intermediate_size": 8192, "max_position_embeddings": 4096, "model_type": "phi3",
    "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 32,
    "original_max_position_embeddings": 4096, "pad_token_id": 32000, "resid_pdrop": 0.0, "rms_norm_eps": 1e-05,
    "rope_scaling": None, "rope_theta": 10000.0, "sliding_window": 2047, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16", "transformers_version": "4.40.2", "use_cache": True, "vocab_size": 32064,
}
_PHI3_SHORT = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.01, 1.02, 1.02, 1.04, 1.04,
               1.07, 1.07, 1.1, 1.3, 1.3, 1.5, 1.57, 1.8, 2.0, 2.2, 2.45, 2.6, 2.9, 3.0, 3.1, 3.1, 3.2, 3.2,
               3.2, 3.3, 3.3, 3.3, 3.3, 3.3, 3.3, 3.4, 3.4, 3.4, 3.4]
_PHI3_LONG = [1.08, 1.1, 1.14, 1.34, 1.59, 1.6, 1.62, 2.62, 3.23, 3.24, 3.46, 3.99, 4.23, 4.54, 4.89, 5.3,
              5.7, 6.0, 6.4, 6.9, 7.1, 7.6, 8.4, 9.2, 10.5, 11.3, 12.4, 15.0, 18.6, 22.3, 24.8, 27.2, 31.2,
              32.8, 39.4, 43.1, 46.8, 48.0, 53.8, 60.8, 64.3, 64.3, 64.3, 64.3, 64.3, 64.3, 64.3, 64.3]
PHI3_MINI_128K = {
    **PHI3_MINI_4K, "_name_or_path": "Phi-3-mini-128k-instruct", "max_position_embeddings": 131072,
    "rope_scaling": {"long_factor": _PHI3_LONG, "short_factor": _PHI3_SHORT, "type": "longrope"},
    "sliding_window": 262144,
}
GPT2 = {
    "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1,
    "bos_token_id": 50256, "embd_pdrop": 0.1, "eos_token_id": 50256, "initializer_range": 0.02,
    "layer_norm_epsilon": 1e-05, "model_type": "gpt2", "n_ctx": 1024, "n_embd": 768, "n_head": 12,
    "n_layer": 12, "n_positions": 1024, "resid_pdrop": 0.1, "summary_activation": None,
    "summary_first_dropout": 0.1, "summary_proj_to_labels": True, "summary_type": "cls_index",
    "summary_use_proj": True, "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 50}},
    "vocab_size": 50257,
}

GEMMA3_27B_IT = {
    **GEMMA3_4B_IT,
    "text_config": {"head_dim": 128, "hidden_size": 5376, "intermediate_size": 21504, "model_type": "gemma3_text",
                    "num_attention_heads": 32, "num_hidden_layers": 62, "num_key_value_heads": 16,
                    "query_pre_attn_scalar": 168, "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
                    "sliding_window": 1024},
}
PHI4_MINI = {
    "architectures": ["Phi3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 199999,
    "embd_pdrop": 0.0, "eos_token_id": 199999, "full_attn_mod": 1, "hidden_act": "silu", "hidden_size": 3072,
    "initializer_range": 0.02, "intermediate_size": 8192, "interpolate_factor": 1, "lm_head_bias": False,
    "max_position_embeddings": 131072, "mlp_bias": False, "model_type": "phi3", "num_attention_heads": 24,
    "num_hidden_layers": 32, "num_key_value_heads": 8, "original_max_position_embeddings": 4096,
    "pad_token_id": 199999, "partial_rotary_factor": 0.75, "resid_pdrop": 0.0, "rms_norm_eps": 1e-05,
    "rope_scaling": {"long_factor": [1.0 + i / 8 for i in range(48)], "short_factor": [1.0] * 48, "type": "longrope"},
    "rope_theta": 10000.0, "sliding_window": 262144, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
    "transformers_version": "4.45.0", "use_cache": True, "vocab_size": 200064,
}
SMOLLM2_135M = {
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 1,
    "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 576, "initializer_range": 0.041666666666666664,
    "intermediate_size": 1536, "is_llama_config": True, "max_position_embeddings": 8192, "mlp_bias": False,
    "model_type": "llama", "num_attention_heads": 9, "num_hidden_layers": 30, "num_key_value_heads": 3,
    "pad_token_id": 2, "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_interleaved": False, "rope_scaling": None,
    "rope_theta": 100000, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
    "transformers_version": "4.42.3", "use_cache": True, "vocab_size": 49152,
}
MISTRAL_SMALL_24B = {
    "architectures": ["MistralForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 1, "eos_token_id": 2,
    "head_dim": 128, "hidden_act": "silu", "hidden_size": 5120, "initializer_range": 0.02,
    "intermediate_size": 32768, "max_position_embeddings": 32768, "model_type": "mistral",
    "num_attention_heads": 32, "num_hidden_layers": 40, "num_key_value_heads": 8, "rms_norm_eps": 1e-05,
    "rope_theta": 100000000.0, "sliding_window": None, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "transformers_version": "4.49.0.dev0", "use_cache": True, "vocab_size": 131072,
}
DEEPSEEK_R1_DISTILL_QWEN_1_5B = {
    "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
    "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 1536, "initializer_range": 0.02,
    "intermediate_size": 8960, "max_position_embeddings": 131072, "max_window_layers": 21, "model_type": "qwen2",
    "num_attention_heads": 12, "num_hidden_layers": 28, "num_key_value_heads": 2, "rms_norm_eps": 1e-06,
    "rope_theta": 10000, "sliding_window": 4096, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "transformers_version": "4.44.0", "use_cache": True, "use_mrope": False, "use_sliding_window": False,
    "vocab_size": 151936,
}
QWEN3_8B_FP8 = {
    **QWEN3_8B,
    "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                            "weight_block_size": [128, 128]},
}

DEEPSEEK_V2_LITE = {
    "architectures": ["DeepseekV2ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "auto_map": {"AutoConfig": "configuration_deepseek.DeepseekV2Config",
                 "AutoModel": "modeling_deepseek.DeepseekV2Model",
                 "AutoModelForCausalLM": "modeling_deepseek.DeepseekV2ForCausalLM"},
    "aux_loss_alpha": 0.001, "bos_token_id": 100000, "eos_token_id": 100001, "first_k_dense_replace": 1,
    "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 10944,
    "kv_lora_rank": 512, "max_position_embeddings": 163840, "model_type": "deepseek_v2",
    "moe_intermediate_size": 1408, "moe_layer_freq": 1, "n_group": 1, "n_routed_experts": 64,
    "n_shared_experts": 2, "norm_topk_prob": False, "num_attention_heads": 16, "num_experts_per_tok": 6,
    "num_hidden_layers": 27, "num_key_value_heads": 16, "pretraining_tp": 1, "q_lora_rank": None,
    "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "rms_norm_eps": 1e-06,
    "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 0.707, "mscale_all_dim": 0.707,
                     "original_max_position_embeddings": 4096, "type": "yarn"},
    "rope_theta": 10000, "routed_scaling_factor": 1.0, "scoring_func": "softmax", "seq_aux": True,
    "tie_word_embeddings": False, "topk_group": 1, "topk_method": "greedy", "torch_dtype": "bfloat16",
    "transformers_version": "4.33.1", "use_cache": True, "v_head_dim": 128, "vocab_size": 102400,
}
#: deepseek-ai/DeepSeek-V3's config.json, as the at-scale fixture publishes it
DEEPSEEK_V3 = DEEPSEEK_V3_CONFIG


#: openai/gpt-oss-20b's config.json
GPT_OSS_20B = {
    "architectures": ["GptOssForCausalLM"], "attention_bias": True, "attention_dropout": 0.0, "eos_token_id": 200002,
    "experts_per_token": 4, "head_dim": 64, "hidden_act": "silu", "hidden_size": 2880, "initial_context_length": 4096,
    "initializer_range": 0.02, "intermediate_size": 2880,
    "layer_types": ["sliding_attention", "full_attention"] * 12, "max_position_embeddings": 131072,
    "model_type": "gpt_oss", "num_attention_heads": 64, "num_experts_per_tok": 4, "num_hidden_layers": 24,
    "num_key_value_heads": 8, "num_local_experts": 32, "output_router_logits": False, "pad_token_id": 199999,
    "quantization_config": {"modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router",
                                                       "model.embed_tokens", "lm_head"], "quant_method": "mxfp4"},
    "rms_norm_eps": 1e-05,
    "rope_scaling": {"beta_fast": 32.0, "beta_slow": 1.0, "factor": 32.0, "original_max_position_embeddings": 4096,
                     "rope_type": "yarn", "truncate": False},
    "rope_theta": 150000, "router_aux_loss_coef": 0.9, "sliding_window": 128, "swiglu_limit": 7.0,
    "tie_word_embeddings": False, "transformers_version": "4.55.0.dev0", "use_cache": True, "vocab_size": 201088,
}

def variant(base: dict, drop=(), **changes) -> dict:
    out = {k: copy.deepcopy(v) for k, v in base.items() if k not in drop}
    out.update(copy.deepcopy(changes))
    return out


CASES: dict[str, dict] = {
    "llama2-7b": LLAMA2_7B,
    "llama2-no-kv-heads": variant(LLAMA2_7B, drop=("num_key_value_heads", "rope_scaling", "torch_dtype")),
    "llama31-8b-llama3-rope": LLAMA31_8B,
    "llama32-1b": LLAMA32_1B,
    "llama-int-rope-theta": variant(LLAMA31_8B, rope_theta=500000, rope_scaling=None),
    "llama-linear-rope": variant(LLAMA2_7B, rope_scaling={"type": "linear", "factor": 4.0}),
    "llama-dynamic-rope": variant(LLAMA2_7B, rope_scaling={"type": "dynamic", "factor": 2.0}),
    "llama-yarn-rope": variant(LLAMA2_7B, rope_theta=1000000.0, max_position_embeddings=32768,
                               rope_scaling={"rope_type": "yarn", "factor": 8.0,
                                             "original_max_position_embeddings": 4096}),
    "llama-yarn-no-original": variant(LLAMA2_7B, rope_scaling={"type": "yarn", "factor": 4.0}),
    "llama-rope-parameters": variant(LLAMA2_7B, drop=("rope_scaling",), dtype="bfloat16",
                                     rope_parameters={"rope_type": "default", "rope_theta": 250000.0}),
    "llama-partial-rotary": variant(LLAMA2_7B, partial_rotary_factor=0.5),
    "llama-generation-keys": variant(LLAMA2_7B, max_length=4096, do_sample=True, temperature=0.6, top_p=0.9,
                                     _attn_implementation="flash_attention_2", output_attentions=False,
                                     id2label={"0": "LABEL_0", "1": "LABEL_1", "2": "LABEL_2"}),
    "llama-original-max-outside": variant(LLAMA31_8B, original_max_position_embeddings=8192,
                                          rope_scaling={"rope_type": "yarn", "factor": 16.0}),
    "llama-special-floats": variant(LLAMA2_7B, foo={"__float__": "Infinity"}),
    # AutoConfig fails on these; the reference falls back to config.json as is
    "llama-bad-heads": variant(LLAMA2_7B, num_attention_heads=30),
    "llama-linear-missing-factor": variant(LLAMA2_7B, rope_scaling={"type": "linear"}),
    "llama-float-for-int": variant(LLAMA2_7B, max_position_embeddings=4096.0),
    "llama-int-for-float": variant(LLAMA2_7B, rms_norm_eps=0),
    "llama-bad-dtype": variant(LLAMA2_7B, torch_dtype="bf16"),
    "llama-initializer-range-out-of-interval": variant(LLAMA2_7B, initializer_range=2.0),
    "no-model-type": variant(LLAMA2_7B, drop=("model_type",)),
    "unknown-model-type": variant(LLAMA2_7B, model_type="foobar"),
    "mistral-7b-v01": MISTRAL_7B_V01,
    "mistral-nemo": MISTRAL_NEMO,
    "mistral-no-head-dim-no-kv": variant(MISTRAL_7B_V01, drop=("num_key_value_heads", "rope_theta")),
    "mistral-layer-types-is-ministral": variant(MISTRAL_7B_V01, num_hidden_layers=4,
                                                layer_types=["sliding_attention", "full_attention"] * 2),
    "mixtral-8x7b": MIXTRAL_8X7B,
    "mixtral-no-theta": variant(MIXTRAL_8X7B, drop=("rope_theta", "num_key_value_heads")),
    "qwen25-7b": QWEN25_7B,
    "qwen25-05b": QWEN25_05B,
    "qwen25-yarn": variant(QWEN25_7B, max_position_embeddings=131072,
                           rope_scaling={"factor": 4.0, "original_max_position_embeddings": 32768, "type": "yarn"}),
    "qwen25-sliding": variant(QWEN25_7B, use_sliding_window=True, max_window_layers=20),
    "qwen3-8b": QWEN3_8B,
    "qwen3-no-head-dim": variant(QWEN3_8B, drop=("head_dim",)),
    "qwen2-moe": QWEN2_MOE,
    "qwen2-moe-sliding": variant(QWEN2_MOE, use_sliding_window=True),
    "qwen3-moe": QWEN3_MOE,
    "qwen3-next-80b-a3b": QWEN3_NEXT_80B,
    "qwen3-next-layer-types-from-interval": variant(QWEN3_NEXT_80B, num_hidden_layers=6, full_attention_interval=3),
    "qwen35-35b-a3b": QWEN35_35B_A3B,
    "gemma-2b": GEMMA_2B,
    "gemma-7b": variant(GEMMA_2B, hidden_size=3072, intermediate_size=24576, num_attention_heads=16,
                        num_hidden_layers=28, num_key_value_heads=16),
    "gemma2-2b": GEMMA2_2B,
    "gemma2-explicit-layer-types": variant(GEMMA2_2B, num_hidden_layers=2,
                                           layer_types=["full_attention", "sliding_attention"]),
    "gemma2-bad-layer-types": variant(GEMMA2_2B, layer_types=["full_attention"]),
    "gemma3-1b-text": GEMMA3_1B,
    "gemma3-text-rope-scaling": variant(GEMMA3_1B, rope_scaling={"rope_type": "linear", "factor": 8.0}),
    "gemma3-text-bidirectional": variant(GEMMA3_1B, use_bidirectional_attention=True),
    "gemma3-text-nested-rope": variant(GEMMA3_1B, drop=("rope_theta", "rope_local_base_freq", "rope_scaling"),
                                       rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1e6},
                                                        "sliding_attention": {"rope_type": "default",
                                                                              "rope_theta": 1e4}}),
    "gemma3-4b-it": GEMMA3_4B_IT,
    "gemma3-no-text-config": variant(GEMMA3_4B_IT, drop=("text_config", "vision_config")),
    "phi3-mini-4k": PHI3_MINI_4K,
    "phi3-mini-128k-longrope": PHI3_MINI_128K,
    "phi3-su-rope": variant(PHI3_MINI_128K, rope_scaling={"long_factor": _PHI3_LONG, "short_factor": _PHI3_SHORT,
                                                         "type": "su"}),
    "phi3-short-factor-wrong-length": variant(PHI3_MINI_128K, rope_scaling={"long_factor": _PHI3_LONG[:8],
                                                                           "short_factor": _PHI3_SHORT[:8],
                                                                           "type": "longrope"}),
    "gemma3-27b-it": GEMMA3_27B_IT,
    "phi4-mini-partial-rotary-longrope": PHI4_MINI,
    "smollm2-135m": SMOLLM2_135M,
    "mistral-small-24b": MISTRAL_SMALL_24B,
    "deepseek-r1-distill-qwen-1.5b": DEEPSEEK_R1_DISTILL_QWEN_1_5B,
    "qwen3-8b-fp8-quantization-config": QWEN3_8B_FP8,
    "deepseek-v2-lite": DEEPSEEK_V2_LITE,
    "deepseek-v3": DEEPSEEK_V3,
    "deepseek-v3-no-kv-heads": variant(DEEPSEEK_V3, drop=("num_key_value_heads", "rope_scaling")),
    "gpt2": GPT2,
    "gpt2-standard-names": variant(GPT2, drop=("n_embd", "n_head", "n_layer", "n_positions"), hidden_size=256,
                                   num_attention_heads=4, num_hidden_layers=3, max_position_embeddings=512),
    "gpt-oss-20b": GPT_OSS_20B,
    # class defaults: yarn rope, alternating layer types, head_dim and kv heads
    "gpt-oss-defaults": variant(GPT_OSS_20B, drop=("rope_scaling", "rope_theta", "layer_types", "head_dim",
                                                   "num_key_value_heads", "quantization_config")),
}


# Command R / R7B, GLM-4-0414, StarCoder2, Phi-3.5-MoE, InternLM3, StableLM 2 and GPT-NeoX (real configs;
# Phi-3.5-MoE's rope factors shortened to a ramp of the right length)
COMMAND_R_V01 = {
    "architectures": ["CohereForCausalLM"], "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 5,
    "eos_token_id": 255001, "hidden_act": "silu", "hidden_size": 8192, "initializer_range": 0.02,
    "intermediate_size": 22528, "layer_norm_eps": 1e-05, "logit_scale": 0.0625, "max_position_embeddings": 8192,
    "model_max_length": 131072, "model_type": "cohere", "num_attention_heads": 64, "num_hidden_layers": 40,
    "num_key_value_heads": 64, "pad_token_id": 0, "rope_theta": 8000000.0, "torch_dtype": "float16",
    "transformers_version": "4.40.0.dev0", "use_cache": True, "use_qk_norm": False, "vocab_size": 256000,
}
COMMAND_R7B = {
    "architectures": ["Cohere2ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 5,
    "cache_implementation": "hybrid", "eos_token_id": 255001, "head_dim": 128, "hidden_act": "silu",
    "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336, "layer_norm_eps": 1e-05,
    "logit_scale": 0.25, "max_position_embeddings": 132096, "model_type": "cohere2", "num_attention_heads": 32,
    "num_hidden_layers": 32, "num_key_value_heads": 8, "order_of_interleaved_layers": "local_attn_first",
    "pad_token_id": 0, "position_embedding_type": "rope_gptj", "rope_scaling": None, "rope_theta": 50000,
    "rotary_pct": 1.0, "sliding_window": 4096, "sliding_window_pattern": 4, "torch_dtype": "bfloat16",
    "transformers_version": "4.48.0.dev0", "use_cache": True, "use_embedding_sharing": True,
    "use_gated_activation": True, "vocab_size": 256000,
}
GLM4_9B_0414 = {
    "architectures": ["Glm4ForCausalLM"], "attention_bias": True, "attention_dropout": 0.0,
    "eos_token_id": [151329, 151336, 151338], "head_dim": 128, "hidden_act": "silu", "hidden_size": 4096,
    "initializer_range": 0.02, "intermediate_size": 13696, "max_position_embeddings": 32768, "model_type": "glm4",
    "num_attention_heads": 32, "num_hidden_layers": 40, "num_key_value_heads": 2, "pad_token_id": 151329,
    "partial_rotary_factor": 0.5, "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16", "transformers_version": "4.51.3", "use_cache": True, "vocab_size": 151552,
}
STARCODER2_3B = {
    "architectures": ["Starcoder2ForCausalLM"], "attention_dropout": 0.1, "residual_dropout": 0.1,
    "embedding_dropout": 0.1, "bos_token_id": 0, "eos_token_id": 0, "hidden_act": "gelu_pytorch_tanh",
    "hidden_size": 3072, "initializer_range": 0.018042, "intermediate_size": 12288, "layer_norm_epsilon": 1e-05,
    "max_position_embeddings": 16384, "mlp_type": "default", "model_type": "starcoder2", "norm_epsilon": 1e-05,
    "norm_type": "layer_norm", "num_attention_heads": 24, "num_hidden_layers": 30, "num_key_value_heads": 2,
    "rope_theta": 999999.4420358813, "sliding_window": 4096, "torch_dtype": "float32",
    "transformers_version": "4.37.0.dev0", "use_bias": True, "use_cache": True, "vocab_size": 49152,
}
PHI35_MOE = {
    "_name_or_path": "Phi-3.5-MoE-instruct", "architectures": ["PhiMoEForCausalLM"], "attention_bias": True,
    "attention_dropout": 0.0,
    "auto_map": {"AutoConfig": "configuration_phimoe.PhiMoEConfig",
                 "AutoModelForCausalLM": "modeling_phimoe.PhiMoEForCausalLM"},
    "bos_token_id": 1, "eos_token_id": 32000, "hidden_act": "silu", "hidden_dropout": 0.0, "hidden_size": 4096,
    "initializer_range": 0.02, "input_jitter_noise": 0.01, "intermediate_size": 6400, "lm_head_bias": True,
    "max_position_embeddings": 131072, "model_type": "phimoe", "num_attention_heads": 32, "num_experts_per_tok": 2,
    "num_hidden_layers": 32, "num_key_value_heads": 8, "num_local_experts": 16,
    "original_max_position_embeddings": 4096, "output_router_logits": False, "rms_norm_eps": 1e-05,
    "rope_scaling": {"long_factor": [round(1.0 + 0.5 * i, 2) for i in range(64)], "long_mscale": 1.243163121016122,
                     "original_max_position_embeddings": 4096,
                     "short_factor": [round(1.0 + 0.02 * i, 2) for i in range(64)],
                     "short_mscale": 1.243163121016122, "type": "longrope"},
    "rope_theta": 10000.0, "router_aux_loss_coef": 0.0, "router_jitter_noise": 0.01, "sliding_window": 131072,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "transformers_version": "4.43.3", "use_cache": True,
    "vocab_size": 32064,
}
INTERNLM3_8B = {
    "architectures": ["InternLM3ForCausalLM"], "attention_dropout": 0.0,
    "auto_map": {"AutoConfig": "configuration_internlm3.InternLM3Config",
                 "AutoModel": "modeling_internlm3.InternLM3Model",
                 "AutoModelForCausalLM": "modeling_internlm3.InternLM3ForCausalLM"},
    "bias": False, "bos_token_id": 1, "eos_token_id": 2, "head_dim": 128, "hidden_act": "silu", "hidden_size": 4096,
    "initializer_range": 0.02, "intermediate_size": 10240, "max_position_embeddings": 32768,
    "model_type": "internlm3", "num_attention_heads": 32, "num_hidden_layers": 48, "num_key_value_heads": 2,
    "pad_token_id": 2, "qkv_bias": False, "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 6.0, "rope_type": "dynamic"}, "rope_theta": 50000000, "tie_word_embeddings": False, "torch_dtype": "bfloat16", "transformers_version": "4.47.1",
    "use_cache": True, "vocab_size": 128512,
}
STABLELM2_1_6B = {
    "architectures": ["StableLmForCausalLM"], "bos_token_id": 100257, "eos_token_id": 100257, "hidden_act": "silu",
    "hidden_dropout": 0.0, "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 5632,
    "layer_norm_eps": 1e-05, "max_position_embeddings": 4096, "model_type": "stablelm", "num_attention_heads": 32,
    "num_hidden_layers": 24, "num_key_value_heads": 32, "partial_rotary_factor": 0.25, "qk_layernorm": False,
    "rope_scaling": None, "rope_theta": 10000, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "transformers_version": "4.40.0.dev0", "use_cache": True, "use_parallel_residual": False, "use_qkv_bias": True,
    "vocab_size": 100352,
}
PYTHIA_70M = {
    "architectures": ["GPTNeoXForCausalLM"], "bos_token_id": 0, "eos_token_id": 0, "hidden_act": "gelu",
    "hidden_size": 512, "initializer_range": 0.02, "intermediate_size": 2048, "layer_norm_eps": 1e-05,
    "max_position_embeddings": 2048, "model_type": "gpt_neox", "num_attention_heads": 8, "num_hidden_layers": 6,
    "rotary_emb_base": 10000, "rotary_pct": 0.25, "tie_word_embeddings": False, "torch_dtype": "float16",
    "transformers_version": "4.24.0", "use_cache": True, "use_parallel_residual": True, "vocab_size": 50304,
}
CASES.update({
    "command-r-v01": COMMAND_R_V01,
    "command-r-plus-qk-norm": variant(COMMAND_R_V01, hidden_size=12288, intermediate_size=33792,
                                      logit_scale=0.8333333333333334, num_attention_heads=96, num_hidden_layers=64,
                                      num_key_value_heads=8, rope_theta=75000000.0, use_qk_norm=True),
    "aya-23-no-model-max-length": variant(COMMAND_R_V01, drop=("model_max_length",)),
    "command-r7b": COMMAND_R7B,
    # rotary_pct is no Cohere2Config field: kept as an extra attribute, or missing (the reference stops)
    "command-r7b-no-rotary-pct": variant(COMMAND_R7B, drop=("rotary_pct", "sliding_window_pattern")),
    "glm4-9b-0414": GLM4_9B_0414,
    "glm4-no-partial-rotary": variant(GLM4_9B_0414, drop=("partial_rotary_factor",)),
    "starcoder2-3b": STARCODER2_3B,
    "starcoder2-norm-epsilon-only": variant(STARCODER2_3B, drop=("layer_norm_epsilon",)),
    "phi35-moe": PHI35_MOE,
    "internlm3-8b-instruct": INTERNLM3_8B,
    "stablelm2-1.6b": STABLELM2_1_6B,
    "stablelm2-12b-qk-layernorm": variant(STABLELM2_1_6B, hidden_size=5120, intermediate_size=13824,
                                          num_attention_heads=32, num_hidden_layers=40, num_key_value_heads=8,
                                          qk_layernorm=True, use_parallel_residual=True, use_qkv_bias=False),
    # transformers 5 moves rotary_pct / rotary_emb_base into rope_parameters (the reference then stops)
    "pythia-70m": PYTHIA_70M,
})


def fixture_cases() -> dict[str, dict]:
    """The config.json of every fixture repo (``fixture-NAME``), and of every commit whose config
    differs from the first one's (``fixture-NAME@REF``)."""
    from fixtures.build import commit_specs

    out = {}
    for path in sorted(FIXTURE_MODELS.glob("*.json")):
        spec = json.loads(path.read_text())
        first = None
        for commit in commit_specs(spec):
            config = commit.get("config")
            if not isinstance(config, dict):
                continue
            if first is None:
                first = config
                out[f"fixture-{path.stem}"] = config
            elif config != first:
                ref = (commit.get("refs") or [str(len(out))])[0]
                out[f"fixture-{path.stem}@{ref}"] = config
    return out


def reference_hparams(config: dict) -> dict:
    """What the reference's ``ModelBase.load_hparams`` returns for a repo whose config.json is ``config``,
    minus ``_name_or_path`` and ``transformers_version`` (a temp path and the installed version)."""
    from transformers import AutoConfig

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (Path(tmp) / "config.json").write_text(json.dumps(config))
        try:
            hparams = AutoConfig.from_pretrained(tmp, trust_remote_code=False).to_dict()
        except Exception:
            hparams = copy.deepcopy(config)
        else:
            hparams.pop("_name_or_path", None)
            hparams.pop("transformers_version", None)
    # the renames of ModelBase.load_hparams, in its order
    if "llm_config" in hparams:
        hparams["text_config"] = hparams["llm_config"]
    if "lm_config" in hparams:
        hparams["text_config"] = hparams["lm_config"]
    if "thinker_config" in hparams:
        hparams["text_config"] = hparams["thinker_config"]["text_config"]
    if "language_config" in hparams:
        hparams["text_config"] = hparams["language_config"]
    if "lfm" in hparams:
        hparams["text_config"] = hparams["lfm"]
    return hparams


def encode(obj):
    """JSON form that keeps what JSON cannot: dicts with non-string keys (``id2label``)."""
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: encode(v) for k, v in obj.items()}
        return {"__items__": [[k, encode(v)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return [encode(v) for v in obj]
    return obj


def dump(obj) -> str:
    """JSON, one line per value that fits in 110 columns."""
    return _dump(obj, 0) + "\n"


def _dump(obj, level: int) -> str:
    flat = json.dumps(obj, ensure_ascii=False)
    if len(flat) + level <= 110 or not isinstance(obj, (dict, list)) or not obj:
        return flat
    pad = " " * (level + 1)
    if isinstance(obj, dict):
        items = [f"{pad}{json.dumps(k, ensure_ascii=False)}: {_dump(v, level + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * level + "}"
    items = [pad + _dump(v, level + 1) for v in obj]
    return "[\n" + ",\n".join(items) + "\n" + " " * level + "]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report files that would change")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()

    outputs = {}
    import transformers
    for name, config in {**CASES, **fixture_cases()}.items():
        golden = {"transformers_version": transformers.__version__, "config": config,
                  "expected": encode(reference_hparams(config))}
        outputs[GOLDENS_DIR / f"{name}.json"] = dump(golden)

    stale = [p for p, text in outputs.items() if not p.is_file() or p.read_text() != text]
    extra = sorted(set(GOLDENS_DIR.glob("*.json")) - set(outputs))
    if args.check:
        for p in stale + extra:
            print(f"stale: {p.relative_to(REPO_ROOT)}")
        return 1 if stale or extra else 0
    GOLDENS_DIR.mkdir(parents=True, exist_ok=True)
    for p in stale:
        p.write_text(outputs[p])
        print(f"wrote {p.relative_to(REPO_ROOT)}")
    for p in extra:
        p.unlink()
        print(f"removed {p.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
