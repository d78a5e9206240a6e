"""hfstream.vocab against the reference converter's output (committed goldens, no torch needed).

The goldens in tests/goldens/vocab/ were made by tests/goldens/make_vocab_goldens.py, which runs
llama.cpp's convert_hf_to_gguf.py --vocab-only on the same files these tests feed to add_vocab.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import struct
from pathlib import Path

import gguf
import pytest

from hfstream import errors
from hfstream.vocab import add_vocab

HERE = Path(__file__).resolve().parent
GOLDENS = HERE / "goldens" / "vocab"
ROOT_FIXTURES = HERE.parent / "fixtures" / "tokenizers"

_spec = importlib.util.spec_from_file_location("make_vocab_goldens", HERE / "goldens" / "make_vocab_goldens.py")
mvg = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mvg)

CASE_NAMES = sorted(p.stem for p in GOLDENS.glob("*.json"))
#: the reference writes the names of extra chat templates in set order (varies run to run); we sort
ORDER_FREE_ARRAYS = {"tokenizer.chat_templates"}


_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_TYPE_NAMES = {0: "UINT8", 1: "INT8", 2: "UINT16", 3: "INT16", 4: "UINT32", 5: "INT32", 6: "FLOAT32", 7: "BOOL",
               8: "STRING", 9: "ARRAY", 10: "UINT64", 11: "INT64", 12: "FLOAT64"}


def read_kvs(path: Path, prefix: str = "tokenizer.") -> list[dict]:
    """The ``prefix*`` KVs of a GGUF file, described like make_vocab_goldens.describe_kvs does.

    A small parser of our own (the goldens were described with gguf.GGUFReader, so the two
    cross-check each other), and much faster than GGUFReader on 400k strings.
    """
    buf = path.read_bytes()
    magic, _version, _n_tensors, n_kv = struct.unpack_from("<4sIQQ", buf, 0)
    assert magic == b"GGUF"
    pos = 24

    def string(pos: int) -> tuple[str, int]:
        (n,) = struct.unpack_from("<Q", buf, pos)
        return buf[pos + 8: pos + 8 + n].decode("utf-8"), pos + 8 + n

    def value(vtype: int, pos: int):
        if vtype == 8:
            return string(pos)
        fmt = _SCALARS[vtype]
        return struct.unpack_from(fmt, buf, pos)[0], pos + struct.calcsize(fmt)

    out = []
    for _ in range(n_kv):
        start = pos
        key, pos = string(pos)
        (vtype,) = struct.unpack_from("<I", buf, pos)
        pos += 4
        if vtype == 9:
            sub, count = struct.unpack_from("<IQ", buf, pos)
            pos += 12
            items = []
            for _ in range(count):
                item, pos = value(sub, pos)
                items.append(item)
            entry = {"type": f"ARRAY/{_TYPE_NAMES[sub]}", "len": count}
            if count <= 16:
                entry["value"] = items
        else:
            val, pos = value(vtype, pos)
            entry = {"type": _TYPE_NAMES[vtype], "value": val}
        if key.startswith(prefix):
            out.append({"key": key, "type": entry["type"], "sha256": hashlib.sha256(buf[start:pos]).hexdigest(),
                        **{k: v for k, v in entry.items() if k != "type"}})
    return out


def golden(name: str) -> dict:
    return json.loads((GOLDENS / f"{name}.json").read_text(encoding="utf-8"))


def write_vocab(tmp_path: Path, files: dict[str, bytes], **kwargs) -> tuple[list[dict], list[str]]:
    """Run add_vocab into a fresh writer, serialise it, describe the tokenizer KVs."""
    hparams = json.loads(files["config.json"])
    path = tmp_path / "vocab.gguf"
    writer = gguf.GGUFWriter(path=str(path), arch="llama")
    add_vocab(writer, files, hparams, **kwargs)
    keys = list(writer.kv_data[0])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    return read_kvs(path), keys


def comparable(kvs: list[dict]) -> list[dict]:
    out = []
    for kv in kvs:
        if kv["key"] in ORDER_FREE_ARRAYS:
            kv = {"key": kv["key"], "type": kv["type"], "len": kv["len"], "value": sorted(kv["value"])}
        out.append(kv)
    return out


@pytest.fixture(scope="module")
def produced(tmp_path_factory) -> dict[str, tuple[list[dict], list[str]]]:
    cache: dict[str, tuple[list[dict], list[str]]] = {}

    def get(name: str):
        if name not in cache:
            files = mvg.case_files(golden(name)["case"])
            cache[name] = write_vocab(tmp_path_factory.mktemp(name), files)
        return cache[name]

    return get


def test_goldens_describe_the_current_cases():
    """The committed goldens were made from the case list the generator has now."""
    assert set(CASE_NAMES) == set(mvg.CASES)
    for name in CASE_NAMES:
        assert golden(name)["case"] == json.loads(json.dumps(mvg.CASES[name]))


@pytest.mark.parametrize("name", CASE_NAMES)
def test_matches_reference(name, produced):
    kvs, _ = produced(name)
    want = golden(name)["kvs"]
    assert [kv["key"] for kv in kvs] == [kv["key"] for kv in want], "key order differs"
    for got, exp in zip(comparable(kvs), comparable(want)):
        assert got == exp, got["key"]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_writes_only_tokenizer_keys(name, produced):
    _, keys = produced(name)
    assert [k for k in keys if not k.startswith("tokenizer.") and k != "general.architecture"] == []


def _files(name: str) -> dict[str, bytes]:
    return mvg.case_files(mvg.CASES[name])


def test_bpe_pre_override(tmp_path):
    files = _files("gpt2")
    kvs, _ = write_vocab(tmp_path, files, bpe_pre="qwen2")
    by_key = {kv["key"]: kv for kv in kvs}
    assert by_key["tokenizer.ggml.pre"]["value"] == "qwen2"
    want = {kv["key"]: kv for kv in golden("gpt2")["kvs"]}
    assert by_key.keys() == want.keys()
    for key in want:
        if key != "tokenizer.ggml.pre":
            assert by_key[key] == want[key], key


def _unknown_pre_tokenizer_files() -> dict[str, bytes]:
    """gpt2 with its pre-tokenizer swapped for a digit-splitting one: a hash nobody knows."""
    files = _files("gpt2")
    tj = json.loads(files["tokenizer.json"])
    tj["pre_tokenizer"] = {
        "type": "Sequence",
        "pretokenizers": [
            {"type": "Digits", "individual_digits": True},
            tj["pre_tokenizer"],
        ],
    }
    files["tokenizer.json"] = json.dumps(tj).encode()
    return files


def test_unknown_pre_tokenizer_names_hash_and_option(tmp_path):
    with pytest.raises(errors.UnsupportedTokenizerError) as info:
        write_vocab(tmp_path, _unknown_pre_tokenizer_files())
    msg = str(info.value)
    assert "\n" not in msg
    assert "--bpe-pre" in msg
    assert re.search(r"\b[0-9a-f]{64}\b", msg)


def test_unknown_pre_tokenizer_accepted_with_override(tmp_path):
    kvs, _ = write_vocab(tmp_path, _unknown_pre_tokenizer_files(), bpe_pre="gpt-2")
    assert {kv["key"]: kv.get("value") for kv in kvs}["tokenizer.ggml.pre"] == "gpt-2"


def test_missing_tokenizer_is_a_clear_error(tmp_path):
    files = {"config.json": _files("gpt2")["config.json"]}
    with pytest.raises(errors.UnsupportedTokenizerError, match="tokenizer.model or tokenizer.json"):
        write_vocab(tmp_path, files)


def test_bpe_only_family_does_not_take_tokenizer_model(tmp_path):
    files = {k: v for k, v in _files("spm-tiny").items() if k != "tokenizer.json"}
    with pytest.raises(errors.UnsupportedTokenizerError, match="tokenizer.json"):
        write_vocab(tmp_path, files, strategies=("bpe",))


def test_llama_quirks_follow_the_llama_strategy_order(tmp_path):
    """add_space_prefix comes from LlamaModel.set_vocab only; a BPE-only family does not write it."""
    kvs, _ = write_vocab(tmp_path, _files("gpt2"), strategies=("bpe",))
    keys = [kv["key"] for kv in kvs]
    assert "tokenizer.ggml.add_space_prefix" not in keys
    assert keys == [kv["key"] for kv in golden("gpt2")["kvs"] if kv["key"] != "tokenizer.ggml.add_space_prefix"]


def test_a_tokenizer_file_that_is_not_json_is_a_tokenizer_error(tmp_path):
    files = _files("spm-tiny")
    files["tokenizer_config.json"] = b"{not json"
    with pytest.raises(errors.UnsupportedTokenizerError, match="tokenizer_config.json is not valid JSON"):
        write_vocab(tmp_path, files)


def test_bad_sentencepiece_model(tmp_path):
    files = _files("spm-tiny")
    files["tokenizer.model"] = b"\x00garbage"
    with pytest.raises(errors.UnsupportedTokenizerError, match="tokenizer.model"):
        write_vocab(tmp_path, files)


def test_vocab_size_smaller_than_bpe_tokenizer(tmp_path):
    files = _files("gpt2")
    config = json.loads(files["config.json"])
    config["vocab_size"] = 50000
    files["config.json"] = json.dumps(config).encode()
    with pytest.raises(errors.ConfigMismatchError, match="vocab_size"):
        write_vocab(tmp_path, files)


def test_unknown_strategy_is_a_programming_error(tmp_path):
    with pytest.raises(ValueError):
        write_vocab(tmp_path, _files("gpt2"), strategies=("wordpiece",))


def _kv_values(tmp_path: Path, files: dict[str, bytes]) -> dict:
    kvs, _ = write_vocab(tmp_path, files)
    return {kv["key"]: kv.get("value") for kv in kvs}


def test_several_extra_chat_templates_are_written_sorted(tmp_path):
    """The reference lists them in directory order (not reproducible); we sort by name."""
    files = _files("spm-tiny-extra")
    files["additional_chat_templates/zeta.jinja"] = b"z"
    files["additional_chat_templates/alpha.jinja"] = b"a"
    kv = _kv_values(tmp_path, files)
    assert kv["tokenizer.chat_templates"] == ["alpha", "tool_use", "zeta"]
    assert kv["tokenizer.chat_template.alpha"] == "a"
    assert kv["tokenizer.chat_template"] == mvg.EXTRA_JINJA


def test_chat_template_json_is_used_when_tokenizer_config_has_none(tmp_path):
    files = _files("spm-tiny")
    tc = json.loads(files["tokenizer_config.json"])
    del tc["chat_template"]
    files["tokenizer_config.json"] = json.dumps(tc).encode()
    files["chat_template.json"] = json.dumps({"chat_template": "{{ messages }}"}).encode()
    assert _kv_values(tmp_path, files)["tokenizer.chat_template"] == "{{ messages }}"


def test_sentencepiece_reads_no_files(tmp_path, monkeypatch):
    """tokenizer.model is loaded from bytes: no file of the repo is opened."""
    import builtins

    real_open = builtins.open
    opened = []

    def spy(path, *args, **kwargs):
        opened.append(str(path))
        return real_open(path, *args, **kwargs)

    files = _files("spm-tiny")
    monkeypatch.setattr(builtins, "open", spy)
    writer = gguf.GGUFWriter(path=None, arch="llama")
    add_vocab(writer, files, json.loads(files["config.json"]))
    monkeypatch.undo()
    assert [p for p in opened if "fixtures" in p or p.endswith((".model", ".json"))] == []


def test_merges_join_the_same_way_from_either_spelling():
    from hfstream.vocab import _joined_merges

    assert _joined_merges(["a b", "ab c"]) == ["a b", "ab c"]
    assert _joined_merges([["a", "b"], ["ab", "c"]]) == ["a b", "ab c"]
    # a space inside a part is written as U+0120 (the per-pair path), whatever else the list holds
    assert _joined_merges([["a", "b"], ["x y", "z"]]) == ["a b", "x\u0120y z"]
    assert _joined_merges([["a", "b"], ["c", "d", "e"]]) == ["a b", "c d e"]  # odd pairs: as the reference joins them
    assert _joined_merges([]) is None and _joined_merges([{"a": 1}]) is None and _joined_merges("a b") is None


# --- the tokenizer loaded with only the merges it needs --------------------------------------------

BPE_FIXTURES = ["llama-bpe", "qwen2", "gpt2", "toy-bpe"]


@pytest.mark.parametrize("fixture", BPE_FIXTURES)
def test_fewer_merges_give_the_same_hash_ids_and_added_tokens(fixture):
    """The lighter tokenizer.json keeps the vocabulary whole and the merges the check text can use."""
    from tokenizers import Tokenizer

    from hfstream.vocab import _bpe_pre_table, _with_needed_merges

    data = (ROOT_FIXTURES / fixture / "tokenizer.json").read_bytes()
    tj = json.loads(data)
    chktxt = _bpe_pre_table()["chktxt"]
    lighter = _with_needed_merges(data, tj, [chktxt])
    assert isinstance(lighter, bytes)
    full, light = Tokenizer.from_buffer(data), Tokenizer.from_buffer(lighter)
    assert len(json.loads(lighter)["model"]["merges"]) < len(tj["model"]["merges"]) / 4
    assert light.encode(chktxt).ids == full.encode(chktxt).ids
    assert light.get_vocab() == full.get_vocab()
    assert {i: t.content for i, t in light.get_added_tokens_decoder().items()} == \
        {i: t.content for i, t in full.get_added_tokens_decoder().items()}


def test_merges_are_spliced_into_the_saved_layout_else_serialized():
    from hfstream.vocab import _replace_merges, _with_needed_merges

    data = (ROOT_FIXTURES / "toy-bpe" / "tokenizer.json").read_bytes()
    spliced = _replace_merges(data, [["a", "b"]])
    assert spliced is not None and json.loads(spliced) == {**json.loads(data), "model": {
        **json.loads(data)["model"], "merges": [["a", "b"]]}}
    # the lighter tokenizer of a file in the saved layout is a splice: the bytes before the merges unchanged
    lighter = _with_needed_merges(data, json.loads(data), ["hello world"])
    assert lighter.startswith(data[:data.index(b'"merges"')])
    # another key after "model": the splice would be wrong, so none; the caller serializes instead
    moved = json.loads(data)
    moved = {"model": moved.pop("model"), **moved}
    moved_data = json.dumps(moved, indent=2, ensure_ascii=False).encode("utf-8")
    assert _replace_merges(moved_data, [["a", "b"]]) is None
    lighter = _with_needed_merges(moved_data, moved, ["hello world"])
    assert json.loads(lighter)["model"]["vocab"] == moved["model"]["vocab"]


@pytest.fixture
def loaded(monkeypatch) -> list[str]:
    """Which tokenizer.json each _FastTokenizer was built from, "light" or "full", in order."""
    from hfstream import vocab

    seen: list[str] = []
    real_init = vocab._FastTokenizer.__init__

    def spy(self, repo, data=None):
        seen.append("light" if data is not None else "full")
        real_init(self, repo, data)

    monkeypatch.setattr(vocab._FastTokenizer, "__init__", spy)
    return seen


def test_when_the_kept_merges_fall_short_the_whole_tokenizer_decides(tmp_path, monkeypatch, loaded):
    """A lighter tokenizer whose hash is unknown is not trusted: the full one is asked, same output."""
    from hfstream import vocab

    # no merges at all: the check text encodes differently, so its hash is not in the table
    monkeypatch.setattr(vocab, "_with_needed_merges",
                        lambda data, tj, texts: json.dumps({**tj, "model": {**tj["model"], "merges": []}}).encode())
    files = mvg.case_files(golden("llama-bpe")["case"])
    kvs, _ = write_vocab(tmp_path, files)
    assert loaded == ["light", "full"]
    assert comparable(kvs) == comparable(golden("llama-bpe")["kvs"])


@pytest.mark.parametrize("name", ["llama-bpe", "gpt2", "gpt2-added"])
def test_bpe_cases_load_the_lighter_tokenizer_only(name, tmp_path, loaded):
    """The fallback to the whole tokenizer is for surprises, not for the tokenizers we know."""
    kvs, _ = write_vocab(tmp_path, mvg.case_files(golden(name)["case"]))
    assert loaded == ["light"]
    assert comparable(kvs) == comparable(golden(name)["kvs"])
