"""End to end through the CLI against the fixture Hub: our GGUF against the reference converter's.

The goldens (tests/goldens/models/*.json) are digests of what llama.cpp's convert_hf_to_gguf.py
wrote from the same fixture files; tests/goldens/generate.py makes them.
"""

from __future__ import annotations

import pytest

from hfstream import cli
from hfstream.plan import KEY_SOURCE_COMMIT, KEY_SOURCE_REPO

from .goldens.cases import GOOD_TOKEN, cases
from .goldens.digest import diff_digests, digest_gguf

CASES = cases()
OUR_KEYS = (KEY_SOURCE_REPO, KEY_SOURCE_COMMIT)


def comparable(digest: dict) -> dict:
    """A digest without what we add on purpose: our own source keys (and so the header size and file hash)."""
    kv = [e for e in digest["kv"] if e[0] not in OUR_KEYS]
    return {"kv": kv, "tensors": digest["tensors"]}


def convert(args: list[str], capsys) -> tuple[int, str, str]:
    rc = cli.main(["convert", *args])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_output_matches_the_reference_converter(case, fresh_hub, tmp_path, capsys, monkeypatch):
    if case.gated:
        monkeypatch.setenv("HF_TOKEN", GOOD_TOKEN)
    expected = case.golden()
    rc, out, err = convert([case.repo_id, "--outtype", case.outtype, "--revision", case.revision,
                            "-o", str(tmp_path), "-q"], capsys)
    assert rc == 0, err
    written = list(tmp_path.glob("*.gguf"))
    assert [p.name for p in written] == [expected["default_name"]]
    ours = digest_gguf(written[0])
    assert diff_digests(comparable(expected), comparable(ours)) == []
    # our own keys say where the bytes came from
    kv = dict((k, v) for k, _, v in ours["kv"])
    assert kv[KEY_SOURCE_REPO] == case.repo_id
    assert len(kv[KEY_SOURCE_COMMIT]) == 40
