"""The fixture Hub answers like huggingface.co, as huggingface_hub and a raw HTTP client see it."""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from fixtures.hub import FixtureHub, HubPolicy, RangeNotSatisfiable, parse_range

GOOD = "hf_fixture_good"  # valid, allowed on the gated and private repos
NOACCESS = "hf_fixture_noaccess"  # valid, allowed nowhere
BAD = "hf_fixture_unknown"  # not a valid token at all

C1 = hashlib.sha1(b"commit 1").hexdigest()
C2 = hashlib.sha1(b"commit 2").hexdigest()
G1 = hashlib.sha1(b"gated commit").hexdigest()
P1 = hashlib.sha1(b"private commit").hexdigest()

WEIGHTS_V1 = bytes(range(256)) * 1200  # 307,200 bytes: more than one 256 KiB chunk
WEIGHTS_V2 = bytes(reversed(range(256))) * 1200
CONFIG_V1 = b'{"architectures": ["LlamaForCausalLM"], "v": 1}\n'
CONFIG_V2 = b'{"architectures": ["LlamaForCausalLM"], "v": 2}\n'
NOTES = b"nested file\n"
HUGE = 64 * 1024 * 1024  # bigger than loopback socket buffers


def _write_repo(root: Path, repo_id: str, refs: dict, commits: dict[str, dict[str, bytes]], **meta) -> None:
    d = root / repo_id
    d.mkdir(parents=True)
    (d / "repo.json").write_text(json.dumps({"refs": refs, "gated": False, "private": False,
                                             "allowed_tokens": [], **meta}))
    for sha, files in commits.items():
        for rel, data in files.items():
            p = d / "commits" / sha / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hub")
    (root / "_tokens.json").write_text(json.dumps({"valid": [GOOD, NOACCESS]}))
    _write_repo(root, "org/normal", {"main": C2, "v1": C1, "refs/pr/1": C1}, {
        C1: {"config.json": CONFIG_V1, "model.safetensors": WEIGHTS_V1, "sub/notes.txt": NOTES},
        C2: {"config.json": CONFIG_V2, "model.safetensors": WEIGHTS_V2, "sub/notes.txt": NOTES,
             "sub/deeper/empty.txt": b""},
    })
    _write_repo(root, "org/gated", {"main": G1}, {G1: {"config.json": CONFIG_V1, "model.safetensors": WEIGHTS_V1}},
                gated=True, allowed_tokens=[GOOD])
    _write_repo(root, "org/huge", {"main": C1}, {C1: {"model.safetensors": b""}})
    with open(root / "org/huge/commits" / C1 / "model.safetensors", "wb") as f:
        f.truncate(HUGE)  # sparse
    _write_repo(root, "org/private", {"main": P1}, {P1: {"config.json": CONFIG_V1}},
                private=True, allowed_tokens=[GOOD])
    return root


@pytest.fixture(scope="module")
def hub(root):
    """Shadows conftest's session ``hub`` on purpose: these tests own their tiny repo tree."""
    with FixtureHub(root) as hub:
        yield hub


@pytest.fixture
def http(hub):
    hub.clear_log()
    hub.faults.storage_url_ttl = 3600
    hub.policy = HubPolicy()
    with requests.Session() as s:
        s.trust_env = False
        yield s


def _quoted_sha256(data: bytes) -> str:
    return f'"{hashlib.sha256(data).hexdigest()}"'


def _git_etag(data: bytes) -> str:
    return '"' + hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest() + '"'


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


# --- ranges, pure ---------------------------------------------------------------------------------


@pytest.mark.parametrize("header, expected", [
    ("bytes=0-9", (0, 9)), ("bytes=5-", (5, 99)), ("bytes=-10", (90, 99)), ("bytes=-500", (0, 99)),
    ("bytes=90-500", (90, 99)), ("bytes=99-99", (99, 99)),
    (None, None), ("bytes=0-1,5-6", None), ("items=0-1", None), ("bytes=5-2", None), ("bytes=x-", None),
])
def test_parse_range(header, expected):
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize("header, total", [("bytes=100-", 100), ("bytes=-0", 100), ("bytes=0-", 0), ("bytes=-1", 0)])
def test_parse_range_unsatisfiable(header, total):
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, total)


# --- resolve: small files ---------------------------------------------------------------------------


