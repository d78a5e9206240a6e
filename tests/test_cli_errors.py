"""Every bad input: one line on stderr, its own exit code, no traceback, no output file."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hfstream import errors

from .conftest import cli_env

CASES = [
    # (args, extra env, exit code, words the line must contain)
    (["hfs-test/does-not-exist"], {}, errors.RepoNotFoundError.exit_code, ["does-not-exist", "not found"]),
    (["hfs-test/tiny-llama-spm", "--revision", "no-such-branch"], {},
     errors.RevisionNotFoundError.exit_code, ["no-such-branch"]),
    (["hfs-test/gated-llama"], {}, errors.AuthRequiredError.exit_code, ["gated", "HF_TOKEN"]),
    (["hfs-test/gated-llama"], {"HF_TOKEN": "hf_fixture_noaccess"}, errors.AccessDeniedError.exit_code,
     ["request access", "/hfs-test/gated-llama"]),
    (["hfs-test/no-weights"], {}, errors.NoWeightsError.exit_code, ["no safetensors"]),
    (["hfs-test/pytorch-only"], {}, errors.NoWeightsError.exit_code, ["pytorch_model.bin"]),
    (["hfs-test/unsupported-arch"], {}, errors.UnsupportedArchitectureError.exit_code,
     ["FooBarForCausalLM", "LlamaForCausalLM", "MistralForCausalLM"]),
    (["not a repo id!!"], {}, errors.RepoNotFoundError.exit_code, ["not a valid repo id"]),
]


@pytest.mark.parametrize("args, env, code, words", CASES, ids=[
    "wrong-repo", "unknown-revision", "gated-no-token", "gated-no-access", "no-safetensors", "pytorch-only",
    "unsupported-arch", "bad-repo-id"])
def test_bad_input_is_one_line_and_its_own_exit_code(args, env, code, words, hub, tmp_path):
    hub.clear_log()
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run([sys.executable, "-m", "hfstream", "convert", *args, "-o", str(out)],
                          env=cli_env(hub, HF_HOME=str(tmp_path / "hf"), **env), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("hfstream: error: ")
    for w in words:
        assert w in lines[0]
    assert "Traceback" not in proc.stderr
    assert list(out.iterdir()) == []


def _error_classes() -> list[type[errors.HfstreamError]]:
    return [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.HfstreamError)]


def test_exit_codes_are_distinct():
    """Every class that sets its own exit code sets a new one (a group, and NotReproducibleError, inherit theirs)."""
    codes = [c.exit_code for c in _error_classes() if "exit_code" in vars(c) and c is not errors.HfstreamError]
    assert len(codes) == len(set(codes))


GROUPS = (errors.InputError, errors.AccessError, errors.TransferError, errors.OutputError, errors.InternalError)


def test_every_error_is_in_exactly_one_group_and_the_docstring_draws_the_tree():
    """The tree in errors.py's docstring is the class hierarchy: every class, its parent, its exit code."""
    import re

    for c in _error_classes():
        if c not in GROUPS and c is not errors.HfstreamError:
            assert sum(issubclass(c, g) for g in GROUPS) == 1, c
    drawn: dict[str, tuple[str, int]] = {}
    parents: list[str] = []
    for line in errors.__doc__.splitlines():
        m = re.match(r"^    ((?:[│ ]   )*)(?:[├└]── )?(\w+)\s+(\d+)?", line)
        if not m or not hasattr(errors, m.group(2)):
            continue
        level = len(m.group(1)) // 4 + (1 if "── " in line else 0)
        parents[level:] = [m.group(2)]
        drawn[m.group(2)] = (parents[level - 1] if level else "", int(m.group(3) or -1))
    actual = {c.__name__: (c.__bases__[0].__name__ if c is not errors.HfstreamError else "",
                           c.exit_code if c not in GROUPS[:-1] else -1) for c in _error_classes()}
    assert drawn == actual


def test_gated_messages_differ_and_never_show_the_token(hub, tmp_path):
    secret = "hf_fixture_noaccess"
    proc = subprocess.run([sys.executable, "-m", "hfstream", "convert", "hfs-test/gated-llama", "-o", str(tmp_path)],
                          env=cli_env(hub, HF_TOKEN=secret, HF_HOME=str(tmp_path / "hf")),
                          capture_output=True, text=True, timeout=120)
    assert secret not in proc.stderr + proc.stdout


def test_gated_repo_converts_with_a_token_that_has_access(hub, tmp_path):
    hub.clear_log()
    proc = subprocess.run([sys.executable, "-m", "hfstream", "convert", "hfs-test/gated-llama", "--outtype", "q8_0",
                           "-q", "-o", str(tmp_path)],
                          env=cli_env(hub, HF_TOKEN="hf_fixture_good", HF_HOME=str(tmp_path / "hf")),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "Gated-Llama-227K-Q8_0.gguf"
    assert out.exists()
    # the token is in none of what the run printed or wrote
    assert b"hf_fixture_good" not in out.read_bytes()
    assert "hf_fixture_good" not in proc.stdout + proc.stderr
    for p in tmp_path.rglob("*"):
        if p.is_file():
            assert b"hf_fixture_good" not in p.read_bytes(), p
    log = hub.log
    assert any(e["auth_token"] == "hf_fixture_good" for e in log if e["origin"] == "hub")
    # the token never reaches the storage host (a different origin, as the Hub's CDN is)
    assert [e for e in log if e["origin"] == "storage"]
    assert not any(e["authorization"] for e in log if e["origin"] == "storage")


def test_errors_never_carry_the_token(hub, tmp_path):
    """Failures after the token was used (an access error, a network error) do not echo it."""
    secret = "hf_fixture_noaccess"
    for args in (["hfs-test/gated-llama"], ["hfs-test/gated-llama", "--revision", "nope"]):
        proc = subprocess.run([sys.executable, "-m", "hfstream", "convert", *args, "-o", str(tmp_path), "-q"],
                              env=cli_env(hub, HF_TOKEN=secret, HF_HOME=str(tmp_path / "hf"), HFSTREAM_DEBUG="1"),
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode != 0
        assert secret not in proc.stdout + proc.stderr


def test_every_exit_code_is_documented_in_the_readme():
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    documented = {int(code) for code in re.findall(r"^\| (\d+) \|", readme, re.M)}
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.HfstreamError)]
    # the table is the classes' codes, plus success and argparse's usage error: no row without a class
    assert documented == {c.exit_code for c in classes} | {0, 2}
