"""The Pixtral vision projector (``--mmproj``) of Mistral 3 (``Mistral3ForConditionalGeneration``: Mistral
Small 3.1/3.2, Magistral Small, Devstral Small 2; a patch merger before the projector) and of Pixtral
12B (``LlavaForConditionalGeneration`` with a Pixtral tower; projector biases, no patch merger).

What the reference (``LlavaVisionModel``, HF format) does beyond every projector's keys:

- projector type ``pixtral``, the tower's layer-norm epsilon (1e-5: transformers hard-codes it),
  SiLU or GELU from ``hidden_act``, ``spatial_merge_size`` from the top of config.json; a vision
  config of another ``model_type`` is refused (the reference stops on it);
- the tensors of ``vision_tower.`` and ``multi_modal_projector.``, the attention's q and k rows
  permuted per head as Llama's (``n_head`` for both); ``multi_modal_projector.linear_{1,2}`` become
  ``mm.1`` / ``mm.2`` (the reference maps them through its block numbers, so a tower of fewer than
  three layers fails there; here any depth maps);
- the patch embedding and the patch merger are F16 at f16 and F32 otherwise (``ProjectorFamily``).

Where hfstream does better: llama.cpp's multimodal runtime needs the text model's ``[IMG_BREAK]``
embedding row in the projector (``v.token_embd.img_break``, F32; the runtime puts it after each row
of image patches) and refuses the file without it. The reference writes it only for Mistral's own
format: in a Hugging Face checkpoint the embedding is under ``language_model.``, which its projector
skips, so its file does not load. hfstream appends that row, taken from the text model's embedding
at the tokenizer's ``[IMG_BREAK]`` id, after every tensor the reference writes: the other tensors keep
their bytes and relative offsets, the keys stay the same (the size label counts without the row).
"""

from __future__ import annotations

import re
from typing import Any, Iterator, Mapping, Sequence

import gguf

from .. import errors, jsonfile
from ..graph import Node, PermuteHeads, Reshape, SliceRows
from ..safetensors import SourceTensor
from . import register_projector
from .base import ProjectorFamily

IMG_BREAK = "[IMG_BREAK]"
#: where the text model's token embedding is, as transformers 4 and 5 save a Mistral 3 checkpoint
_TEXT_EMBEDDING = re.compile(r"(.*\.)?language_model\.(model\.)?embed_tokens\.weight")
_PROJECTOR_LINEAR = re.compile(r"multi_modal_projector\.linear_(\d+)\.(weight|bias)")
IMG_BREAK_TENSOR = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.V_TOK_EMBD_IMG_BREAK]
PATCH_EMBEDDING = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.V_ENC_EMBD_PATCH] + ".weight"


