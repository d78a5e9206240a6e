"""The inputs people type: every way of naming a model converts what it names, and the output path means what it says.

Forms: ``org/name``, ``org/name@rev``, ``hf://org/name[@rev]``, Hub URLs with or without ``/tree/rev``,
a local directory, a Hugging Face cache snapshot (symlinks into its repo's ``blobs/``); with
``HF_HUB_OFFLINE=1`` a cached repo converts with no request at all. Outtypes in any case.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import hfstream
from hfstream import cli, errors, hub

from .conftest import cli_env

SPM = "hfs-test/tiny-llama-spm"
TWO = "hfs-test/two-commits"


def _sha(fixture_root: Path, repo: str, ref: str) -> str:
    import json

    return json.loads((fixture_root / repo / "repo.json").read_text())["refs"][ref]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("text, repo, revision", [
    ("org/model", "org/model", None),
    ("org/model@v1.0", "org/model", "v1.0"),
    ("org/model@refs/pr/1", "org/model", "refs/pr/1"),
    ("gpt2", "gpt2", None),
    ("hf://org/model", "org/model", None),
    ("hf://org/model@dev", "org/model", "dev"),
    ("hf://models/org/model@dev", "org/model", "dev"),
    ("https://huggingface.co/org/model", "org/model", None),
    ("https://huggingface.co/org/model/", "org/model", None),
    ("https://hf.co/org/model/tree/dev", "org/model", "dev"),
    ("https://huggingface.co/org/model/tree/refs%2Fpr%2F3", "org/model", "refs/pr/3"),
    ("http://127.0.0.1:9/org/model/tree/v2", "org/model", "v2"),  # the endpoint's own URLs
])
def test_hub_forms(text, repo, revision):
    assert hub.parse_source(text, "http://127.0.0.1:9") == hub.Source(repo_id=repo, revision=revision)


@pytest.mark.parametrize("text, words", [
    ("https://example.com/org/model", "is not a Hub URL (the Hub here is http://127.0.0.1:9"),
    ("https://huggingface.co/org/model/blob/main/config.json", "is not a model repo's URL"),
    ("https://huggingface.co/datasets/org/data", "is a dataset, not a model repo"),
    ("hf://datasets/org/data", "is a dataset, not a model repo"),
    ("org/model@", "no revision after '@'"),
    ("a/b/c", "is not a valid repo id"),
    ("not a repo id!!", "is not a valid repo id (expected org/name of letters, digits"),
    ("org/mo..del", "is not a valid repo id"),
])
def test_what_is_not_a_model_is_one_clear_error(text, words):
    with pytest.raises(errors.HfstreamError, match=re.escape(words)) as caught:
        hub.parse_source(text, "http://127.0.0.1:9")
    assert "repo_type" not in str(caught.value)  # no huggingface_hub wording


def test_a_revision_named_twice_must_agree():
    assert hub.pick_revision("v1", "main") == "v1"  # --revision at its default gives way
    assert hub.pick_revision("v1", "v1") == "v1"
    assert hub.pick_revision(None, "v2") == "v2"
    with pytest.raises(errors.UnsupportedOptionError, match="two revisions"):
        hub.pick_revision("v1", "v2")


@pytest.mark.parametrize("form", [
    "{repo}@v1", "hf://{repo}@v1", "hf://models/{repo}@v1", "{endpoint}/{repo}/tree/v1",
    "https://huggingface.co/{repo}/tree/v1"])
def test_every_form_reads_the_revision_it_names(form, fresh_hub, fixture_root, capsys):
    text = form.format(repo=TWO, endpoint=fresh_hub.endpoint)
    assert cli.main(["convert", text, "--outtype", "q8_0", "--dry-run", "--json"]) == 0, capsys.readouterr().err
    import json

    result = json.loads(capsys.readouterr().out)
    assert result["repo_id"] == TWO and result["revision"] == "v1"
    assert result["commit_sha"] == _sha(fixture_root, TWO, "v1") != _sha(fixture_root, TWO, "main")
    # every byte was read at that commit
    assert {e["path"].split("/")[4] for e in fresh_hub.log if "/resolve/" in e["path"]} == {result["commit_sha"]}


def test_a_url_converts_like_the_repo_id(fresh_hub, tmp_path):
    by_id = hfstream.convert(SPM, outtype="q8_0", outfile=tmp_path / "a.gguf")
    by_url = hfstream.convert(f"https://huggingface.co/{SPM}", outtype="Q8_0", outfile=tmp_path / "b.gguf")
    assert by_url.repo_id == SPM and by_url.commit_sha == by_id.commit_sha
    assert _digest(by_id.path) == _digest(by_url.path)


def test_outtypes_in_any_case_in_the_cli_and_the_api(fresh_hub, tmp_path, capsys):
    assert cli.main(["convert", SPM, "--outtype", "Q4_K_M", "--token-embedding-type", "Q4_0", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert " Q4_0 " in next(line for line in out.splitlines() if line.startswith("token_embd.weight "))
    r = hfstream.convert(SPM, outtype="Q4_K_M", output_tensor_type="Q8_0", dry_run=True)
    assert r.outtype == "q4_k_m" and dict((t[0], t[2]) for t in r.tensors)["output.weight"] == "Q8_0"


# --------------------------------------------------------------------------- the Hugging Face cache


@pytest.fixture
def hf_cache(fresh_hub, tmp_path, monkeypatch):
    """The cache huggingface_hub's ``snapshot_download`` makes of SPM (files as symlinks into ``blobs/``)."""
    from huggingface_hub import snapshot_download

    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    snapshot = Path(snapshot_download(SPM, cache_dir=cache, endpoint=fresh_hub.endpoint))
    assert (snapshot / "model.safetensors").is_symlink()
    fresh_hub.clear_log()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return snapshot