def test_small_file_served_directly_with_ranges(hub, http):
    url = f"{hub.endpoint}/org/normal/resolve/main/config.json"
    r = http.get(url, allow_redirects=False)
    assert r.status_code == 200 and r.content == CONFIG_V2
    assert r.headers["X-Repo-Commit"] == C2
    assert r.headers["ETag"] == _git_etag(CONFIG_V2)
    assert r.headers["Accept-Ranges"] == "bytes"
    n = len(CONFIG_V2)

    r = http.get(url, headers={"Range": "bytes=2-5"})
    assert r.status_code == 206 and r.content == CONFIG_V2[2:6]
    assert r.headers["Content-Range"] == f"bytes 2-5/{n}" and r.headers["Content-Length"] == "4"
    r = http.get(url, headers={"Range": "bytes=-3"})
    assert r.status_code == 206 and r.content == CONFIG_V2[-3:]
    assert r.headers["Content-Range"] == f"bytes {n - 3}-{n - 1}/{n}"
    r = http.get(url, headers={"Range": "bytes=10-"})
    assert r.status_code == 206 and r.content == CONFIG_V2[10:]
    r = http.get(url, headers={"Range": f"bytes={n}-"})
    assert r.status_code == 416 and r.headers["Content-Range"] == f"bytes */{n}"
    r = http.get(url, headers={"Range": "bytes=0-1,4-5"})  # multi-range: ignored
    assert r.status_code == 200 and r.content == CONFIG_V2

    r = http.head(url, headers={"Range": "bytes=0-9"})
    assert r.status_code == 206 and r.headers["Content-Length"] == "10" and r.content == b""
    assert [e["bytes_sent"] for e in hub.log] == [n, 4, 3, n - 10, len(b"Requested Range Not Satisfiable"), n, 0]


def test_nested_and_empty_files(hub, http):
    r = http.get(f"{hub.endpoint}/org/normal/resolve/main/sub/notes.txt")
    assert r.status_code == 200 and r.content == NOTES
    r = http.get(f"{hub.endpoint}/org/normal/resolve/main/sub/deeper/empty.txt")
    assert r.status_code == 200 and r.content == b"" and r.headers["Content-Length"] == "0"
    r = http.get(f"{hub.endpoint}/org/normal/resolve/main/sub/deeper/empty.txt", headers={"Range": "bytes=0-"})
    assert r.status_code == 416 and r.headers["Content-Range"] == "bytes */0"
    r = http.get(f"{hub.endpoint}/org/normal/resolve/main/sub/%2E%2E/config.json")
    assert r.status_code == 404


@pytest.mark.parametrize("rev, sha, body", [("main", C2, CONFIG_V2), ("v1", C1, CONFIG_V1), (C1, C1, CONFIG_V1),
                                            (C2[:7], C2, CONFIG_V2), ("refs%2Fpr%2F1", C1, CONFIG_V1)])
def test_revisions(hub, http, rev, sha, body):
    r = http.get(f"{hub.endpoint}/org/normal/resolve/{rev}/config.json")
    assert r.status_code == 200 and r.content == body and r.headers["X-Repo-Commit"] == sha


# --- resolve: LFS files and the storage origin ------------------------------------------------------------


