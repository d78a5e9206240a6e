"""Every option declared once (hfstream.options.Options): the API, the CLI and mirror manifests read it."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

import hfstream
from hfstream import cli, errors, options
from hfstream.mirror import _OPTION_TYPES
from hfstream.options import Options


def _cli_options(argv: list[str]) -> Options:
    args = cli.build_parser().parse_args(["convert", "org/model", *argv])
    return Options(**{f.name: getattr(args, f.name) for f in options.fields() if f.metadata["flags"]})


def test_the_cli_and_the_api_build_the_same_options():
    from_cli = _cli_options(["--outtype", "q4_k_m", "--revision", "v1", "-o", "out/", "--token", "hf_x",
                             "--imatrix", "m.gguf", "--tensor-type", "attn_v=q8_0", "--tensor-type", "ffn=q6_k",
                             "--output-tensor-type", "q8_0", "--token-embedding-type", "q6_k", "--dry-run",
                             "--force", "--bpe-pre", "llama-bpe", "--connections", "3", "--threads", "2",
                             "--max-memory", "64M", "--split-max-size", "2G", "--split-max-tensors", "7",
                             "--retries", "4", "--timeout", "12.5"])
    from_api = Options("q4_k_m", "v1", "out/", "hf_x", imatrix="m.gguf", tensor_types=["attn_v=q8_0", "ffn=q6_k"],
                       output_tensor_type="q8_0", token_embedding_type="q6_k", dry_run=True, force=True,
                       bpe_pre="llama-bpe", connections=3, threads=2, max_memory="64M", split_max_size=2 << 30,
                       split_max_tensors=7, retries=4, read_timeout=12.5)
    assert from_cli == from_api
    assert from_api.max_memory == 64 << 20 and from_api.tensor_types == ("attn_v=q8_0", "ffn=q6_k")
    # and with nothing given, both are the defaults
    assert _cli_options([]) == Options()


def test_every_cli_flag_of_convert_is_an_option():
    parser = cli.build_parser()
    convert = next(a for a in parser._subparsers._group_actions[0].choices.items() if a[0] == "convert")[1]
    dests = {a.dest for a in convert._actions} - {"help", "repo", "quiet", "json"}
    assert dests == {f.name for f in options.fields() if f.metadata["flags"]}


def test_hfstream_convert_takes_every_option_with_its_default():
    params = inspect.signature(hfstream.convert).parameters
    assert list(params) == ["repo_id", *(f.name for f in dataclasses.fields(Options))]
    for f in dataclasses.fields(Options):
        assert params[f.name].default == options.default(f), f.name
        assert f.name in hfstream.convert.__doc__
    positional = [n for n, p in params.items() if p.kind == p.POSITIONAL_OR_KEYWORD]
    assert positional == ["repo_id", "outtype", "revision", "outfile", "token"]


def test_hfstream_convert_refuses_what_is_not_an_option_before_any_work():
    with pytest.raises(TypeError, match=r"convert\(\) got an unexpected keyword argument 'frobnicate'"):
        hfstream.convert("org/model", frobnicate=1)
    with pytest.raises(TypeError, match="too many positional arguments"):
        hfstream.convert("org/model", "q8_0", "main", None, None, True)
    with pytest.raises(errors.UnsupportedOptionError, match="connections=0: must be at least 1"):
        hfstream.convert("org/model", connections=0)
    with pytest.raises(errors.UnsupportedOptionError, match="max_memory='lots': not a size"):
        hfstream.convert("org/model", max_memory="lots")


def test_a_bad_value_on_the_command_line_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["convert", "org/model", "--connections", "0"])
    assert info.value.code == 2
    assert "argument --connections: must be at least 1" in capsys.readouterr().err


def test_a_mirror_manifest_may_set_the_options_marked_for_it():
    assert set(_OPTION_TYPES) == {"token", "imatrix", "tensor_types", "output_tensor_type", "token_embedding_type",
                                  "bpe_pre", "connections", "threads", "max_memory", "split_max_size",
                                  "split_max_tensors", "retries", "read_timeout", "with_mmproj", "chat_template"}
    # each is an option hfstream.convert takes
    assert set(_OPTION_TYPES) <= set(inspect.signature(hfstream.convert).parameters)
