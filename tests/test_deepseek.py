"""DeepSeek V2/V3/V3.2 beyond the goldens: what is left out is never fetched, and what only repo code can read
(Kimi-K2's tokenizer) or the reference refuses (a V3.2 tokenizer without add_bos_token) is refused.

The byte-for-byte comparison with the reference is ``tests/test_convert.py`` over the goldens of
tiny-deepseek-v2-lite, tiny-deepseek-v3 and tiny-deepseek-v32 (FP8); these tests look at the request log
and at refusals.
"""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

import hfstream
from hfstream import cli, errors
from hfstream.safetensors import parse_header
from fixtures.build import snapshot_dir

REPO = "hfs-test/tiny-deepseek-v3"


def test_the_mtp_block_is_never_fetched(fresh_hub, fixture_root, tmp_path):
    """Layer 2 of tiny-deepseek-v3 is its multi-token-prediction block (num_hidden_layers 2): left out of the
    GGUF as the reference leaves it, so none of its bytes may be read (its embedding and head are most of
    the last shard)."""
    snap = snapshot_dir(fixture_root / REPO)
    shard = snap / "model-00003-of-000003.safetensors"
    blob = shard.read_bytes()
    mtp = [t for t in parse_header(shard.name, blob, len(blob)) if t.name.startswith("model.layers.2.")]
    assert {"model.layers.2.embed_tokens.weight", "model.layers.2.shared_head.head.weight",
            "model.layers.2.eh_proj.weight"} <= {t.name for t in mtp}
    result = hfstream.convert(REPO, outtype="q8_0", outfile=tmp_path)
    assert not any(name.startswith("blk.2.") for name, *_ in result.tensors)

    lfs = "/lfs/" + hashlib.sha256(blob).hexdigest()
    reads = []
    for e in fresh_hub.log:
        if e["path"] == lfs and e["status"] == 206:
            first, last = (int(x) for x in e["range"].removeprefix("bytes=").split("-"))
            reads.append((first, last + 1))
    assert reads  # the shard's header and its other tensors were read
    header_end = 8 + int.from_bytes(blob[:8], "little")
    for t in mtp:
        for start, end in reads:
            if start == 0 and end <= max(header_end, 100_000):
                continue  # the header read (its first 100 KB may run into data: not a tensor fetch)
            assert end <= t.start or start >= t.end, f"{t.name} was fetched ({start}-{end})"
    fetched = sum(end - start for start, end in reads)
    assert fetched < len(blob) - sum(t.nbytes for t in mtp) + 100_000


