"""hfstream's compiled K-quant encoders (``_kquants.c``); built by ``pip install`` when a C compiler is there."""

def available() -> bool:
    """Whether this CPU can run the encoders (AVX2 and F16C)."""

def quantize(qtype: int, src: object, dst: object, n_per_row: int, weights: object | None, odd: object, /) -> int:
    """Encode float32 ``src`` (rows of ``n_per_row`` values, a multiple of 256) as ggml type ``qtype`` (12: Q4_K,
    13: Q5_K, 14: Q6_K) into writable ``dst``, with ``n_per_row`` float32 importance weights or None. ``odd``
    (writable, one byte per 256-value block) gets 1 for each block that may differ from ggml's reference
    encoder (the caller encodes those with ggml); returns how many there are."""
