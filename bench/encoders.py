"""hfstream's compiled encoders against ggml's reference ones (``ggml_quantize_chunk``), type by type.

    python -m bench.encoders [--values N] [--repeat K] [--types q8_0,q4_k,...]

Encodes the same weights with both, alternating, for Q8_0 and for Q4_K, Q5_K and Q6_K without and
with importance weights (what llama-quantize does with ``--imatrix``). The weights are deterministic
and bf16-valued (normal, 0.02 scale; ~2% of their Q8_0 blocks hold the exact ties where a
round-half-to-even encoder would differ); the importance weights are random, one per column. Prints
each one's best time in ns a value (CPU time of the calling thread: both run in it, and other load
on the cores moves it less than wall time), their ratio, whether the bytes are identical, and how
many blocks the compiled encoder handed back to ggml.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
from gguf import GGMLQuantizationType as QT  # noqa: E402

from hfstream.quant import encode, ggml  # noqa: E402

TYPES = {"q8_0": QT.Q8_0, "q4_k": QT.Q4_K, "q5_k": QT.Q5_K, "q6_k": QT.Q6_K}
WIDTH = 4096


def weights(values: int) -> np.ndarray:
    x = np.random.default_rng(0).standard_normal(values, dtype=np.float32) * np.float32(0.02)
    return (x.view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32).reshape(-1, WIDTH)


def importance(width: int) -> np.ndarray:
    return (np.random.default_rng(1).random(width, dtype=np.float32) ** 4 * 10).astype(np.float32)


def compiled(x: np.ndarray, qt: QT, imatrix: np.ndarray | None) -> tuple[np.ndarray | None, int]:
    """(bytes, blocks handed back) from hfstream's compiled encoder for ``qt``."""
    if qt == QT.Q8_0:  # it hands back the whole array or nothing
        encoded = encode._kernel_q8_0(encode._KERNEL, x)
        return encoded, 0 if encoded is not None else x.size // 32
    out = np.empty(x.size // 256 * {QT.Q4_K: 144, QT.Q5_K: 176, QT.Q6_K: 210}[qt], np.uint8)
    odd = np.zeros(x.size // 256, np.uint8)
    handed_back = encode._KQUANTS.quantize(int(qt), x.reshape(-1), out, x.shape[-1], imatrix, odd)
    return out, handed_back


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.encoders", description=__doc__.splitlines()[0])
    p.add_argument("--values", type=int, default=1 << 22, help=f"values to encode (a multiple of {WIDTH})")
    p.add_argument("--repeat", type=int, default=3, help="timed rounds of each (best one kept)")
    p.add_argument("--types", default=",".join(TYPES), help=f"comma-separated, of {', '.join(TYPES)}")
    args = p.parse_args(argv)
    if ggml.library() is None:
        print("encoders: ggml could not be loaded", file=sys.stderr)
        return 1
    missing = [name for name, ok in (("Q8_0", encode._KERNEL is not None),
                                     ("K-quant", encode.compiled_kquants())) if not ok]
    if missing:
        print(f"encoders: hfstream's compiled {' and '.join(missing)} encoder is not built, does not run on this "
              f"CPU, or does not follow ggml {ggml.version()}", file=sys.stderr)
        return 1
    x = weights(args.values)
    imatrix = importance(WIDTH)
    cases = []
    for name in args.types.split(","):
        qt = TYPES[name.strip().lower()]
        cases += [(qt, None)] if qt == QT.Q8_0 else [(qt, None), (qt, imatrix)]
    print(f"encoders: {x.size:,d} bf16-valued weights, rows of {WIDTH}; ggml {ggml.version()} from "
          f"{ggml.origin()}; best of {args.repeat}, CPU ns a value")
    print(f"{'type':12} {'ggml':>8} {'compiled':>9} {'ratio':>7}  identical  handed back")
    ok = True
    for qt, im in cases:
        best = {"ggml": float("inf"), "compiled": float("inf")}
        out: dict = {}
        for _ in range(args.repeat):
            for name, run in (("ggml", lambda: (encode._ggml_quantize(x, qt, im), 0)),
                              ("compiled", lambda: compiled(x, qt, im))):
                t0 = time.thread_time()
                out[name] = run()
                best[name] = min(best[name], time.thread_time() - t0)
        (ref, _), (ours, handed_back) = out["ggml"], out["compiled"]
        same = ours is not None and ref.tobytes() == ours.tobytes()
        ok &= same
        label = qt.name + (" imatrix" if im is not None else "")
        ns = {k: v / x.size * 1e9 for k, v in best.items()}
        blocks = x.size // (32 if qt == QT.Q8_0 else 256)
        print(f"{label:12} {ns['ggml']:8.2f} {ns['compiled']:9.2f} {best['ggml'] / best['compiled']:6.1f}x  "
              f"{'yes' if same else 'NO':9}  {handed_back} of {blocks:,d} blocks")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