def test_lfs_file_redirects_to_storage_origin(hub, http):
    r = http.get(f"{hub.endpoint}/org/normal/resolve/v1/model.safetensors", allow_redirects=False,
                 headers={"Authorization": f"Bearer {GOOD}"})
    assert r.status_code == 302
    assert r.headers["X-Repo-Commit"] == C1
    assert r.headers["X-Linked-Size"] == str(len(WEIGHTS_V1))
    assert r.headers["X-Linked-Etag"] == r.headers["ETag"] == _quoted_sha256(WEIGHTS_V1)
    location = r.headers["Location"]
    assert _origin(location) == hub.storage_origin != hub.endpoint
    assert "X-Amz-Expires=3600" in location and "X-Amz-Signature=" in location

    r = http.get(location, headers={"Range": "bytes=100000-299999"})
    assert r.status_code == 206 and r.content == WEIGHTS_V1[100000:300000]
    assert r.headers["Content-Range"] == f"bytes 100000-299999/{len(WEIGHTS_V1)}"
    r = http.get(location)
    assert r.status_code == 200 and r.content == WEIGHTS_V1
    r = http.head(location)
    assert r.status_code == 200 and r.headers["Content-Length"] == str(len(WEIGHTS_V1)) and r.content == b""
    r = http.get(location, headers={"Range": f"bytes={len(WEIGHTS_V1)}-"})
    assert r.status_code == 416 and r.headers["Content-Range"] == f"bytes */{len(WEIGHTS_V1)}"

    log = hub.log
    assert [(e["origin"], e["status"], e["bytes_sent"]) for e in log] == [
        ("hub", 302, 0), ("storage", 206, 200000), ("storage", 200, len(WEIGHTS_V1)), ("storage", 200, 0),
        ("storage", 416, len(b"Requested Range Not Satisfiable")),
    ]
    assert log[0]["authorization"] and log[0]["auth_token"] == GOOD
    assert log[1]["range"] == "bytes=100000-299999"
    assert log[1]["path"] == f"/lfs/{hashlib.sha256(WEIGHTS_V1).hexdigest()}"
    assert not any(e["authorization"] for e in log if e["origin"] == "storage")


def test_big_file_of_any_name_is_lfs(tmp_path):
    _write_repo(tmp_path, "org/big", {"main": C1}, {C1: {"data.txt": b""}})
    big = tmp_path / "org/big/commits" / C1 / "data.txt"
    with open(big, "wb") as f:  # sparse: 10 MiB + 1 of zeros
        f.truncate(10 * 1024 * 1024 + 1)
    with FixtureHub(tmp_path) as hub, requests.Session() as s:
        r = s.get(f"{hub.endpoint}/org/big/resolve/main/data.txt", allow_redirects=False)
        assert r.status_code == 302 and r.headers["X-Linked-Size"] == str(10 * 1024 * 1024 + 1)
        r = s.get(r.headers["Location"], headers={"Range": "bytes=-5"})
        assert r.status_code == 206 and r.content == b"\0" * 5


def test_client_gone_mid_body_logs_bytes_actually_written(hub, http, caplog):
    location = http.get(f"{hub.endpoint}/org/huge/resolve/main/model.safetensors",
                        allow_redirects=False).headers["Location"]
    hub.clear_log()
    path_qs = location[len(hub.storage_origin):]
    with caplog.at_level(logging.WARNING), socket.create_connection(urlsplit(location)[1].split(":")) as sock:
        sock.sendall(f"GET {path_qs} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        received = 0
        while received < 1 << 20:
            received += len(sock.recv(1 << 16))
        sock.shutdown(socket.SHUT_RDWR)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        before = hub.log[0]["bytes_sent"]
        time.sleep(0.05)
        if hub.log[0]["bytes_sent"] == before:
            break
    entry = hub.log[0]
    assert entry["status"] == 200 and received <= entry["bytes_sent"] < HUGE
    assert not [r for r in caplog.records if r.name.startswith("aiohttp")]
    assert http.get(location, headers={"Range": "bytes=-2"}).content == b"\0\0"  # still serving


def test_storage_rejects_bad_or_expired_signature(hub, http):
    r = http.get(f"{hub.endpoint}/org/normal/resolve/main/model.safetensors", allow_redirects=False)
    location = r.headers["Location"]
    tampered = location.replace("X-Amz-Signature=", "X-Amz-Signature=0")
    assert http.get(tampered).status_code == 403
    other_blob = location.replace(hashlib.sha256(WEIGHTS_V2).hexdigest(), hashlib.sha256(WEIGHTS_V1).hexdigest())
    r = http.get(other_blob)
    assert r.status_code == 403 and b"SignatureDoesNotMatch" in r.content
    assert http.get(location.split("?")[0]).status_code == 403

    hub.faults.storage_url_ttl = 0
    expired = http.get(f"{hub.endpoint}/org/normal/resolve/main/model.safetensors", allow_redirects=False)
    assert "X-Amz-Expires=0" in expired.headers["Location"]
    r = http.get(expired.headers["Location"])
    assert r.status_code == 403 and b"expired" in r.content
    assert http.get(location).status_code == 200  # issued before the knob changed


# --- errors, raw --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path, token, status, code", [
    ("org/missing/resolve/main/config.json", None, 404, "RepoNotFound"),
    ("org/normal/resolve/nope/config.json", None, 404, "RevisionNotFound"),
    ("org/normal/resolve/main/missing.json", None, 404, "EntryNotFound"),
    ("org/gated/resolve/main/config.json", None, 401, "GatedRepo"),
    ("org/gated/resolve/main/config.json", NOACCESS, 403, "GatedRepo"),
    ("org/private/resolve/main/config.json", None, 401, "RepoNotFound"),
    ("org/private/resolve/main/config.json", NOACCESS, 404, "RepoNotFound"),
    ("org/normal/resolve/main/config.json", BAD, 401, None),
    ("api/models/org/missing", None, 404, "RepoNotFound"),
    ("api/models/org/normal/revision/nope", None, 404, "RevisionNotFound"),
    ("api/models/org/private", None, 401, "RepoNotFound"),
])
def test_error_headers(hub, http, path, token, status, code):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    for method in (http.get, http.head):
        r = method(f"{hub.endpoint}/{path}", headers=headers, allow_redirects=False)
        assert r.status_code == status
        assert r.headers.get("X-Error-Code") == code
    if code is None:
        assert r.headers["X-Error-Message"] == "Invalid credentials in Authorization header"
    if code == "GatedRepo":
        assert ("Please log in" if status == 401 else f"Visit {hub.endpoint}/org/gated") in r.headers["X-Error-Message"]
    if code == "EntryNotFound":
        assert r.headers["X-Repo-Commit"] == C2


