"""bf16 / f16 <-> f32 conversions through ggml-cpu's vector routines, when this CPU can run them.

numpy widens bf16 in about 0.7 ns a value, and converts f16 to and from f32 in a scalar loop, at
2.5-2.7 ns a value; on a 1.5 GB bf16 model those are 0.5 and 2 core-seconds of an f16 conversion.
ggml-cpu (the other half of the ggml that quantizes) does each in 0.2-0.4 ns with F16C/AVX2, and
releases the GIL while at it. The bits are numpy's: bf16 widening is a shift either way, and
F16C rounds to nearest even as numpy does, subnormals and overflow included (tests compare every
half value and random f32 bit patterns). Only NaN payloads may differ (F16C quiets a signalling
NaN, numpy keeps it), so a conversion whose input or output holds a NaN is redone by numpy.

The library is used only where nothing can fault: Linux on x86-64, a CPU with every instruction set
the library was built for (``ggml_cpu_has_*`` against ``/proc/cpuinfo``), and not with
``HFSTREAM_QUANT_ENGINE=numpy`` or the ``f16c`` path switched off (``settings.linux_path``).
Elsewhere numpy does it all.
"""

from __future__ import annotations

import ctypes
import math
import os
import platform
import threading

import numpy as np

from .. import settings
from . import ggml

#: ggml_cpu_has_<name> -> the /proc/cpuinfo flag the CPU needs for it
_X86_FLAGS = {
    "sse3": "pni", "ssse3": "ssse3", "avx": "avx", "avx2": "avx2", "avx_vnni": "avx_vnni", "f16c": "f16c",
    "fma": "fma", "bmi2": "bmi2", "avx512": "avx512f", "avx512_vbmi": "avx512vbmi",
    "avx512_vnni": "avx512_vnni", "avx512_bf16": "avx512_bf16", "amx_int8": "amx_int8",
}
#: ggml_cpu_has_<name> that say how the library was built, not which instructions it uses
_NOT_INSTRUCTIONS = {"llamafile", "openmp", "kleidiai"}
#: the x86 routines below need these at least (checked before the library is even loaded)
_X86_NEEDED = ("avx", "avx2", "fma", "f16c")

_LIB = None
_TRIED = False
_LOCK = threading.Lock()


def bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    """bf16 bits (uint16) to float32: the same bits numpy's shift gives, NaNs included."""
    lib = _lib()
    if lib is None or raw.size == 0:
        # widen and shift in one pass (astype then << makes two, and a temporary)
        return np.left_shift(raw, 16, out=np.empty(raw.shape, np.uint32), dtype=np.uint32).view(np.float32)
    src = np.ascontiguousarray(raw)
    out = np.empty(raw.shape, np.float32)
    lib.ggml_cpu_bf16_to_fp32(src.ctypes.data, out.ctypes.data, src.size)
    return out


def f16_to_f32(values: np.ndarray) -> np.ndarray:
    """float16 to float32, as ``values.astype(np.float32)``."""
    lib = _lib()
    if lib is None or values.size == 0:
        return values.astype(np.float32)
    src = np.ascontiguousarray(values)
    out = np.empty(values.shape, np.float32)
    lib.ggml_cpu_fp16_to_fp32(src.ctypes.data, out.ctypes.data, src.size)
    if math.isnan(np.max(out)):  # one pass, no temporary: NaN propagates through max
        return values.astype(np.float32)
    return out


def f32_to_f16(values: np.ndarray) -> np.ndarray:
    """float32 to float16, as ``values.astype(np.float16)``."""
    lib = _lib()
    if lib is None or values.size == 0 or math.isnan(np.max(values)):
        return values.astype(np.float16)
    src = np.ascontiguousarray(values)
    out = np.empty(values.shape, np.float16)
    lib.ggml_cpu_fp32_to_fp16(src.ctypes.data, out.ctypes.data, src.size)
    return out


def engine() -> str:
    """"ggml-cpu" when the fast routines are in use, else "numpy"."""
    return "ggml-cpu" if _lib() is not None else "numpy"


def _lib():
    global _LIB, _TRIED
    if not settings.linux_path("f16c"):
        return None
    with _LOCK:
        if not _TRIED:
            _TRIED = True
            _LIB = _load()
        return _LIB


def _load():
    if settings.quant_engine() == "numpy" or not _runs_here_at_all():
        return None
    base = ggml.library_path()
    if base is None:
        return None
    path = os.path.join(os.path.dirname(base), "libggml-cpu.so")  # beside it: one build of ggml
    if not os.path.exists(path):
        return None
    try:
        lib = ctypes.CDLL(path)
        names = ("ggml_cpu_bf16_to_fp32", "ggml_cpu_fp16_to_fp32", "ggml_cpu_fp32_to_fp16")
        for name in names:
            fn = getattr(lib, name)
            fn.restype = None
            fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    except (OSError, AttributeError):
        return None
    return lib if _built_for_this_cpu(lib) else None


def _runs_here_at_all() -> bool:
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return False
    return all(f in _cpu_flags() for f in _X86_NEEDED)


#: every ggml_cpu_has_* we know of; those for other architectures must say no on x86
_KNOWN_FEATURES = (*_X86_FLAGS, *_NOT_INSTRUCTIONS, "sve", "sme", "neon", "arm_fma", "fp16_va", "dotprod",
                   "matmul_int8", "vsx", "vxe", "riscv_v", "wasm_simd", "nnpa")


def _built_for_this_cpu(lib) -> bool:
    flags = _cpu_flags()
    for name in _KNOWN_FEATURES:
        fn = getattr(lib, f"ggml_cpu_has_{name}", None)
        if fn is None:
            continue
        fn.restype, fn.argtypes = ctypes.c_int, []
        if fn() and name not in _NOT_INSTRUCTIONS and _X86_FLAGS.get(name) not in flags:
            return False
    return True


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()
