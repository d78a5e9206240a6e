"""Generate the benchmark models: deterministic bf16 Llamas in a repo tree the fixture Hub serves.

    python -m bench.make_model [--root bench/.cache/repos] [--model NAME ...] [--force]

Models (org ``hfs-bench``):

===================  =======  ===================================================================
name                 size     what it is
===================  =======  ===================================================================
``bench-llama``      1.50 GB  Llama 3.2 1B shape (hidden 2048, 32 heads, 8 KV heads, intermediate
                              8192, llama3 rope, tied embeddings, Llama 3 BPE tokenizer, vocab
                              128256) with 8 layers instead of 16; 4 shards. The 525 MB embedding
                              is bigger than hfstream's default memory budget.
``bench-big-embd``   2.26 GB  one 2 GiB tensor: embedding 262144 x 4096 (the Llama 3 tokenizer
                              padded to 262144 ids, as Gemma 3 sized vocabs are), 1 small layer.
``bench-quick``      27 MB    hidden 512, 4 layers, SentencePiece vocab 1000, 2 shards: smoke runs.
``bench-quick-big``  158 MB   one 134 MB embedding (vocab 32768 x 2048): the 2 GB case in small.
===================  =======  ===================================================================

Weights are those ``fixtures/build.py`` would make for the same seed and names (its
``tensor_seed``/``init_scale`` and PCG64 raw-stream mapping), but streamed: each tensor is cut
into segments generated in parallel worker processes (``PCG64.advance`` jumps to a segment's
start) and written with ``os.pwrite`` at their offsets, so memory stays at a few MB per worker
whatever the tensor size. A model is rebuilt only when its spec or this generator changes
(``.spec-hash``, as in ``fixtures/build.py``).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import inspect
import json
import multiprocessing
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from fixtures.build import (  # noqa: E402
    GITATTRIBUTES, decoder_tensors, init_scale, json_bytes, readme_bytes, shard_groups, tensor_seed,
    tokenizer_files, tokenizer_vocab_size,
)

DEFAULT_ROOT = Path(__file__).resolve().parent / ".cache" / "repos"
ORG = "hfs-bench"
#: values generated per numpy step (fits in cache: ~75 M values/s per core) and per worker task
CHUNK = 1 << 18
SEGMENT = 1 << 24


def _llama_config(**over: Any) -> dict:
    """A Llama 3.2 1B Instruct config.json, with ``over`` replacing keys."""
    cfg = {
        "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "head_dim": 64,
        "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 8192,
        "max_position_embeddings": 131072, "mlp_bias": False, "model_type": "llama",
        "num_attention_heads": 32, "num_hidden_layers": 16, "num_key_value_heads": 8, "pretraining_tp": 1,
        "rms_norm_eps": 1e-05,
        "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "rope_theta": 500000.0, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
        "transformers_version": "4.45.0", "use_cache": True, "vocab_size": 128256,
    }
    cfg.update(over)
    return cfg


_LLAMA3_GENERATION = {"bos_token_id": 128000, "do_sample": True, "eos_token_id": [128001, 128008, 128009],
                      "temperature": 0.6, "top_p": 0.9, "transformers_version": "4.45.0"}

MODELS: dict[str, dict[str, Any]] = {
    "bench-llama": {
        "seed": 7001, "tokenizer": "llama-bpe", "max_shard_size": 400_000_000, "shards": 4,
        "config": _llama_config(num_hidden_layers=8),
        "generation_config": _LLAMA3_GENERATION,
        "about": "Llama 3.2 1B shape with 8 layers (random weights): the hfstream benchmark model.",
    },
    "bench-big-embd": {
        "seed": 7002, "tokenizer": "llama-bpe", "max_shard_size": None, "shards": 1,
        "config": _llama_config(hidden_size=4096, head_dim=128, intermediate_size=1024, num_hidden_layers=1,
                                vocab_size=262144),
        "vocab_padded": True,
        "generation_config": _LLAMA3_GENERATION,
        "about": "One 2 GiB tensor (embedding 262144 x 4096, random weights): peak memory on a huge tensor.",
    },
    "bench-quick": {
        "seed": 7003, "tokenizer": "spm-tiny", "max_shard_size": 16_000_000, "shards": 2,
        "config": _llama_config(hidden_size=512, head_dim=64, num_attention_heads=8, num_key_value_heads=4,
                                intermediate_size=1536, num_hidden_layers=4, vocab_size=1000,
                                bos_token_id=1, eos_token_id=2, rope_scaling=None, rope_theta=10000.0,
                                tie_word_embeddings=False, max_position_embeddings=4096),
        "generation_config": {"bos_token_id": 1, "eos_token_id": 2, "transformers_version": "4.45.0"},
        "about": "A small Llama for smoke runs of the benchmark.",
    },
    "bench-quick-big": {
        "seed": 7004, "tokenizer": "spm-tiny", "max_shard_size": None, "shards": 1,
        "config": _llama_config(hidden_size=2048, head_dim=64, num_attention_heads=32, num_key_value_heads=8,
                                intermediate_size=512, num_hidden_layers=1, vocab_size=32768,
                                bos_token_id=1, eos_token_id=2, rope_scaling=None, rope_theta=10000.0,
                                max_position_embeddings=4096),
        "vocab_padded": True,
        "generation_config": {"bos_token_id": 1, "eos_token_id": 2, "transformers_version": "4.45.0"},
        "about": "One 134 MB embedding: the big-tensor scenario in small.",
    },
}


def repo_id(name: str) -> str:
    return f"{ORG}/{name}"


# --------------------------------------------------------------------------- weights

def tensor_segment(seed: int, name: str, shape: tuple[int, ...], start: int, count: int):
    """bf16 bytes of values ``[start, start + count)`` of a tensor, in chunks.

    The same values as ``fixtures.build.make_tensor`` then ``encode(..., "bf16")`` (checked by
    ``self_check``): ``center + half * (2 u - 1)`` in float64 from the top 53 bits of the PCG64 raw
    stream, cast to float32, rounded to bf16 nearest-even; done in place, 256K values at a time.
    """
    center, half = init_scale(name, shape)
    gen = np.random.PCG64(tensor_seed(seed, name))
    gen.advance(start)
    for off in range(0, count, CHUNK):
        raw = gen.random_raw(min(CHUNK, count - off))
        raw >>= np.uint64(11)
        v = raw.astype(np.float64)
        v *= 1.0 / (1 << 53)
        v *= 2.0
        v -= 1.0
        v *= half
        v += center
        bits = v.astype(np.float32).view(np.uint32)
        lsb = bits >> np.uint32(16)
        lsb &= np.uint32(1)
        bits += np.uint32(0x7FFF)  # finite floats: no uint32 overflow
        bits += lsb
        bits >>= np.uint32(16)
        yield bits.astype("<u2").tobytes()


def _write_segment(path: str, file_offset: int, seed: int, name: str, shape: tuple[int, ...], start: int,
                   count: int) -> int:
    fd = os.open(path, os.O_WRONLY)
    try:
        pos = file_offset
        for chunk in tensor_segment(seed, name, shape, start, count):
            os.pwrite(fd, chunk, pos)
            pos += len(chunk)
    finally:
        os.close(fd)
    return count


def self_check() -> None:
    """Segmented generation gives fixtures/build.py's bytes (raises AssertionError if not)."""
    from fixtures.build import encode, make_tensor

    for name, shape in (("model.layers.0.mlp.up_proj.weight", (33, 1000)), ("model.norm.weight", (77,))):
        want = encode(make_tensor(5, name, shape), "bf16")
        n = int(np.prod(shape))
        got = b"".join(c for a in range(0, n, 10_000)
                       for c in tensor_segment(5, name, shape, a, min(10_000, n - a)))
        assert got == want, name


