"""Publishing to a Hub repo: uploads, one guarded commit, the model card, and the mirror end to end.

Everything runs against a fixture Hub over a temporary root, so repos can be created and committed to.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

import pytest
import requests
from huggingface_hub import CommitOperationAdd, HfApi

from fixtures.hub import FixtureHub
from hfstream import errors
from hfstream.mirror import EXIT_OK, mirror
from hfstream.publish import Publisher, publish

from .test_mirror import _manifest, _move_main, mini_hub  # noqa: F401  (mini_hub is a fixture)

GOOD = "hf_fixture_good"  # valid, and the writer of every repo it creates
NOACCESS = "hf_fixture_noaccess"  # valid, writer of nothing
SOURCE = "hfs-test/tiny"
SRC_SHA = hashlib.sha1(b"source commit").hexdigest()
TARGET = "mirrors/Tiny-GGUF"

# huggingface_hub's LFS upload passes a file object as httpx2 `data=` (lfs.py: _upload_single_part)
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>' to upload raw bytes:DeprecationWarning")


@pytest.fixture(autouse=True)
def lfs_protocol(monkeypatch):
    """huggingface_hub's documented switch from Xet to the LFS batch API (the one the fixture Hub speaks)."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")


@pytest.fixture
def write_hub(tmp_path, monkeypatch):
    """An empty fixture Hub on a temporary root, HF_ENDPOINT at it and HF_TOKEN a valid token."""
    root = tmp_path / "hub-root"
    root.mkdir()
    (root / "_tokens.json").write_text(json.dumps({"valid": [GOOD, NOACCESS]}))
    with FixtureHub(root) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        monkeypatch.setenv("HF_TOKEN", GOOD)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        yield hub


