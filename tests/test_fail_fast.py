"""What waiting cannot fix fails at once with its own code; what is retried says so, once per wait.

Counted in requests, not seconds: a 404, a refused token or a malformed answer is one request to
the Hub and then the exit code; a connection that is refused is retried, and each wait is one line.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from hfstream import errors

from .conftest import cli_env


def _convert(hub, tmp_path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hfstream", "convert", *args, "-o", str(tmp_path)],
                          env=cli_env(hub, HF_HOME=str(tmp_path / "hf"), **env), capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("args, env, error, words", [
    # a plain 404 (no X-Error-Code, as from a mirror or a proxy): the fixture Hub has no route for it
    (["tiny-llama-bpe"], {}, errors.RepoNotFoundError, "repository tiny-llama-bpe not found"),
    (["hfs-test/no-such-repo"], {}, errors.RepoNotFoundError, "repository hfs-test/no-such-repo not found"),
    (["hfs-test/tiny-llama-spm@no-such-branch"], {}, errors.RevisionNotFoundError, "'no-such-branch' not found"),
    (["hfs-test/tiny-llama-spm"], {"HF_TOKEN": "hf_not_a_token"}, errors.AccessDeniedError, "rejected the token"),
])
def test_what_waiting_cannot_fix_is_one_request_and_its_own_code(args, env, error, words, fresh_hub, tmp_path):
    proc = _convert(fresh_hub, tmp_path, *args, **env)
    assert proc.returncode == error.exit_code, proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and words in proc.stderr
    assert "retrying" not in proc.stderr
    # asked once, never again (huggingface_hub's own /api/agent-harnesses look-up aside)
    assert [e["path"] for e in fresh_hub.log if not e["path"].startswith("/api/agent-harnesses")] == [
        e["path"] for e in fresh_hub.log if e["path"].startswith("/api/models/")][:1]


class _NotTheHub(BaseHTTPRequestHandler):
    """Answers every request with 200 and a page that is not a model's info (a captive portal, a wrong URL)."""

    asked: list[str] = []

    def do_GET(self):  # http.server's name
        type(self).asked.append(self.path)
        body = b"<html>please log in to the wifi</html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_malformed_answer_is_a_protocol_error_at_once(fresh_hub, tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotTheHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        proc = _convert(fresh_hub, tmp_path, "org/model", HF_ENDPOINT=f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
    assert proc.returncode == errors.ProtocolError.exit_code, proc.stderr
    assert "'s answer for org/model@main is not valid JSON" in proc.stderr and "Traceback" not in proc.stderr
    assert [p.split("?")[0] for p in _NotTheHub.asked if p.startswith("/api/models/")] == [
        "/api/models/org/model/revision/main"]


def test_offline_mode_never_reaches_the_network(fresh_hub, tmp_path):
    proc = _convert(fresh_hub, tmp_path, "hfs-test/tiny-llama-spm", HF_HUB_OFFLINE="1",
                    HF_HUB_CACHE=str(tmp_path / "empty-cache"))
    assert proc.returncode == errors.RepoNotFoundError.exit_code, proc.stderr
    assert "HF_HUB_OFFLINE is set" in proc.stderr
    assert fresh_hub.log == []


def test_each_wait_of_a_retry_is_said_once(fresh_hub, tmp_path):
    import socket

    with socket.socket() as s:  # a port nothing listens on: connections are refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = _convert(fresh_hub, tmp_path, "org/model", "--retries", "2", HF_ENDPOINT=f"http://127.0.0.1:{port}")
    assert proc.returncode == errors.NetworkError.exit_code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 3, proc.stderr
    for n, line in enumerate(lines[:2], 1):
        assert re.fullmatch(rf"hfstream: retrying in [\d.]+ s \({n}/2\): org/model@main: cannot reach http://127\.0\.0\.1:{port} .*",
                            line), line
    assert lines[2].startswith("hfstream: error: ")


def test_quiet_says_no_retries(fresh_hub, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = _convert(fresh_hub, tmp_path, "org/model", "--retries", "1", "-q", HF_ENDPOINT=f"http://127.0.0.1:{port}")
    assert proc.returncode == errors.NetworkError.exit_code
    assert len(proc.stderr.strip().splitlines()) == 1
