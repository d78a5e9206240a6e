"""``--chat-template FILE``: the file's text written as the chat template, where the repo's would be.

The reference writes whatever template the repo gives; a repo that gives none gets none, except
DeepSeek-V4, for which it writes a template bundled with llama.cpp. The option makes both cases a
user's choice: hfstream's file for a repo given ``--chat-template T`` is the reference's file for the
same repo shipping ``T`` (so DeepSeek-V4 given llama.cpp's bundled file is the reference's bytes).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gguf
import pytest

import hfstream
from hfstream import cli, errors
from hfstream.vocab import with_chat_template
from fixtures.build import snapshot_dir

from .goldens.digest import diff_digests, digest_gguf
from .test_convert import comparable

TEMPLATE = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}{{ '<|assistant|>' }}"


def _copy(fixture_root: Path, repo: str, dest: Path) -> Path:
    shutil.copytree(snapshot_dir(fixture_root / repo), dest)
    return dest


def _without_template(repo: Path) -> str:
    """Take the chat template out of the repo's tokenizer_config.json; return it."""
    config = json.loads((repo / "tokenizer_config.json").read_text())
    template = config.pop("chat_template")
    (repo / "tokenizer_config.json").write_text(json.dumps(config))
    return template


def _fields(path: Path) -> dict:
    reader = gguf.GGUFReader(path)
    return {name: field.contents() for name, field in reader.fields.items() if not name.startswith("GGUF.")}


def test_deepseek_v4_without_a_template_gives_the_reference_file_for_the_template_given(fixture_root, tmp_path):
    """The V4 fixture without its template, given that template as a file: every tensor and key equal
    to the reference's golden of the fixture with it (the reference places the template before the
    hyperparameters, where the bundled one would go)."""
    repo = _copy(fixture_root, "hfs-test/tiny-deepseek-v4", tmp_path / "tiny-deepseek-v4")
    template_file = tmp_path / "deepseek-v4.jinja"
    template_file.write_text(_without_template(repo), encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    rc = cli.main(["convert", str(repo), "--outtype", "q8_0", "--chat-template", str(template_file),
                   "-o", str(out), "-q"])
    assert rc == 0
    expected = json.loads((Path(__file__).parent / "goldens" / "models" / "tiny-deepseek-v4.q8_0.json").read_text())
    ours = digest_gguf(out / expected["default_name"])
    assert diff_digests(comparable(expected), comparable(ours)) == []


def test_the_file_replaces_the_repo_template_and_nothing_else(fixture_root, tmp_path):
    """tiny-llama-spm ships a template in tokenizer_config.json: given another, the file differs from
    the plain run in that key's value only (same keys, same order, same tensors)."""
    repo = _copy(fixture_root, "hfs-test/tiny-llama-spm", tmp_path / "tiny-llama-spm")
    template_file = tmp_path / "t.jinja"
    template_file.write_text(TEMPLATE, encoding="utf-8")
    plain = hfstream.convert(str(repo), outtype="f16", outfile=tmp_path / "plain.gguf")
    given = hfstream.convert(str(repo), outtype="f16", outfile=tmp_path / "given.gguf", chat_template=template_file)
    a, b = _fields(plain.path), _fields(given.path)
    assert list(a) == list(b)
    assert a["tokenizer.chat_template"] != TEMPLATE and b["tokenizer.chat_template"] == TEMPLATE
    assert {k: v for k, v in a.items() if k != "tokenizer.chat_template"} == \
        {k: v for k, v in b.items() if k != "tokenizer.chat_template"}
    ra, rb = gguf.GGUFReader(plain.path), gguf.GGUFReader(given.path)
    assert [(t.name, t.data.tobytes()) for t in ra.tensors] == [(t.name, t.data.tobytes()) for t in rb.tensors]


def test_a_repo_without_a_template_gets_it_where_the_vocabulary_writes_one(fixture_root, tmp_path):
    """With the template taken out of tokenizer_config.json and given as a file, the output is the one of
    the untouched repo, byte for byte but for our own keys."""
    repo = _copy(fixture_root, "hfs-test/tiny-llama-spm", tmp_path / "tiny-llama-spm")
    untouched = hfstream.convert(str(repo), outtype="q8_0", outfile=tmp_path / "untouched.gguf")
    template_file = tmp_path / "t.jinja"
    template_file.write_text(_without_template(repo), encoding="utf-8")
    given = hfstream.convert(str(repo), outtype="q8_0", outfile=tmp_path / "given.gguf", chat_template=template_file)
    assert diff_digests(comparable(digest_gguf(untouched.path)), comparable(digest_gguf(given.path))) == []


def test_named_templates_give_way_too():
    """chat_template.json and additional_chat_templates/ are the repo's template as much as
    tokenizer_config.json's key: all of them give way, and the rest of tokenizer_config stays."""
    files = {
        "tokenizer_config.json": json.dumps({"chat_template": "old", "bos_token": "<s>", "x": [1, 2.5]}).encode(),
        "chat_template.json": b'{"chat_template": "older"}',
        "additional_chat_templates/tool_use.jinja": b"tools",
        "config.json": b"{}",
    }
    out = with_chat_template(files, TEMPLATE)
    assert sorted(out) == ["chat_template.jinja", "config.json", "tokenizer_config.json"]
    assert out["chat_template.jinja"].decode() == TEMPLATE
    assert json.loads(out["tokenizer_config.json"]) == {"bos_token": "<s>", "x": [1, 2.5]}
    assert out["config.json"] is files["config.json"]


@pytest.mark.parametrize("content, words", [
    (None, ["cannot read", "No such file"]),
    (b"\xff\xfe{{ x }}", ["not UTF-8"]),
    (b"  \n", ["empty"]),
], ids=["missing", "not-utf8", "empty"])
def test_a_bad_file_is_refused_in_one_line_before_the_hub_is_asked(content, words, fresh_hub, tmp_path, capsys):
    template_file = tmp_path / "t.jinja"
    if content is not None:
        template_file.write_bytes(content)
    out = tmp_path / "out.gguf"
    rc = cli.main(["convert", "hfs-test/tiny-llama-spm", "--chat-template", str(template_file), "-o", str(out), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == errors.InvalidChatTemplateError.exit_code == 36
    assert len(err) == 1 and all(w in err[0] for w in words), err
    assert fresh_hub.log == [] and not out.exists()
