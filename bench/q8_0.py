"""Q8_0 encoders side by side: ggml's reference (``ggml_quantize_chunk``) and hfstream's compiled one.

    python -m bench.q8_0 [--values N] [--repeat K]

Encodes the same bf16-valued weights (deterministic, normal, 0.02 scale: ~2% of their blocks hold the
exact ties where a round-half-to-even encoder would differ) with both, alternating, and prints the
best time of each in ns per value, their ratio, and whether the bytes are identical.
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


def weights(values: int) -> np.ndarray:
    x = (np.random.default_rng(0).standard_normal(values, dtype=np.float32) * np.float32(0.02))
    return (x.view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32).reshape(-1, 4096)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.q8_0", description=__doc__.splitlines()[0])
    p.add_argument("--values", type=int, default=1 << 24, help="values to encode (a multiple of 4096)")
    p.add_argument("--repeat", type=int, default=5, help="timed rounds of each (best one kept)")
    args = p.parse_args(argv)
    if ggml.library() is None:
        print("q8_0: ggml could not be loaded", file=sys.stderr)
        return 1
    if encode._KERNEL is None:
        print("q8_0: hfstream's compiled encoder is not built or does not run on this CPU", file=sys.stderr)
        return 1
    x = weights(args.values)
    encoders = {"ggml reference": lambda: encode._ggml_quantize(x, QT.Q8_0),
                "hfstream compiled": lambda: encode._kernel_q8_0(encode._KERNEL, x)}
    best = dict.fromkeys(encoders, float("inf"))
    out = {}
    for _ in range(args.repeat):
        for name, run in encoders.items():
            t0 = time.perf_counter()
            out[name] = run()
            best[name] = min(best[name], time.perf_counter() - t0)
    ref, ours = (out[n] for n in encoders)
    same = ours is not None and ref.tobytes() == ours.tobytes()
    for name, seconds in best.items():
        print(f"{name:18s} {seconds / x.size * 1e9:6.2f} ns a value")
    print(f"ratio (ggml / compiled): {best['ggml reference'] / best['hfstream compiled']:.1f}x; "
          f"bytes identical: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
