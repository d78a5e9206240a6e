"""hfstream's compiled Q8_0 encoder (``_q8_0.c``); built by ``pip install`` when a C compiler is there."""

def available() -> bool:
    """Whether this CPU can run the encoder (AVX2 and F16C)."""

def quantize(src: object, dst: object, /) -> int:
    """Encode float32 ``src`` (a multiple of 32 values) as Q8_0 blocks into writable ``dst``; returns how
    many blocks may differ from ggml's reference encoder (the caller redoes the array with it then)."""
