"""One fetch, many outputs (issue 20 part 3): several outtypes of the 1.5 GB benchmark Llama in one pass.

    python -m bench.multi [--outtypes q8_0,q4_k_m,q6_k] [--quick]

Runs, each ``hfstream convert --outtype LIST -o DIR/`` (or one type) as a subprocess against the fixture
Hub serving ``bench-llama`` (``bench/make_model.py``):

  1. all the types in one pass through scenario a's link (100 MB/s total, 40 MB/s a connection, 20 ms);
  2. the same pass unthrottled (loopback): what the pass costs when the link is no limit;
  3. each type alone, unthrottled: its own quantization time (with its start-up and loopback fetch).

Printed: the bytes fetched by the throttled pass over the safetensors bytes (target 1.0x whatever the
number of outputs; config and tokenizer files come on top) and over every file of the repo, and its wall time over the larger of the link time (safetensors bytes / 100 MB/s)
and the quantization time (target at most 1.10), the quantization time taken two ways: the unthrottled
pass (2), and the sum of the single-type runs (3), which counts a start-up and a fetch per type and so
is the more lenient of the two.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.make_model import DEFAULT_ROOT, build_model  # noqa: E402
from bench.run import (MB, SCENARIOS, Run, base_env, byte_compile_hfstream, describe_machine, measure,  # noqa: E402
                       warm_hub)


def convert(hub, repo: str, outtypes: str, throttled: bool, work: Path, name: str) -> tuple[Run, int, int]:
    """One conversion; (its run, bytes the Hub sent, outputs written)."""
    job = work / name
    out = job / "out"
    out.mkdir(parents=True)
    hub.throttle = SCENARIOS["a" if throttled else "b"].throttle
    hub.clear_log()
    try:
        run = measure([sys.executable, "-m", "hfstream", "convert", repo, "--outtype", outtypes, "-o", str(out) + os.sep,
                       "-q"], base_env(hub, job / "hf-home"), REPO_ROOT, job)
        return run, sum(e["bytes_sent"] for e in hub.log), len(list(out.glob("*.gguf")))
    finally:
        hub.throttle = SCENARIOS["b"].throttle
        shutil.rmtree(job, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.multi", description=__doc__.splitlines()[0])
    p.add_argument("--outtypes", default="q8_0,q4_k_m,q6_k")
    p.add_argument("--quick", action="store_true", help="the 27 MB bench-quick model")
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    p.add_argument("--work-dir", type=Path)
    args = p.parse_args(argv)
    from fixtures.hub import FixtureHub

    types = [t.strip() for t in args.outtypes.split(",") if t.strip()]
    byte_compile_hfstream()
    print(f"bench.multi: {describe_machine()}", flush=True)
    model = build_model("bench-quick" if args.quick else "bench-llama", args.root)
    cap = SCENARIOS["a"].throttle.total_rate
    link = model.weight_bytes / cap
    work = Path(tempfile.mkdtemp(prefix="hfstream-multi-", dir=args.work_dir))
    ok = True
    try:
        with FixtureHub(args.root) as hub:
            warm_hub(hub, model)
            runs = {}
            for name, outtypes, throttled in [("a-pass", ",".join(types), True), ("b-pass", ",".join(types), False),
                                              *((f"b-{t}", t, False) for t in types)]:
                run, fetched, files = runs[name] = convert(hub, model.repo_id, outtypes, throttled, work, name)
                good = run.returncode == 0 and files == len(outtypes.split(","))
                ok = ok and good
                print(f"  {name:10} --outtype {outtypes:18} wall {run.wall_s:7.2f} s  cpu {run.cpu_s:6.1f} s  "
                      f"fetched {fetched / MB:7.1f} MB  peak RSS {run.maxrss_kib / 1024:5.0f} MiB  "
                      + ("ok" if good else f"FAILED exit {run.returncode}: {run.stderr.strip()[-200:]}"), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not ok:
        return 1
    a, fetched, _ = runs["a-pass"]
    b = runs["b-pass"][0]
    singles = sum(runs[f"b-{t}"][0].wall_s for t in types)
    print()
    print(f"  {model.repo_id}: {model.weight_bytes / MB:.1f} MB of safetensors, link time at 100 MB/s {link:.2f} s; "
          f"{len(types)} outputs ({', '.join(types)}) in one pass")
    every_file = sum(f.stat().st_size for f in model.path.iterdir() if f.is_file())
    print(f"  fetched / safetensors bytes: {fetched / model.weight_bytes:.3f}x (target 1.0x; the small files on top); "
          f"fetched / every file of the repo: {fetched / every_file:.3f}x")
    print(f"  throttled pass / max(link {link:.2f} s, unthrottled pass {b.wall_s:.2f} s): "
          f"{a.wall_s / max(link, b.wall_s):.3f} (target <= 1.10)")
    print(f"  throttled pass / max(link {link:.2f} s, sum of single-type runs {singles:.2f} s): "
          f"{a.wall_s / max(link, singles):.3f} (target <= 1.10)")
    print(f"end: {describe_machine()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
