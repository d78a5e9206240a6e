"""Regenerate the K-quant goldens in ``tests/goldens/kquant/`` from llama.cpp's own tools.

    python -m tests.goldens.make_kquant_goldens [--quantize BIN] [--llama-cpp-dir DIR]
                                                [--only MODEL ...] [--no-greedy] [-j N]

The reference for every llama-quantize type (``--outtype q4_k_m`` and the rest, see
``hfstream/mixes.py``) is what ``llama-quantize`` writes from the reference converter's F32 output:

1. each fixture model in ``MODELS`` is built (``fixtures/build.py``), copied to ``{tmp}/{name}/``
   and converted with ``convert_hf_to_gguf.py --outtype f32`` (as ``tests/goldens/generate.py``);
2. a synthetic importance matrix is written for it in both formats
   (``kquant/imatrix/{name}.imatrix.gguf`` and ``.dat``, committed; see ``imatrix_fixture.py``);
3. for every type, ``llama-quantize [OPTIONS] f32.gguf out.gguf TYPE 2`` runs without and with the
   GGUF imatrix (and for a few cases with type overrides); it runs in ``kquant/imatrix/`` with the
   imatrix named relative to it, so ``quantize.imatrix.file`` is the bare file name (the tests run
   hfstream the same way). A type that needs an imatrix fails without one: the golden records that;
4. the .dat imatrix must give the very same tensors as the GGUF one (checked here for one type per
   model), and ``llama_cpp.llama_model_quantize`` (llama-cpp-python's binding of the same library
   function) must write the very same file as the tool for q4_k_m (checked here);
5. every output is digested (``digest.py``) into one compact file per model,
   ``kquant/{name}.json``: the keys common to all outputs once, the tensor names and shapes once in
   llama-quantize's order, and per case the tail keys, the types and a 64-bit prefix of each
   tensor's sha256; with llama-cpp-python installed, 8 tokens llama.cpp greedy-decodes too (an
   encoder's embeddings of ``generate.EMBEDDING_TEXTS`` instead, as in ``generate.py``).

Getting ``llama-quantize`` (a few minutes on 2 cores)::

    L=/tmp/sdist/llama_cpp_python-0.3.36/vendor/llama.cpp   # see tests/goldens/generate.py
    cmake -B /tmp/lq -S $L -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DLLAMA_CURL=OFF \\
          -DLLAMA_OPENSSL=OFF -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \\
          -DLLAMA_BUILD_SERVER=OFF
    cmake --build /tmp/lq --target llama-quantize -j2       # -> /tmp/lq/bin/llama-quantize

The reference converter also needs torch and transformers (see ``tests/goldens/generate.py``).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import re
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
from tests.goldens import imatrix_fixture  # noqa: E402
from tests.goldens.digest import digest_gguf  # noqa: E402
from tests.goldens.generate import (EMBEDDING_TEXTS, copy_snapshot, find_llama_cpp_dir, greedy_prompt,  # noqa: E402
                                    reference_sha256, run_reference)

KQUANT_DIR = Path(__file__).resolve().parent / "kquant"
IMATRIX_DIR = KQUANT_DIR / "imatrix"
DEFAULT_QUANTIZE = Path("/tmp/lq/bin/llama-quantize")
REFERENCE_NAME = ("llama.cpp convert_hf_to_gguf.py --outtype f32, then llama-quantize, "
                  "both from the llama-cpp-python 0.3.36 sdist")
SHA_HEX = 16
GREEDY_TOKENS = 8
TAIL_KEYS = ("general.quantization_version", "general.file_type")

#: fixture models: rows that are multiples of 256 (the K and IQ types are used) and 64-wide ones,
#: where every 256-block type falls back (tensor_type_fallback), among them MoE families whose experts
#: arrive in other layouts (one tensor per expert, GraniteMoE's fused gate/up, ERNIE's dense first layer)
MODELS = ("tiny-llama-k", "tiny-qwen3-k", "tiny-mixtral-k", "tiny-llama-spm", "tiny-mixtral", "tiny-gpt-oss-bf16",
          "tiny-deepseek-v3-k", "tiny-deepseek-v2-lite", "tiny-deepseek-v3", "tiny-gemma4", "tiny-gemma3n",
          "tiny-olmoe", "tiny-granite-moe", "tiny-ernie4_5-moe", "tiny-qwen3-next", "tiny-qwen35-moe-vlm",
          "tiny-nemotron-h-k", "tiny-granite4-k", "tiny-lfm2-moe-k", "tiny-phimoe",
          "tiny-glm4-moe", "tiny-minimax-m2", "tiny-llama4",
          "tiny-bert", "tiny-xlm-roberta", "tiny-embeddinggemma", "tiny-modernbert",
          "tiny-deepseek-v32")

#: models whose goldens cover a few types only (a big vocabulary makes every case slow, and 64-wide
#: rows make the 256-block types fall back as tiny-llama-spm's and tiny-mixtral's do, which cover
#: every type; the hybrids check the mix's rules on Mamba-2, short-convolution and expert tensors);
#: the golden lists them
SELECTED_TYPES: dict[str, tuple[str, ...]] = {
    "tiny-gpt-oss-bf16": ("q4_k_m", "q6_k"),
    "tiny-deepseek-v3-k": ("q4_k_m", "q6_k"),
    "tiny-deepseek-v2-lite": ("q4_k_m", "q6_k"),
    "tiny-deepseek-v3": ("q4_k_m", "q6_k"),
    "tiny-olmoe": ("q4_k_m",),
    "tiny-granite-moe": ("q4_k_m",),
    "tiny-ernie4_5-moe": ("q4_k_m",),
    "tiny-nemotron-h-k": ("q4_k_m", "q6_k"),
    "tiny-granite4-k": ("q4_k_m", "q6_k"),
    "tiny-lfm2-moe-k": ("q4_k_m", "q6_k"),
    "tiny-phimoe": ("q4_k_m", "q6_k"),
    "tiny-glm4-moe": ("q4_k_m", "q6_k"),
    "tiny-minimax-m2": ("q4_k_m", "q6_k"),
    "tiny-llama4": ("q4_k_m", "q6_k"),
    # encoders (embedding models): no output tensor, token types and position tables, fused qkv
    "tiny-bert": ("q4_k_m", "q6_k"),
    "tiny-xlm-roberta": ("q4_k_m", "q6_k"),
    "tiny-embeddinggemma": ("q4_k_m", "q6_k"),
    "tiny-modernbert": ("q4_k_m", "q6_k"),
    "tiny-deepseek-v32": ("q4_k_m", "q6_k"),
}

#: llama-quantize's names for hfstream's mixes (as its QUANT_OPTIONS spell them)
def mix_names() -> list[str]:
    from hfstream.quant import MIXES

    return list(MIXES)


#: Extra cases with type overrides: case id -> (type, use the imatrix, llama-quantize options).
#: The options are spelled as hfstream takes them too.
OVERRIDES: dict[str, dict[str, tuple[str, bool, list[str]]]] = {
    "tiny-llama-k": {
        "q4_k_m+overrides": ("q4_k_m", False, [
            "--tensor-type", "attn_v=q8_0", "--tensor-type", r"blk\.1[0-9]\.ffn_down=iq4_nl",
            "--tensor-type", "ffn_down=q5_k", "--output-tensor-type", "q5_k", "--token-embedding-type", "q3_k"]),
        "iq2_xxs+imatrix+overrides": ("iq2_xxs", True, [
            "--tensor-type", "ATTN_Q=Q5_1", "--tensor-type", r"blk\.(0|15)\.ffn_(up|gate)=f16"]),
    },
    "tiny-qwen3-k": {
        "q3_k_m+overrides": ("q3_k_m", False, ["--output-tensor-type", "q8_0", "--tensor-type", "attn_k=bf16"]),
    },
    "tiny-mixtral-k": {
        "q4_k_s+imatrix+overrides": ("q4_k_s", True, ["--tensor-type", "ffn_down_exps=iq3_s",
                                                       "--token-embedding-type", "q6_k"]),
    },
    "tiny-llama-spm": {
        "q4_k_m+overrides": ("q4_k_m", False, ["--tensor-type", "ffn_up=q2_k", "--tensor-type", "attn=iq2_s",
                                               "--output-tensor-type", "q4_0"]),
    },
}


def case_ids(model: str) -> list[tuple[str, str, bool, list[str]]]:
    """(case id, type, imatrix, extra options) for every case of a model."""
    out = []
    for name in SELECTED_TYPES.get(model) or mix_names():
        out.append((name, name, False, []))
        out.append((f"{name}+imatrix", name, True, []))
    for cid, (t, im, opts) in OVERRIDES.get(model, {}).items():
        out.append((cid, t, im, list(opts)))
    return out


def imatrix_names(model: str) -> tuple[str, str]:
    return f"{model}.imatrix.gguf", f"{model}.imatrix.dat"


def find_quantize(explicit: str | None) -> Path | None:
    for candidate in (explicit, os.environ.get("LLAMA_QUANTIZE"), DEFAULT_QUANTIZE):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def quantize_source_sha256(llama_cpp_dir: Path) -> str:
    """A hash of the C/C++ sources that decide llama-quantize's output."""
    h = hashlib.sha256()
    for rel in ("src/llama-quant.cpp", "tools/quantize/quantize.cpp", "common/imatrix-loader.cpp",
                "ggml/src/ggml-quants.c", "ggml/src/ggml.c", "ggml/src/gguf.cpp"):
        h.update(rel.encode() + b"\0" + hashlib.sha256((llama_cpp_dir / rel).read_bytes()).digest())
    return h.hexdigest()


