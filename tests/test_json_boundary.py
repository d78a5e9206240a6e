"""Every JSON file hfstream reads, with the same hostile content in each: one line, the file's own
exit code, never ``internal error`` (exit 1). Through the CLI's ``main`` in this process, on a local
model directory (``--dry-run``: every file is read and checked before any tensor byte would move).

The loader itself (``hfstream.jsonfile``) is checked against a reference depth count at the end.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from fixtures.hostile import ONE_FILE, base_files, join, split
from hfstream import cli, errors, jsonfile

#: the same contents in every file
BOMBS = {
    "depth-bomb": b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",  # RecursionError in json.loads
    "deep-but-parses": b'{"x": ' + b"[" * 500 + b"]" * 500 + b"}",  # parses; copy.deepcopy would overflow
    "long-number": b'{"x": ' + b"9" * 5000 + b"}",  # ValueError: over int_max_str_digits
    "not-utf8": b'{"x": "caf\xe9"}',
    "not-json": b"{'x': 1}",
}
#: the words each bomb's line must contain (after the file's name)
SAYS = {"depth-bomb": "is nested more than 32 levels deep", "deep-but-parses": "is nested more than 32 levels deep",
        "long-number": "is not valid JSON (a number is too long)", "not-utf8": "is not valid UTF-8",
        "not-json": "is not valid JSON"}

C, T = errors.InvalidConfigError, errors.UnsupportedTokenizerError
#: file -> (its error, the base repo it is planted in)
FILES = {
    "config.json": (C, "llama"),
    "tokenizer_config.json": (T, "llama"),
    "special_tokens_map.json": (T, "llama-bpe"),
    "added_tokens.json": (T, "llama"),
    "chat_template.json": (T, "llama"),
    "tokenizer.json": (T, "llama-bpe"),  # without tokenizer.model, so that tokenizer.json is the vocabulary
    "model.safetensors.index.json": (errors.InvalidIndexError, "llama-sharded"),
    f"{ONE_FILE} header": (errors.InvalidHeaderError, "llama"),
    "modules.json": (C, "qwen3-embedding"),
    "1_Pooling/config.json": (C, "qwen3-embedding"),
}


@pytest.fixture(scope="module")
def bases(fixture_root, tmp_path_factory) -> dict[str, Path]:
    """Valid model directories to plant a bomb in, one per kind of base."""
    root = tmp_path_factory.mktemp("json-bases")
    out = {}
    for name, files in (("llama", base_files()), ("llama-sharded", base_files(sharded=True)),
                        ("llama-bpe", {k: v for k, v in base_files().items() if k != "tokenizer.model"})):
        out[name] = root / name
        for rel, data in files.items():
            (out[name] / rel).parent.mkdir(parents=True, exist_ok=True)
            (out[name] / rel).write_bytes(data)
    repo = fixture_root / "hfs-test" / "tiny-qwen3-embedding"
    sha = json.loads((repo / "repo.json").read_text())["refs"]["main"]
    out["qwen3-embedding"] = root / "qwen3-embedding"
    shutil.copytree(repo / "commits" / sha, out["qwen3-embedding"])
    assert (out["qwen3-embedding"] / "modules.json").exists() and (out["qwen3-embedding"] / "1_Pooling").is_dir()
    return out


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = cli.main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def plant(base: Path, target: Path, file: str, bomb: bytes) -> None:
    shutil.copytree(base, target)
    if file.endswith(" header"):
        path = target / file.removesuffix(" header")
        path.write_bytes(join(bomb, split(path.read_bytes())[1]))
    else:
        (target / file).write_bytes(bomb)


def test_every_base_converts_before_a_bomb_is_planted(bases, tmp_path, capsys):
    for name, base in bases.items():
        code, _, err = run_cli(["convert", str(base), "--dry-run", "-o", str(tmp_path)], capsys)
        assert code == 0, (name, err)


@pytest.mark.parametrize("bomb", list(BOMBS))
@pytest.mark.parametrize("file", list(FILES))
def test_the_same_bomb_in_each_file_is_that_files_one_line_error(file, bomb, bases, tmp_path, capsys):
    error, base = FILES[file]
    model = tmp_path / "model"
    plant(bases[base], model, file, BOMBS[bomb])
    code, _, err = run_cli(["convert", str(model), "--dry-run", "-o", str(tmp_path)], capsys)
    lines = err.strip().splitlines()
    assert code == error.exit_code, err
    assert len(lines) == 1 and lines[0].startswith("hfstream: error: "), err
    assert f"{file.replace(' header', ': header')} {SAYS[bomb]}" in lines[0], lines[0]
    assert "internal error" not in err and "Traceback" not in err


@pytest.mark.parametrize("bomb", list(BOMBS))
def test_a_bomb_in_generation_config_is_ignored_as_the_reference_ignores_a_bad_one(bomb, bases, tmp_path, capsys):
    """The reference reads generation_config.json leniently ("not all models have valid
    generation_config.json"): hfstream converts without its sampling keys."""
    model = tmp_path / "model"
    plant(bases["llama"], model, "generation_config.json", BOMBS[bomb])
    code, _, err = run_cli(["convert", str(model), "-q", "-o", str(tmp_path / "out.gguf")], capsys)
    assert code == 0, err
    import gguf

    keys = set(gguf.GGUFReader(tmp_path / "out.gguf").fields)
    assert "general.architecture" in keys
    assert not any(k.startswith("general.sampling.") for k in keys)


@pytest.mark.parametrize("bomb", list(BOMBS))
def test_the_same_bomb_in_the_mirror_state_file_is_exit_60(bomb, tmp_path, capsys):
    manifest = tmp_path / "mirror.toml"
    manifest.write_text('[[model]]\nrepo = "org/model"\ntarget_dir = "out"\n')
    state = tmp_path / "state.json"
    state.write_bytes(BOMBS[bomb])
    code, _, err = run_cli(["mirror", str(manifest), "--state", str(state)], capsys)
    lines = err.strip().splitlines()
    assert code == errors.ManifestError.exit_code == 60, err
    assert len(lines) == 1 and f"{state}: the state file {SAYS[bomb]}" in lines[0], err
    assert "move it away" in lines[0]
    assert state.read_bytes() == BOMBS[bomb]  # not overwritten


@pytest.mark.parametrize("state, says", [
    (b"[]", "the state file is not a JSON object"),
    (b'{"done": [1, 2]}', "'done' is not a JSON object"),
    (b'{"done": {"k": "converted"}}', "entry 'k' is not a JSON object"),
    (b'{"done": {"k": {"outputs": [5]}}}', "entry 'k' has 'outputs' that are not paths"),
])
def test_a_mirror_state_of_the_wrong_shape_is_exit_60_not_an_internal_error(state, says, tmp_path, capsys):
    manifest = tmp_path / "mirror.toml"
    manifest.write_text('[[model]]\nrepo = "org/model"\ntarget_dir = "out"\n')
    (tmp_path / "state.json").write_bytes(state)
    code, _, err = run_cli(["mirror", str(manifest), "--state", str(tmp_path / "state.json")], capsys)
    assert code == 60, err
    assert says in err and len(err.strip().splitlines()) == 1


# --- the loader ---------------------------------------------------------------------------------


def _depth(value) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


def _random_json(rng: random.Random, level: int = 0):
    """Values whose strings are full of what could fool a count of brackets: [ ] { } " and \\."""
    r = rng.random()
    if level > 8 or r < 0.3:
        return rng.choice([1, None, 2.5, "a[b", 'q"{', "\\", '\\"[', "]]}}", "\\\\", '"', "x\\"])
    if r < 0.65:
        return [_random_json(rng, level + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(["k", "[", '\\"{', "x\\\\", "}"]) + str(i): _random_json(rng, level + 1)
            for i in range(rng.randint(0, 3))}


def test_the_depth_count_on_the_text_is_the_depth_of_what_parses():
    rng = random.Random(5)
    for _ in range(2000):
        value = _random_json(rng)
        text = json.dumps(value, ensure_ascii=rng.random() < 0.5).encode()
        depth = _depth(value)
        assert not jsonfile.nested_deeper_than(text, depth), text
        if depth:
            assert jsonfile.nested_deeper_than(text, depth - 1), text


def test_the_depth_count_carries_strings_and_levels_across_its_chunks():
    chunk = jsonfile._CHUNK
    # a string of brackets longer than a chunk: its brackets do not count, the ones after it do
    text = json.dumps({"a": "[" * (chunk + 5), "b": [[["x"]]]}).encode()
    assert not jsonfile.nested_deeper_than(text, 4) and jsonfile.nested_deeper_than(text, 3)
    # levels opened in one chunk and closed in the next
    text = b"[" * 10 + b" " * chunk + b"[" * 10 + b"]" * 20
    assert not jsonfile.nested_deeper_than(text, 20) and jsonfile.nested_deeper_than(text, 19)


def test_kinds_follow_the_file():
    assert jsonfile.kind_of("config.json").error is errors.InvalidConfigError
    assert jsonfile.kind_of("1_Pooling/config.json").error is errors.InvalidConfigError
    assert jsonfile.kind_of("tokenizer.json").error is errors.UnsupportedTokenizerError
    assert jsonfile.kind_of("model.safetensors.index.json").unique_keys
    assert jsonfile.load(b'{"a": 1, "a": 2}', "config.json") == {"a": 2}  # transformers keeps the last
    with pytest.raises(errors.InvalidIndexError, match="names the key 'a' twice"):
        jsonfile.load(b'{"a": 1, "a": 2}', "model.safetensors.index.json")
    with pytest.raises(errors.InvalidConfigError, match="too large"):
        jsonfile.load(b" " * (jsonfile.CONFIG.max_bytes + 1), "config.json")
