"""`python -m bench.run --quick --skip-reference` completes and prints its table (no timing asserted).

One output type keeps it short: the f16 path of the harness is the same code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_quick_smoke(tmp_path):
    results = tmp_path / "results.json"
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HF_ENDPOINT")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--skip-reference", "--root", str(tmp_path / "repos"),
         "--work-dir", str(tmp_path), "--json", str(results), "--outtypes", "q8_0"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "wall s" in out and "peak RSS MiB" in out and "link util" in out
    table = out[out.index("scen  tool"):].splitlines()
    rows = [line.split() for line in table[2:] if line.strip()]
    assert {(r[0], r[1], r[2]) for r in rows} == {("a", "hfstream", "q8_0"), ("b", "hfstream", "q8_0")}

    data = json.loads(results.read_text())["results"]
    assert all(r["ok"] for r in data)
    for r in data:
        # every safetensors byte came through the Hub, and the throttled scenario has a link figure
        assert r["bytes_fetched"] >= r["needed_bytes"] > 0
        assert r["peak_rss_mib"] > 0 and r["output_bytes"] > 0
        assert (r["link_utilization"] is not None) == (r["scenario"] == "a")
    # outputs were deleted: only what the test itself put there is left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repos", "results.json"]