def run_quantize(binary: Path, f32: Path, out: Path, qtype: str, options: list[str], cwd: Path) -> tuple[bool, str]:
    cmd = [str(binary), *options, str(f32), str(out), qtype.upper(), "2"]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-12:])
    return proc.returncode == 0 and out.is_file(), tail


def quantize_with_library(f32: Path, out: Path, qtype: str) -> None:
    """The same through llama-cpp-python's ``llama_model_quantize`` (no options)."""
    import ctypes

    import llama_cpp
    from gguf import LlamaFileType

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(LlamaFileType[f"MOSTLY_{qtype.upper()}"])
    params.nthread = 2
    rc = llama_cpp.llama_model_quantize(str(f32).encode(), str(out).encode(), ctypes.byref(params))
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize failed ({rc}) for {qtype}")


def short(digest: dict) -> list[str]:
    return [t["sha256"][:SHA_HEX] for t in digest["tensors"]]


def compact_case(base: dict, digest: dict) -> dict:
    """The per-case part of a digest, checked against the model's common part."""
    kv = digest["kv"]
    n = len(base["kv"])
    if kv[:n] != base["kv"]:
        raise RuntimeError("the quantized file's keys do not start with the f32 file's keys minus the tail")
    names = [[t["name"], t["shape"]] for t in digest["tensors"]]
    if names != base["tensors"]:
        raise RuntimeError("tensor order or shapes differ between cases")
    return {"kv_tail": kv[n:], "types": [t["type"] for t in digest["tensors"]], "sha": short(digest)}