def test_gated_token_with_access_downloads(hub, http):
    r = http.get(f"{hub.endpoint}/org/gated/resolve/main/config.json", headers={"Authorization": f"Bearer {GOOD}"})
    assert r.status_code == 200 and r.content == CONFIG_V1


# --- through huggingface_hub ------------------------------------------------------------------------


def test_model_info_with_files_metadata(hub, http):
    api = HfApi(endpoint=hub.endpoint)
    info = api.model_info("org/normal", files_metadata=True, token=False)
    assert info.id == "org/normal" and info.sha == C2 and info.private is False and info.gated is False
    assert info.last_modified is not None
    sib = {s.rfilename: s for s in info.siblings}
    assert sorted(sib) == ["config.json", "model.safetensors", "sub/deeper/empty.txt", "sub/notes.txt"]
    assert sib["config.json"].size == len(CONFIG_V2) and sib["config.json"].lfs is None
    assert sib["config.json"].blob_id == _git_etag(CONFIG_V2).strip('"')
    lfs = sib["model.safetensors"].lfs
    assert lfs.sha256 == hashlib.sha256(WEIGHTS_V2).hexdigest() and lfs.size == len(WEIGHTS_V2)
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{lfs.sha256}\nsize {len(WEIGHTS_V2)}\n"
    assert lfs.pointer_size == len(pointer)
    assert hub.log[-1]["path"] == "/api/models/org/normal" and "blobs=true" in hub.log[-1]["query"]

    old = api.model_info("org/normal", revision="v1", token=False)
    assert old.sha == C1 and old.siblings[0].size is None
    assert api.model_info("org/normal", revision="refs/pr/1", token=False).sha == C1
    assert hub.log[-1]["path"] == "/api/models/org/normal/revision/refs/pr/1"  # sent as refs%2Fpr%2F1


def test_model_info_errors(hub, http):
    api = HfApi(endpoint=hub.endpoint)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("org/missing", token=False)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("org/private", token=False)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("org/private", token=NOACCESS)
    with pytest.raises(RevisionNotFoundError):
        api.model_info("org/normal", revision="nope", token=False)
    with pytest.raises(HfHubHTTPError) as e:
        api.model_info("org/normal", token=BAD)
    assert e.value.response.status_code == 401 and not isinstance(e.value, RepositoryNotFoundError)
    assert api.model_info("org/private", token=GOOD).sha == P1

    # as on huggingface.co, a gated repo's metadata is public; only downloads are gated...
    assert api.model_info("org/gated", files_metadata=True, token=False).gated == "manual"
    # ...unless the policy gates the API too
    hub.policy = HubPolicy(gate_api=True)
    with pytest.raises(GatedRepoError) as e:
        api.model_info("org/gated", token=False)
    assert e.value.response.status_code == 401
    with pytest.raises(GatedRepoError) as e:
        api.model_info("org/gated", token=NOACCESS)
    assert e.value.response.status_code == 403
    assert api.model_info("org/gated", token=GOOD).sha == G1


