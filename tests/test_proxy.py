"""Behind an HTTP proxy: every request (the Hub API, /resolve/ redirects, storage ranges) goes through it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fixtures.proxy import ForwardProxy

from .conftest import cli_env
from .goldens.cases import cases
from .goldens.digest import digest_gguf

REPO = "hfs-test/tiny-llama-sharded"


@pytest.fixture
def proxy():
    with ForwardProxy() as p:
        yield p


def _env(hub, tmp_path, **extra) -> dict:
    env = cli_env(hub, HF_HOME=str(tmp_path / "hf-home"))
    for key in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "HTTPS_PROXY", "https_proxy", "http_proxy"):
        env.pop(key, None)
    env.update(extra)
    return env


def test_conversion_goes_through_http_proxy(fresh_hub, proxy, tmp_path):
    out = tmp_path / "out.gguf"
    run = subprocess.run([sys.executable, "-m", "hfstream", "convert", REPO, "--outtype", "q8_0", "-o", str(out), "-q"],
                         env=_env(fresh_hub, tmp_path, HTTP_PROXY=proxy.url), capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    golden = next(c for c in cases() if c.golden_name == f"{REPO.split('/')[1]}.q8_0").golden()
    assert [t["sha256"] for t in digest_gguf(out)["tensors"]] == [t["sha256"] for t in golden["tensors"]]

    hub_requests = [(e["method"], e["origin"], e["path"]) for e in fresh_hub.log]
    through_proxy = proxy.log
    # everything the Hub (API and storage origin) saw came through the proxy, nothing around it
    assert len(through_proxy) == len(hub_requests) > 0
    assert any("/api/models/" in url for _, url in through_proxy)  # huggingface_hub's model info
    assert any(url.startswith(fresh_hub.storage_origin) for _, url in through_proxy)  # aiohttp's ranges
    assert any("/resolve/" in url for _, url in through_proxy)


def test_an_unreachable_proxy_is_one_clear_network_error(fresh_hub, tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    run = subprocess.run([sys.executable, "-m", "hfstream", "convert", REPO, "-o", str(tmp_path / "x.gguf"),
                          "-q", "--retries", "1"],
                         env=_env(fresh_hub, tmp_path, HTTP_PROXY=dead), capture_output=True, text=True, timeout=300)
    from hfstream import errors

    assert run.returncode == errors.NetworkError.exit_code, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr
    assert not (tmp_path / "x.gguf").exists()


def test_no_proxy_hosts_go_direct(fresh_hub, proxy, tmp_path):
    out = tmp_path / "out.gguf"
    run = subprocess.run([sys.executable, "-m", "hfstream", "convert", REPO, "--outtype", "q8_0", "-o", str(out), "-q"],
                         env=_env(fresh_hub, tmp_path, HTTP_PROXY=proxy.url, NO_PROXY="127.0.0.1"),
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert out.exists() and fresh_hub.log and proxy.log == []


def test_a_netrc_entry_for_the_hub_is_not_used(fresh_hub, tmp_path):
    """aiohttp's trust_env would send ~/.netrc credentials, and refuse our Authorization header beside them."""
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password secret\n")
    netrc.chmod(0o600)
    for repo, token in (("hfs-test/gated-llama", "hf_fixture_good"), (REPO, None)):
        fresh_hub.clear_log()
        out = tmp_path / f"{repo.split('/')[1]}.gguf"
        extra = {"NETRC": str(netrc), **({"HF_TOKEN": token} if token else {})}
        run = subprocess.run([sys.executable, "-m", "hfstream", "convert", repo, "--outtype", "q8_0", "-o", str(out),
                              "-q"], env=_env(fresh_hub, tmp_path, **extra), capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        assert out.exists()
        # the token where it belongs, netrc's Basic credentials nowhere
        assert {e["auth_scheme"] for e in fresh_hub.log} <= ({"Bearer", None} if token else {None})