def make_model_golden(model: str, spec: dict, snapshot: Path, commit: str, llama_cpp_dir: Path, binary: Path,
                      ref_hash: str, work: Path, with_greedy: bool, jobs: int) -> dict:
    job = work / model
    model_dir = copy_snapshot(snapshot, job, model)
    f32 = run_reference(model_dir, "f32", llama_cpp_dir, job / "f32", tuple(spec.get("reference_options", ())))
    f32_digest = digest_gguf(f32)

    # the synthetic imatrix, from the f32 file's tensor list
    weights = [(t["name"], t["shape"]) for t in f32_digest["tensors"]]
    entries = imatrix_fixture.make_entries(weights, seed=model)
    IMATRIX_DIR.mkdir(parents=True, exist_ok=True)
    gguf_name, dat_name = imatrix_names(model)
    imatrix_fixture.write_gguf(IMATRIX_DIR / gguf_name, entries)
    imatrix_fixture.write_dat(IMATRIX_DIR / dat_name, entries)

    def one(cid: str, qtype: str, im: bool, options: list[str], imatrix_file: str = gguf_name):
        out = job / "q" / f"{cid}.gguf"
        out.parent.mkdir(parents=True, exist_ok=True)
        opts = (["--imatrix", imatrix_file] if im else []) + options
        ok, log = run_quantize(binary, f32, out, qtype, opts, IMATRIX_DIR)
        if not ok:
            return cid, qtype, opts, None, log
        d = digest_gguf(out)
        greedy = None  # an encoder's: its embeddings of the goldens' texts
        if with_greedy and spec.get("embedding"):
            greedy = llamacpp.embeddings(out, list(EMBEDDING_TEXTS))
        elif with_greedy:
            greedy = llamacpp.greedy_tokens(out, greedy_prompt(d), GREEDY_TOKENS)
        out.unlink()
        return cid, qtype, opts, (d, greedy), log

    cases = case_ids(model)
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = list(pool.map(lambda c: one(*c), cases))

    first_ok = next(r for r in results if r[3] is not None)
    base_digest = first_ok[3][0]
    base_kv = [e for e in base_digest["kv"] if e[0] not in TAIL_KEYS and not e[0].startswith("quantize.")]
    base = {"kv": base_kv, "tensors": [[t["name"], t["shape"]] for t in base_digest["tensors"]]}
    f32_kv = [e for e in f32_digest["kv"] if e[0] not in TAIL_KEYS]
    if f32_kv != base_kv:
        raise RuntimeError(f"{model}: llama-quantize changed keys other than {TAIL_KEYS}")

    golden_cases: dict[str, dict] = {}
    for cid, qtype, opts, result, log in results:
        entry: dict = {"type": qtype, "options": opts}
        if result is None:
            reason = re.search(r"failed to quantize: (.*imatrix.*)", log)
            if reason is None:
                raise RuntimeError(f"{model} {cid}: llama-quantize failed for another reason than an imatrix:\n{log}")
            entry["error"] = reason.group(1).strip()
        else:
            d, greedy = result
            entry.update(compact_case(base, d))
            if greedy is not None:
                entry["embeddings" if spec.get("embedding") else "greedy"] = greedy
        golden_cases[cid] = entry

    # the legacy .dat gives the same tensors as the GGUF imatrix
    check_type = "q4_k_m"
    _, _, _, res_dat, log = one("dat-check", check_type, True, [], imatrix_file=dat_name)
    if res_dat is None:
        raise RuntimeError(f"{model}: llama-quantize failed with the .dat imatrix:\n{log}")
    if short(res_dat[0]) != golden_cases[f"{check_type}+imatrix"]["sha"]:
        raise RuntimeError(f"{model}: the .dat and .gguf imatrices give different tensors")
    # llama-cpp-python's llama_model_quantize writes the same file as the tool
    lib_out = job / "lib-q4_k_m.gguf"
    quantize_with_library(f32, lib_out, check_type)
    if short(digest_gguf(lib_out)) != golden_cases[check_type]["sha"]:
        raise RuntimeError(f"{model}: llama_cpp.llama_model_quantize and llama-quantize disagree")

    golden = {
        "model": model,
        "repo": spec["repo"],
        "commit": commit,
        "reference": REFERENCE_NAME,
        "reference_sha256": ref_hash,
        "f32_name": f32.name,
        "imatrix": {"gguf": gguf_name, "dat": dat_name,
                    "sha256": {n: hashlib.sha256((IMATRIX_DIR / n).read_bytes()).hexdigest()
                               for n in (gguf_name, dat_name)},
                    "dat_checked_with": check_type},
        "library_checked_with": check_type,
        "sha_hex_digits": SHA_HEX,
        **({"selected_types": list(SELECTED_TYPES[model])} if model in SELECTED_TYPES else {}),
        **base,
        "cases": golden_cases,
    }
    if with_greedy and spec.get("embedding"):
        golden["embedding_texts"] = list(EMBEDDING_TEXTS)
    elif with_greedy:
        golden["greedy_prompt"] = greedy_prompt(base_digest)
    shutil.rmtree(job, ignore_errors=True)
    return golden


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.goldens.make_kquant_goldens",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--quantize", help=f"llama-quantize binary (env LLAMA_QUANTIZE; default {DEFAULT_QUANTIZE})")
    parser.add_argument("--llama-cpp-dir", help="llama.cpp tree with convert_hf_to_gguf.py (env LLAMA_CPP_DIR)")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="fixture repo tree (built if needed)")
    parser.add_argument("--only", nargs="+", metavar="MODEL", choices=MODELS, help="only these models")
    parser.add_argument("--no-greedy", action="store_true", help="do not run llama.cpp for greedy tokens")
    parser.add_argument("-j", "--jobs", type=int, default=1, help="llama-quantize runs at once (each uses 2 threads)")
    args = parser.parse_args(argv)

    llama_cpp_dir = find_llama_cpp_dir(args.llama_cpp_dir)
    binary = find_quantize(args.quantize)
    if llama_cpp_dir is None or binary is None:
        print("make_kquant_goldens: needs the llama.cpp sources and a llama-quantize binary; see the module "
              "docstring (python -m pydoc tests.goldens.make_kquant_goldens)", file=sys.stderr)
        return 2
    with_greedy = not args.no_greedy and llamacpp.available()
    ref_hash = hashlib.sha256((reference_sha256(llama_cpp_dir) + quantize_source_sha256(llama_cpp_dir)).encode()).hexdigest()
    specs = load_specs()
    models = list(args.only or MODELS)
    built = build(args.root, only=models)
    KQUANT_DIR.mkdir(parents=True, exist_ok=True)
    failures = 0
    with tempfile.TemporaryDirectory(prefix="hfs-kquant-") as tmp:
        for model in models:
            start = time.monotonic()
            commit = built[model].refs["main"]
            snapshot = built[model].path / "commits" / commit
            try:
                golden = make_model_golden(model, specs[model], snapshot, commit, llama_cpp_dir, binary, ref_hash,
                                           Path(tmp), with_greedy, args.jobs)
            except Exception as exc:  # report, go on with the next model, exit non-zero
                failures += 1
                print(f"FAILED  {model}: {exc}", file=sys.stderr)
                continue
            path = KQUANT_DIR / f"{model}.json"
            path.write_text(json.dumps(golden, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
            n_err = sum(1 for c in golden["cases"].values() if "error" in c)
            print(f"wrote   {path.relative_to(REPO_ROOT)}: {len(golden['cases'])} cases "
                  f"({n_err} refused without an imatrix), {time.monotonic() - start:.0f}s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
