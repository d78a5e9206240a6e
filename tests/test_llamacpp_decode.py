"""Our GGUFs load in a real llama.cpp and greedy-decode the same tokens as the reference's GGUFs.

Slow (``make test-slow``): needs llama-cpp-python, which pip builds from source once.
"""

from __future__ import annotations

import pytest

import hfstream

from . import llamacpp
from .conftest import golden

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not llamacpp.available(), reason="llama-cpp-python is not installed (make test-slow installs it)"),
]

MODELS = ["tiny-llama-bpe", "tiny-llama-spm", "tiny-mistral", "tiny-llama-sharded", "gated-llama", "two-commits"]


@pytest.mark.parametrize("outtype", ["f32", "f16", "bf16", "q8_0"])
@pytest.mark.parametrize("model", MODELS)
def test_greedy_decode_matches_the_reference(model, outtype, fresh_hub, tmp_path, monkeypatch):
    if model == "gated-llama":
        monkeypatch.setenv("HF_TOKEN", "hf_fixture_good")
    expected = golden(f"{model}.{outtype}")
    result = hfstream.convert(f"hfs-test/{model}", outtype=outtype, outfile=tmp_path)
    tokens = llamacpp.greedy_tokens(result.path, expected["greedy_prompt"], len(expected["greedy"]))
    assert tokens == expected["greedy"]
