"""Vision projectors (issue 19): ``--mmproj`` writes the projector (``mmproj-*.gguf``, llama.cpp's
``clip`` model) as the reference's ``--mmproj`` does, and ``--with-mmproj`` writes it and the text
model from one pass over the repo, each byte-identical to the reference's separate runs.

The goldens (``tests/goldens/mmproj/*.json``) come from ``python -m tests.goldens.make_mmproj_goldens``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import hfstream
from hfstream import cli, errors

from . import llamacpp
from .conftest import golden
from .goldens.digest import diff_digests, digest_gguf
from .goldens.make_mmproj_goldens import float32_bits
from .test_convert import comparable

GOLDENS_DIR = Path(__file__).resolve().parent / "goldens" / "mmproj"
GOLDENS = {p.stem: json.loads(p.read_text()) for p in sorted(GOLDENS_DIR.glob("*.json"))}
VLM = "hfs-test/tiny-gemma3-vlm"
#: every fixture with projector goldens
VLMS = sorted({g["repo"] for g in GOLDENS.values()})


def with_appended(golden: dict) -> dict:
    """The reference's projector digest as hfstream writes it: with the tensors hfstream appends where the
    reference's file does not load in llama.cpp (``appended``: Pixtral's ``[IMG_BREAK]`` row)."""
    appended = [{k: v for k, v in t.items() if k != "from"} for t in golden.get("appended", ())]
    return {**golden, "tensors": golden["tensors"] + appended}


def _shard_ranges(hub, repo: str) -> list[tuple[str, int, int]]:
    """(blob, first, last) of every Range request on ``repo``'s safetensors files, header reads included."""
    from fixtures.build import DEFAULT_ROOT

    blobs = {"/lfs/" + hashlib.sha256(p.read_bytes()).hexdigest()
             for p in (DEFAULT_ROOT / repo).glob("commits/*/*.safetensors")}
    out = []
    for e in hub.log:
        if e["origin"] == "storage" and e["path"] in blobs and e["range"]:
            a, b = (int(x) for x in e["range"].removeprefix("bytes=").split("-"))
            out.append((e["path"], a, b))
    return out


def _without_hashes(digest: dict, names: set[str]) -> dict:
    """A comparable digest with the data hashes of ``names`` left out (their type, shape and place stay)."""
    tensors = [{k: v for k, v in t.items() if not (t["name"] in names and k == "sha256")} for t in digest["tensors"]]
    return {**comparable(digest), "tensors": tensors}


def assert_same_projector(expected: dict, written: Path) -> None:
    """Every key and tensor byte as the reference's, except the float32 values the reference gets from
    torch's softplus (``float32_values``), whose last bit depends on the CPU: those within one unit in
    the last place (``hfstream/arch/gemma4_vision.py``); with the tensors hfstream appends (``with_appended``)."""
    expected = with_appended(expected)
    loose = expected.get("float32_values", {})
    assert diff_digests(_without_hashes(expected, set(loose)), _without_hashes(digest_gguf(written), set(loose))) == []
    ours = float32_bits(written, tuple(loose))
    assert sorted(ours) == sorted(loose)
    for tensor, bits in loose.items():
        ulps = np.abs(np.array(ours[tensor], dtype=np.int64) - np.array(bits, dtype=np.int64))
        assert ulps.max() <= 1, f"{tensor}: {int(ulps.max())} units in the last place from the reference's"


@pytest.mark.parametrize("name", sorted(GOLDENS), ids=sorted(GOLDENS))
def test_the_projector_is_the_references(name, fresh_hub, tmp_path, capsys):
    expected = GOLDENS[name]
    rc = cli.main(["convert", expected["repo"], "--mmproj", "--outtype", expected["outtype"], "-o", str(tmp_path), "-q"])
    assert rc == 0, capsys.readouterr().err
    (written,) = tmp_path.glob("*.gguf")
    assert written.name == expected["default_name"] and written.name.startswith("mmproj-")
    assert_same_projector(expected, written)


