"""Our GGUFs load in a real llama.cpp and greedy-decode the same tokens as the reference's GGUFs;
an embedding model's give the same embeddings of the goldens' texts, a reranker's the same scores.

Slow (``make test-slow``): needs llama-cpp-python, which pip builds from source once.
"""

from __future__ import annotations

import pytest

import hfstream

from . import llamacpp
from .goldens.cases import GOOD_TOKEN, cases

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not llamacpp.available(), reason="llama-cpp-python is not installed (make test-slow installs it)"),
]

CASES = [c for c in cases() if c.outtype != "auto"]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_greedy_decode_matches_the_reference(case, fresh_hub, tmp_path, monkeypatch):
    if case.gated:
        monkeypatch.setenv("HF_TOKEN", GOOD_TOKEN)
    expected = case.golden()
    if not {"greedy", "embeddings", "rank_scores"} & set(expected):
        pytest.skip("golden made without llama.cpp")
    result = hfstream.convert(case.repo_id, outtype=case.outtype, revision=case.revision, outfile=tmp_path)
    if "embeddings" in expected:  # an encoder: no LM head to decode with
        assert llamacpp.embeddings(result.path, expected["embedding_texts"]) == expected["embeddings"]
        return
    if "rank_scores" in expected:  # a reranker: its classification head's scores
        assert llamacpp.rank_scores(result.path, expected["embedding_texts"]) == expected["rank_scores"]
        return
    tokens = llamacpp.greedy_tokens(result.path, expected["greedy_prompt"], len(expected["greedy"]))
    assert tokens == expected["greedy"]
