"""Write ``hfstream/data/torch_exp_bf16.json``: where the reference's float32 ``exp`` is not the correctly
rounded one, for every input a bfloat16 holds.

    python -m tests.goldens.make_torch_exp_table

The reference writes a gated delta net's ``ssm_a`` as ``-torch.exp(A_log)`` in float32. The torch
wheels for x86-64 compute float32 ``exp`` with MKL's vector math (VML, high accuracy), which is one ulp
off the correctly rounded value for about 1% of float32 inputs; hfstream cannot call MKL, and cannot
table every float32 input, but a bfloat16 checkpoint's values (and float32 values a bfloat16 holds)
are only 65,536: this lists the few among them where torch's result differs, so those come out as the
reference writes them (``hfstream.graph.reference_exp``). Needs torch (golden time only); the result
is checked to be the same whether an input is computed alone or in a long tensor.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
OUT = REPO_ROOT / "hfstream" / "data" / "torch_exp_bf16.json"


def exceptions() -> dict[int, int]:
    """bfloat16 bits -> float32 bits of torch.exp, where that is not the correctly rounded exp."""
    import torch

    bits = np.arange(1 << 16, dtype=np.uint32)
    x = (bits << 16).view(np.float32)
    finite = np.isfinite(x)
    x, bits = x[finite], bits[finite]
    with np.errstate(over="ignore"):
        ours = np.exp(x.astype(np.float64)).astype(np.float32)
    with torch.no_grad():
        theirs = torch.exp(torch.from_numpy(x.copy())).numpy()
    differ = np.nonzero(ours.view(np.uint32) != theirs.view(np.uint32))[0]
    for i in differ:  # the same alone as in a long tensor (vector body and tail alike)
        alone = torch.exp(torch.tensor([float(x[i])], dtype=torch.float32)).numpy()
        if alone.view(np.uint32)[0] != theirs.view(np.uint32)[i]:
            raise RuntimeError(f"torch.exp({x[i]!r}) depends on its position in the tensor")
    return {int(bits[i]): int(theirs.view(np.uint32)[i]) for i in differ}


def main() -> int:
    import torch

    found = exceptions()
    config = torch.__config__.show()
    mkl = re.search(r"Math Kernel Library Version ([^\n]*)", config)
    data = {"_about": "bfloat16 inputs where float32 torch.exp differs from the correctly rounded exp "
                      "(tests/goldens/make_torch_exp_table.py): bf16 bits -> float32 bits of torch's result",
            "torch": torch.__version__, "mkl": mkl.group(1).strip() if mkl else None,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "exceptions": {f"{k:04x}": f"{v:08x}" for k, v in sorted(found.items())}}
    OUT.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    print(f"{OUT}: {len(found)} bfloat16 inputs where torch {torch.__version__} rounds exp otherwise")
    return 0


if __name__ == "__main__":
    sys.exit(main())
