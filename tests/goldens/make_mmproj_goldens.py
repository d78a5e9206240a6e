"""Regenerate the vision projector goldens in ``tests/goldens/mmproj/`` from llama.cpp's reference converter.

    python -m tests.goldens.make_mmproj_goldens [--only NAME ...] [--outtypes f16 q8_0] [--force] [--no-greedy]

For every fixture whose spec says ``"mmproj": true`` and every outtype, the commit snapshot is copied
to ``{tmp}/{repo name}/`` and ``convert_hf_to_gguf.py DIR --mmproj --outtype T --outfile OUTDIR/``
runs; its output is digested into ``mmproj/{name}.{outtype}.json`` (``digest.py``), with the values
of the float32 tensors the reference computes with torch's vector math (``float32_values``, as
uint32 bit patterns: their last bit depends on the CPU, see ``hfstream/arch/gemma4_vision.py``). With
llama-cpp-python installed, the reference's text model of the same outtype is converted too and the
pair runs in llama.cpp's multimodal runtime on the test image (``tests/llamacpp.py``): the 8 token
ids it greedy-decodes are the golden's ``greedy``.

Pixtral (Mistral 3): the reference's projector of a Hugging Face checkpoint lacks the ``[IMG_BREAK]``
embedding row (``v.token_embd.img_break``) that llama.cpp's multimodal runtime requires, so the pair
does not load (``reference_loads_in_mtmd: false``). hfstream appends that row; the golden records
what it must be (``appended``: the F32 row of the source text embedding at the tokenizer's
``[IMG_BREAK]`` id, read here with safetensors and torch, placed after the reference's last tensor),
and ``greedy`` comes from the reference's file with that row appended to it (``append_tensor``).

The reference converter needs torch and transformers (see ``tests/goldens/generate.py``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from fixtures.build import DEFAULT_ROOT, build, load_specs  # noqa: E402
from tests import llamacpp  # noqa: E402
from tests.goldens.digest import digest_gguf  # noqa: E402
from tests.goldens.generate import (HOW_TO_GET, REFERENCE_NAME, copy_snapshot, find_llama_cpp_dir,  # noqa: E402
                                    reference_sha256, run_reference, write_json)

GOLDENS_DIR = Path(__file__).resolve().parent / "mmproj"
OUTTYPES = ("f32", "f16", "bf16", "q8_0")
#: the text before the image in the multimodal greedy check (the image marker follows it)
GREEDY_PROMPT = "Look: "
GREEDY_TOKENS = 8
#: GGUF tensor names (parts) whose float32 values the reference gets from torch's softplus
CPU_DEPENDENT = ("per_dim_scale", "per_dim_k_scale")


def float32_bits(path: Path, parts: tuple[str, ...] = CPU_DEPENDENT) -> dict[str, list[int]]:
    """The uint32 bit patterns of every F32 tensor of ``path`` whose name contains one of ``parts``."""
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFReader

    return {t.name: np.asarray(t.data).view(np.uint32).ravel().tolist() for t in GGUFReader(path).tensors
            if t.tensor_type == GGMLQuantizationType.F32 and any(p in t.name for p in parts)}


IMG_BREAK_TENSOR = "v.token_embd.img_break"


def append_tensor(src: Path, dest: Path, name: str, values) -> dict:
    """Copy the GGUF ``src`` to ``dest`` with one more F32 tensor ``name`` after its last one: the keys,
    the other tensor infos and their data (so their relative offsets) unchanged. Returns the new
    tensor's digest entry (as ``digest.py`` lists tensors)."""
    import hashlib
    import struct

    import numpy as np
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    from tests.goldens.digest import _ARRAY, _Cursor

    blob = memoryview(src.read_bytes())
    cur = _Cursor(blob)
    cur.pos = 8  # after the magic and the version
    n_tensors, n_kv = cur.unpack("<Q"), cur.unpack("<Q")
    alignment = 32
    for _ in range(n_kv):
        key = cur.raw_string().decode()
        vtype = cur.unpack("<I")
        if vtype == _ARRAY:
            cur.array()
        elif key == "general.alignment":
            alignment = cur.value(vtype)
        else:
            cur.value(vtype)
    data_end = 0
    for _ in range(n_tensors):
        cur.raw_string()
        dims = [cur.unpack("<Q") for _ in range(cur.unpack("<I"))]
        qtype, offset = cur.unpack("<I"), cur.unpack("<Q")
        block, size = GGML_QUANT_SIZES[GGMLQuantizationType(qtype)]
        n = 1
        for d in dims:
            n *= d
        data_end = max(data_end, offset + n // block * size)
    infos_end = cur.pos
    data_start = -(-infos_end // alignment) * alignment
    row = np.ascontiguousarray(values, dtype="<f4")
    offset = -(-data_end // alignment) * alignment
    info = struct.pack("<Q", len(name.encode())) + name.encode() + struct.pack("<IQIQ", 1, row.size, 0, offset)
    header = bytes(blob[:8]) + struct.pack("<QQ", n_tensors + 1, n_kv) + bytes(blob[24:infos_end]) + info
    header += b"\0" * (-len(header) % alignment)
    data = bytes(blob[data_start:data_start + data_end])
    data += b"\0" * (offset - data_end) + row.tobytes()
    dest.write_bytes(header + data + b"\0" * (-len(data) % alignment))
    return {"name": name, "shape": [int(row.size)], "type": "F32", "offset": offset, "nbytes": row.nbytes,
            "sha256": hashlib.sha256(row.tobytes()).hexdigest()}


def img_break_row(model_dir: Path):
    """The F32 row of the text embedding at the tokenizer's ``[IMG_BREAK]`` id, and where it is from."""
    from safetensors import safe_open

    config = json.loads((model_dir / "tokenizer_config.json").read_text())
    token = next(int(i) for i, e in config["added_tokens_decoder"].items() if e["content"] == "[IMG_BREAK]")
    for shard in sorted(model_dir.glob("*.safetensors")):
        with safe_open(shard, "pt") as f:
            for key in f.keys():
                if key.endswith("language_model.model.embed_tokens.weight"):
                    return f.get_tensor(key)[token].float().numpy(), f"{key}[{token}]"
    raise RuntimeError(f"{model_dir}: no text embedding")


def make_golden(name: str, spec: dict, snapshot: Path, commit: str, outtype: str, llama_cpp_dir: Path,
                ref_hash: str, work: Path, with_greedy: bool) -> dict:
    job = work / f"{name}.{outtype}"
    model_dir = copy_snapshot(snapshot, job, name)
    mmproj = run_reference(model_dir, outtype, llama_cpp_dir, job / "mmproj", ("--mmproj",))
    golden = {"repo": spec["repo"], "revision": "main", "commit": commit, "outtype": outtype,
              "reference": REFERENCE_NAME + " --mmproj", "reference_sha256": ref_hash,
              "default_name": mmproj.name, **digest_gguf(mmproj)}
    if values := float32_bits(mmproj):
        golden["float32_values"] = values
    completed = mmproj
    kv = {e[0]: e[2] for e in golden["kv"]}
    if kv.get("clip.projector_type") == "pixtral" and IMG_BREAK_TENSOR not in {t["name"] for t in golden["tensors"]}:
        values, origin = img_break_row(model_dir)
        completed = job / "completed" / mmproj.name
        completed.parent.mkdir()
        golden["appended"] = [{**append_tensor(mmproj, completed, IMG_BREAK_TENSOR, values), "from": origin}]
    if with_greedy:
        text = run_reference(model_dir, outtype, llama_cpp_dir, job / "text")
        golden["greedy_text_outtype"] = outtype
        golden["greedy_prompt"] = GREEDY_PROMPT
        golden["greedy"] = llamacpp.mtmd_greedy_tokens(text, completed, GREEDY_PROMPT, GREEDY_TOKENS)
        if completed is not mmproj:  # (after the greedy run: once a load failed, mtmd gave NaN logits once)
            try:
                llamacpp.mtmd_greedy_tokens(text, mmproj, GREEDY_PROMPT, 1)
                golden["reference_loads_in_mtmd"] = True
            except RuntimeError:
                golden["reference_loads_in_mtmd"] = False
    shutil.rmtree(job, ignore_errors=True)
    return golden


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.goldens.make_mmproj_goldens",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--llama-cpp-dir")
    parser.add_argument("--only", nargs="+", metavar="NAME")
    parser.add_argument("--outtypes", nargs="+", default=list(OUTTYPES), choices=OUTTYPES)
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--no-greedy", action="store_true")
    args = parser.parse_args(argv)
    llama_cpp_dir = find_llama_cpp_dir(args.llama_cpp_dir)
    if llama_cpp_dir is None:
        print(f"make_mmproj_goldens: the reference converter is not there; {HOW_TO_GET}", file=sys.stderr)
        return 2
    with_greedy = not args.no_greedy and llamacpp.available()
    ref_hash = reference_sha256(llama_cpp_dir)
    specs = {n: s for n, s in load_specs().items() if s.get("mmproj") and (not args.only or n in args.only)}
    built = build(DEFAULT_ROOT, only=sorted(specs))
    GOLDENS_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hfs-mmproj-goldens-") as tmp:
        for name, spec in specs.items():
            commit = built[name].refs["main"]
            snapshot = built[name].path / "commits" / commit
            for outtype in args.outtypes:
                path = GOLDENS_DIR / f"{name}.{outtype}.json"
                if not args.force and path.is_file():
                    old = json.loads(path.read_text())
                    if old.get("commit") == commit and old.get("reference_sha256") == ref_hash \
                            and ("greedy" in old or not with_greedy):
                        print(f"up to date  {path.relative_to(REPO_ROOT)}")
                        continue
                golden = make_golden(name, spec, snapshot, commit, outtype, llama_cpp_dir, ref_hash, Path(tmp),
                                     with_greedy)
                write_json(path, golden)
                print(f"wrote       {path.relative_to(REPO_ROOT)} <- {golden['default_name']} "
                      f"greedy={golden.get('greedy')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
