"""Run a GGUF with llama.cpp (llama-cpp-python) for the slow tests and the golden generator.

``greedy_tokens(path, prompt_ids, n)`` loads the model on the CPU with one thread and a 128-token
context, evaluates the prompt, then takes the argmax of the last logits ``n`` times (ties go to the
lowest id), feeding each token back. No sampler, no penalties, no randomness: the same file gives
the same ids on every run, so a converter whose output decodes to the golden ids loads and runs
like the reference's output.

``embeddings(path, texts)`` does the same for an embedding model: llama.cpp tokenizes each text
with the GGUF's own vocabulary and returns the pooled embedding (the pooling the file records), not
normalized. Same file, same floats: the tensors are identical, so is every operation on them.
"""

from __future__ import annotations

import threading
from pathlib import Path

N_CTX = 128
SEED = 1234
# llama.cpp crashed (the process died) when two threads loaded and ran models at once.
_LOCK = threading.Lock()


def available() -> bool:
    """Whether ``llama_cpp`` imports (its shared library loads) on this machine."""
    try:
        import llama_cpp  # noqa: F401
    except Exception:
        return False
    return True


def greedy_tokens(gguf_path: str | Path, prompt_ids: list[int], n: int) -> list[int]:
    """The ``n`` token ids llama.cpp greedy-decodes after ``prompt_ids`` from the model in ``gguf_path``."""
    import numpy as np
    from llama_cpp import Llama, llama_get_logits_ith

    if not prompt_ids:
        raise ValueError("the prompt needs at least one token")
    if len(prompt_ids) + n > N_CTX:
        raise ValueError(f"prompt ({len(prompt_ids)}) + {n} tokens do not fit a {N_CTX}-token context")
    with _LOCK:
        llm = Llama(model_path=str(gguf_path), n_ctx=N_CTX, n_batch=N_CTX, n_ubatch=N_CTX, n_threads=1,
                    n_threads_batch=1, n_gpu_layers=0, seed=SEED, logits_all=False, verbose=False)
        try:
            n_vocab = llm.n_vocab()
            out: list[int] = []
            pending = list(prompt_ids)
            for _ in range(n):
                llm.eval(pending)
                logits = np.ctypeslib.as_array(llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,))
                token = int(np.argmax(logits))
                out.append(token)
                pending = [token]
            return out
        finally:
            llm.close()


def embeddings(gguf_path: str | Path, texts: list[str]) -> list[list[float]]:
    """The pooled embedding llama.cpp computes for each of ``texts`` (one at a time) from the model in
    ``gguf_path``, as float32 values (Python floats hold them exactly)."""
    from llama_cpp import Llama

    with _LOCK:
        llm = Llama(model_path=str(gguf_path), embedding=True, n_ctx=N_CTX, n_batch=N_CTX, n_ubatch=N_CTX,
                    n_threads=1, n_threads_batch=1, n_gpu_layers=0, seed=SEED, verbose=False)
        try:
            return [[float(v) for v in llm.embed(text)] for text in texts]
        finally:
            llm.close()


def rank_scores(gguf_path: str | Path, texts: list[str]) -> list[list[float]]:
    """The scores llama.cpp's rank pooling (``--pooling rank``: the classification head over the first
    token) gives each of ``texts`` with the reranker in ``gguf_path``: one per classifier output."""
    import llama_cpp
    from llama_cpp import Llama

    with _LOCK:
        llm = Llama(model_path=str(gguf_path), embedding=True, pooling_type=llama_cpp.LLAMA_POOLING_TYPE_RANK,
                    n_ctx=N_CTX, n_batch=N_CTX, n_ubatch=N_CTX, n_threads=1, n_threads_batch=1, n_gpu_layers=0,
                    seed=SEED, verbose=False)
        try:
            n_out = max(1, llama_cpp.llama_model_n_cls_out(llm.model))
            out = []
            for text in texts:
                # as Llama.embed decodes a text (every token an output), but reading only the n_out
                # scores rank pooling leaves, where embed would read n_embd values
                llm._batch.reset()
                llm._batch.add_sequence(llm.tokenize(text.encode("utf-8")), 0, True)
                llm._ctx.kv_cache_clear()
                llm._ctx.decode(llm._batch)
                scores = llama_cpp.llama_get_embeddings_seq(llm._ctx.ctx, 0)
                out.append([float(scores[i]) for i in range(n_out)])
            return out
        finally:
            llm.close()


