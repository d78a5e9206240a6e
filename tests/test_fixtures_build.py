"""The fixture builder: deterministic, real-looking repos that match their specs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from fixtures import build as fb

safetensors = pytest.importorskip("safetensors")
from safetensors import safe_open  # noqa: E402

GOLDENS = Path(__file__).resolve().parent / "goldens" / "models"
ST_DTYPE_BYTES = {"F32": 4, "F16": 2, "BF16": 2}


def tree(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``root``."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def built(fixture_root):
    """The fixture tree every other test uses (``make fixtures`` built it; ``build`` here only confirms,
    by the spec hashes, that it is current). Nothing in this module writes into it."""
    return fixture_root, fb.build(fixture_root)


@pytest.fixture(scope="module")
def specs():
    return fb.load_specs()


#: a repo of each kind the builder makes: sharded with an index, two commits, gated, FP8 with block scales,
#: MXFP4, a vision model with its processor files, an embedding model with sentence-transformers' files
FRESH_SAMPLE = ["tiny-llama-sharded", "two-commits", "gated-llama", "tiny-deepseek-v3", "tiny-gpt-oss",
                "tiny-qwen35-moe-vlm", "tiny-embeddinggemma", "tiny-llama-fp8-dynamic"]


def _fresh_build_is_the_same(built, specs, tmp_path, names) -> None:
    """A fresh build of ``names`` in another process's directory, against the tree ``make fixtures`` made
    (maybe long before, from the same sources: the spec hash covers them): the same files, bytes and refs."""
    root_a, repos_a = built
    repos_b = fb.build(tmp_path / "b", only=names)
    assert {n: repos_b[n].refs for n in names} == {n: repos_a[n].refs for n in names}
    for name in names:
        repo = specs[name]["repo"]
        assert tree(tmp_path / "b" / repo) == tree(root_a / repo), repo
    assert (tmp_path / "b" / "_tokens.json").read_bytes() == (root_a / "_tokens.json").read_bytes()


def test_a_fresh_build_is_identical(built, specs, tmp_path):
    assert set(FRESH_SAMPLE) <= set(specs)
    _fresh_build_is_the_same(built, specs, tmp_path, FRESH_SAMPLE)


@pytest.mark.slow
def test_a_fresh_build_of_every_repo_is_identical(built, specs, tmp_path):
    _fresh_build_is_the_same(built, specs, tmp_path, list(specs))


def test_rebuild_is_skipped_and_force_gives_same_tree(built, tmp_path):
    root = tmp_path / "r"
    first = fb.build(root, only=["tiny-llama-spm"])
    assert not first["tiny-llama-spm"].skipped
    before = tree(root)
    assert fb.build(root, only=["tiny-llama-spm"])["tiny-llama-spm"].skipped
    assert not fb.build(root, only=["tiny-llama-spm"], force=True)["tiny-llama-spm"].skipped
    assert tree(root) == before


def test_layout_on_disk(built, specs):
    root, repos = built
    assert json.loads((root / "_tokens.json").read_text()) == {"valid": ["hf_fixture_good", "hf_fixture_noaccess"]}
    assert set(repos) == set(specs)
    for name, spec in specs.items():
        repo_dir = root / spec["repo"]
        meta = json.loads((repo_dir / "repo.json").read_text())
        assert set(meta) == {"refs", "gated", "private", "allowed_tokens"}
        assert meta["gated"] == spec["access"]["gated"] and meta["private"] == spec["access"]["private"]
        assert "main" in meta["refs"]
        for sha in meta["refs"].values():
            assert len(sha) == 40 and int(sha, 16) >= 0
            assert (repo_dir / "commits" / sha / "config.json").is_file()
    gated = json.loads((root / "hfs-test/gated-llama/repo.json").read_text())
    assert gated["gated"] is True and gated["allowed_tokens"] == ["hf_fixture_good"]


def test_prng_stream_is_pinned():
    # PCG64's raw stream is stable across numpy versions; these values pin the mapping to floats too.
    u = fb.uniform(1, "x", 4)
    assert u.tolist() == PINNED_UNIFORM
    assert fb.tensor_seed(1, "x") == int.from_bytes(hashlib.sha256(b"1/x").digest()[:16], "little")


PINNED_UNIFORM = [-0.1483535749164595, -0.6912403600079162, -0.7002320507549733, 0.21343884665846136]


def test_bf16_rounds_to_nearest_even():
    bits = np.array([0x3F800000, 0x3F808000, 0x3F818000, 0x3F808001, 0xBF7FFFFF, 0x00000001], dtype=np.uint32)
    got = np.frombuffer(fb.encode(bits.view(np.float32), "bf16"), dtype="<u2").tolist()
    assert got == [0x3F80, 0x3F80, 0x3F82, 0x3F81, 0xBF80, 0x0000]


def read_header(path: Path) -> dict:
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    assert n % 8 == 0
    return json.loads(raw[8 : 8 + n])


@pytest.mark.parametrize("name", ["tiny-llama-bpe", "tiny-llama-spm", "tiny-mistral", "tiny-llama-sharded",
                                  "two-commits", "gated-llama", "unsupported-arch"])
def test_safetensors_match_spec(built, specs, name):
    root, _ = built
    spec = specs[name]
    snap = fb.snapshot_dir(root / spec["repo"])
    config = json.loads((snap / "config.json").read_text())
    assert config == spec["config"]
    expected = dict(fb.decoder_tensors(config))
    st_dtype = fb.ST_DTYPES[spec["weights"]["dtype"]][0]
    files = sorted(snap.glob("*.safetensors"))
    seen: dict[str, str] = {}
    for f in files:
        header = read_header(f)
        assert next(iter(header)) == "__metadata__" and header["__metadata__"] == {"format": "pt"}
        names = [k for k in header if k != "__metadata__"]
        assert names == sorted(names)
        with safe_open(f, framework="numpy") as st:
            assert sorted(st.keys()) == names
            assert st.metadata() == {"format": "pt"}
            for key in names:
                info = header[key]
                assert info["dtype"] == st_dtype
                assert tuple(info["shape"]) == expected[key]
                assert info["data_offsets"][1] - info["data_offsets"][0] == np.prod(expected[key]) * ST_DTYPE_BYTES[st_dtype]
                assert st.get_slice(key).get_shape() == list(expected[key])
                if st_dtype != "BF16":  # numpy has no bfloat16
                    values = st.get_tensor(key).astype(np.float32)
                    center, half = fb.init_scale(key, expected[key])
                    assert np.all(np.abs(values - center) <= half * 1.001)
                    assert values.std() > half / 4  # uniform: std = half / sqrt(3) = 0.58 half
                seen[key] = f.name
    assert set(seen) == set(expected)
    assert ("lm_head.weight" in seen) == (not config.get("tie_word_embeddings", False))


@pytest.mark.parametrize("name", ["tiny-llama-spm", "tiny-llama-sharded"])
def test_writer_matches_the_safetensors_package(built, name):
    """For the dtypes numpy has (f16, f32), the safetensors package writes the very same bytes."""
    from safetensors.numpy import load_file, save

    root, _ = built
    for f in sorted(fb.snapshot_dir(root / f"hfs-test/{name}").glob("*.safetensors")):
        assert f.read_bytes() == save(load_file(f), metadata={"format": "pt"}), f.name


def test_sharded_index_covers_every_tensor(built):
    root, _ = built
    snap = fb.snapshot_dir(root / "hfs-test/tiny-llama-sharded")
    shards = sorted(p.name for p in snap.glob("*.safetensors"))
    assert shards == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    index = json.loads((snap / "model.safetensors.index.json").read_text())
    in_files = {}
    total = 0
    for shard in shards:
        header = read_header(snap / shard)
        for key, info in header.items():
            if key != "__metadata__":
                in_files[key] = shard
                total += info["data_offsets"][1] - info["data_offsets"][0]
    assert index["weight_map"] == in_files
    assert list(index["weight_map"]) == sorted(index["weight_map"])
    assert index["metadata"]["total_size"] == total
    assert "lm_head.weight" not in in_files


def test_two_commits(built):
    root, repos = built
    repo = repos["two-commits"]
    assert len(repo.commits) == 2 and repo.commits[0] != repo.commits[1]
    # (a build that found the repo current lists its commits by name, not in history order)
    assert set(repo.refs) == {"v1", "main"} and set(repo.refs.values()) == set(repo.commits)
    v1, main = (root / "hfs-test/two-commits/commits" / repo.refs[ref] for ref in ("v1", "main"))
    assert sorted(p.name for p in v1.iterdir()) == sorted(p.name for p in main.iterdir())
    assert (v1 / "README.md").read_bytes() != (main / "README.md").read_bytes()
    assert (v1 / "model.safetensors").read_bytes() != (main / "model.safetensors").read_bytes()
    assert (v1 / "config.json").read_bytes() == (main / "config.json").read_bytes()
    assert (v1 / "tokenizer.model").stat().st_ino == (main / "tokenizer.model").stat().st_ino  # hard link


def test_small_files_look_real(built, specs):
    yaml = pytest.importorskip("yaml")
    root, _ = built
    for name, spec in specs.items():
        snap = fb.snapshot_dir(root / spec["repo"])
        readme = (snap / "README.md").read_text()
        assert readme.startswith("---\n")
        front = yaml.safe_load(readme.split("---\n")[1])
        assert front == spec["readme"]["front_matter"]
        if spec.get("tokenizer"):
            config = json.loads((snap / "config.json").read_text())
            files = {p.name: p.read_bytes() for p in snap.iterdir() if p.is_file()}
            vocab_size, n_tok = fb.config_vocab_size(config), fb.tokenizer_vocab_size(files)
            if spec.get("vocab_padded"):
                assert n_tok <= vocab_size
            else:
                assert n_tok == spec.get("tokenizer_ids", vocab_size)
            assert (snap / "tokenizer_config.json").is_file()
            if spec.get("generation_config"):
                assert json.loads((snap / "generation_config.json").read_text()) == spec["generation_config"]
            else:  # an encoder (embedding model) generates nothing
                assert not (snap / "generation_config.json").exists()


def test_error_repos(built):
    root, _ = built
    names = lambda repo: sorted(p.name for p in fb.snapshot_dir(root / repo).iterdir())  # noqa: E731
    assert names("hfs-test/no-weights") == [".gitattributes", "README.md", "config.json"]
    assert "pytorch_model.bin" in names("hfs-test/pytorch-only")
    assert not any(n.endswith(".safetensors") for n in names("hfs-test/pytorch-only"))
    cfg = json.loads((fb.snapshot_dir(root / "hfs-test/unsupported-arch") / "config.json").read_text())
    assert cfg["architectures"] == ["FooBarForCausalLM"]
    assert "model.safetensors" in names("hfs-test/unsupported-arch")


def test_goldens_are_from_these_fixtures(built):
    """A golden names the commit it was made from: a fixture change needs regenerated goldens."""
    root, repos = built
    goldens = sorted(GOLDENS.glob("*.json"))
    if not goldens:
        pytest.skip("no goldens yet")
    stale = []
    for path in goldens:
        golden = json.loads(path.read_text())
        name = golden["repo"].split("/")[1]
        if repos[name].refs[golden["revision"]] != golden["commit"]:
            stale.append(path.name)
    assert not stale, f"goldens made from other fixture commits (run python -m tests.goldens.generate): {stale}"
