"""`python -m bench.kquant --quick --skip-reference` completes and reports wall time and peak disk (no timing asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_kquant_quick_smoke(tmp_path):
    results = tmp_path / "results.json"
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HF_ENDPOINT")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        [sys.executable, "-m", "bench.kquant", "--quick", "--skip-reference", "--scenario", "b",
         "--root", str(tmp_path / "repos"), "--work-dir", str(tmp_path), "--json", str(results)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "peak disk MB" in proc.stdout and "hfstream" in proc.stdout
    (r,) = json.loads(results.read_text())
    assert r["ok"] and r["tool"] == "hfstream" and r["outtype"] == "q4_k_m"
    # nothing of the source on disk: the peak is the output (preallocated) and its small journal
    assert r["output_bytes"] <= r["peak_disk_bytes"] <= r["output_bytes"] + (1 << 20)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repos", "results.json"]
