"""Many tensors (issue 20 part 1): hfstream against the reference on tiny many-layer Llamas, and planning
at DeepSeek-V3's scale.

    python -m bench.many [--layers 512 4096] [--skip-reference] [--skip-at-scale] [--profile DIR]

Where hfstream was slowest was not the big models but the ones with many small tensors: every
tensor costs the same planning, cutting and scheduling whatever its size, so per-tensor overhead is
what these models measure. Each model is a Llama with hidden 16 and intermediate 128 (9 tensors a
layer, ~14 KB of f16), generated under a temp directory (seconds), converted to f16 **from the local
directory** by both converters, each a subprocess timed from spawn to exit (interpreter start and
imports, torch's included for the reference, as the issue measured it). Printed:

- per model and tool: wall s, cpu s (the process's own, robust to other load), peak RSS;
- reference / hfstream wall time per model (target: at least 2x);
- hfstream's wall and CPU time at the most layers over the fewest, against the tensor-count ratio
  (linear: at most that ratio);
- ``--dry-run`` of ``fixtures/at_scale``'s DeepSeek-V3 header set (163 shards, ~92k source tensors)
  through the fixture Hub: wall and CPU seconds, peak RSS ("plans in a few seconds").
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.make_model import _llama_config  # noqa: E402
from bench.run import (Run, base_env, byte_compile_hfstream, describe_machine, find_llama_cpp_dir,  # noqa: E402
                       measure, reference_missing)
from fixtures.build import decoder_tensors, json_bytes, tokenizer_files  # noqa: E402


def many_layer_config(layers: int) -> dict:
    return _llama_config(hidden_size=16, head_dim=8, num_attention_heads=2, num_key_value_heads=1,
                         intermediate_size=128, num_hidden_layers=layers, vocab_size=1000, bos_token_id=1,
                         eos_token_id=2, rope_scaling=None, rope_theta=10000.0, tie_word_embeddings=False,
                         max_position_embeddings=4096, torch_dtype="float16")


def build_many_layer_llama(directory: Path, layers: int, seed: int = 20) -> int:
    """A local repo directory: config, the tiny SentencePiece tokenizer, one f16 safetensors file
    with ``layers`` layers. Returns the number of tensors."""
    config = many_layer_config(layers)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_bytes(json_bytes(config))
    for name, blob in tokenizer_files("spm-tiny").items():
        (directory / name).write_bytes(blob)
    tensors = decoder_tensors(config)
    rng = np.random.default_rng(seed)
    header: dict = {"__metadata__": {"format": "pt"}}
    blobs, pos = [], 0
    for name, shape in sorted(tensors):  # data in name order, as safetensors writes it
        n = int(np.prod(shape))
        values = (1.0 + 0.1 * rng.standard_normal(n)) if len(shape) == 1 else 0.02 * rng.standard_normal(n)
        blob = values.astype(np.float16).tobytes()
        header[name] = {"dtype": "F16", "shape": list(shape), "data_offsets": [pos, pos + len(blob)]}
        blobs.append(blob)
        pos += len(blob)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(directory / "model.safetensors", "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw)
        for blob in blobs:
            f.write(blob)
    return len(tensors)


def convert_local(tool: str, model: Path, out: Path, llama_cpp_dir: Path | None, env: dict, log_dir: Path,
                  profile: Path | None = None) -> Run:
    if tool == "hfstream":
        cmd = [sys.executable, "-m", "hfstream", "convert", str(model), "--outtype", "f16", "-o", str(out), "-q"]
        if profile is not None:  # in-process: the CLI's entry point leaves by os._exit, past cProfile's dump
            cmd = [sys.executable, "-c", "import cProfile, sys; from hfstream import cli; "
                   f"cProfile.run('cli.main(sys.argv[1:])', {str(profile)!r})", *cmd[3:]]
    else:
        assert llama_cpp_dir is not None
        cmd = [sys.executable, str(llama_cpp_dir / "convert_hf_to_gguf.py"), str(model), "--outtype", "f16",
               "--outfile", str(out)]
    return measure(cmd, env, REPO_ROOT, log_dir)


def plan_at_scale(work: Path) -> Run:
    """``--dry-run`` of DeepSeek-V3's header set through the fixture Hub (built under ``work``)."""
    from fixtures import at_scale
    from fixtures.hub import FixtureHub

    repo = at_scale.build_deepseek_v3(work / "repos")
    with FixtureHub(work / "repos") as hub:
        import requests

        for i in range(1, at_scale.SHARDS + 1):  # the Hub's first answer for each file, untimed
            requests.head(f"{hub.endpoint}/{repo}/resolve/main/model-{i:05d}-of-{at_scale.SHARDS:06d}.safetensors",
                          allow_redirects=False, timeout=60)
        env = base_env(hub, work / "hf-home")
        return measure([sys.executable, "-m", "hfstream", "convert", repo, "--outtype", "q8_0", "--dry-run", "-q"],
                       env, work, work)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.many", description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, nargs="+", default=[512, 4096])
    p.add_argument("--skip-reference", action="store_true")
    p.add_argument("--skip-at-scale", action="store_true")
    p.add_argument("--profile", type=Path, metavar="DIR", help="cProfile each hfstream run into DIR (slower)")
    p.add_argument("--work-dir", type=Path)
    args = p.parse_args(argv)
    llama_cpp_dir = None
    if not args.skip_reference:
        llama_cpp_dir = find_llama_cpp_dir(None)
        why = "convert_hf_to_gguf.py not found" if llama_cpp_dir is None else reference_missing()
        if why:
            print(f"reference: skipped, {why}", flush=True)
            llama_cpp_dir = None
    tools = ["hfstream"] + (["reference"] if llama_cpp_dir is not None else [])
    byte_compile_hfstream()
    print(f"bench.many: {describe_machine()}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="hfstream-many-", dir=args.work_dir))
    results: dict[tuple[int, str], Run] = {}
    counts: dict[int, int] = {}
    try:
        env = base_env_local(work)
        for layers in args.layers:
            model = work / f"llama-{layers}"
            counts[layers] = build_many_layer_llama(model, layers)
            for tool in tools:
                job = work / f"{tool}-{layers}"
                job.mkdir()
                prof = args.profile / f"hfstream-{layers}.prof" if args.profile and tool == "hfstream" else None
                if prof is not None:
                    args.profile.mkdir(parents=True, exist_ok=True)
                r = results[(layers, tool)] = convert_local(tool, model, job / "out.gguf", llama_cpp_dir, env, job, prof)
                status = "ok" if r.returncode == 0 else f"FAILED exit {r.returncode}: {r.stderr.strip()[-200:]}"
                print(f"  {layers:5} layers {counts[layers]:6} tensors  {tool:9}  wall {r.wall_s:7.2f} s  "
                      f"cpu {r.cpu_s:7.2f} s  peak RSS {r.maxrss_kib / 1024:6.0f} MiB  {status}", flush=True)
                shutil.rmtree(job, ignore_errors=True)
            shutil.rmtree(model, ignore_errors=True)
        scale = None if args.skip_at_scale else plan_at_scale(work / "at-scale")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print()
    ok = all(r.returncode == 0 for r in results.values())
    for layers in args.layers:
        h, ref = results.get((layers, "hfstream")), results.get((layers, "reference"))
        if h and ref and h.returncode == ref.returncode == 0:
            print(f"  {layers} layers ({counts[layers]} tensors): reference / hfstream wall {ref.wall_s / h.wall_s:.2f}x "
                  f"(target >= 2), cpu {ref.cpu_s / h.cpu_s:.2f}x")
    lo, hi = min(args.layers), max(args.layers)
    if lo != hi and results[(lo, "hfstream")].returncode == results[(hi, "hfstream")].returncode == 0:
        a, b = results[(lo, "hfstream")], results[(hi, "hfstream")]
        print(f"  hfstream {hi} / {lo} layers: wall {b.wall_s / a.wall_s:.2f}x, cpu {b.cpu_s / a.cpu_s:.2f}x for "
              f"{counts[hi] / counts[lo]:.2f}x the tensors (linear: at most that)")
    if scale is not None:
        ok = ok and scale.returncode == 0
        print(f"  DeepSeek-V3 header set (163 shards) --dry-run: wall {scale.wall_s:.2f} s, cpu {scale.cpu_s:.2f} s, "
              f"peak RSS {scale.maxrss_kib / 1024:.0f} MiB" + ("" if scale.returncode == 0 else
                                                               f"  FAILED: {scale.stderr.strip()[-200:]}"))
    print(f"end: {describe_machine()}")
    return 0 if ok else 1


def base_env_local(work: Path) -> dict:
    """The converters' environment for a local directory: no Hub, no token, a private HF_HOME."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE"))}
    env.update(HF_HOME=str(work / "hf-home"), HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO_ROOT),
               PYTHONDONTWRITEBYTECODE="1")
    return env


if __name__ == "__main__":
    sys.exit(main())
