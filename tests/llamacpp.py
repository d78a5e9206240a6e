"""Run a GGUF with llama.cpp (llama-cpp-python) for the slow tests and the golden generator.

``greedy_tokens(path, prompt_ids, n)`` loads the model on the CPU with one thread and a 128-token
context, evaluates the prompt, then takes the argmax of the last logits ``n`` times (ties go to the
lowest id), feeding each token back. No sampler, no penalties, no randomness: the same file gives
the same ids on every run, so a converter whose output decodes to the golden ids loads and runs
like the reference's output.
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