@register_projector
class PixtralVision(ProjectorFamily):
    hf_architectures = ("Mistral3ForConditionalGeneration", "LlavaForConditionalGeneration")
    model_types = ("mistral3", "llava")
    tensor_prefixes = ("multi_modal_projector.", "vision_tower.", "vision_encoder.", "vision_language_adapter.",
                       "patch_merger.", "pre_mm_projector_norm")
    # mm.1, mm.2: numbered like blocks, but one each
    optional_tensors = (gguf.MODEL_TENSOR.V_MMPROJ,)
    uncounted_tensors = frozenset({IMG_BREAK_TENSOR})

    def __init__(self, hparams: Mapping[str, Any], hf_arch: str):
        super().__init__(hparams, hf_arch)
        if self.hparams.get("model_type") != "pixtral":
            raise errors.UnsupportedArchitectureError(
                f"{hf_arch} with a {self.hparams.get('model_type')!r} vision tower: only Pixtral's has a projector "
                "llama.cpp's converter writes")
        self.hparams.setdefault("layer_norm_eps", 1e-5)
        self.img_break_id: int | None = None
        self._text_embedding: Node | None = None

    def use_files(self, files: Mapping[str, bytes]) -> None:
        super().use_files(files)
        self.img_break_id = _token_id(files, IMG_BREAK)

    def source_name(self, name: str) -> str | None:
        if _TEXT_EMBEDDING.fullmatch(name):
            return name  # one row of it: [IMG_BREAK]'s embedding
        return super().source_name(name)

    def add_hparams(self, w: gguf.GGUFWriter, file_type: int) -> None:
        super().add_hparams(w, file_type)
        w.add_clip_projector_type(gguf.VisionProjectorType.PIXTRAL)
        w.add_vision_attention_layernorm_eps(self.hparams["layer_norm_eps"])
        self.add_activation(w)
        if "spatial_merge_size" in self.global_config:
            w.add_vision_spatial_merge_size(self.global_config["spatial_merge_size"])

    def convert(self, name: str, node: Node, bid: int | None) -> Iterator[tuple[str, Node]]:
        if _TEXT_EMBEDDING.fullmatch(name):
            if self._text_embedding is not None:
                raise errors.InvalidHeaderError(f"two text embeddings: {name!r} and another")
            self._text_embedding = node
            return
        if name.endswith(("q_proj.weight", "q_proj.bias", "k_proj.weight", "k_proj.bias")):
            node = PermuteHeads(node, self.find(("num_attention_heads",)))
        linear = _PROJECTOR_LINEAR.fullmatch(name)
        if linear is not None:
            yield f"{gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.V_MMPROJ].format(bid=int(linear[1]))}.{linear[2]}", node
            return
        yield self.map_name(name), node

    def check_tensors(self, outputs: Mapping[str, Node], sources: Sequence[tuple[str, SourceTensor]]) -> None:
        if PATCH_EMBEDDING not in outputs:  # a tower under another prefix (model.vision_tower.): no projector
            raise errors.MissingTensorError(
                f"{self.hf_arch}'s projector needs the Pixtral tower (vision_tower.patch_conv.weight ...), which is "
                "not in the weights under that name")
        super().check_tensors(outputs, sources)

    def finish(self) -> Iterator[tuple[str, Node]]:
        """``[IMG_BREAK]``'s row of the text embedding, after every tensor the reference writes."""
        embedding, token = self._text_embedding, self.img_break_id
        if embedding is None:
            raise errors.MissingTensorError(
                f"{self.hf_arch}'s projector needs the text model's token embedding (for the {IMG_BREAK} row), "
                "which is missing (language_model.model.embed_tokens.weight)")
        if token is None:
            raise errors.UnsupportedTokenizerError(
                f"the Pixtral projector needs the id of {IMG_BREAK}, which neither tokenizer_config.json nor "
                "tokenizer.json names")
        if embedding.ndim != 2 or not 0 <= token < embedding.shape[0]:
            raise errors.ConfigMismatchError(
                f"{IMG_BREAK} is token {token}, past the text embedding of shape {list(embedding.shape)}")
        yield IMG_BREAK_TENSOR, Reshape(SliceRows(embedding, token, token + 1), (embedding.shape[1],))


def _token_id(files: Mapping[str, bytes], content: str) -> int | None:
    """The id of added token ``content``: ``tokenizer_config.json``'s ``added_tokens_decoder``, then
    ``tokenizer.json``'s ``added_tokens`` (where the reference looks)."""
    if "tokenizer_config.json" in files:
        config = jsonfile.load(files["tokenizer_config.json"], "tokenizer_config.json", expect=dict)
        decoder = config.get("added_tokens_decoder") or {}
        if isinstance(decoder, dict):
            for key, entry in decoder.items():
                if isinstance(entry, dict) and entry.get("content") == content and str(key).isdecimal():
                    return int(key)
    if "tokenizer.json" in files:
        tokenizer = jsonfile.load(files["tokenizer.json"], "tokenizer.json", expect=dict)
        for entry in tokenizer.get("added_tokens") or ():
            if isinstance(entry, dict) and entry.get("content") == content and type(entry.get("id")) is int:
                return entry["id"]
    return None