@pytest.mark.parametrize("repo", VLMS, ids=[r.split("/")[1] for r in VLMS])
def test_with_mmproj_writes_both_files_from_one_pass(repo, fresh_hub, tmp_path):
    name = repo.split("/")[1]
    seen = []
    result = hfstream.convert(repo, outtype="f16,q8_0", outfile=tmp_path, with_mmproj=True, on_progress=seen.append)
    # what it expected to fetch is what it fetched
    assert seen[-1].phase == "done" and seen[-1].bytes_to_fetch == seen[-1].bytes_fetched == result.bytes_fetched
    assert [o.path.name.startswith("mmproj-") for o in result.outputs] == [False, False, True, True]
    for o in result.outputs:
        if o.path.name.startswith("mmproj-"):
            expected = GOLDENS[f"{name}.{o.outtype}"]
            assert o.path.name == expected["default_name"]
            assert_same_projector(expected, o.path)
        else:
            expected = golden(f"{name}.{o.outtype}")
            assert o.path.name == expected["default_name"]
            assert diff_digests(comparable(expected), comparable(digest_gguf(o.path))) == []
    # every byte of the weights files once: the projector's tensors and the text model's (and the
    # text embedding's row a Pixtral projector takes), no range twice
    ranges = _shard_ranges(fresh_hub, repo)
    for i, (path, a, b) in enumerate(ranges):
        for other, c, d in ranges[:i]:
            assert other != path or b < c or a > d, f"bytes {a}-{b} fetched twice"
    alone = sum(b - a + 1 for _, a, b in ranges)
    fresh_hub.clear_log()
    hfstream.convert(repo, outtype="f16", outfile=tmp_path / "text-only", mmproj=False)
    text_only = sum(b - a + 1 for _, a, b in _shard_ranges(fresh_hub, repo))
    assert alone > text_only  # the projector's bytes came in the same pass


def test_a_pixtral_projector_alone_fetches_one_row_of_the_text_embedding(fresh_hub, fixture_root, tmp_path):
    """[IMG_BREAK]'s row: 128 bytes here (10 KB of Mistral Small's 1.3 GB embedding), not the embedding."""
    from fixtures import hostile

    repo = "hfs-test/tiny-mistral3-vlm"
    (snapshot,) = (fixture_root / repo / "commits").iterdir()
    shard = json.loads((snapshot / hostile.INDEX).read_text())["weight_map"]["language_model.model.embed_tokens.weight"]
    header, _ = hostile.split((snapshot / shard).read_bytes())
    entry = header["language_model.model.embed_tokens.weight"]
    data_start = 8 + int.from_bytes((snapshot / shard).read_bytes()[:8], "little")
    first, end = (data_start + o for o in entry["data_offsets"])
    token = 50258  # [IMG_BREAK] in the fixture's tokenizer
    row = 2 * entry["shape"][1]
    hfstream.convert(repo, outtype="f16", outfile=tmp_path, mmproj=True)
    inside = [(a, b) for _, a, b in _shard_ranges(fresh_hub, repo) if a < end and b >= first]
    assert inside == [(first + token * row, first + (token + 1) * row - 1)]


def test_a_projector_needs_the_image_processing_files(fresh_hub, fixture_root, tmp_path, capsys):
    (snapshot,) = (fixture_root / VLM / "commits").iterdir()
    repo = tmp_path / "tiny-gemma3-vlm"
    shutil.copytree(snapshot, repo)
    (repo / "preprocessor_config.json").unlink()
    (repo / "processor_config.json").unlink()
    out = tmp_path / "out"
    out.mkdir()
    rc = cli.main(["convert", str(repo), "--mmproj", "--outtype", "f16", "-o", str(out), "-q"])
    err = capsys.readouterr().err
    assert rc == errors.MissingFileError.exit_code
    assert err.strip().splitlines() == [err.strip()] and "preprocessor_config.json" in err and "image_mean" in err
    assert list(out.iterdir()) == []