def test_hf_hub_download_follows_redirect_without_leaking_token(hub, http, tmp_path):
    path = hf_hub_download("org/gated", "model.safetensors", endpoint=hub.endpoint, token=GOOD,
                           cache_dir=tmp_path / "cache")
    assert Path(path).read_bytes() == WEIGHTS_V1
    path = hf_hub_download("org/normal", "sub/notes.txt", revision="v1", endpoint=hub.endpoint, token=GOOD,
                           cache_dir=tmp_path / "cache")
    assert Path(path).read_bytes() == NOTES
    log = hub.log
    assert [(e["origin"], e["method"], e["status"]) for e in log] == [
        ("hub", "HEAD", 302), ("storage", "GET", 200), ("hub", "HEAD", 200), ("hub", "GET", 200),
    ]
    assert all(e["auth_token"] == GOOD for e in log if e["origin"] == "hub")
    assert not any(e["authorization"] or e["auth_token"] for e in log if e["origin"] == "storage")
    assert log[1]["bytes_sent"] == len(WEIGHTS_V1)


def test_hf_hub_download_errors(hub, http, tmp_path):
    def download(repo, filename="config.json", token=False, revision=None):
        return hf_hub_download(repo, filename, endpoint=hub.endpoint, token=token, revision=revision,
                               cache_dir=tmp_path / "cache")

    with pytest.raises(GatedRepoError) as e:
        download("org/gated")
    assert e.value.response.status_code == 401
    with pytest.raises(GatedRepoError) as e:
        download("org/gated", token=NOACCESS)
    assert e.value.response.status_code == 403
    with pytest.raises(RepositoryNotFoundError):
        download("org/missing")
    with pytest.raises(RevisionNotFoundError):
        download("org/normal", revision="nope")
    with pytest.raises(EntryNotFoundError):
        download("org/normal", filename="missing.json")


def test_list_repo_tree_and_files(hub, http):
    api = HfApi(endpoint=hub.endpoint)
    assert api.list_repo_files("org/normal", revision="v1", token=False) == [
        "config.json", "model.safetensors", "sub/notes.txt"]
    top = {e.path: e for e in api.list_repo_tree("org/normal", token=False)}
    assert sorted(top) == ["config.json", "model.safetensors", "sub"]
    assert top["model.safetensors"].lfs.sha256 == hashlib.sha256(WEIGHTS_V2).hexdigest()
    assert top["model.safetensors"].size == len(WEIGHTS_V2)
    assert not hasattr(top["sub"], "size")  # a RepoFolder
    sub = [e.path for e in api.list_repo_tree("org/normal", path_in_repo="sub", token=False)]
    assert sub == ["sub/deeper", "sub/notes.txt"]
    hub.policy = HubPolicy(tree_page_size=2)  # pagination through the Link header
    hub.clear_log()
    everything = [e.path for e in api.list_repo_tree("org/normal", recursive=True, token=False)]
    assert everything == ["config.json", "model.safetensors", "sub", "sub/deeper", "sub/deeper/empty.txt",
                          "sub/notes.txt"]
    assert [e["query"].count("cursor=") for e in hub.log] == [0, 1, 1]  # 6 entries, 3 pages
    with pytest.raises(EntryNotFoundError):
        list(api.list_repo_tree("org/normal", path_in_repo="nope", token=False))


# --- lifecycle and CLI ------------------------------------------------------------------------------


def test_refuses_non_loopback(root):
    with pytest.raises(ValueError):
        FixtureHub(root, host="0.0.0.0")


def test_cli_prints_endpoint_and_serves(root):
    with subprocess.Popen([sys.executable, "-m", "fixtures.hub", "--root", str(root), "--port", "0"],
                          cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True) as proc:
        try:
            endpoint = proc.stdout.readline().strip()
            assert endpoint.startswith("http://127.0.0.1:")
            r = requests.get(f"{endpoint}/org/normal/resolve/v1/config.json", timeout=5)
            assert r.status_code == 200 and r.content == CONFIG_V1
        finally:
            proc.terminate()
        assert proc.wait(timeout=5) == 0
