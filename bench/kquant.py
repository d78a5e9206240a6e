"""The q4_k_m benchmark (issues 6 and 20): one streaming pass against download + convert + llama-quantize,
and against llama-quantize alone.

    python -m bench.kquant [--quick] [--scenario a|b] [--outtype q4_k_m] [--intermediate f32]
                           [--quantize BIN] [--llama-cpp-dir DIR] [--skip-reference] [--json FILE]

On the same fixture Hub (``bench/run.py``'s models and throttles), it times:

- **hfstream**: ``hfstream convert REPO --outtype q4_k_m``: fetch, convert, quantize and write in
  one pass; nothing of the source lands on disk. Under the scenario's throttle, and again on the
  unthrottled loopback (scenario b), where the cores are the limit;
- **reference**: what a llama.cpp user does today, three steps one after the other:
  1. ``hf download REPO --local-dir DIR`` (huggingface_hub's ``snapshot_download``),
  2. ``convert_hf_to_gguf.py DIR --outtype f32`` (f32: the intermediate whose quantized output
     hfstream's equals byte for byte; ``--intermediate f16`` or ``bf16`` is what many users pick),
  3. ``llama-quantize f32.gguf out.gguf Q4_K_M``.

Issue 6 compares the whole reference with hfstream under the throttle. Issue 20 compares the
reference's quantize step alone, ``llama-quantize`` reading the local F32 file, with hfstream from the
unthrottled Hub: both quantize on the same cores, and most of the time of both is the K-quant
encoders (ggml's in llama-quantize, hfstream's compiled ones, with the same bytes).

For each: wall time (the reference's is the sum of its steps, shown too), CPU time, peak RSS (the
largest of its processes) and **peak disk**: the most bytes allocated at once under the run's work
directory (download, intermediate, output, caches), sampled every 50 ms (``st_blocks``, so a
preallocated output counts in full). Outputs are deleted after each run.

The bench runner calls ``run_case(hub, model, throttle, work, ...)`` per tool; see ``main`` for
the standalone use. Needs the reference converter (torch, transformers) and a ``llama-quantize``
binary (``tests/goldens/make_kquant_goldens.py`` says how to build one) for the reference side.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.make_model import DEFAULT_ROOT, BuiltModel, build_model  # noqa: E402
from bench.run import (MB, SCENARIOS, base_env, byte_compile_hfstream, find_llama_cpp_dir, measure,  # noqa: E402
                       reference_missing, warm_hub)
from fixtures.hub import FixtureHub, Throttle  # noqa: E402

DEFAULT_QUANTIZE = Path("/tmp/lq/bin/llama-quantize")


@dataclass
class Step:
    name: str
    ok: bool
    wall_s: float
    cpu_s: float
    peak_rss_mib: float
    error: str = ""


@dataclass
class KquantResult:
    tool: str
    outtype: str
    model: str
    scenario: str
    ok: bool
    wall_s: float
    cpu_s: float
    peak_rss_mib: float
    peak_disk_bytes: int
    output_bytes: int
    steps: list[Step] = field(default_factory=list)
    error: str = ""
    #: sha256 over every tensor's name, type and data hash: equal for byte-identical tensors
    tensors_sha256: str = ""
    #: the reference's convert output type
    intermediate: str = ""
    #: CPU seconds the fixture Hub (this process) spent serving the run: on a small machine it competes
    #: with the converter for the same cores, which a remote Hub does not
    hub_cpu_s: float = 0.0


def tensors_sha256(path: Path) -> str:
    from tests.goldens.digest import digest_gguf

    h = hashlib.sha256()
    for t in digest_gguf(path)["tensors"]:
        h.update(f"{t['name']} {t['type']} {t['offset']} {t['sha256']}\n".encode())
    return h.hexdigest()


class DiskSampler:
    """Peak bytes allocated under a directory, sampled in a thread."""

    def __init__(self, root: Path, interval: float = 0.05):
        self.root, self.interval, self.peak = root, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "DiskSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def sample(self) -> None:
        self.peak = max(self.peak, allocated(self.root))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()


def allocated(root: Path) -> int:
    total = 0
    stack = [str(root)]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for e in it:
                    try:
                        if e.is_dir(follow_symlinks=False):
                            stack.append(e.path)
                        elif e.is_file(follow_symlinks=False):
                            total += e.stat(follow_symlinks=False).st_blocks * 512
                    except FileNotFoundError:
                        continue
        except FileNotFoundError:
            continue
    return total


def _self_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _step(name: str, cmd: list[str], env: dict, cwd: Path, log_dir: Path) -> Step:
    log_dir.mkdir(parents=True, exist_ok=True)
    run = measure(cmd, env, cwd, log_dir)
    error = ""
    if run.returncode != 0:
        error = f"exit {run.returncode}: {(run.stderr.strip().splitlines() or [''])[-1][:200]}"
    return Step(name, run.returncode == 0, run.wall_s, run.cpu_s, run.maxrss_kib / 1024, error)


def run_case(hub: FixtureHub, model: BuiltModel, throttle: Throttle, work: Path, tool: str, *,
             outtype: str = "q4_k_m", scenario: str = "", llama_cpp_dir: Path | None = None,
             quantize_bin: Path | None = None, intermediate: str = "f32", hfstream_args: list[str] = ()) -> KquantResult:
    """One measured run of ``tool`` ("hfstream" or "reference") on ``model`` under ``throttle``."""
    job = Path(tempfile.mkdtemp(prefix=f"kquant-{tool}-", dir=work))
    data = job / "data"  # everything the run puts on disk lives here
    data.mkdir()
    env = base_env(hub, data / "hf-home")
    hub.throttle = throttle
    hub.clear_log()
    steps: list[Step] = []
    out = data / "out.gguf"
    hub_cpu = _self_cpu()
    try:
        with DiskSampler(data) as disk:
            if tool == "hfstream":
                steps.append(_step("convert", [sys.executable, "-m", "hfstream", "convert", model.repo_id,
                                               "--outtype", outtype, "-o", str(out), "-q", "--force",
                                               *hfstream_args], env, REPO_ROOT, job / "logs" / "convert"))
            else:
                assert llama_cpp_dir is not None and quantize_bin is not None
                local = data / model.repo_id.split("/")[1]
                f32 = data / f"model-{intermediate}.gguf"
                plan = [
                    ("download", [sys.executable, "-c",
                                  "import sys; from huggingface_hub import snapshot_download; "
                                  "snapshot_download(sys.argv[1], local_dir=sys.argv[2])", model.repo_id, str(local)]),
                    ("convert", [sys.executable, str(llama_cpp_dir / "convert_hf_to_gguf.py"), str(local),
                                 "--outtype", intermediate, "--outfile", str(f32)]),
                    ("quantize", [str(quantize_bin), str(f32), str(out), outtype.upper(), str(os.cpu_count() or 1)]),
                ]
                ref_env = dict(env)
                ref_env.pop("NO_LOCAL_GGUF", None)
                for name, cmd in plan:
                    steps.append(_step(name, cmd, ref_env, data, job / "logs" / name))
                    if not steps[-1].ok:
                        break
        ok = all(s.ok for s in steps) and out.is_file()
        hub_cpu = _self_cpu() - hub_cpu
        return KquantResult(hub_cpu_s=hub_cpu,tensors_sha256=tensors_sha256(out) if ok else "",
                            intermediate=intermediate if tool == "reference" else "",
            tool=tool, outtype=outtype, model=model.repo_id, scenario=scenario, ok=ok,
            wall_s=sum(s.wall_s for s in steps), cpu_s=sum(s.cpu_s for s in steps),
            peak_rss_mib=max((s.peak_rss_mib for s in steps), default=0.0), peak_disk_bytes=disk.peak,
            output_bytes=out.stat().st_size if out.is_file() else 0, steps=steps,
            error="; ".join(f"{s.name}: {s.error}" for s in steps if not s.ok))
    finally:
        hub.throttle = Throttle()
        shutil.rmtree(job, ignore_errors=True)


def find_quantize(explicit: str | os.PathLike | None = None) -> Path | None:
    """The llama-quantize binary: ``explicit``, else ``$LLAMA_QUANTIZE``, else /tmp/lq/bin/llama-quantize."""
    return next((Path(c) for c in (explicit, os.environ.get("LLAMA_QUANTIZE"), DEFAULT_QUANTIZE)
                 if c and Path(c).is_file()), None)


def report(results: list[KquantResult]) -> str:
    lines = [f"{'tool':10} {'scenario':8} {'outtype':8} {'wall s':>8} {'cpu s':>8} {'hub cpu s':>9} "
             f"{'peak RSS MiB':>13} {'peak disk MB':>13} {'output MB':>10}  steps"]
    for r in results:
        if not r.ok:
            lines.append(f"{r.tool:10} {r.scenario:8} {r.outtype:8} FAILED {r.error[:100]}")
            continue
        steps = ", ".join(f"{s.name} {s.wall_s:.1f}s" for s in r.steps)
        lines.append(f"{r.tool:10} {r.scenario:8} {r.outtype:8} {r.wall_s:8.1f} {r.cpu_s:8.1f} {r.hub_cpu_s:9.1f} "
                     f"{r.peak_rss_mib:13.0f} {r.peak_disk_bytes / MB:13.1f} {r.output_bytes / MB:10.1f}  {steps}")
    ok = [r for r in results if r.ok]
    ref = next((r for r in ok if r.tool == "reference"), None)
    if ref is None:
        return "\n".join(lines)
    same_scenario = next((r for r in ok if r.tool == "hfstream" and r.scenario == ref.scenario), None)
    if same_scenario is not None:
        h = same_scenario
        lines.append(f"issue 6, reference / hfstream ({ref.scenario}): wall {ref.wall_s / h.wall_s:.2f}x, "
                     f"peak disk {ref.peak_disk_bytes / max(h.peak_disk_bytes, 1):.2f}x "
                     f"(target: wall >= 2x, no input on disk)")
    quantize = next((s for s in ref.steps if s.name == "quantize" and s.ok), None)
    unthrottled = next((r for r in ok if r.tool == "hfstream" and r.scenario == "b"), None)
    if quantize is not None and unthrottled is not None:
        lines.append(f"issue 20, llama-quantize alone (local {ref.intermediate.upper()} file) / hfstream from the "
                     f"unthrottled Hub: wall {quantize.wall_s:.1f} / {unthrottled.wall_s:.1f} s = "
                     f"{quantize.wall_s / unthrottled.wall_s:.2f}x, cpu {quantize.cpu_s:.1f} / {unthrottled.cpu_s:.1f} s "
                     f"= {quantize.cpu_s / unthrottled.cpu_s:.2f}x (target: wall >= 2x)")
    for h in (r for r in ok if r.tool == "hfstream"):
        same = h.tensors_sha256 == ref.tensors_sha256
        note = "" if ref.intermediate == "f32" else f" (expected only with an f32 intermediate, not {ref.intermediate})"
        lines.append(f"tensors byte-identical, hfstream ({h.scenario}) and reference: {'yes' if same else 'no'}{note}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.kquant", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="the 27 MB model instead of the 1.5 GB one")
    p.add_argument("--scenario", choices=("a", "b"), default="a", help="bench/run.py's throttle (default a)")
    p.add_argument("--outtype", default="q4_k_m")
    p.add_argument("--intermediate", choices=("f32", "f16", "bf16"), default="f32",
                   help="the reference's convert output type (default f32)")
    p.add_argument("--quantize", type=Path, help=f"llama-quantize (env LLAMA_QUANTIZE; default {DEFAULT_QUANTIZE})")
    p.add_argument("--llama-cpp-dir", help="llama.cpp tree with convert_hf_to_gguf.py")
    p.add_argument("--skip-reference", action="store_true")
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    p.add_argument("--work-dir", type=Path)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    byte_compile_hfstream()

    scenario = SCENARIOS[args.scenario]
    tools = ["hfstream"]
    llama_cpp_dir = quantize_bin = None
    if not args.skip_reference:
        llama_cpp_dir = find_llama_cpp_dir(args.llama_cpp_dir)
        quantize_bin = find_quantize(args.quantize)
        why = ("convert_hf_to_gguf.py not found" if llama_cpp_dir is None else
               "llama-quantize not found (--quantize)" if quantize_bin is None else reference_missing())
        if why:
            print(f"reference: skipped, {why}", flush=True)
        else:
            tools.append("reference")
    model = build_model(scenario.quick_model if args.quick else scenario.model, args.root)
    print(f"kquant bench: {model.repo_id} ({model.weight_bytes / MB:.0f} MB of safetensors), "
          f"scenario {scenario.key}: {scenario.title}, {args.outtype}; {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="hfstream-kquant-", dir=args.work_dir))
    runs = [(tool, scenario) for tool in tools]
    if scenario.key != "b":  # the cores as the limit, for issue 20's comparison with llama-quantize alone
        runs.insert(1, ("hfstream", SCENARIOS["b"]))
    results = []
    try:
        with FixtureHub(args.root) as hub:
            warm_hub(hub, model)
            for tool, where in runs:
                r = run_case(hub, model, where.throttle, work, tool, outtype=args.outtype, scenario=where.key,
                             llama_cpp_dir=llama_cpp_dir, quantize_bin=quantize_bin, intermediate=args.intermediate)
                results.append(r)
                print(f"  {tool} ({where.key}): {'ok' if r.ok else 'FAILED ' + r.error} {r.wall_s:.1f}s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(f"end: load average {os.getloadavg()[0]:.1f} (other processes on the cores skew wall times)")
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
