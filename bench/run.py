"""The hfstream benchmark (issue 4): convert a 1.5 GB bf16 Llama through a throttled fake Hub.

    python -m bench.run [--scenario a b c] [--outtypes q8_0 f16] [--skip-reference] [--quick]
                        [--llama-cpp-dir DIR] [--json FILE] [--py-spy DIR]

Serves the benchmark models (``bench/make_model.py``, built on first use under ``bench/.cache``)
from the fixture Hub on 127.0.0.1 and converts them with the hfstream CLI, and with llama.cpp's
reference ``convert_hf_to_gguf.py --remote`` when it is available, each as a subprocess so its
peak RSS is its own (``os.wait4`` rusage). Scenarios:

  a  100 MB/s total, 40 MB/s per connection, 20 ms before every answer's first byte
  b  unthrottled loopback
  c  peak RSS on a model with one 2 GiB tensor (unthrottled, default memory budget)

Figures per run: wall time; bytes fetched and requests (from the Hub's log); peak RSS; and, under
a bandwidth cap, the link utilization ``(needed / cap) / wall`` and its inverse ``wall / (needed /
cap)``, where *needed* is the size of the safetensors files (every header and tensor byte, what
any converter must move). Outputs go to a temporary directory and are deleted after each run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.make_model import DEFAULT_ROOT, BuiltModel, build_model  # noqa: E402
from fixtures.hub import FixtureHub, Throttle  # noqa: E402

DEFAULT_LLAMA_CPP_DIR = Path("/tmp/sdist/llama_cpp_python-0.3.36/vendor/llama.cpp")
MB = 1_000_000
MiB = 1 << 20
RUN_TIMEOUT = 3600


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    throttle: Throttle
    model: str
    quick_model: str
    tools: tuple[str, ...] = ("hfstream", "reference")


SCENARIOS = {
    "a": Scenario("a", "100 MB/s total, 40 MB/s/conn, 20 ms",
                  Throttle(total_rate=100 * MB, connection_rate=40 * MB, latency=0.020), "bench-llama", "bench-quick"),
    "b": Scenario("b", "loopback, unthrottled", Throttle(), "bench-llama", "bench-quick"),
    "c": Scenario("c", "one 2 GiB tensor, unthrottled", Throttle(), "bench-big-embd", "bench-quick-big",
                  tools=("hfstream",)),
}


@dataclass
class Result:
    scenario: str
    tool: str
    outtype: str
    model: str
    ok: bool
    wall_s: float
    cpu_s: float
    peak_rss_mib: float
    bytes_fetched: int
    requests: int
    resolves: int
    needed_bytes: int
    output_bytes: int
    cap_bytes_per_s: float | None
    error: str = ""

    @property
    def link_utilization(self) -> float | None:
        """(needed / cap) / wall: 1.0 means the link never idled and nothing was fetched twice."""
        if not self.cap_bytes_per_s or not self.ok:
            return None
        return (self.needed_bytes / self.cap_bytes_per_s) / self.wall_s

    @property
    def wall_over_ideal(self) -> float | None:
        u = self.link_utilization
        return 1 / u if u else None

    @property
    def throughput(self) -> float:
        """needed bytes per second of wall time."""
        return self.needed_bytes / self.wall_s if self.ok and self.wall_s else 0.0


@dataclass
class Run:
    """One measured subprocess."""

    returncode: int
    wall_s: float
    cpu_s: float
    maxrss_kib: int
    stdout: str
    stderr: str
    extra: dict = field(default_factory=dict)


#: PSS of a process tree is read every this many seconds. Reading it costs the kernel ~2.6 ms for a
#: 320 MB tree on the development VM: every 10 ms that was a fifth of a core, taken from the run measured.
TREE_SAMPLE_S = 0.05


def measure(cmd: list[str], env: dict, cwd: Path, log_dir: Path, timeout: float = RUN_TIMEOUT) -> Run:
    """Run ``cmd``; wall time from spawn to exit; CPU time and peak RSS from ``os.wait4``'s rusage
    (CPU includes children it waited for; its peak RSS is the largest single process's).

    While the process has children (hfstream forks one to build the vocabulary), memory is the
    whole tree's: the PSS of the process and its descendants summed, sampled every 50 ms; the peak
    RSS reported is the larger of the two. PSS splits pages a fork shares, so the sum is what the
    tree holds; a sum of RSS would count the shared pages twice.
    """
    out_path, err_path = log_dir / "stdout.txt", log_dir / "stderr.txt"
    tree_peak_kib = 0
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        deadline = t0 + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            children = _descendants(proc.pid)
            if children:
                tree_peak_kib = max(tree_peak_kib, sum(_pss_kib(p) for p in [proc.pid, *children]))
                time.sleep(TREE_SAMPLE_S)
            else:
                time.sleep(0.005)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
    return Run(proc.returncode, wall, usage.ru_utime + usage.ru_stime, max(usage.ru_maxrss, tree_peak_kib),
               out_path.read_text(errors="replace"), err_path.read_text(errors="replace"))


def _descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (children of any of its threads, recursively)."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children") as f:
                    kids = [int(k) for k in f.read().split()]
            except OSError:
                continue
            found.extend(kids)
            todo.extend(kids)
    return found


def _pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def find_llama_cpp_dir(explicit: str | None) -> Path | None:
    for candidate in (explicit, os.environ.get("LLAMA_CPP_DIR"), DEFAULT_LLAMA_CPP_DIR):
        if candidate and (Path(candidate) / "convert_hf_to_gguf.py").is_file():
            return Path(candidate)
    return None


def reference_missing() -> str | None:
    """Why the reference converter cannot run here (torch / transformers missing), or None."""
    import importlib.util

    missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
    return f"{' and '.join(missing)} not installed" if missing else None


def warm_hub(hub: FixtureHub, model: BuiltModel) -> None:
    """Resolve every LFS file once, untimed: the fixture Hub hashes a file (sha256) on first use."""
    import requests

    for p in sorted(model.path.iterdir()):
        if p.suffix == ".safetensors" or p.stat().st_size > 10 * MiB:
            r = requests.head(f"{hub.endpoint}/{model.repo_id}/resolve/main/{p.name}", allow_redirects=False,
                              timeout=600)
            if r.status_code != 302:
                raise RuntimeError(f"fixture Hub answered {r.status_code} for {p.name}")


def base_env(hub: FixtureHub, hf_home: Path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "NO_LOCAL_GGUF", "HF_HUB_OFFLINE",
                        "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=hub.endpoint, HF_HOME=str(hf_home), HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_DISABLE_PROGRESS_BARS="1", PYTHONPATH=str(REPO_ROOT), PYTHONDONTWRITEBYTECODE="1")
    return env


def command(tool: str, model: BuiltModel, outtype: str, out_dir: Path, llama_cpp_dir: Path | None,
            hfstream_args: list[str], py_spy: Path | None, tag: str) -> list[str]:
    if tool == "hfstream":
        cmd = [sys.executable, "-m", "hfstream", "convert", model.repo_id, "--outtype", outtype,
               "-o", str(out_dir) + os.sep, "-q", "--force", *hfstream_args]
        if py_spy is not None:
            py_spy.mkdir(parents=True, exist_ok=True)
            cmd = ["py-spy", "record", "--format", "raw", "--threads", "--rate", "200", "--nonblocking",
                   "-o", str(py_spy / f"{tag}.txt"), "--", *cmd]
        return cmd
    assert llama_cpp_dir is not None
    return [sys.executable, "-m", "bench.reference_remote", str(llama_cpp_dir), model.repo_id, "--remote",
            "--outtype", outtype, "--outfile", str(out_dir / "reference-{ftype}.gguf")]


def run_one(hub: FixtureHub, scenario: Scenario, tool: str, model: BuiltModel, outtype: str, work: Path,
            llama_cpp_dir: Path | None, hfstream_args: list[str], py_spy: Path | None) -> Result:
    job = Path(tempfile.mkdtemp(prefix=f"{scenario.key}-{tool}-{outtype}-", dir=work))
    out_dir = job / "out"
    out_dir.mkdir()
    hub.throttle = scenario.throttle
    hub.clear_log()
    try:
        cmd = command(tool, model, outtype, out_dir, llama_cpp_dir, hfstream_args, py_spy,
                      f"{scenario.key}-{tool}-{outtype}")
        run = measure(cmd, base_env(hub, job / "hf-home"), REPO_ROOT, job)
        log = hub.log
        outputs = list(out_dir.glob("*.gguf"))
        ok = run.returncode == 0 and len(outputs) == 1
        error = ""
        if not ok:
            tail = (run.stderr.strip().splitlines() or [""])[-1]
            error = f"exit {run.returncode}: {tail}" if run.returncode else f"outputs: {[p.name for p in outputs]}"
        return Result(
            scenario=scenario.key, tool=tool, outtype=outtype, model=model.repo_id, ok=ok, wall_s=run.wall_s, cpu_s=run.cpu_s,
            peak_rss_mib=run.maxrss_kib / 1024, bytes_fetched=sum(e["bytes_sent"] for e in log),
            requests=len(log), resolves=sum(1 for e in log if e["origin"] == "hub" and "/resolve/" in e["path"]),
            needed_bytes=model.weight_bytes, output_bytes=outputs[0].stat().st_size if outputs else 0,
            cap_bytes_per_s=scenario.throttle.total_rate, error=error)
    finally:
        hub.throttle = Throttle()
        shutil.rmtree(job, ignore_errors=True)


# --------------------------------------------------------------------------- printing

def _f(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


COLUMNS = ("scen", "tool", "outtype", "wall s", "cpu s", "fetched MB", "reqs", "resolves", "peak RSS MiB", "MB/s",
           "link util", "wall/ideal")


def row(r: Result) -> list[str]:
    if not r.ok:
        return [r.scenario, r.tool, r.outtype, "FAILED", "", "", "", "", "", "", "", r.error[:60]]
    return [r.scenario, r.tool, r.outtype, f"{r.wall_s:.2f}", f"{r.cpu_s:.1f}", f"{r.bytes_fetched / MB:.1f}", str(r.requests),
            str(r.resolves), f"{r.peak_rss_mib:.0f}", f"{r.throughput / MB:.0f}", _f(r.link_utilization, ".2f"),
            _f(r.wall_over_ideal, ".2f")]


def table(results: list[Result]) -> str:
    rows = [list(COLUMNS)] + [row(r) for r in results]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.rjust(w) if i >= 3 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def ratios(results: list[Result]) -> list[str]:
    """reference / hfstream, wall time and peak RSS, per scenario and outtype."""
    by = {(r.scenario, r.tool, r.outtype): r for r in results if r.ok}
    out = []
    for (scen, tool, outtype), h in by.items():
        ref = by.get((scen, "reference", outtype))
        if tool != "hfstream" or ref is None:
            continue
        out.append(f"  {scen} {outtype:5}  reference / hfstream: wall {ref.wall_s / h.wall_s:.2f}x, "
                   f"peak RSS {ref.peak_rss_mib / h.peak_rss_mib:.2f}x, fetched {ref.bytes_fetched / h.bytes_fetched:.2f}x")
    return out


def byte_compile_hfstream() -> None:
    """Compile hfstream's modules to bytecode (``__pycache__``) before any run is timed, as pip does when
    it installs a wheel, and as Python does on the first import anywhere it may write. An editable
    install under PYTHONDONTWRITEBYTECODE (set on the development VM) has none, and every converter
    process would compile every module it imports again: 0.12 s of CPU at each start."""
    import compileall

    compileall.compile_dir(REPO_ROOT / "hfstream", quiet=1)


def describe_machine() -> str:
    try:
        rev = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev = "?"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{datetime.date.today().isoformat()}, {os.cpu_count()} cores, {platform.machine()}, "
            f"Python {platform.python_version()}, hfstream {rev or '?'}, load average {load}")


# --------------------------------------------------------------------------- main

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    p.add_argument("--scenario", nargs="+", choices=sorted(SCENARIOS), help="default: a b c (--quick: a b)")
    p.add_argument("--outtypes", nargs="+", default=["q8_0", "f16"], help="default: q8_0 f16")
    p.add_argument("--skip-reference", action="store_true", help="run hfstream only")
    p.add_argument("--quick", action="store_true", help="small models (27 MB, 158 MB) for a fast smoke run")
    p.add_argument("--llama-cpp-dir", help="llama.cpp source tree with convert_hf_to_gguf.py (default: "
                   f"$LLAMA_CPP_DIR, else {DEFAULT_LLAMA_CPP_DIR})")
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="where the benchmark models are built")
    p.add_argument("--hfstream-args", default="", help="extra hfstream convert options, e.g. '--connections 4'")
    p.add_argument("--json", type=Path, help="also write the results to this file")
    p.add_argument("--py-spy", type=Path, metavar="DIR",
                   help="profile each hfstream run with py-spy (raw collapsed stacks in DIR; times are perturbed)")
    p.add_argument("--work-dir", type=Path, help="where outputs are written (default: a temp dir)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scenarios = [SCENARIOS[k] for k in (args.scenario or (["a", "b"] if args.quick else ["a", "b", "c"]))]
    llama_cpp_dir = None
    if not args.skip_reference:
        llama_cpp_dir = find_llama_cpp_dir(args.llama_cpp_dir)
        why = "convert_hf_to_gguf.py not found (see bench/README.md)" if llama_cpp_dir is None else reference_missing()
        if why:
            print(f"reference: skipped, {why}", flush=True)
            llama_cpp_dir = None
    if args.py_spy and shutil.which("py-spy") is None:
        print("--py-spy: py-spy is not installed (pip install py-spy)", file=sys.stderr)
        return 2

    byte_compile_hfstream()
    print(f"bench: {describe_machine()}", flush=True)
    models: dict[str, BuiltModel] = {}
    for s in scenarios:
        name = s.quick_model if args.quick else s.model
        if name not in models:
            t0 = time.monotonic()
            models[name] = build_model(name, args.root)
            how = "cached" if models[name].skipped else f"built in {time.monotonic() - t0:.1f} s"
            print(f"model {models[name].repo_id}: {models[name].weight_bytes / MB:.1f} MB of safetensors ({how})",
                  flush=True)

    results: list[Result] = []
    work = Path(tempfile.mkdtemp(prefix="hfstream-bench-", dir=args.work_dir))
    try:
        with FixtureHub(args.root) as hub:
            for m in models.values():
                warm_hub(hub, m)
            for s in scenarios:
                model = models[s.quick_model if args.quick else s.model]
                tools = [t for t in s.tools if t == "hfstream" or llama_cpp_dir is not None]
                for outtype in args.outtypes:
                    for tool in tools:
                        r = run_one(hub, s, tool, model, outtype, work, llama_cpp_dir,
                                    shlex.split(args.hfstream_args), args.py_spy if tool == "hfstream" else None)
                        results.append(r)
                        print(f"[{s.key}: {s.title}] " + "  ".join(
                            f"{c}={v}" for c, v in zip(COLUMNS[1:], row(r)[1:])), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print()
    print(f"end: load average {', '.join(f'{x:.1f}' for x in os.getloadavg())} (other processes on the cores "
          "skew wall times; cpu s is the converter's own user+sys time)")
    for s in scenarios:
        print(f"  {s.key}: {s.title} ({models[s.quick_model if args.quick else s.model].repo_id})")
    print()
    print(table(results))
    lines = ratios(results)
    if lines:
        print()
        print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps({"machine": describe_machine(), "results": [
            {**asdict(r), "link_utilization": r.link_utilization, "wall_over_ideal": r.wall_over_ideal}
            for r in results]}, indent=2) + "\n")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