#: the test image of the multimodal goldens: a 64 x 64 RGB gradient, the same bytes everywhere
def test_image(size: int = 64) -> tuple[int, int, bytes]:
    """(width, height, RGB bytes) of a deterministic picture: red rises left to right, green top to
    bottom, blue on the diagonal."""
    out = bytearray()
    for y in range(size):
        for x in range(size):
            out += bytes((x * 255 // (size - 1), y * 255 // (size - 1), ((x + y) * 255 // (2 * size - 2))))
    return size, size, bytes(out)


def mtmd_greedy_tokens(text_path: str | Path, mmproj_path: str | Path, prompt: str, n: int) -> list[int]:
    """The ``n`` token ids llama.cpp's multimodal runtime (mtmd) greedy-decodes after ``prompt`` with the
    test image in its place: the image marker is appended to ``prompt``, the image goes through the
    projector in ``mmproj_path`` and the text model in ``text_path``, as llama-mtmd-cli runs a pair."""
    import ctypes

    import numpy as np
    import llama_cpp
    from llama_cpp import Llama, llama_get_logits_ith
    from llama_cpp import mtmd_cpp as mtmd

    with _LOCK:
        llm = Llama(model_path=str(text_path), n_ctx=N_CTX, n_batch=N_CTX, n_ubatch=N_CTX, n_threads=1,
                    n_threads_batch=1, n_gpu_layers=0, seed=SEED, logits_all=False, verbose=False)
        params = mtmd.mtmd_context_params_default()
        params.use_gpu, params.n_threads, params.print_timings, params.warmup = False, 1, False, False
        ctx = mtmd.mtmd_init_from_file(str(mmproj_path).encode(), llm.model, params)
        if not ctx:
            llm.close()
            raise RuntimeError(f"llama.cpp's mtmd could not load {mmproj_path}")
        chunks = mtmd.mtmd_input_chunks_init()
        try:
            nx, ny, rgb = test_image()
            bitmap = mtmd.mtmd_bitmap_init(nx, ny, (ctypes.c_ubyte * len(rgb)).from_buffer_copy(rgb))
            marker = mtmd.mtmd_default_marker().decode()
            text = (prompt + marker).encode()
            inp = mtmd.mtmd_input_text(text, len(text), True, True)
            bitmaps = (ctypes.c_void_p * 1)(bitmap)
            if mtmd.mtmd_tokenize(ctx, chunks, ctypes.byref(inp), bitmaps, 1) != 0:
                raise RuntimeError("mtmd_tokenize failed")
            n_past = ctypes.c_int(0)
            if mtmd.mtmd_helper_eval_chunks(ctx, llm.ctx, chunks, 0, 0, N_CTX, True, ctypes.byref(n_past)) != 0:
                raise RuntimeError("mtmd_helper_eval_chunks failed")
            n_vocab = llm.n_vocab()
            out: list[int] = []
            for _ in range(n):
                logits = np.ctypeslib.as_array(llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,))
                token = int(np.argmax(logits))
                out.append(token)
                batch = llama_cpp.llama_batch_get_one((llama_cpp.llama_token * 1)(token), 1)
                if llama_cpp.llama_decode(llm.ctx, batch) != 0:
                    raise RuntimeError("llama_decode failed")
            mtmd.mtmd_bitmap_free(bitmap)
            return out
        finally:
            mtmd.mtmd_input_chunks_free(chunks)
            mtmd.mtmd_free(ctx)
            llm.close()
