"""The committed goldens still say what the reference converter does (slow: runs it).

Needs the llama.cpp tree from the llama-cpp-python 0.3.36 sdist (``--llama-cpp-dir`` of the
generator, env ``LLAMA_CPP_DIR``, or the default /tmp/sdist location), torch and transformers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fixtures.build import build
from tests import llamacpp
from tests.goldens import generate
from tests.goldens.digest import DIGEST_KEYS, diff_digests, digest_gguf, digest_gguf_via_reader

GOLDENS = Path(__file__).resolve().parent / "goldens" / "models"


def test_goldens_are_well_formed():
    paths = sorted(GOLDENS.glob("*.json"))
    if not paths:
        pytest.skip("no goldens yet: python -m tests.goldens.generate")
    for path in paths:
        golden = json.loads(path.read_text())
        name = golden["repo"].split("/")[1]
        assert path.name == generate.golden_name(name, golden["revision"], golden["outtype"])
        assert set(DIGEST_KEYS) <= set(golden)
        assert golden["default_name"].endswith(".gguf")
        offsets = [t["offset"] for t in golden["tensors"]]
        assert offsets == sorted(offsets)
        assert golden["tensors"][-1]["offset"] + golden["tensors"][-1]["nbytes"] + golden["data_offset"] <= golden["size"]


def _reference_or_skip() -> Path:
    llama_cpp_dir = generate.find_llama_cpp_dir()
    if llama_cpp_dir is None:
        pytest.skip(f"reference converter not found; {generate.HOW_TO_GET}")
    pytest.importorskip("torch", reason="the reference converter needs torch (pip install torch==2.13.0)")
    pytest.importorskip("transformers", reason="the reference converter needs transformers")
    return llama_cpp_dir


@pytest.mark.slow
@pytest.mark.parametrize("name,outtype", [("tiny-llama-spm", "f16"), ("tiny-llama-sharded", "q8_0")])
def test_reference_still_matches_golden(tmp_path, name, outtype):
    llama_cpp_dir = _reference_or_skip()
    golden = json.loads((GOLDENS / generate.golden_name(name, "main", outtype)).read_text())
    repo = build(tmp_path / "repos", only=[name])[name]
    assert repo.refs["main"] == golden["commit"], "fixture changed since the golden was made: regenerate"
    model_dir = generate.copy_snapshot(repo.path / "commits" / golden["commit"], tmp_path / "src", name)
    out = generate.run_reference(model_dir, outtype, llama_cpp_dir, tmp_path / "out")
    assert out.name == golden["default_name"]
    digest = digest_gguf(out)
    assert diff_digests(golden, digest) == []
    assert digest == {k: golden[k] for k in DIGEST_KEYS}
    # the fast parser and gguf.GGUFReader agree
    assert digest_gguf_via_reader(out) == digest
    if "greedy" in golden and llamacpp.available():
        assert llamacpp.greedy_tokens(out, golden["greedy_prompt"], len(golden["greedy"])) == golden["greedy"]