def test_a_pixtral_projector_needs_the_img_break_token(fresh_hub, fixture_root, tmp_path, capsys):
    """Its [IMG_BREAK] row is what makes the file load in llama.cpp: without the token's id, one line."""
    (snapshot,) = (fixture_root / "hfs-test/tiny-mistral3-vlm" / "commits").iterdir()
    repo = tmp_path / "tiny-mistral3-vlm"
    shutil.copytree(snapshot, repo)
    config = json.loads((repo / "tokenizer_config.json").read_text())
    config["added_tokens_decoder"] = {k: v for k, v in config["added_tokens_decoder"].items()
                                      if v["content"] != "[IMG_BREAK]"}
    (repo / "tokenizer_config.json").write_text(json.dumps(config))
    out = tmp_path / "out"
    out.mkdir()
    # tokenizer.json still names it: found there, as the reference looks
    assert cli.main(["convert", str(repo), "--mmproj", "--outtype", "f16", "-o", str(out), "-q"]) == 0
    tokenizer = json.loads((repo / "tokenizer.json").read_text())
    tokenizer["added_tokens"] = [t for t in tokenizer["added_tokens"] if t["content"] != "[IMG_BREAK]"]
    (repo / "tokenizer.json").write_text(json.dumps(tokenizer))
    shutil.rmtree(out)
    out.mkdir()
    capsys.readouterr()
    rc = cli.main(["convert", str(repo), "--mmproj", "--outtype", "f16", "-o", str(out), "-q"])
    err = capsys.readouterr().err
    assert rc == errors.UnsupportedTokenizerError.exit_code, err
    assert err.strip().splitlines() == [err.strip()] and "[IMG_BREAK]" in err
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("args", [[], ["--mmproj"]], ids=["text", "mmproj"])
def test_a_llava_of_another_tower_is_refused_in_one_line(args, fresh_hub, fixture_root, tmp_path, capsys):
    """Llava's text model and projector are converted with Pixtral's tower only (llava-1.5's CLIP: not checked here,
    and no projector in the reference)."""
    (snapshot,) = (fixture_root / "hfs-test/tiny-pixtral" / "commits").iterdir()
    repo = tmp_path / "tiny-llava"
    shutil.copytree(snapshot, repo)
    config = json.loads((repo / "config.json").read_text())
    config["vision_config"] = {"hidden_size": 32, "image_size": 64, "intermediate_size": 64,
                               "model_type": "clip_vision_model", "num_attention_heads": 2, "num_hidden_layers": 3,
                               "patch_size": 16}
    (repo / "config.json").write_text(json.dumps(config))
    out = tmp_path / "out"
    out.mkdir()
    rc = cli.main(["convert", str(repo), *args, "--outtype", "f16", "-o", str(out), "-q"])
    err = capsys.readouterr().err
    assert rc == errors.UnsupportedArchitectureError.exit_code, err
    assert err.strip().splitlines() == [err.strip()] and "'clip_vision_model' vision tower" in err
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("name, tower", [("tiny-mistral3-vlm", "vision_tower."), ("tiny-llama4-vlm", "vision_model.")])
def test_a_tower_under_another_prefix_is_refused_not_left_out(name, tower, fresh_hub, fixture_root, tmp_path, capsys):
    """transformers 5 saves the tower as model.vision_tower.: the reference writes no tower from it (Mistral 3) or
    stops (Llama 4); hfstream says so in one line rather than writing a projector without a tower."""
    from fixtures import hostile

    (snapshot,) = (fixture_root / f"hfs-test/{name}" / "commits").iterdir()
    repo = tmp_path / name
    shutil.copytree(snapshot, repo)
    files = {p.name: p.read_bytes() for p in repo.iterdir()}
    renamed = {n: ("model." + n if n.startswith(tower) else n) for n in json.loads(files[hostile.INDEX])["weight_map"]}
    for shard in sorted(f for f in files if f.endswith(".safetensors")):
        files = hostile.rewrite_tensors(files, shard, lambda ts: [(renamed[n], shape, b) for n, shape, b in ts])
    files = hostile.edit_json(files, hostile.INDEX, lambda d: d.update(
        weight_map={renamed[n]: f for n, f in d["weight_map"].items()}))
    for file, blob in files.items():
        (repo / file).write_bytes(blob)
    out = tmp_path / "out"
    out.mkdir()
    rc = cli.main(["convert", str(repo), "--mmproj", "--outtype", "f16", "-o", str(out), "-q"])
    err = capsys.readouterr().err
    assert rc == errors.MissingTensorError.exit_code, err
    assert err.strip().splitlines() == [err.strip()] and f"{tower}" in err and "projector needs" in err
    assert list(out.iterdir()) == []


def test_a_model_without_a_projector_hfstream_converts_is_refused_in_one_line(fresh_hub, tmp_path, capsys):
    rc = cli.main(["convert", "hfs-test/tiny-llama-bpe", "--mmproj", "-o", str(tmp_path), "-q"])
    err = capsys.readouterr().err
    assert rc == errors.UnsupportedArchitectureError.exit_code
    assert "LlamaForCausalLM has no vision projector" in err and "Gemma3ForConditionalGeneration" in err
    assert len(err.strip().splitlines()) == 1 and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, words", [
    (["--mmproj", "--outtype", "q4_k_m"], ["q4_k_m", "f32, f16, bf16 or q8_0"]),
    (["--mmproj", "--with-mmproj"], ["--mmproj", "--with-mmproj"]),
    (["--with-mmproj", "-o", "{tmp}/one.gguf"], ["writes 2 files", "directory"]),
])
def test_options_a_projector_cannot_take_are_refused(fresh_hub, tmp_path, capsys, args, words):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "-o" not in args:
        args += ["-o", str(tmp_path)]
    rc = cli.main(["convert", VLM, *args, "-q"])
    err = capsys.readouterr().err
    assert rc == errors.UnsupportedOptionError.exit_code, err
    assert all(w in err for w in words), err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.skipif(not llamacpp.available(), reason="llama-cpp-python is not installed")
@pytest.mark.parametrize("name", sorted(GOLDENS), ids=sorted(GOLDENS))
def test_the_pair_runs_in_llama_cpp_s_multimodal_runtime_as_the_references(name, fresh_hub, tmp_path):
    """Text model and projector from one hfstream pass, on the test image: the reference pair's tokens."""
    expected = GOLDENS[name]
    result = hfstream.convert(expected["repo"], outtype=expected["greedy_text_outtype"], outfile=tmp_path,
                              with_mmproj=True)
    text, projector = (o.path for o in result.outputs)
    tokens = llamacpp.mtmd_greedy_tokens(text, projector, expected["greedy_prompt"], len(expected["greedy"]))
    assert tokens == expected["greedy"]