def test_a_tokenizer_only_repo_code_can_build_is_refused_and_the_code_never_runs(fixture_root, tmp_path, capsys):
    """Kimi-K2 ships DeepSeek-V3's architecture with a tiktoken vocabulary and a tokenization_*.py the
    reference runs (trust_remote_code). hfstream refuses it, with one line, and runs nothing."""
    repo = tmp_path / "kimi-like"
    shutil.copytree(snapshot_dir(fixture_root / "hfs-test/tiny-deepseek-v2-lite"), repo)
    (repo / "tokenizer.json").unlink()
    marker = tmp_path / "repo-code-ran"
    (repo / "tiktoken.model").write_bytes(b"IQ== 0\nIg== 1\n")
    (repo / "tokenization_kimi.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    config = json.loads((repo / "config.json").read_text())
    config["auto_map"]["AutoTokenizer"] = ["tokenization_kimi.TikTokenTokenizer", None]
    (repo / "config.json").write_text(json.dumps(config))
    tok_config = json.loads((repo / "tokenizer_config.json").read_text())
    tok_config["auto_map"] = {"AutoTokenizer": ["tokenization_kimi.TikTokenTokenizer", None]}
    (repo / "tokenizer_config.json").write_text(json.dumps(tok_config))

    rc = cli.main(["convert", str(repo), "--outtype", "q8_0", "-o", str(tmp_path / "out.gguf"), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == errors.UnsupportedTokenizerError.exit_code
    assert len(err) == 1 and "trust_remote_code" in err[0] and "never runs" in err[0]
    assert not marker.exists()
    assert not list(tmp_path.glob("out.gguf*"))


def test_kimi_k2_as_moonshot_ships_it_is_refused_in_one_line(fixture_root, tmp_path, capsys):
    """Kimi-K2's real layout: DeepSeek-V3's architecture under ``model_type: kimi_k2`` (a config class only
    its repo code defines), FP8 weights, a tiktoken rank file and ``tokenization_kimi.py`` (the regular
    expression that splits text lives in that code, not in a data file), no tokenizer.json. The
    reference builds the vocabulary with ``trust_remote_code``; hfstream says in one line that it does
    not, before writing anything, and nothing of the repo's runs."""
    repo = tmp_path / "Kimi-K2-Instruct"
    shutil.copytree(snapshot_dir(fixture_root / REPO), repo)
    (repo / "tokenizer.json").unlink()
    (repo / "special_tokens_map.json").unlink()
    marker = tmp_path / "repo-code-ran"
    for code in ("tokenization_kimi.py", "configuration_deepseek.py", "modeling_deepseek.py"):
        (repo / code).write_text(f"open({str(marker)!r}, 'w').write({code!r})\n")
    (repo / "tiktoken.model").write_bytes(b"IQ== 0\nIg== 1\nIw== 2\n")
    config = json.loads((repo / "config.json").read_text())
    config.update(model_type="kimi_k2", bos_token_id=163584, eos_token_id=163585, auto_map={
        "AutoConfig": "configuration_deepseek.DeepseekV3Config",
        "AutoModel": "modeling_deepseek.DeepseekV3Model",
        "AutoModelForCausalLM": "modeling_deepseek.DeepseekV3ForCausalLM"})
    (repo / "config.json").write_text(json.dumps(config))
    special = {"content": "[BOS]", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
               "special": True}
    (repo / "tokenizer_config.json").write_text(json.dumps({
        "added_tokens_decoder": {"163584": special, "163585": {**special, "content": "[EOS]"}},
        "auto_map": {"AutoTokenizer": ["tokenization_kimi.TikTokenTokenizer", None]},
        "bos_token": "[BOS]", "eos_token": "[EOS]", "model_max_length": 1000000000000000019884624838656,
        "tokenizer_class": "TikTokenTokenizer"}))

    out = tmp_path / "out"
    rc = cli.main(["convert", str(repo), "--outtype", "q8_0", "-o", str(out), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == errors.UnsupportedTokenizerError.exit_code
    assert len(err) == 1 and "trust_remote_code" in err[0] and "DeepseekV3ForCausalLM" in err[0], err
    assert not marker.exists()
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("add_bos", [False, None])
def test_deepseek_v32_without_add_bos_token_is_refused_as_the_reference_stops(add_bos, fixture_root, tmp_path, capsys):
    """The reference converts DeepSeek-V3.2's vocabulary only when the tokenizer adds BOS (it asserts
    ``add_bos_token``, read from tokenizer_config.json); without it: one line, nothing written."""
    repo = tmp_path / "DeepSeek-V3.2"
    shutil.copytree(snapshot_dir(fixture_root / "hfs-test/tiny-deepseek-v32"), repo)
    tok_config = json.loads((repo / "tokenizer_config.json").read_text())
    assert tok_config["add_bos_token"] is True  # the fixture itself converts (tests/test_convert.py)
    if add_bos is None:
        del tok_config["add_bos_token"]
    else:
        tok_config["add_bos_token"] = add_bos
    (repo / "tokenizer_config.json").write_text(json.dumps(tok_config))

    out = tmp_path / "out.gguf"
    rc = cli.main(["convert", str(repo), "--outtype", "f16", "-o", str(out), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == errors.UnsupportedTokenizerError.exit_code
    assert len(err) == 1 and "add_bos_token" in err[0] and "DeepseekV32ForCausalLM" in err[0], err
    assert not list(tmp_path.glob("out.gguf*"))
