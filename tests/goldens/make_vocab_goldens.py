"""Regenerate tests/goldens/vocab/*.json with the reference converter.

    python tests/goldens/make_vocab_goldens.py [--llama-cpp DIR] [case ...]

For every case below this builds a tiny model dir in a temp dir (a fixture tokenizer from
fixtures/tokenizers, the case's edits, a config.json and one small safetensors tensor), runs

    python convert_hf_to_gguf.py DIR --vocab-only --outfile X.gguf

in the llama.cpp tree vendored in the llama-cpp-python 0.3.36 sdist (see
fixtures/tokenizers/make_tokenizers.py for how to get it), and records every ``tokenizer.*``
key of the output, in order: its GGUF type, the sha256 of its exact on-disk record (key, type
and value bytes) and, for scalars and short arrays, the value itself.

Needs torch, safetensors and transformers (the reference needs them); the fast test suite only
reads the JSON files this writes. The case description is stored in each JSON so that
tests/test_vocab.py rebuilds exactly the same input files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures" / "tokenizers"
OUT = Path(__file__).resolve().parent / "vocab"
DEFAULT_LLAMA_CPP = Path("/tmp/sdist/llama_cpp_python-0.3.36/vendor/llama.cpp")

EXTRA_JINJA = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"

#: name -> (fixture dir, config.json extras, files to drop, files to add or replace)
#: A replaced/added JSON file is given as a Python object, text files as str.
CASES: dict[str, dict] = {
    "llama-bpe": {
        "fixture": "llama-bpe",
        "config": {"vocab_size": 128256, "bos_token_id": 128000, "eos_token_id": [128001, 128009]},
    },
    "gpt2": {
        "fixture": "gpt2",
        "config": {"vocab_size": 50257, "bos_token_id": 50256, "eos_token_id": 50256},
    },
    # added tokens that are not special: one that looks special, non-normalized ones that
    # encode/decode differently, a normalized one; an extra special token only in
    # tokenizer_config.json (AutoTokenizer adds it); vocab_size padding with [PAD] tokens
    "gpt2-added": {
        "fixture": "gpt2",
        "config": {"vocab_size": 50264, "bos_token_id": 50256, "eos_token_id": 50256},
        "tokenizer_json_added": [
            {"content": "<|im_start|>", "special": False, "normalized": False},
            {"content": "\u2581hello", "special": False, "normalized": False},
            {"content": "<tool>", "special": False, "normalized": True},
            {"content": " world!", "special": False, "normalized": False},
        ],
        "add": {"tokenizer_config.json:patch": {"additional_special_tokens": ["<extra_0>"]}},
    },
    "spm-tiny": {
        "fixture": "spm-tiny",
        "config": {"vocab_size": 1000, "bos_token_id": 1, "eos_token_id": 2},
    },
    # no tokenizer.model: the SentencePiece-shaped tokenizer.json goes through llama_hf
    "spm-tiny-hf": {
        "fixture": "spm-tiny",
        "config": {"vocab_size": 1000, "bos_token_id": 1, "eos_token_id": 2},
        "drop": ["tokenizer.model"],
    },
    # padding to vocab_size, added_tokens.json, user-defined added tokens, chat_template.jinja
    # with an additional template (one only: the reference writes several in directory-listing
    # order, which is not reproducible), pad id from config.json
    "spm-tiny-extra": {
        "fixture": "spm-tiny",
        "config": {"vocab_size": 1008, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 1003},
        "add": {
            "added_tokens.json": {"<|im_start|>": 1000, "<|im_end|>": 1001, "\u2581tool": 1002, "<pad>": 1003},
            "tokenizer_config.json:patch": {
                "added_tokens_decoder": {
                    "1001": {"content": "<|im_end|>", "lstrip": False, "normalized": False, "rstrip": False,
                             "single_word": False, "special": True},
                    "1002": {"content": "\u2581tool", "lstrip": False, "normalized": True, "rstrip": False,
                             "single_word": False, "special": False},
                },
            },
            "chat_template.jinja": EXTRA_JINJA,
            "additional_chat_templates/tool-use.jinja": "{{ 'tools' }}" + EXTRA_JINJA,
        },
        "drop_keys": {"tokenizer_config.json": ["chat_template"]},
    },
    # CodeLlama: vocab_size 32016 adds the infill ids (prefix/suffix/middle have no GGUF key; eot does)
    "spm-codellama": {
        "fixture": "spm-tiny",
        "config": {"vocab_size": 32016, "bos_token_id": 1, "eos_token_id": 2},
    },
    # small granite: vocab_size 49152 forces add_bos_token false
    "spm-granite": {
        "fixture": "spm-tiny",
        "config": {"vocab_size": 49152, "bos_token_id": 1, "eos_token_id": 2},
    },
}

BASE_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 1,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "rms_norm_eps": 1e-05,
    "max_position_embeddings": 256,
}


def case_files(case: dict) -> dict[str, bytes]:
    """The repo files of a case (shared with tests/test_vocab.py, which imports this function)."""
    src = FIXTURES / case["fixture"]
    files = {p.name: p.read_bytes() for p in sorted(src.iterdir()) if p.is_file()}
    if added := case.get("tokenizer_json_added"):
        tj = json.loads(files["tokenizer.json"])
        next_id = max(max(tj["model"]["vocab"].values()), *(t["id"] for t in tj["added_tokens"])) + 1
        for i, tok in enumerate(added):
            tj["added_tokens"].append({"id": next_id + i, "content": tok["content"], "single_word": False,
                                       "lstrip": False, "rstrip": False, "normalized": tok["normalized"],
                                       "special": tok["special"]})
        files["tokenizer.json"] = json.dumps(tj, ensure_ascii=False).encode()
        # transformers saves added tokens in both files; keep them consistent
        tc = json.loads(files["tokenizer_config.json"])
        decoder = tc.setdefault("added_tokens_decoder", {})
        for entry in tj["added_tokens"][-len(added):]:
            decoder[str(entry["id"])] = {k: entry[k] for k in
                                         ("content", "lstrip", "normalized", "rstrip", "single_word", "special")}
        files["tokenizer_config.json"] = (json.dumps(tc, indent=2, ensure_ascii=False) + "\n").encode()
    for name in case.get("drop", []):
        files.pop(name, None)
    for name, keys in case.get("drop_keys", {}).items():
        obj = json.loads(files[name])
        for k in keys:
            obj.pop(k, None)
        files[name] = (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode()
    for name, value in case.get("add", {}).items():
        if name.endswith(":patch"):
            name = name[: -len(":patch")]
            obj = json.loads(files[name])
            for k, v in value.items():
                if isinstance(v, dict) and isinstance(obj.get(k), dict):
                    obj[k] = {**obj[k], **v}
                elif v is not None:
                    obj[k] = v
            files[name] = (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode()
        elif isinstance(value, str):
            files[name] = value.encode()
        else:
            files[name] = (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode()
    config = {**BASE_CONFIG, **case["config"]}
    files["config.json"] = (json.dumps(config, indent=2) + "\n").encode()
    return files


def describe_kvs(path: Path, prefix: str = "tokenizer.") -> list[dict]:
    """Every ``prefix*`` KV of a GGUF file, in order (shared with the tests)."""
    import gguf

    reader = gguf.GGUFReader(path)
    out = []
    for key, field in reader.fields.items():
        if not key.startswith(prefix):
            continue
        raw = b"".join(bytes(p) for p in field.parts)
        types = [t.name for t in field.types]
        entry = {"key": key, "type": "/".join(types), "sha256": hashlib.sha256(raw).hexdigest()}
        if field.types[0] == gguf.GGUFValueType.ARRAY:
            entry["len"] = len(field.data)
            if len(field.data) <= 16:
                entry["value"] = field.contents()
        else:
            entry["value"] = field.contents()
        out.append(entry)
    return out


def make_model_dir(case: dict, d: Path) -> None:
    import torch
    from safetensors.torch import save_file

    d.mkdir(parents=True)
    for name, data in case_files(case).items():
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_bytes(data)
    n = case["config"]["vocab_size"]
    save_file({"model.embed_tokens.weight": torch.zeros(n, BASE_CONFIG["hidden_size"], dtype=torch.float16)},
              str(d / "model.safetensors"))


def run_case(name: str, llama_cpp: Path) -> None:
    case = CASES[name]
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / name
        make_model_dir(case, d)
        out = Path(tmp) / f"{name}.gguf"
        proc = subprocess.run(
            [sys.executable, "convert_hf_to_gguf.py", str(d), "--vocab-only", "--outfile", str(out)],
            cwd=llama_cpp, capture_output=True, text=True,
        )
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr[-4000:])
            raise SystemExit(f"{name}: reference converter failed")
        kvs = describe_kvs(out)
    OUT.mkdir(parents=True, exist_ok=True)
    golden = {"case": case, "reference": "convert_hf_to_gguf.py --vocab-only (llama-cpp-python 0.3.36)",
              "kvs": kvs}
    (OUT / f"{name}.json").write_text(json.dumps(golden, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{name}: {len(kvs)} tokenizer keys")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-cpp", type=Path, default=DEFAULT_LLAMA_CPP)
    ap.add_argument("cases", nargs="*", default=list(CASES))
    args = ap.parse_args()
    for name in args.cases:
        run_case(name, args.llama_cpp)


if __name__ == "__main__":
    main()