def test_a_cache_snapshot_converts_as_the_hub_commit_it_is(hf_cache, fresh_hub, tmp_path, capsys):
    online = hfstream.convert(SPM, outtype="q8_0", outfile=tmp_path / "online.gguf")
    fresh_hub.clear_log()
    assert cli.main(["convert", str(hf_cache), "--outtype", "q8_0", "-o", str(tmp_path / "cached.gguf"), "-q"]) == 0
    line = capsys.readouterr().out.strip()
    # the same file, keys included: the snapshot is that repo at that commit
    assert _digest(tmp_path / "cached.gguf") == _digest(online.path)
    assert line.endswith(f"commit {online.commit_sha[:12]})")
    assert fresh_hub.log == []


def test_offline_a_cached_repo_converts_with_no_request_at_all(hf_cache, fresh_hub, tmp_path):
    online = hfstream.convert(SPM, outtype="q8_0", outfile=tmp_path / "online.gguf")
    fresh_hub.clear_log()
    env = cli_env(fresh_hub, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(hf_cache.parents[2]),
                  HF_ENDPOINT="http://127.0.0.1:9")  # nothing listens there: a request would fail
    for text in (SPM, f"{SPM}@main", f"{SPM}@{online.commit_sha}"):
        out = tmp_path / "offline.gguf"
        proc = subprocess.run([sys.executable, "-m", "hfstream", "convert", text, "--outtype", "q8_0", "-q",
                               "-o", str(out), "--force"], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert _digest(out) == _digest(online.path)
    assert fresh_hub.log == []


def test_offline_what_the_cache_lacks_fails_at_once_with_its_own_code(hf_cache, fresh_hub, tmp_path):
    env = cli_env(fresh_hub, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(hf_cache.parents[2]))
    cases = [([TWO], errors.RepoNotFoundError, f"HF_HUB_OFFLINE is set and {TWO} is not in the Hugging Face cache"),
             ([SPM, "--revision", "v9"], errors.RevisionNotFoundError, "revision 'v9' of")]
    for args, error, words in cases:
        proc = subprocess.run([sys.executable, "-m", "hfstream", "convert", *args, "-o", str(tmp_path)], env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == error.exit_code, proc.stderr
        assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and words in proc.stderr
    assert fresh_hub.log == []  # not one request, let alone retries


def test_a_cache_snapshot_may_not_lead_outside_its_blobs(hf_cache, tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_bytes((hf_cache / "config.json").read_bytes())
    (hf_cache / "config.json").unlink()
    os.symlink(elsewhere, hf_cache / "config.json")
    assert cli.main(["convert", str(hf_cache), "-o", str(tmp_path)]) == errors.InvalidIndexError.exit_code
    assert "config.json: leads outside the model directory and its cache's blobs" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.gguf"))


def test_a_plain_directory_with_a_link_out_is_refused(fresh_hub, fixture_root, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(fixture_root / SPM / "commits" / _sha(fixture_root, SPM, "main"), model)
    (model / "model.safetensors").rename(tmp_path / "weights")
    os.symlink(tmp_path / "weights", model / "model.safetensors")
    assert cli.main(["convert", str(model), "-o", str(tmp_path)]) == errors.InvalidIndexError.exit_code
    assert "model.safetensors: leads outside the model directory" in capsys.readouterr().err


# --------------------------------------------------------------------------- the output and the result line


def test_a_trailing_slash_means_a_directory(fresh_hub, tmp_path, capsys):
    target = tmp_path / "new" / "dir"
    assert cli.main(["convert", SPM, "--outtype", "q8_0", "-q", "-o", f"{target}/"]) == 0
    assert [p.name for p in target.iterdir()] == ["Tiny-Llama-Spm-227K-Q8_0.gguf"]
    assert not (tmp_path / "new" / "dir.gguf").exists()
    # a dry run writes nothing, not even the directory
    assert cli.main(["convert", SPM, "--dry-run", "-o", f"{tmp_path}/other/"]) == 0
    assert f"-> {tmp_path}/other/Tiny-Llama-Spm-227K-F16.gguf" in capsys.readouterr().out
    assert not (tmp_path / "other").exists()
    # a file where the directory should be: one clear line
    (tmp_path / "file").write_bytes(b"x")
    assert cli.main(["convert", SPM, "-q", "-o", f"{tmp_path}/file/"]) == errors.OutputWriteError.exit_code
    assert "cannot make the output directory" in capsys.readouterr().err


def test_a_local_directory_result_line_names_no_commit(fresh_hub, fixture_root, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(fixture_root / SPM / "commits" / _sha(fixture_root, SPM, "main"), model)
    assert cli.main(["convert", str(model), "--outtype", "q8_0", "-q", "-o", str(tmp_path)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(str(tmp_path / "Model-227K-Q8_0.gguf") + "  (21 tensors, ")
    assert "commit" not in line and line.endswith(" s)")


def test_a_trailing_slash_takes_several_outputs(fresh_hub, tmp_path, capsys):
    target = tmp_path / "several"
    assert cli.main(["convert", SPM, "--outtype", "Q8_0,f16", "-q", "-o", f"{target}/"]) == 0
    assert sorted(p.name for p in target.iterdir()) == ["Tiny-Llama-Spm-227K-F16.gguf", "Tiny-Llama-Spm-227K-Q8_0.gguf"]
    assert len(capsys.readouterr().out.splitlines()) == 2  # a result line per file