def _gguf(d: Path, name: str, size: int, seed: int = 0) -> Path:
    """A stand-in GGUF file (publishing never parses it): the magic, then deterministic bytes."""
    d.mkdir(parents=True, exist_ok=True)
    p = d / name
    body = b"".join(hashlib.sha256(f"{seed}:{i}".encode()).digest() for i in range(size // 32 + 1))
    p.write_bytes((b"GGUF" + body)[:size])
    return p


def _download(hub: FixtureHub, repo: str, path: str, revision: str = "main") -> bytes:
    """A file through /resolve/ (following the storage redirect), anonymously."""
    r = requests.get(f"{hub.endpoint}/{repo}/resolve/{revision}/{path}", timeout=30)
    r.raise_for_status()
    return r.content


def _head(hub: FixtureHub, repo: str) -> str:
    return json.loads((hub.root / repo / "repo.json").read_text())["refs"]["main"]


def _commit_dirs(hub: FixtureHub, repo: str) -> set[str]:
    return {p.name for p in (hub.root / repo / "commits").iterdir()}


def _concurrent_commit(hub: FixtureHub, repo: str, n: int = 0) -> str:
    """Another writer commits to ``repo`` (what a concurrent publisher or a human would do)."""
    api = HfApi(endpoint=hub.endpoint, token=GOOD)
    return api.create_commit(repo, [CommitOperationAdd(f"notes-{n}.md", f"note {n}\n".encode())],
                             commit_message=f"concurrent {n}").oid


def _record(card: str) -> dict:
    return json.loads(card.split("<!-- hfstream-files: ", 1)[1].split(" -->", 1)[0])


def test_publish_creates_the_repo_and_commits_files_and_card(write_hub, tmp_path):
    hub = write_hub
    shards = [_gguf(tmp_path / "out", "Tiny-1M-Q8_0-00001-of-00002.gguf", 300_000, 1),
              _gguf(tmp_path / "out", "Tiny-1M-Q8_0-00002-of-00002.gguf", 200_000, 2)]

    sha = publish(TARGET, shards, source_repo=SOURCE, source_commit=SRC_SHA, outtype="q8_0")

    api = HfApi(endpoint=hub.endpoint)
    assert api.model_info(TARGET).sha == sha == _head(hub, TARGET)
    assert sorted(api.list_repo_files(TARGET)) == sorted([".gitattributes", "README.md", *(p.name for p in shards)])
    for p in shards:
        assert _download(hub, TARGET, p.name) == p.read_bytes()
    card = _download(hub, TARGET, "README.md").decode()
    assert "base_model: hfs-test/tiny" in card and "base_model_relation: quantized" in card
    assert SRC_SHA in card and "q8_0" in card
    assert _record(card) == {p.name: {"outtype": "q8_0", "source_commit": SRC_SHA} for p in shards}

    log = hub.log
    puts = [e for e in log if e["origin"] == "storage" and e["method"] == "PUT"]
    assert [e["bytes_received"] for e in puts] == [300_000, 200_000]  # one upload per file, in order
    # the token reached the hub origin (every write) and never the storage host
    assert not [e for e in log if e["origin"] == "storage" and e["authorization"]]
    writes = [e for e in log if e["origin"] == "hub" and e["method"] == "POST"]
    assert writes and all(e["auth_token"] == GOOD for e in writes)
    assert len([e for e in writes if e["path"] == f"/api/models/{TARGET}/commit/main"]) == 1


def test_a_second_outtype_adds_its_files_and_updates_the_card_in_one_commit(write_hub, tmp_path):
    hub = write_hub
    q8 = _gguf(tmp_path / "q8", "Tiny-1M-Q8_0.gguf", 100_000, 1)
    first = publish(TARGET, [q8], source_repo=SOURCE, source_commit=SRC_SHA, outtype="q8_0")
    before = _commit_dirs(hub, TARGET)
    hub.clear_log()

    f16 = _gguf(tmp_path / "f16", "Tiny-1M-F16.gguf", 150_000, 2)
    second = publish(TARGET, [f16], source_repo=SOURCE, source_commit=SRC_SHA, outtype="f16")

    assert second != first and _head(hub, TARGET) == second
    assert _commit_dirs(hub, TARGET) - before == {second}  # exactly one new commit
    assert [e["status"] for e in hub.log if e["path"].endswith("/commit/main")] == [200]
    files = HfApi(endpoint=hub.endpoint).list_repo_files(TARGET)
    assert {q8.name, f16.name} <= set(files)
    assert _download(hub, TARGET, q8.name) == q8.read_bytes()
    card = _download(hub, TARGET, "README.md").decode()
    assert "Quant types: f16, q8_0" in card
    assert set(_record(card)) == {q8.name, f16.name}
    # the q8_0 file was not uploaded again
    assert [e["bytes_received"] for e in hub.log if e["method"] == "PUT"] == [150_000]


def test_republishing_an_outtype_replaces_its_files_and_keeps_the_others(write_hub, tmp_path):
    hub = write_hub
    shards = [_gguf(tmp_path / "a", f"Tiny-1M-Q8_0-0000{i}-of-00002.gguf", 50_000, i) for i in (1, 2)]
    publish(TARGET, shards, source_repo=SOURCE, source_commit=SRC_SHA, outtype="q8_0")
    f16 = _gguf(tmp_path / "b", "Tiny-1M-F16.gguf", 60_000, 3)
    publish(TARGET, [f16], source_repo=SOURCE, source_commit=SRC_SHA, outtype="f16")

    new_sha = hashlib.sha1(b"new upstream commit").hexdigest()
    whole = _gguf(tmp_path / "c", "Tiny-1M-Q8_0.gguf", 90_000, 4)
    publish(TARGET, [whole], source_repo=SOURCE, source_commit=new_sha, outtype="q8_0")

    files = set(HfApi(endpoint=hub.endpoint).list_repo_files(TARGET))
    assert files == {".gitattributes", "README.md", whole.name, f16.name}  # the old q8_0 shards are gone
    record = _record(_download(hub, TARGET, "README.md").decode())
    assert record == {whole.name: {"outtype": "q8_0", "source_commit": new_sha},
                      f16.name: {"outtype": "f16", "source_commit": SRC_SHA}}


def test_a_commit_between_upload_and_commit_is_a_retryable_conflict_and_commits_nothing(write_hub, tmp_path):
    hub = write_hub
    f = _gguf(tmp_path, "Tiny-1M-Q8_0.gguf", 80_000)
    pub = Publisher(TARGET)
    pub.upload(f)
    theirs = _concurrent_commit(hub, TARGET)

    with pytest.raises(errors.PublishConflictError) as caught:
        pub.commit("hfstream: test", card="---\nbase_model: x\n---\n")
    assert caught.value.exit_code == 63 and caught.value.retryable
    assert _head(hub, TARGET) == theirs
    assert f.name not in HfApi(endpoint=hub.endpoint).list_repo_files(TARGET)
    assert [e["status"] for e in hub.log if e["path"].endswith("/commit/main")] == [200, 412]


@pytest.mark.parametrize("races, succeeds", [(1, True), (3, False)])
def test_finish_starts_over_from_the_new_head_a_few_times(write_hub, tmp_path, monkeypatch, races, succeeds):
    hub = write_hub
    f = _gguf(tmp_path, "Tiny-1M-Q8_0.gguf", 80_000)
    pub = Publisher(TARGET)
    pub.upload(f)
    real, calls = pub.api.create_commit, []

    def racing(*args, **kwargs):  # someone commits just before each of our commits, `races` times
        if len(calls) < races:
            _concurrent_commit(hub, TARGET, len(calls))
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(pub.api, "create_commit", racing)
    files = lambda: set(HfApi(endpoint=hub.endpoint).list_repo_files(TARGET))  # noqa: E731
    if succeeds:
        sha = pub.finish(source_repo=SOURCE, source_commit=SRC_SHA, outtype="q8_0")
        assert _head(hub, TARGET) == sha and {f.name, "notes-0.md"} <= files()
    else:
        with pytest.raises(errors.PublishConflictError):
            pub.finish(source_repo=SOURCE, source_commit=SRC_SHA, outtype="q8_0")
        assert f.name not in files() and "notes-2.md" in files()
    assert len([e for e in hub.log if e["method"] == "PUT"]) == 1  # never uploaded again


def test_upload_with_delete_after_frees_the_disk_before_the_commit(write_hub, tmp_path):
    hub = write_hub
    shards = [_gguf(tmp_path, f"Tiny-1M-Q8_0-0000{i}-of-00003.gguf", 40_000, i) for i in (1, 2, 3)]
    data = {p.name: p.read_bytes() for p in shards}
    pub = Publisher(TARGET)
    for p in shards:  # what a per-shard callback does
        pub.upload(p, delete_after=True)
        assert not p.exists()
    pub.finish(source_repo=SOURCE, source_commit=SRC_SHA, outtype="q8_0")
    for name, content in data.items():
        assert _download(hub, TARGET, name) == content


def test_multipart_uploads_complete_without_the_token(write_hub, tmp_path):
    hub = write_hub
    hub.policy.lfs_multipart_chunk_size = 64 * 1024
    f = _gguf(tmp_path, "Tiny-1M-F16.gguf", 200_000)
    publish(TARGET, [f], source_repo=SOURCE, source_commit=SRC_SHA, outtype="f16")
    storage = [e for e in hub.log if e["origin"] == "storage"]
    assert [e["method"] for e in storage] == ["PUT"] * 4 + ["POST"]  # 4 parts, then the completion
    assert not [e for e in storage if e["authorization"]]
    assert _download(hub, TARGET, f.name) == f.read_bytes()


def test_no_token_or_no_write_access_fails_before_any_upload(write_hub, tmp_path, monkeypatch):
    hub = write_hub
    f = _gguf(tmp_path, "Tiny-1M-Q8_0.gguf", 10_000)
    publish(TARGET, [f], source_repo=SOURCE, source_commit=SRC_SHA, outtype="q8_0")
    hub.clear_log()
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(errors.AccessDeniedError) as caught:
        publish("mirrors/Other-GGUF", [f], source_repo=SOURCE, source_commit=SRC_SHA, outtype="q8_0")
    assert caught.value.exit_code == 13
    assert [e["status"] for e in hub.log if e["path"] == "/api/repos/create"] == [401]
    with pytest.raises(errors.AccessDeniedError):  # a valid token that is not one of the repo's writers
        publish(TARGET, [f], source_repo=SOURCE, source_commit=SRC_SHA, outtype="q8_0", token=NOACCESS)
    assert not [e for e in hub.log if e["origin"] == "storage"]
    assert 403 in [e["status"] for e in hub.log if e["path"].endswith("/preupload/main")]


# --- the fixture Hub's write endpoints, as a raw client sees them ------------------------------------


def _post(hub, path, body, token=GOOD, ndjson=False):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = b"".join(json.dumps(x).encode() + b"\n" for x in body) if ndjson else json.dumps(body).encode()
    return requests.post(f"{hub.endpoint}{path}", data=data, headers=headers, timeout=30)


def test_fixture_hub_write_endpoints_refuse_what_the_hub_refuses(write_hub):
    hub = write_hub
    assert _post(hub, "/api/repos/create", {"name": "R", "organization": "o"}, token=None).status_code == 401
    assert _post(hub, "/api/repos/create", {"name": "R", "organization": "o"}).status_code == 200
    assert _post(hub, "/api/repos/create", {"name": "R", "organization": "o"}).status_code == 409
    head = _head(hub, "o/R")
    header = {"key": "header", "value": {"summary": "s", "parentCommit": head}}

    missing = {"key": "lfsFile", "value": {"path": "x.gguf", "algo": "sha256", "oid": "0" * 64, "size": 3}}
    r = _post(hub, "/api/models/o/R/commit/main", [header, missing], ndjson=True)
    assert r.status_code == 422 and "does not exist" in r.headers["X-Error-Message"]

    stale = {"key": "header", "value": {"summary": "s", "parentCommit": "1" * 40}}
    inline = {"key": "file", "value": {"path": "a.txt", "encoding": "base64",
                                       "content": base64.b64encode(b"hello\n").decode()}}
    assert _post(hub, "/api/models/o/R/commit/main", [stale, inline], ndjson=True).status_code == 412
    assert _head(hub, "o/R") == head  # nothing committed so far
    assert _post(hub, "/api/models/o/R/commit/main", [header, inline], token=NOACCESS, ndjson=True).status_code \
        == 403
    r = _post(hub, "/api/models/o/R/commit/main", [header, inline], ndjson=True)
    assert r.status_code == 200 and _head(hub, "o/R") == r.json()["commitOid"] != head
    assert _download(hub, "o/R", "a.txt") == b"hello\n"
    with pytest.raises(requests.HTTPError):  # the parent snapshot is untouched
        _download(hub, "o/R", "a.txt", revision=head)

    # the LFS batch API hands out signed upload URLs that check what arrives
    data = b"GGUF" + os.urandom(1000)
    oid = hashlib.sha256(data).hexdigest()
    r = _post(hub, "/o/R.git/info/lfs/objects/batch",
              {"operation": "upload", "transfers": ["basic"], "objects": [{"oid": oid, "size": len(data)}]})
    href = r.json()["objects"][0]["actions"]["upload"]["href"]
    assert href.startswith(hub.storage_origin)
    assert requests.put(href, data=data[:-1] + b"!", timeout=30).status_code == 400  # not the announced object
    assert requests.put(href.replace("Signature=", "Signature=0"), data=data, timeout=30).status_code == 403
    assert requests.put(href, data=data, timeout=30).status_code == 200
    r = _post(hub, "/o/R.git/info/lfs/objects/batch",
              {"operation": "upload", "objects": [{"oid": oid, "size": len(data)}]})
    assert "actions" not in r.json()["objects"][0]  # already uploaded: nothing to do


def test_with_xet_the_fixture_hub_fails_clearly(write_hub, tmp_path, monkeypatch, fake_time):
    import huggingface_hub.constants

    try:
        import hf_xet  # noqa: F401
    except ImportError:
        pytest.skip("hf_xet is not installed: huggingface_hub uses the LFS batch API anyway")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", False)
    f = _gguf(tmp_path, "Tiny-1M-Q8_0.gguf", 10_000)
    with pytest.raises(errors.HfstreamError):
        publish(TARGET, [f], source_repo=SOURCE, source_commit=SRC_SHA, outtype="q8_0", retries=fake_time.policy())
    assert [e["status"] for e in write_hub.log if "xet-write-token" in e["path"]][:1] == [501]


# --- the mirror, published ---------------------------------------------------------------------------

PUBLISH_MANIFEST = """
[defaults]
target_repo = "mirrors/{name}-GGUF"

[[model]]
repo = "hfs-test/two-commits"
outtypes = ["q8_0", "f16"]

[[model]]
repo = "hfs-test/tiny-llama-spm"
outtypes = ["q8_0"]
"""


@pytest.fixture
def publishing(mini_hub, tmp_path, monkeypatch):  # noqa: F811
    """mini_hub, a write token, and the mirror's work directories under tmp_path/cache/mirror."""
    hub, root = mini_hub
    monkeypatch.setenv("HF_TOKEN", GOOD)
    monkeypatch.setenv("HFSTREAM_CACHE", str(tmp_path / "cache"))
    work = tmp_path / "cache" / "mirror"
    work.mkdir(parents=True)
    return hub, root, work


def test_mirror_publishes_skips_and_republishes_only_what_changed_upstream(publishing, tmp_path):
    hub, root, work = publishing
    _move_main(root, "hfs-test/two-commits", "v1")
    v1 = json.loads((root / "hfs-test/two-commits/repo.json").read_text())["refs"]["v1"]
    manifest = _manifest(tmp_path, PUBLISH_MANIFEST)

    code, outcomes = mirror(manifest, report_path=tmp_path / "r.json")
    assert code == EXIT_OK, [o.reason for o in outcomes]
    assert [o.status for o in outcomes] == ["converted"] * 3
    assert all(o.outputs == [] and o.published for o in outcomes)
    # nothing left on local disk: no GGUF outside the Hub's own storage, no work directory
    assert not [p for p in tmp_path.rglob("*.gguf") if root not in p.parents]
    assert list(work.iterdir()) == []
    two, spm = "mirrors/two-commits-GGUF", "mirrors/tiny-llama-spm-GGUF"
    assert outcomes[1].published == _head(hub, two) and outcomes[2].published == _head(hub, spm)
    api = HfApi(endpoint=hub.endpoint)
    ggufs = sorted(f for f in api.list_repo_files(two) if f.endswith(".gguf"))
    assert len(ggufs) == 2 and len([f for f in api.list_repo_files(spm) if f.endswith(".gguf")]) == 1
    card = _download(hub, two, "README.md").decode()
    assert "base_model: hfs-test/two-commits" in card and "Quant types: f16, q8_0" in card
    assert {i["source_commit"] for i in _record(card).values()} == {v1}
    # the published bytes are the conversion's
    import hfstream

    (tmp_path / "local").mkdir()
    local = hfstream.convert("hfs-test/two-commits", outtype="q8_0", revision=v1, outfile=tmp_path / "local")
    assert _download(hub, two, local.path.name) == local.path.read_bytes()
    local.path.unlink()

    hub.clear_log()
    code, outcomes = mirror(manifest, report_path=tmp_path / "r.json")
    assert code == EXIT_OK and [o.status for o in outcomes] == ["skipped"] * 3
    assert not [e for e in hub.log if e["origin"] == "storage" or "/resolve/" in e["path"] or e["method"] != "GET"]

    spm_head = _head(hub, spm)
    _move_main(root, "hfs-test/two-commits", "latest")
    latest = json.loads((root / "hfs-test/two-commits/repo.json").read_text())["refs"]["main"]
    hub.clear_log()
    code, outcomes = mirror(manifest, report_path=tmp_path / "r.json")
    assert code == EXIT_OK and [o.status for o in outcomes] == ["converted", "converted", "skipped"]
    commits = [e["path"] for e in hub.log if e["path"].endswith("/commit/main")]
    assert commits == [f"/api/models/{two}/commit/main"]  # its two outtypes: one pass, one commit
    assert _head(hub, spm) == spm_head
    card = _download(hub, two, "README.md").decode()
    assert {i["source_commit"] for i in _record(card).values()} == {latest}
    assert sorted(f for f in api.list_repo_files(two) if f.endswith(".gguf")) == ggufs


def test_mirror_fanout_publishes_outtypes_of_one_repo_concurrently(publishing, tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    hub, root, _ = publishing
    monkeypatch.setenv("HFSTREAM_DASK_PROCESSES", "0")  # the engine's local mode, in-process workers
    manifest = _manifest(tmp_path, PUBLISH_MANIFEST)
    code, outcomes = mirror(manifest, engine="dask", workers=2, hub_connections=4)
    assert code == EXIT_OK and [o.status for o in outcomes] == ["converted"] * 3, [o.reason for o in outcomes]
    card = _download(hub, "mirrors/two-commits-GGUF", "README.md").decode()
    assert sorted(i["outtype"] for i in _record(card).values()) == ["f16", "q8_0"]


def test_mirror_publishes_every_shard_of_a_split_output(publishing, tmp_path):
    hub, _, work = publishing
    manifest = _manifest(tmp_path, """
[[model]]
repo = "hfs-test/tiny-llama-spm"
outtypes = ["q8_0"]
target_repo = "mirrors/{name}-GGUF"
split_max_tensors = 8
""")
    code, outcomes = mirror(manifest)
    assert code == EXIT_OK, outcomes[0].reason
    repo = "mirrors/tiny-llama-spm-GGUF"
    shards = sorted(f for f in HfApi(endpoint=hub.endpoint).list_repo_files(repo) if f.endswith(".gguf"))
    assert len(shards) > 1 and all(f"-of-{len(shards):05d}.gguf" in s for s in shards)
    record = _record(_download(hub, repo, "README.md").decode())
    assert sorted(record) == shards and {i["outtype"] for i in record.values()} == {"q8_0"}
    assert list(work.iterdir()) == [] and not [p for p in tmp_path.rglob("*.gguf") if "hub-root" not in p.parts]
    assert len([e for e in hub.log if e["origin"] == "storage" and e["method"] == "PUT"]) == len(shards)
