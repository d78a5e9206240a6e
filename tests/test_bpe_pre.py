"""A BPE tokenizer whose pre-tokenizer llama.cpp does not know (fixture ``tiny-llama-unknown-bpe``).

The reference converter refuses it (``NotImplementedError: BPE pre-tokenizer was not recognized``),
so there is no golden: hfstream must refuse it too, with one line naming the hash and ``--bpe-pre``,
and convert it when told which pre-tokenizer to write.
"""

from __future__ import annotations

import json
import subprocess
import sys
from hashlib import sha256
from importlib import resources

import gguf
import pytest

from hfstream import cli, errors

from .conftest import ROOT, cli_env

REPO = "hfs-test/tiny-llama-unknown-bpe"
TOKENIZER = ROOT / "fixtures" / "tokenizers" / "toy-bpe" / "tokenizer.json"


def _expected_hash() -> str:
    """The check-text hash, computed independently of hfstream's vocab code."""
    from tokenizers import Tokenizer

    table = json.loads(resources.files("hfstream").joinpath("data/bpe_pre.json").read_text(encoding="utf-8"))
    ids = Tokenizer.from_file(str(TOKENIZER)).encode(table["chktxt"]).ids  # BOS included, as AutoTokenizer does
    chkhsh = sha256(str(ids).encode()).hexdigest()
    assert chkhsh not in table["hashes"]  # the point of the fixture
    return chkhsh


def _field(reader: gguf.GGUFReader, key: str):
    return reader.fields[key].contents()


def test_unknown_pre_tokenizer_is_refused_with_the_hash_and_the_option(hub, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run([sys.executable, "-m", "hfstream", "convert", REPO, "-o", str(out), "-q"],
                          cwd=tmp_path, env=cli_env(hub, HF_HOME=str(tmp_path / "hf")), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == errors.UnsupportedTokenizerError.exit_code == 21, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("hfstream: error: ")
    assert _expected_hash() in lines[0]
    assert "--bpe-pre" in lines[0]
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    # nothing left behind: no output, no .part, nothing in the working directory either
    assert list(out.iterdir()) == []
    assert {p.name for p in tmp_path.iterdir()} <= {"hf", "out"}


def test_bpe_pre_option_names_the_pre_tokenizer(fresh_hub, tmp_path, capsys):
    rc = cli.main(["convert", REPO, "--bpe-pre", "llama-bpe", "--outtype", "q8_0", "-o", str(tmp_path), "-q"])
    _, err = capsys.readouterr()
    assert rc == 0, err
    written = list(tmp_path.glob("*.gguf"))
    assert len(written) == 1 and not list(tmp_path.glob("*.part"))
    reader = gguf.GGUFReader(written[0])
    assert _field(reader, "tokenizer.ggml.pre") == "llama-bpe"
    assert _field(reader, "tokenizer.ggml.model") == "gpt2"
    tokens = _field(reader, "tokenizer.ggml.tokens")
    assert len(tokens) == 512
    assert tokens[510:] == ["<|begin_of_text|>", "<|end_of_text|>"]
    assert _field(reader, "tokenizer.ggml.bos_token_id") == 510
    assert _field(reader, "tokenizer.ggml.add_bos_token") is True
    merges = _field(reader, "tokenizer.ggml.merges")
    assert merges and all(len(m.split(" ")) == 2 for m in merges)


@pytest.mark.slow
def test_the_bpe_pre_output_runs_in_llama_cpp(fresh_hub, tmp_path, capsys):
    from . import llamacpp

    if not llamacpp.available():
        pytest.skip("llama_cpp does not import")
    rc = cli.main(["convert", REPO, "--bpe-pre", "llama-bpe", "-o", str(tmp_path), "-q"])
    assert rc == 0, capsys.readouterr().err
    tokens = llamacpp.greedy_tokens(next(tmp_path.glob("*.gguf")), [510, 100, 200, 300, 400], 8)
    assert len(tokens) == 8 and all(0 <= t < 512 for t in tokens)
