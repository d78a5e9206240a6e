"""Regenerate the golden files in ``tests/goldens/models/`` from llama.cpp's reference converter.

    python -m tests.goldens.generate [--llama-cpp-dir DIR] [--only NAME ...] [--outtypes f16 q8_0] [--force]

For every fixture model repo (not the error cases) and every ref of it (``main``, and ``v1`` for
two-commits), the commit snapshot is copied to ``{tmp}/{repo name}/`` (what
``hf download org/name --local-dir name`` gives a user; the reference derives ``general.name`` from
the directory name and README) and ``convert_hf_to_gguf.py DIR --outtype T --outfile OUTDIR/`` runs
for each outtype, so the reference picks its default file name (with the spec's
``reference_options`` when it has some, recorded in the golden). The result is digested into
``models/{name}[@ref].{outtype}.json`` (see ``digest.py``); when ``llama_cpp`` imports, the 16
token ids llama.cpp greedy-decodes from a fixed prompt are added (``tests/llamacpp.py``), or for an
embedding model (spec ``"embedding": true``: an encoder has no LM head to decode with) the pooled
embeddings llama.cpp computes for a few fixed texts, or for a reranker (``"reranker": true`` too) the
scores of its rank pooling.

Goldens that are up to date (same commit, same reference source, greedy present or not
computable) are skipped; ``--force`` redoes them.

Getting the reference converter (it needs torch and transformers, golden time only)::

    pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d /tmp/sdist
    tar xzf /tmp/sdist/llama_cpp_python-0.3.36.tar.gz -C /tmp/sdist
    pip install torch==2.13.0 transformers    # CPU wheel
    # XLM-RoBERTa's vocab needs protobuf in the reference (sentencepiece_model_pb2); to keep it out of
    # the shared environment: pip install --target /tmp/pb protobuf, then run with PYTHONPATH=/tmp/pb
    # then pass --llama-cpp-dir /tmp/sdist/llama_cpp_python-0.3.36/vendor/llama.cpp
    # (or set LLAMA_CPP_DIR; that path is also the default)
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from fixtures.build import DEFAULT_ROOT, build, load_specs  # noqa: E402
from tests import llamacpp  # noqa: E402
from tests.goldens.digest import digest_gguf  # noqa: E402

GOLDENS_DIR = Path(__file__).resolve().parent / "models"
SHIM_DIR = Path(__file__).resolve().parent / "reference_shim"
DEFAULT_LLAMA_CPP_DIR = Path("/tmp/sdist/llama_cpp_python-0.3.36/vendor/llama.cpp")
REFERENCE_NAME = "llama.cpp convert_hf_to_gguf.py from the llama-cpp-python 0.3.36 sdist"
OUTTYPES = ("f32", "f16", "bf16", "q8_0", "auto")
GREEDY_PROMPT_TAIL = (100, 200, 300, 400)
GREEDY_TOKENS = 16
#: what an embedding model's goldens embed: words, punctuation, digits, case and an unknown word
EMBEDDING_TEXTS = ("Hello world", "The quick brown fox jumps over the lazy dog.", "hfstream 3.14 GGUF!")
HOW_TO_GET = (
    "get it with: pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d /tmp/sdist && "
    "tar xzf /tmp/sdist/llama_cpp_python-0.3.36.tar.gz -C /tmp/sdist; then pass --llama-cpp-dir "
    "/tmp/sdist/llama_cpp_python-0.3.36/vendor/llama.cpp or set LLAMA_CPP_DIR"
)


def find_llama_cpp_dir(explicit: str | Path | None = None) -> Path | None:
    """The llama.cpp source tree holding convert_hf_to_gguf.py: ``explicit``, else ``LLAMA_CPP_DIR``,
    else the default unpack location; None when none of them has the converter."""
    for candidate in (explicit, os.environ.get("LLAMA_CPP_DIR"), DEFAULT_LLAMA_CPP_DIR):
        if candidate and (Path(candidate) / "convert_hf_to_gguf.py").is_file():
            return Path(candidate)
    return None


def reference_sha256(llama_cpp_dir: Path) -> str:
    """A hash of the reference converter's Python source (converter, conversion/, gguf-py/gguf/)."""
    h = hashlib.sha256()
    files = [llama_cpp_dir / "convert_hf_to_gguf.py"]
    files += sorted((llama_cpp_dir / "conversion").rglob("*.py"))
    files += sorted((llama_cpp_dir / "gguf-py" / "gguf").rglob("*.py"))
    for path in files:
        h.update(str(path.relative_to(llama_cpp_dir)).encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def golden_name(name: str, ref: str, outtype: str) -> str:
    return f"{name}.{outtype}.json" if ref == "main" else f"{name}@{ref}.{outtype}.json"


def golden_targets(specs: dict, only: list[str] | None) -> list[tuple[str, str]]:
    """(repo name, ref) for every model fixture (error cases excluded), main first."""
    out = []
    for name, spec in specs.items():
        if spec.get("error_case") or (only and name not in only):
            continue
        refs = [r for c in spec["commits"] for r in c["refs"]]
        out += [(name, ref) for ref in sorted(refs, key=lambda r: (r != "main", r))]
    return out


def copy_snapshot(snapshot: Path, dest_parent: Path, name: str) -> Path:
    """Copy a commit snapshot to ``dest_parent/name`` (a fresh directory) and return it."""
    dest = dest_parent / name
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(snapshot, dest)
    return dest


def run_reference(model_dir: Path, outtype: str, llama_cpp_dir: Path, out_dir: Path,
                  extra_args: tuple[str, ...] = ()) -> Path:
    """Run the reference converter with ``--outfile out_dir/`` (an empty directory) and return the
    one GGUF it wrote under its default name. ``extra_args``: e.g. ``("--mmproj",)``, or a spec's
    ``reference_options``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if any(out_dir.iterdir()):
        raise RuntimeError(f"{out_dir} is not empty")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONHASHSEED="0")
    env.pop("NO_LOCAL_GGUF", None)  # the converter must use its own gguf-py
    # reference_shim/sitecustomize.py: DeepSeek-V3.2's add_bos_token, which transformers 5 drops
    env.update(HFSTREAM_REFERENCE_SHIM="1",
               PYTHONPATH=os.pathsep.join(filter(None, (str(SHIM_DIR), env.get("PYTHONPATH")))))
    cmd = [sys.executable, str(llama_cpp_dir / "convert_hf_to_gguf.py"), str(model_dir),
           "--outtype", outtype, "--outfile", str(out_dir) + os.sep, *extra_args]
    proc = subprocess.run(cmd, cwd=model_dir.parent, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise RuntimeError(f"reference converter failed ({proc.returncode}) on {model_dir} {outtype}:\n{tail}")
    produced = sorted(out_dir.glob("*.gguf"))
    if len(produced) != 1:
        raise RuntimeError(f"expected one GGUF in {out_dir}, found {[p.name for p in produced]}")
    return produced[0]


def greedy_prompt(digest: dict) -> list[int]:
    """The fixed prompt: the BOS id, then 100, 200, 300, 400 clipped to the vocab."""
    kv = {e[0]: e[2] for e in digest["kv"]}
    arch = kv["general.architecture"]
    n_vocab = kv.get(f"{arch}.vocab_size") or kv["tokenizer.ggml.tokens"]["len"]
    bos = kv.get("tokenizer.ggml.bos_token_id", 1)
    return [bos] + [min(t, n_vocab - 1) for t in GREEDY_PROMPT_TAIL]


def make_golden(name: str, ref: str, spec: dict, snapshot: Path, commit: str, outtype: str,
                llama_cpp_dir: Path, ref_hash: str, work: Path, with_greedy: bool) -> dict:
    """Convert one (repo, ref, outtype) with the reference and return its golden dict."""
    job = work / f"{name}@{ref}.{outtype}"
    model_dir = copy_snapshot(snapshot, job, name)
    options = spec.get("reference_options", [])
    gguf_path = run_reference(model_dir, outtype, llama_cpp_dir, job / "out", tuple(options))
    digest = digest_gguf(gguf_path)
    golden = {
        "repo": spec["repo"],
        "revision": ref,
        "commit": commit,
        "outtype": outtype,
        "reference": REFERENCE_NAME,
        "reference_sha256": ref_hash,
        **({"reference_options": options} if options else {}),
        "default_name": gguf_path.name,
        **digest,
    }
    if with_greedy and spec.get("embedding"):
        golden["embedding_texts"] = list(EMBEDDING_TEXTS)
        if spec.get("reranker"):
            golden["rank_scores"] = llamacpp.rank_scores(gguf_path, list(EMBEDDING_TEXTS))
        else:
            golden["embeddings"] = llamacpp.embeddings(gguf_path, list(EMBEDDING_TEXTS))
    elif with_greedy:
        prompt = greedy_prompt(digest)
        golden["greedy_prompt"] = prompt
        golden["greedy"] = llamacpp.greedy_tokens(gguf_path, prompt, GREEDY_TOKENS)  # one at a time
    shutil.rmtree(job, ignore_errors=True)
    return golden


def up_to_date(path: Path, commit: str, ref_hash: str, with_greedy: bool, options: list[str] | None = None) -> bool:
    if not path.is_file():
        return False
    old = json.loads(path.read_text())
    return (old.get("commit") == commit and old.get("reference_sha256") == ref_hash
            and old.get("reference_options", []) == (options or [])
            and ("greedy" in old or "embeddings" in old or "rank_scores" in old or not with_greedy))


def write_json(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.goldens.generate",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--llama-cpp-dir", help="llama.cpp tree with convert_hf_to_gguf.py (env LLAMA_CPP_DIR)")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="fixture repo tree (built if needed)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="only these fixture repos")
    parser.add_argument("--outtypes", nargs="+", default=list(OUTTYPES), choices=OUTTYPES)
    parser.add_argument("--force", action="store_true", help="regenerate goldens that look up to date")
    parser.add_argument("--no-greedy", action="store_true", help="do not run llama.cpp for greedy tokens")
    parser.add_argument("-j", "--jobs", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args(argv)

    llama_cpp_dir = find_llama_cpp_dir(args.llama_cpp_dir)
    if llama_cpp_dir is None:
        print(f"generate: the reference converter is not there; {HOW_TO_GET}", file=sys.stderr)
        return 2
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        print(f"generate: the reference converter needs torch and transformers ({exc}); "
              "pip install torch==2.13.0 transformers", file=sys.stderr)
        return 2
    with_greedy = not args.no_greedy and llamacpp.available()
    if not args.no_greedy and not with_greedy:
        print("generate: llama_cpp does not import; goldens get no 'greedy' (re-run once it does)")

    ref_hash = reference_sha256(llama_cpp_dir)
    print(f"reference: {llama_cpp_dir} (source sha256 {ref_hash[:16]})")
    specs = load_specs()
    targets = golden_targets(specs, args.only)
    built = build(args.root, only=sorted({n for n, _ in targets}))
    GOLDENS_DIR.mkdir(parents=True, exist_ok=True)

    jobs = []
    for name, ref in targets:
        commit = built[name].refs[ref]
        snapshot = built[name].path / "commits" / commit
        for outtype in args.outtypes:
            path = GOLDENS_DIR / golden_name(name, ref, outtype)
            if not args.force and up_to_date(path, commit, ref_hash, with_greedy,
                                             specs[name].get("reference_options")):
                print(f"up to date  {path.relative_to(REPO_ROOT)}")
                continue
            jobs.append((name, ref, commit, snapshot, outtype, path))

    failures = 0
    with tempfile.TemporaryDirectory(prefix="hfs-goldens-") as tmp, \
            concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        start = time.monotonic()
        futures = {
            pool.submit(make_golden, name, ref, specs[name], snapshot, commit, outtype,
                        llama_cpp_dir, ref_hash, Path(tmp), with_greedy): (name, ref, outtype, path)
            for name, ref, commit, snapshot, outtype, path in jobs
        }
        for fut in concurrent.futures.as_completed(futures):
            name, ref, outtype, path = futures[fut]
            try:
                golden = fut.result()
            except Exception as exc:  # report every failure, then exit non-zero
                failures += 1
                print(f"FAILED      {name}@{ref} {outtype}: {exc}", file=sys.stderr)
                continue
            write_json(path, golden)
            greedy = (f" greedy={golden['greedy']}" if "greedy" in golden
                      else f" embeddings[0][:3]={golden['embeddings'][0][:3]}" if "embeddings" in golden
                      else f" rank_scores={golden['rank_scores']}" if "rank_scores" in golden else "")
            print(f"wrote       {path.relative_to(REPO_ROOT)} ({path.stat().st_size} B) "
                  f"<- {golden['default_name']} {golden['size']} B{greedy}")
        print(f"{len(jobs) - failures} goldens written, {failures} failed, "
              f"{len(targets) * len(args.outtypes) - len(jobs)} up to date, {time.monotonic() - start:.0f}s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