# --------------------------------------------------------------------------- safetensors layout

def st_header(entries: list[tuple[str, tuple[int, ...]]]) -> tuple[bytes, dict[str, int]]:
    """The 8-byte length + header JSON of a bf16 safetensors file as ``fixtures/build.py`` writes
    it (tensors sorted by name, ``__metadata__`` first, compact, space-padded to 8), and each
    tensor's data offset relative to the end of the header."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offsets = {}
    pos = 0
    for name, shape in sorted(entries):
        nbytes = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [pos, pos + nbytes]}
        offsets[name] = pos
        pos += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw, offsets


# --------------------------------------------------------------------------- repo tree

@dataclass
class BuiltModel:
    repo_id: str
    path: Path  # the commit snapshot directory
    sha: str
    weight_bytes: int  # sum of the safetensors files' sizes
    skipped: bool


def spec_hash(name: str) -> str:
    spec = MODELS[name]
    h = hashlib.sha256(Path(__file__).read_bytes())
    for fn in (tensor_seed, init_scale, decoder_tensors, tokenizer_files, readme_bytes, json_bytes, shard_groups):
        h.update(inspect.getsource(fn).encode())
    from fixtures.layouts import layout_for

    h.update(inspect.getsource(layout_for(spec["config"])).encode())  # not the other families' layouts
    h.update(json.dumps(spec, sort_keys=True).encode())
    for path in sorted((REPO_ROOT / "fixtures" / "tokenizers" / spec["tokenizer"]).glob("*")):
        if path.is_file():
            h.update(path.name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def _readme(name: str) -> bytes:
    spec = MODELS[name]
    cfg = spec["config"]
    return readme_bytes({
        "front_matter": {"license": "llama3.2", "base_model": "meta-llama/Llama-3.2-1B-Instruct",
                         "tags": ["llama", "benchmark", "random-weights"], "language": ["en"],
                         "pipeline_tag": "text-generation", "library_name": "transformers"},
        "body": f"# {name}\n\n{spec['about']}\n\nGenerated by `python -m bench.make_model` (hfstream): "
                f"hidden {cfg['hidden_size']}, {cfg['num_hidden_layers']} layers, vocab {cfg['vocab_size']}, "
                "bf16. The weights are random: this model says nothing.\n",
    })


def existing(name: str, root: Path = DEFAULT_ROOT) -> BuiltModel | None:
    """The built model when it is up to date, else None."""
    repo_dir = root / ORG / name
    hash_file = repo_dir / ".spec-hash"
    if not hash_file.is_file() or hash_file.read_text().strip() != spec_hash(name):
        return None
    meta = json.loads((repo_dir / "repo.json").read_text())
    sha = meta["refs"]["main"]
    snap = repo_dir / "commits" / sha
    size = sum(p.stat().st_size for p in snap.glob("*.safetensors"))
    return BuiltModel(repo_id(name), snap, sha, size, skipped=True)


def build_model(name: str, root: Path = DEFAULT_ROOT, force: bool = False, workers: int | None = None) -> BuiltModel:
    """Build one benchmark model under ``root`` unless it is already built from the same spec."""
    if not force:
        done = existing(name, root)
        if done is not None:
            return done
    self_check()
    spec = MODELS[name]
    config = spec["config"]
    digest = spec_hash(name)
    org_dir = root / ORG
    org_dir.mkdir(parents=True, exist_ok=True)
    tmp = org_dir / f".{name}.building-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    snap = tmp / "snapshot"
    snap.mkdir(parents=True)

    small: dict[str, bytes] = {
        "config.json": json_bytes(config),
        "generation_config.json": json_bytes(spec["generation_config"]),
        "README.md": _readme(name),
        ".gitattributes": GITATTRIBUTES,
    }
    toks = tokenizer_files(spec["tokenizer"])
    n_tok = tokenizer_vocab_size(toks)
    if n_tok is not None and n_tok != config["vocab_size"] and not (spec.get("vocab_padded") and n_tok < config["vocab_size"]):
        raise ValueError(f"{name}: tokenizer defines {n_tok} ids, vocab_size is {config['vocab_size']}")
    small.update(toks)

    layout = decoder_tensors(config)
    shapes = dict(layout)
    groups = shard_groups([(n, int(np.prod(s)) * 2) for n, s in layout], spec["max_shard_size"])
    if len(groups) != spec["shards"]:
        raise ValueError(f"{name}: {len(groups)} shards, spec expects {spec['shards']}")
    tasks = []
    weight_map: dict[str, str] = {}
    file_names = []
    for i, group in enumerate(groups, 1):
        fname = "model.safetensors" if len(groups) == 1 else f"model-{i:05d}-of-{len(groups):05d}.safetensors"
        file_names.append(fname)
        head, offsets = st_header([(n, shapes[n]) for n in group])
        total = len(head) + sum(int(np.prod(shapes[n])) * 2 for n in group)
        path = snap / fname
        with open(path, "wb") as f:
            f.write(head)
            f.truncate(total)
        for n in group:
            weight_map[n] = fname
            count = int(np.prod(shapes[n]))
            for start in range(0, count, SEGMENT):
                tasks.append((str(path), len(head) + offsets[n] + start * 2, spec["seed"], n, shapes[n], start,
                              min(SEGMENT, count - start)))
    if len(groups) > 1:
        total_size = sum(int(np.prod(s)) * 2 for _, s in layout)
        small["model.safetensors.index.json"] = json_bytes(
            {"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))})
    for fname, data in small.items():
        (snap / fname).write_bytes(data)

    tasks.sort(key=lambda t: -t[6])  # biggest first: workers end together
    ctx = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1, mp_context=ctx) as pool:
        for fut in concurrent.futures.as_completed([pool.submit(_write_segment, *t) for t in tasks]):
            fut.result()

    # The commit id: sha1 over the spec hash and the file list (the content follows from the spec).
    h = hashlib.sha1(f"parent \nspec {digest}\n".encode())
    for fname in sorted(p.name for p in snap.iterdir()):
        h.update(f"{fname}\0{(snap / fname).stat().st_size}\n".encode())
    sha = h.hexdigest()
    (tmp / "commits").mkdir()
    snap.rename(tmp / "commits" / sha)
    (tmp / "repo.json").write_bytes(json_bytes({"refs": {"main": sha}, "gated": False, "private": False,
                                                "allowed_tokens": []}))
    (tmp / ".spec-hash").write_text(digest + "\n")
    repo_dir = org_dir / name
    old = org_dir / f".{name}.old-{os.getpid()}"
    if repo_dir.exists():
        repo_dir.rename(old)
    tmp.rename(repo_dir)
    shutil.rmtree(old, ignore_errors=True)
    snap = repo_dir / "commits" / sha
    size = sum((snap / f).stat().st_size for f in file_names)
    return BuiltModel(repo_id(name), snap, sha, size, skipped=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.make_model", description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="repo tree the fixture Hub serves")
    parser.add_argument("--model", nargs="+", choices=sorted(MODELS), default=["bench-llama", "bench-big-embd"])
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    args = parser.parse_args(argv)
    for name in args.model:
        t0 = time.monotonic()
        b = build_model(name, args.root, force=args.force)
        print(f"{'skipped' if b.skipped else 'built  '} {b.repo_id:26} {b.weight_bytes / 1e9:6.2f} GB  "
              f"commit {b.sha[:12]}  {time.monotonic() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
