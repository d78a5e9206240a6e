"""FP8 at frontier width (issue 20 part 4): DeepSeek-V3's real widths to q8_0 through a 100 MB/s Hub.

    python -m bench.fp8wide [--experts 32] [--keep] [--root DIR]

DeepSeek-V3 itself is 690 GB; what its conversion must do per byte is the same on two of its layers:
dequantize F8_E4M3 weights by their 128 x 128 block scales, requantize to Q8_0, within the memory budget,
while the link stays busy. The model here is DeepSeek-V3's config.json (hidden 7168, MLA with q rank 1536
and kv rank 512, 128 heads, MoE intermediate 2048, FP8 with 128 x 128 block scales) with 2 layers (the
first dense, intermediate 18432; the second MoE with ``--experts`` routed experts and the shared one),
no MTP block, and DeepSeek-V2's vocabulary (102400 ids; the fixtures have no V3 tokenizer): ~5.2 GB in
4 shards. Its data is random but cheap to make: one 16 MiB random block per dtype (FP8 bytes with no
NaN, BF16 and F32 of the usual magnitudes, positive scales) repeated through every tensor, written once
under ``bench/.cache`` and reused.

The fixture Hub serves it throttled as the benchmark's scenario a (100 MB/s total, 40 MB/s a connection,
20 ms before each answer); ``hfstream convert --outtype q8_0`` runs as a subprocess with the default
budget (256 MiB). Printed: wall / link time (link time = the safetensors bytes / 100 MB/s; target at
most 1.10), peak RSS / (budget + 150 MiB) (target at most 1.00), fetched bytes / needed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.run import MB, MiB, SCENARIOS, base_env, byte_compile_hfstream, describe_machine, measure  # noqa: E402
from fixtures.at_scale import DEEPSEEK_V3_CONFIG, deepseek_v3_tensors  # noqa: E402
from fixtures.build import commit_sha, json_bytes, readme_bytes, safetensors_header, shard_groups, tokenizer_files  # noqa: E402

ORG = "hfs-bench"
DEFAULT_ROOT = Path(__file__).resolve().parent / ".cache" / "fp8wide"
BLOCK = 16 << 20
BUDGET = 256 * MiB


def wide_config(experts: int) -> dict:
    return {**DEEPSEEK_V3_CONFIG, "num_hidden_layers": 2, "first_k_dense_replace": 1, "n_routed_experts": experts,
            "num_nextn_predict_layers": 0, "vocab_size": 102400, "n_group": 8, "topk_group": 4}


def _patterns() -> dict[str, bytes]:
    """One random block per safetensors dtype, with values of the magnitudes a checkpoint has."""
    rng = np.random.default_rng(2020)
    fp8 = rng.integers(0, 256, BLOCK, dtype=np.uint8) & 0xF7  # exponent 1111 never with mantissa 111: no NaN
    bf16 = (rng.standard_normal(BLOCK // 2, dtype=np.float32) * 0.02).view(np.uint32) >> 16
    scales = rng.uniform(1e-4, 1e-3, BLOCK // 4).astype(np.float32)
    return {"F8_E4M3": fp8.tobytes(), "BF16": bf16.astype(np.uint16).tobytes(), "F32": scales.tobytes()}


def _fill(fd: int, offset: int, nbytes: int, pattern: bytes) -> None:
    done = 0
    while done < nbytes:
        n = min(len(pattern), nbytes - done)
        os.pwrite(fd, pattern[:n] if n < len(pattern) else pattern, offset + done)
        done += n


def build(root: Path, experts: int) -> tuple[str, Path, int]:
    """Write ``hfs-bench/deepseek-v3-wide-{experts}e`` under ``root`` unless there; returns (repo id,
    snapshot directory, safetensors bytes)."""
    config = wide_config(experts)
    name = f"deepseek-v3-wide-{experts}e"
    tensors = deepseek_v3_tensors(config)
    by_name = {t[0]: t for t in tensors}
    groups = shard_groups([(t[0], t[2]) for t in tensors], 1_500_000_000)
    small: dict[str, bytes] = {
        "config.json": json_bytes(config),
        "generation_config.json": json_bytes({"bos_token_id": 0, "eos_token_id": 1, "transformers_version": "4.46.3"}),
        "README.md": readme_bytes({"front_matter": {"license": "mit"},
                                   "body": f"# {name}\n\nDeepSeek-V3's widths, 2 layers, random FP8: a benchmark.\n"}),
        **tokenizer_files("deepseek-llm"),
    }
    shards = {}
    weight_map = {}
    for i, group in enumerate(groups, 1):
        fname = f"model-{i:05d}-of-{len(groups):06d}.safetensors"
        header, order = safetensors_header(by_name[n] for n in group)
        shards[fname] = (header, order)
        weight_map.update((n, fname) for n in group)
    small["model.safetensors.index.json"] = json_bytes({
        "metadata": {"total_size": sum(t[2] for t in tensors)}, "weight_map": dict(sorted(weight_map.items()))})
    # the data follows from this file and the header: a stand-in digest per shard, declared to the Hub
    # (it would otherwise hash GBs on first use)
    spec = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
    declared = {f: hashlib.sha256(h + spec.encode()).hexdigest() for f, (h, _) in shards.items()}
    sha = commit_sha({**small, **{f: d.encode() for f, d in declared.items()}}, None)
    snapshot = root / ORG / name / "commits" / sha
    size = sum(len(h) + sum(by_name[n][2] for n in order) for h, order in shards.values())
    if (snapshot / ".complete").exists():
        return f"{ORG}/{name}", snapshot, size
    shutil.rmtree(root / ORG / name, ignore_errors=True)
    snapshot.mkdir(parents=True)
    for fname, data in small.items():
        (snapshot / fname).write_bytes(data)
    patterns = _patterns()
    for fname, (header, order) in shards.items():
        fd = os.open(snapshot / fname, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.pwrite(fd, header, 0)
            pos = len(header)
            for n in order:
                _fill(fd, pos, by_name[n][2], patterns[by_name[n][3]])
                pos += by_name[n][2]
        finally:
            os.close(fd)
    (root / ORG / name / "repo.json").write_bytes(json_bytes({
        "refs": {"main": sha}, "gated": False, "private": False, "allowed_tokens": [],
        "declared_sha256": {f"{sha}/{fname}": digest for fname, digest in declared.items()}}))
    (snapshot / ".complete").write_text("")
    return f"{ORG}/{name}", snapshot, size


def twice(log: list[dict]) -> int:
    """Bytes the Hub's log shows sent more than once (ranges of one path that overlap, whole files twice)."""
    spans: dict[str, list[tuple[int, int]]] = {}
    for e in log:
        if e["status"] not in (200, 206) or not e["bytes_sent"]:
            continue
        a = int(e["range"].removeprefix("bytes=").split("-")[0]) if e["range"] else 0
        spans.setdefault(e["path"], []).append((a, a + e["bytes_sent"]))
    extra = 0
    for ranges in spans.values():
        end = 0
        for a, b in sorted(ranges):
            extra += max(0, min(b, end) - a)
            end = max(end, b)
    return extra


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fp8wide", description=__doc__.splitlines()[0])
    p.add_argument("--experts", type=int, default=32)
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    p.add_argument("--keep", action="store_true", help="keep the model under --root for the next run (else deleted)")
    p.add_argument("--work-dir", type=Path)
    p.add_argument("--hub-log", type=Path, metavar="FILE", help="write the fixture Hub's request log here (JSON)")
    args = p.parse_args(argv)
    from fixtures.hub import FixtureHub

    byte_compile_hfstream()
    print(f"bench.fp8wide: {describe_machine()}", flush=True)
    repo, snapshot, needed = build(args.root, args.experts)
    print(f"model {repo}: {needed / MB:.0f} MB of safetensors", flush=True)
    every_file = sum(f.stat().st_size for f in snapshot.iterdir() if f.is_file())  # before --keep's cleanup
    throttle = SCENARIOS["a"].throttle
    work = Path(tempfile.mkdtemp(prefix="hfstream-fp8wide-", dir=args.work_dir))
    try:
        with FixtureHub(args.root) as hub:
            hub.throttle = throttle
            out = work / "out"
            out.mkdir()
            hub_cpu = time.process_time()  # the fixture Hub runs in this process: its CPU is this process's
            run = measure([sys.executable, "-m", "hfstream", "convert", repo, "--outtype", "q8_0", "-o", str(out) + os.sep,
                           "-q", "--max-memory", str(BUDGET)], base_env(hub, work / "hf-home"), REPO_ROOT, work)
            hub_cpu = time.process_time() - hub_cpu
            log = hub.log
            fetched = sum(e["bytes_sent"] for e in log)
            if args.hub_log is not None:
                args.hub_log.write_text(json.dumps(log, indent=1, default=str))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(args.root / ORG / snapshot.parent.parent.name, ignore_errors=True)
    if run.returncode != 0:
        print(f"hfstream FAILED (exit {run.returncode}): {run.stderr.strip()[-300:]}")
        return 1
    link = needed / throttle.total_rate
    peak = run.maxrss_kib * 1024
    print(f"  q8_0 through 100 MB/s: wall {run.wall_s:.2f} s, cpu {run.cpu_s:.1f} s, link time {link:.2f} s, "
          f"peak RSS {peak / MiB:.0f} MiB, fetched {fetched / MB:.0f} MB")
    print(f"  fixture Hub cpu {hub_cpu:.1f} s (same cores); bytes sent twice: {twice(log) / MB:.1f} MB")
    print(f"  wall / link time {run.wall_s / link:.3f} (target <= 1.10); peak RSS / (budget + 150 MiB) "
          f"{peak / (BUDGET + 150 * MiB):.3f} (target <= 1.00); fetched / safetensors bytes {fetched / needed:.3f}, "
          f"/ every file {fetched / every_file:.3f}")
    print(f"end: {describe_machine()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
