"""EmbeddingGemma (``Gemma3TextModel``): Gemma 3's text model without its LM head, as an encoder.

The reference converts it as Gemma 3 (norms + 1, the embedding cut to the vocab, Gemma 3's keys)
under llama.cpp's ``gemma-embedding`` architecture, which runs the layers with bidirectional
attention, then:

- the sliding window is config.json's own value: with ``use_bidirectional_attention`` transformers'
  config class halves it (``w // 2 + 1``) and doubles it back on ``to_dict`` (``2 (w' - 1)``), so an
  odd window (embeddinggemma-300m's 257) comes out one less;
- the pooling comes from the sentence-transformers files (mean, for embeddinggemma-300m);
- the ``2_Dense``/``3_Dense`` projections of sentence-transformers are left out, as the reference
  leaves them unless given ``--sentence-transformers-dense-modules``: llama.cpp's embedding is the
  pooled hidden state.

A bare ``Gemma3TextModel`` is saved without the ``model.`` prefix (``layers.0...``); the names are
read as the ``model.``-prefixed ones so that the decoder shape rules check them (the tensor-name map
takes both spellings to the same GGUF names).
"""

from __future__ import annotations

from typing import Mapping

import gguf

from .. import errors, jsonfile
from . import register
from .gemma import Gemma3


@register
class EmbeddingGemma(Gemma3):
    hf_architectures = ("Gemma3TextModel",)
    model_types = ("gemma3_text",)
    gguf_arch = gguf.MODEL_ARCH.GEMMA_EMBEDDING

    _sliding_window: int | None = None

    def use_files(self, files: Mapping[str, bytes]) -> None:
        super().use_files(files)
        self.read_pooling(files)
        config = jsonfile.load(files["config.json"], "config.json", expect=dict)
        window = config.get("sliding_window")
        if window is None:
            raise errors.InvalidConfigError("config.json: sliding_window is not set (EmbeddingGemma needs it)")
        if type(window) is not int or window <= 0:
            raise errors.InvalidConfigError(f"config.json: sliding_window must be a positive integer, not {window!r}")
        self._sliding_window = window

    def source_name(self, name: str) -> str | None:
        kept = super().source_name(name)
        if kept is not None and kept.startswith(("layers.", "embed_tokens.", "norm.")):
            kept = "model." + kept
        return kept

    def add_hparams(self, w: gguf.GGUFWriter, file_type: int) -> None:
        super().add_hparams(w, file_type)
        if self._sliding_window is None:
            raise errors.InvalidConfigError("config.json: sliding_window is not set (EmbeddingGemma needs it)")
        w.add_sliding_window(self._sliding_window)  # in place of transformers' one Gemma 3 wrote
        self.add_pooling(w)
