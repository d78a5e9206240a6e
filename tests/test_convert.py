"""End to end through the CLI against the fixture Hub: our GGUF against the reference converter's.

The goldens (tests/goldens/models/*.json) are digests of what llama.cpp's convert_hf_to_gguf.py
wrote from the same fixture files; tests/goldens/generate.py makes them.
"""

from __future__ import annotations

import pytest

from hfstream import cli
from hfstream.plan import KEY_SOURCE_COMMIT, KEY_SOURCE_REPO

from .conftest import golden
from .goldens.digest import diff_digests, digest_gguf

MODELS = ["tiny-llama-bpe", "tiny-llama-spm", "tiny-mistral", "tiny-llama-sharded", "gated-llama"]
OUTTYPES = ["f32", "f16", "bf16", "q8_0"]
OUR_KEYS = (KEY_SOURCE_REPO, KEY_SOURCE_COMMIT)


def comparable(digest: dict) -> dict:
    """A digest without what we add on purpose: our own source keys (and so the header size and file hash)."""
    kv = [e for e in digest["kv"] if e[0] not in OUR_KEYS]
    return {"kv": kv, "tensors": digest["tensors"]}


def convert(args: list[str], capsys) -> tuple[int, str, str]:
    rc = cli.main(["convert", *args])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("outtype", OUTTYPES + ["auto"])
@pytest.mark.parametrize("model", MODELS)
def test_output_matches_the_reference_converter(model, outtype, fresh_hub, tmp_path, capsys, monkeypatch):
    if model == "gated-llama":
        monkeypatch.setenv("HF_TOKEN", "hf_fixture_good")
    expected = golden(f"{model}.{outtype}")
    rc, out, err = convert([f"hfs-test/{model}", "--outtype", outtype, "-o", str(tmp_path), "-q"], capsys)
    assert rc == 0, err
    written = list(tmp_path.glob("*.gguf"))
    assert [p.name for p in written] == [expected["default_name"]]
    ours = digest_gguf(written[0])
    assert diff_digests(comparable(expected), comparable(ours)) == []
    # our own keys say where the bytes came from
    kv = dict((k, v) for k, _, v in ours["kv"])
    assert kv[KEY_SOURCE_REPO] == f"hfs-test/{model}"
    assert len(kv[KEY_SOURCE_COMMIT]) == 40
