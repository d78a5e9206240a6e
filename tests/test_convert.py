"""End to end through the CLI against the fixture Hub: our GGUF against the reference converter's.

The goldens (tests/goldens/models/*.json) are digests of what llama.cpp's convert_hf_to_gguf.py
wrote from the same fixture files; tests/goldens/generate.py makes them.

The outtypes of a repo come from as few runs as keep file names distinct (``--outtype f32,f16,bf16,q8_0``,
then ``auto``, named as the type it picks): a file per type, each the same as a run of its own
(tests/test_multi_output.py shows that), in a fraction of the time. The single-type path is the one
``auto`` takes here and every other file of the suite takes too.
"""

from __future__ import annotations

from pathlib import Path

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


def _runs() -> dict[str, int]:
    """Case id -> the number of the run that writes its file: the cases of a repo and revision go in
    as few runs as keep every run's file names distinct (``auto`` is named as the type it picks, and
    gpt-oss's f32, f16 and bf16 are all ``MXFP4_MOE``)."""
    runs: dict[str, int] = {}
    names: list[tuple[tuple[str, str], set[str]]] = []
    for c in CASES:
        name = c.golden()["default_name"]
        for i, (key, taken) in enumerate(names):
            if key == (c.repo_id, c.revision) and name not in taken:
                taken.add(name)
                runs[c.id] = i
                break
        else:
            names.append(((c.repo_id, c.revision), {name}))
            runs[c.id] = len(names) - 1
    return runs


RUN_OF = _runs()
#: run number -> the directory holding that run's files
_DONE: dict[int, Path] = {}


def _converted(case, tmp_path_factory, capsys) -> Path:
    """The directory of the run that wrote ``case``'s file: made by the first case of its run."""
    run = RUN_OF[case.id]
    if run not in _DONE:
        types = [c.outtype for c in CASES if RUN_OF[c.id] == run]
        out = tmp_path_factory.mktemp("convert")
        rc, _, err = convert([case.repo_id, "--outtype", ",".join(types), "--revision", case.revision,
                              "-o", str(out), "-q"], capsys)
        assert rc == 0, err
        _DONE[run] = out
    return _DONE[run]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_output_matches_the_reference_converter(case, fresh_hub, tmp_path_factory, capsys, monkeypatch):
    if case.gated:
        monkeypatch.setenv("HF_TOKEN", GOOD_TOKEN)
    expected = case.golden()
    written = _converted(case, tmp_path_factory, capsys) / expected["default_name"]
    assert written.is_file(), f"no {expected['default_name']} among {sorted(p.name for p in written.parent.iterdir())}"
    ours = digest_gguf(written)
    written.unlink()  # the suite would otherwise keep every fixture in every type on disk
    assert diff_digests(comparable(expected), comparable(ours)) == []
    # our own keys say where the bytes came from
    kv = dict((k, v) for k, _, v in ours["kv"])
    assert kv[KEY_SOURCE_REPO] == case.repo_id
    assert len(kv[KEY_SOURCE_COMMIT]) == 40
