"""`python -m bench.run --quick --skip-reference` completes and prints its table (no timing asserted).

One output type keeps it short: the f16 path of the harness is the same code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_measure_counts_the_memory_of_a_forked_child(tmp_path):
    """Parent and forked child each hold 200 MB of their own at once: the peak reported is the tree's
    (about 400 MB), not the largest single process's (about 200 MB, what ``os.wait4`` alone gives)."""
    from bench.run import measure

    script = (
        "import os, time\n"
        "pid = os.fork()\n"
        "block = bytearray(200 * 2**20)\n"
        "for i in range(0, len(block), 4096): block[i] = 1\n"  # touch every page
        "time.sleep(0.5)\n"
        "if pid == 0: os._exit(0)\n"
        "os.waitpid(pid, 0)\n"
    )
    run = measure([sys.executable, "-c", script], dict(os.environ), ROOT, tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.maxrss_kib > 380 * 1024


def test_bench_encoders_compares_each_compiled_encoder_with_ggml(tmp_path):
    """`python -m bench.encoders` prints both timings of every type and that the bytes are identical (no
    timing asserted)."""
    from hfstream.quant import encode

    if encode._KERNEL is None or not encode.compiled_kquants():
        pytest.skip("no compiled encoders in use on this machine")
    proc = subprocess.run([sys.executable, "-m", "bench.encoders", "--values", str(1 << 16), "--repeat", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()[2:]]
    assert [" ".join(r[:-8]) for r in rows] == ["Q8_0", "Q4_K", "Q4_K imatrix", "Q5_K", "Q5_K imatrix", "Q6_K",
                                                 "Q6_K imatrix"]
    assert all(r[-5:-3] == ["yes", "0"] for r in rows)  # identical, no block handed back to ggml


def test_bench_many_converts_many_layer_llamas_and_prints_the_ratios(tmp_path):
    """`python -m bench.many` on two small layer counts (hfstream only, no DeepSeek-V3 plan): both
    convert and the scaling line compares their times with their tensor counts (no timing asserted)."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HF_ENDPOINT")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, "-m", "bench.many", "--layers", "2", "16", "--skip-reference",
                           "--skip-at-scale", "--work-dir", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "    2 layers     21 tensors  hfstream" in proc.stdout and "   16 layers    147 tensors  hfstream" in proc.stdout
    assert "hfstream 16 / 2 layers: wall" in proc.stdout and "for 7.00x the tensors" in proc.stdout
    assert list(tmp_path.iterdir()) == []  # models and outputs deleted


def test_the_many_layer_llama_is_a_llama_both_converters_read(tmp_path):
    """The generated model: a config, a tokenizer and one f16 file whose tensors are in name order."""
    from bench.many import build_many_layer_llama

    n = build_many_layer_llama(tmp_path / "m", 3)
    assert n == 3 * 9 + 3
    blob = (tmp_path / "m" / "model.safetensors").read_bytes()
    size = int.from_bytes(blob[:8], "little")
    entries = json.loads(blob[8:8 + size])
    entries.pop("__metadata__")
    assert len(entries) == n and {e["dtype"] for e in entries.values()} == {"F16"}
    by_offset = sorted(entries, key=lambda k: entries[k]["data_offsets"][0])
    assert by_offset == sorted(entries)
    assert 8 + size + max(e["data_offsets"][1] for e in entries.values()) == len(blob)
    assert {"config.json", "tokenizer.model"} <= {p.name for p in (tmp_path / "m").iterdir()}
