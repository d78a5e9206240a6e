"""``hfstream inspect`` and ``--json``: what a model or a GGUF holds, and results a script can read.

The numbers are checked against what they describe: the parameter count against the safetensors
headers on disk, each outtype's size against the file a conversion to it writes, a GGUF's keys and
tensors against gguf's reader, a JSON result against the ``ConvertResult`` of the same conversion.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import struct
from pathlib import Path

import pytest

import hfstream
from hfstream import cli, errors
from hfstream.options import ConvertResult

SHARDED = "hfs-test/tiny-llama-sharded"


def _commit_dir(fixture_root: Path, repo: str) -> Path:
    sha = json.loads((fixture_root / repo / "repo.json").read_text())["refs"]["main"]
    return fixture_root / repo / "commits" / sha


def _headers_on_disk(directory: Path) -> dict[str, dict]:
    out = {}
    for f in sorted(directory.glob("*.safetensors")):
        raw = f.read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        out[f.name] = {k: v for k, v in json.loads(raw[8:8 + n]).items() if k != "__metadata__"}
    return out


def _json(capsys) -> dict:
    return json.loads(capsys.readouterr().out)


def test_inspect_a_repo(fresh_hub, fixture_root, tmp_path, capsys):
    assert cli.main(["inspect", SHARDED, "--json"]) == 0
    r = _json(capsys)
    disk = _headers_on_disk(_commit_dir(fixture_root, SHARDED))
    assert (r["kind"], r["architecture"], r["supported"], r["reason"]) == ("model", "LlamaForCausalLM", True, "")
    assert r["parameters"] == sum(math.prod(t["shape"]) for h in disk.values() for t in h.values())
    assert r["dtypes"] == {"F32": {"tensors": sum(len(h) for h in disk.values()),
                                   "bytes": sum(t["data_offsets"][1] - t["data_offsets"][0]
                                                for h in disk.values() for t in h.values())}}
    assert r["shards"] == [[name, (_commit_dir(fixture_root, SHARDED) / name).stat().st_size] for name in disk]
    assert r["auto"] == "f16" and isinstance(r["outtypes"]["iq2_xxs"], (int, str))
    # each size is the size of the file that outtype gives
    for outtype in ("f16", "q8_0", "q4_k_m"):
        written = hfstream.convert(SHARDED, outtype=outtype, outfile=tmp_path / f"{outtype}.gguf")
        assert r["outtypes"][outtype] == written.path.stat().st_size, outtype
    assert r["commit_sha"] == written.commit_sha

    assert cli.main(["inspect", SHARDED]) == 0
    text = capsys.readouterr().out
    assert "architecture  LlamaForCausalLM: supported" in text
    assert f"parameters    3.3M ({r['parameters']:,d})" in text
    assert "shards        3: model-00001-of-00003.safetensors (" in text
    assert "  q8_0     " in text and "(auto)" in text.split("  f16 ")[1].splitlines()[0]
    assert "note: q2_k, " in text and "do not split into blocks of 256" in text


def test_inspect_says_what_is_not_supported_and_still_describes_it(fresh_hub, capsys):
    assert cli.main(["inspect", "hfs-test/unsupported-arch", "--json"]) == 0
    r = _json(capsys)
    assert r["architecture"] == "FooBarForCausalLM" and r["supported"] is False
    assert "FooBarForCausalLM is not supported" in r["reason"] and "LlamaForCausalLM" in r["reason"]
    assert r["parameters"] > 0 and r["outtypes"] == {}


def test_inspect_a_local_directory(fixture_root, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(_commit_dir(fixture_root, "hfs-test/tiny-llama-spm"), model)
    assert cli.main(["inspect", str(model), "--json"]) == 0
    r = _json(capsys)
    assert r["repo_id"] == str(model) and r["commit_sha"] == "" and r["dtypes"].keys() == {"F16"}


def test_inspect_a_gguf(fresh_hub, tmp_path, capsys):
    # a 1,000-token vocabulary: gguf's GGUFReader, which inspect uses, takes ~9 s on Llama 3's 128k
    import gguf

    written = hfstream.convert("hfs-test/tiny-llama-spm", outtype="q8_0", outfile=tmp_path)
    assert cli.main(["inspect", str(written.path), "--json"]) == 0
    r = _json(capsys)
    reader = gguf.GGUFReader(written.path)
    assert r["kind"] == "gguf" and r["version"] == 3 and r["size"] == written.path.stat().st_size
    assert r["keys"]["general.architecture"] == "llama"
    assert r["keys"]["hfstream.source.commit"] == written.commit_sha
    assert r["keys"]["tokenizer.ggml.tokens"]["length"] == 1000
    assert r["keys"]["tokenizer.ggml.tokens"]["first"] == reader.fields["tokenizer.ggml.tokens"].contents(slice(0, 8))
    assert list(r["keys"]) == [k for k in reader.fields if not k.startswith("GGUF.")]
    assert [tuple(t[:1]) + (tuple(t[1]),) + tuple(t[2:]) for t in r["tensors"]] == written.tensors
    assert cli.main(["inspect", str(written.path)]) == 0
    text = capsys.readouterr().out
    assert "tokenizer.ggml.tokens" in text and "[1,000 values: '<unk>', '<s>', '</s>', '<0x00>'," in text
    assert "token_embd.weight" in text


def test_a_file_that_is_not_gguf_is_one_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file at all")
    assert cli.main(["inspect", str(bad)]) == errors.InvalidHeaderError.exit_code
    assert "not a readable GGUF file" in capsys.readouterr().err


# --------------------------------------------------------------------------- --json


def test_convert_json_is_the_result(fresh_hub, tmp_path, capsys):
    assert cli.main(["convert", "hfs-test/tiny-llama-spm", "--outtype", "q8_0", "-o", str(tmp_path), "--json"]) == 0
    r = _json(capsys)
    assert list(r) == [f.name for f in dataclasses.fields(ConvertResult)]
    api = hfstream.convert("hfs-test/tiny-llama-spm", outtype="q8_0", outfile=tmp_path / "api.gguf")
    for name in ("repo_id", "revision", "commit_sha", "outtype", "tensor_count", "bytes_written", "output_size",
                 "source_bytes", "units_total", "dry_run"):
        assert r[name] == getattr(api, name), name
    assert Path(r["path"]).stat().st_size == r["output_size"] and r["paths"] == [r["path"]]
    assert [[n, list(s), t, b] for n, s, t, b in api.tensors] == r["tensors"]


def test_dry_run_json_predicts_the_file(fresh_hub, tmp_path, capsys):
    assert cli.main(["convert", "hfs-test/tiny-llama-spm", "--outtype", "q8_0", "--dry-run", "--json",
                     "-o", str(tmp_path)]) == 0
    r = _json(capsys)
    assert r["dry_run"] is True and r["bytes_written"] == 0 and not Path(r["path"]).exists()
    real = hfstream.convert("hfs-test/tiny-llama-spm", outtype="q8_0", outfile=tmp_path)
    assert str(real.path) == r["path"] and real.path.stat().st_size == r["output_size"]


def test_json_failure_is_json_too(fresh_hub, tmp_path, capsys):
    code = cli.main(["convert", "hfs-test/no-such-repo", "--json", "-o", str(tmp_path)])
    assert code == errors.RepoNotFoundError.exit_code
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"error": captured.err.strip().removeprefix("hfstream: error: "),
                                        "exit_code": code}


@pytest.mark.parametrize("outtype", ["q4_k_m", "Q4_K_M"])
def test_dry_run_table_has_headers_and_says_why_a_mix_falls_back(fresh_hub, capsys, outtype):
    assert cli.main(["convert", "hfs-test/tiny-llama-spm", "--outtype", outtype, "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["tensor", "shape", "type", "bytes", "bits/weight"]
    assert ("note: q4_k_m falls back from Q4_K for every matrix: rows of 64, 192 values do not split into its "
            "blocks of 256 (llama-quantize's fallback types are in the type column)") in lines
    assert not any(" Q4_K " in line for line in lines if line.endswith("bpw"))  # indeed none is Q4_K
