"""Mirror jobs: a manifest converts what changed upstream, skips the rest, and reports."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hfstream import errors
from hfstream.mirror import EXIT_OK, EXIT_PERMANENT, load_manifest, locked, mirror

from .conftest import cli_env


@pytest.fixture
def mini_hub(fixture_root, tmp_path, monkeypatch):
    """A fixture Hub over a copy of two repos, so a test can move `main` upstream."""
    from fixtures.hub import FixtureHub

    root = tmp_path / "hub-root"
    for repo in ("hfs-test/two-commits", "hfs-test/tiny-llama-spm"):
        shutil.copytree(fixture_root / repo, root / repo, symlinks=True)
    shutil.copy(fixture_root / "_tokens.json", root / "_tokens.json")
    with FixtureHub(root) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        yield hub, root


def _move_main(root: Path, repo: str, ref: str) -> None:
    """Point `main` at another ref (the original main stays reachable as `latest`)."""
    info_path = root / repo / "repo.json"
    info = json.loads(info_path.read_text())
    info["refs"].setdefault("latest", info["refs"]["main"])
    info["refs"]["main"] = info["refs"][ref]
    info_path.write_text(json.dumps(info))


def _manifest(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "mirror.toml"
    path.write_text(body)
    return path


def _digests(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*.gguf"))}


def _fake_result(repo: str, outtype: str, outfile, body: bytes = b"GGUF", **fields):
    """What a convert double returns: one file per outtype of a (comma-separated) list, each a result
    of its own in ``outputs`` as ``hfstream.convert`` gives them; the first's fields on the result."""
    from types import SimpleNamespace

    outputs = []
    for t in outtype.split(","):
        path = Path(outfile) / f"{repo.split('/')[1]}-{t}.gguf"
        path.write_bytes(body)
        outputs.append(SimpleNamespace(path=path, paths=[path], outtype=t, output_size=len(body)))
    return SimpleNamespace(path=outputs[0].path, paths=outputs[0].paths, outtype=outputs[0].outtype,
                           output_size=len(body), outputs=outputs, **fields)


MANIFEST = """
[defaults]
target_dir = "{out}/{{name}}"

[[model]]
repo = "hfs-test/two-commits"
outtypes = ["q8_0", "f16"]

[[model]]
repo = "hfs-test/tiny-llama-spm"
outtypes = ["q8_0"]
"""


def test_second_run_skips_and_a_new_upstream_commit_reruns_only_its_entries(mini_hub, tmp_path):
    hub, root = mini_hub
    _move_main(root, "hfs-test/two-commits", "v1")
    out = tmp_path / "out"
    manifest = _manifest(tmp_path, MANIFEST.format(out=out))
    report = tmp_path / "report.json"

    code, outcomes = mirror(manifest, report_path=report)
    assert code == EXIT_OK
    assert [o.status for o in outcomes] == ["converted"] * 3
    first = _digests(out)
    assert len(first) == 3
    assert json.loads(report.read_text())["entries"][0]["status"] == "converted"

    hub.clear_log()
    code, outcomes = mirror(manifest, report_path=report)
    assert code == EXIT_OK and [o.status for o in outcomes] == ["skipped"] * 3
    # unchanged entries cost one API call each repo and no weights
    assert not [e for e in hub.log if e["origin"] == "storage" or "/resolve/" in e["path"]]

    _move_main(root, "hfs-test/two-commits", "latest")
    code, outcomes = mirror(manifest, report_path=report)
    assert code == EXIT_OK
    assert [o.status for o in outcomes] == ["converted", "converted", "skipped"]
    second = _digests(out)
    changed = {n for n in first if first[n] != second[n]}
    assert changed == {n for n in first if n.startswith("Two-Commits")}


THREE_TYPES = """
[[model]]
repo = "hfs-test/tiny-llama-spm"
target_dir = "{out}"
outtypes = ["q8_0", "f16", "bf16"]
"""


def _fetched_once(hub) -> list[tuple[str, int, int]]:
    """The data ranges of the Hub's log, asserted to never ask a source byte twice."""
    from .test_multi_output import _data_ranges

    ranges = _data_ranges(hub)
    seen: dict[str, list[tuple[int, int]]] = {}
    for path, a, b in ranges:
        assert all(b < c or a > d for c, d in seen.get(path, [])), f"bytes {a}-{b} of {path} fetched twice"
        seen.setdefault(path, []).append((a, b))
    return ranges


def test_an_entry_with_several_outtypes_fetches_each_source_byte_once(mini_hub, tmp_path):
    """One pass for the entry's three outtypes: every source byte asked once (no more bytes than one
    outtype alone asks), each output the very bytes of its own single-type run, each recorded alone."""
    import hfstream

    hub, _ = mini_hub
    alone = {}
    for outtype in ("q8_0", "f16", "bf16"):
        hub.clear_log()
        (tmp_path / outtype).mkdir()
        result = hfstream.convert("hfs-test/tiny-llama-spm", outtype=outtype, outfile=tmp_path / outtype)
        alone[outtype] = hashlib.sha256(result.path.read_bytes()).hexdigest()
    single = sum(b - a + 1 for _, a, b in _fetched_once(hub))

    hub.clear_log()
    manifest = _manifest(tmp_path, THREE_TYPES.format(out=tmp_path / "out"))
    code, outcomes = mirror(manifest)
    assert code == EXIT_OK and [o.status for o in outcomes] == ["converted"] * 3
    assert 0 < sum(b - a + 1 for _, a, b in _fetched_once(hub)) <= single
    assert [o.fetched_with for o in outcomes] == [["q8_0", "f16", "bf16"]] * 3
    assert outcomes[0].bytes_fetched > 0 and outcomes[1].bytes_fetched == outcomes[2].bytes_fetched == 0
    for o in outcomes:
        (path,) = o.outputs
        assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == alone[o.outtype], o.outtype
    state = json.loads(manifest.with_name(manifest.name + ".state.json").read_text())["done"]
    assert sorted((e["outtype"], e["outputs"]) for e in state.values()) == sorted(
        (o.outtype, o.outputs) for o in outcomes)

    # one output gone: only its outtype is made again, the others are skipped
    Path(outcomes[1].outputs[0]).unlink()
    hub.clear_log()
    code, again = mirror(manifest)
    assert code == EXIT_OK and [o.status for o in again] == ["skipped", "converted", "skipped"]
    assert again[1].fetched_with == [] and hashlib.sha256(Path(again[1].outputs[0]).read_bytes()).hexdigest() == alone["f16"]


def test_an_interrupted_pass_of_several_outtypes_resumes_each_file(mini_hub, tmp_path, monkeypatch):
    """Ctrl-C in the middle of the pass: nothing is recorded, each file keeps its .part; the rerun
    writes only the units each file lacks and gives the same bytes as an uninterrupted pass."""
    from hfstream import execute

    real_write = execute._write
    written: list[int] = []
    stop_after = [None]

    def counted_write(u, encoded, outs):
        if len(written) == stop_after[0]:
            raise KeyboardInterrupt
        written.append(u.file)
        real_write(u, encoded, outs)

    monkeypatch.setattr(execute, "_write", counted_write)
    body = THREE_TYPES.replace("outtypes", 'max_memory = "256K"\nouttypes')  # many small units
    for name in ("whole", "again"):
        (tmp_path / name).mkdir()
    whole = tmp_path / "whole" / "out"
    assert mirror(_manifest(tmp_path / "whole", body.format(out=whole)))[0] == EXIT_OK
    units = len(written)
    assert units > 12

    written.clear()
    stop_after[0] = 9
    out = tmp_path / "again" / "out"
    manifest = _manifest(tmp_path / "again", body.format(out=out))
    with pytest.raises(KeyboardInterrupt):
        mirror(manifest)
    assert len(set(written)) == 3, "every output had units written before the interrupt"
    assert len(list(out.glob("*.part"))) == 3 and not list(out.glob("*.gguf"))
    assert not manifest.with_name(manifest.name + ".state.json").exists()  # nothing recorded

    written.clear()
    stop_after[0] = None
    code, outcomes = mirror(manifest)
    assert code == EXIT_OK and [o.status for o in outcomes] == ["converted"] * 3
    assert len(written) == units - 9  # each file resumed on its own: no unit written twice
    assert _digests(out) == _digests(whole) and not list(out.glob("*.part"))


def test_a_failed_entry_does_not_stop_the_others(mini_hub, tmp_path):
    manifest = _manifest(tmp_path, f"""
[defaults]
target_dir = "{tmp_path}/out"
[[model]]
repo = "hfs-test/no-such-repo"
outtypes = ["q8_0"]
[[model]]
repo = "hfs-test/tiny-llama-spm"
outtypes = ["q8_0"]
""")
    code, outcomes = mirror(manifest, report_path=tmp_path / "r.json")
    assert code == EXIT_PERMANENT
    assert [o.status for o in outcomes] == ["failed", "converted"]
    assert outcomes[0].exit_code == errors.RepoNotFoundError.exit_code and not outcomes[0].retryable
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["entries"][0]["reason"]


def test_cli_exit_code_and_lock(mini_hub, tmp_path):
    hub, _ = mini_hub
    manifest = _manifest(tmp_path, MANIFEST.format(out=tmp_path / "out"))
    state = manifest.with_name(manifest.name + ".state.json")
    with locked(state):
        proc = subprocess.run([sys.executable, "-m", "hfstream", "mirror", str(manifest)], env=cli_env(hub),
                              capture_output=True, text=True, timeout=120)
    assert proc.returncode == errors.LockHeldError.exit_code
    assert proc.stderr.strip().count("\n") == 0 and "lock" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "hfstream", "mirror", str(manifest), "--report",
                           str(tmp_path / "r.json")], env=cli_env(hub), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert [line.split()[0] for line in proc.stdout.splitlines()] == ["converted"] * 3 + ["3"]
    assert proc.stdout.splitlines()[-1].startswith("3 converted, 0 skipped, 0 failed; ")
    assert not state.with_name(state.name + ".lock").exists()


@pytest.mark.parametrize("body, words", [
    ("[[model]]\nrepo = 'a/b'\n", "no target_dir"),
    ("[[model]]\nrepo = 'a/b'\ntarget_dir = 'x'\nfrobnicate = 1\n", "unknown key 'frobnicate' in model #1 (a/b)"),
    # a misspelt key is named as such, not reported as the key it was meant to be missing
    ("[[model]]\nrepo = 'a/b'\ntaget_dir = 'x'\n", "unknown key 'taget_dir' in model #1 (a/b); did you mean 'target_dir'?"),
    ("[defaults]\ntarget_dir = 'x'\nmax_memroy = '1G'\n[[model]]\nrepo = 'a/b'\n",
     "unknown key 'max_memroy' in [defaults] (a/b); did you mean 'max_memory'?"),
    ("[[model]]\nrepo = 3\ntarget_dir = 'x'\n", "'repo' must be"),
    ("model = [", "not valid TOML"),
    ("[defaults]\ntarget_dir = 'x'\n", "at least one [[model]]"),
])
def test_bad_manifests_are_one_clear_line(tmp_path, body, words):
    with pytest.raises(errors.ManifestError, match=re.escape(words)):
        load_manifest(_manifest(tmp_path, body))


def test_dask_fanout_gives_the_same_outputs_as_the_serial_run(mini_hub, tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    monkeypatch.setenv("HFSTREAM_DASK_PROCESSES", "0")  # the engine's local mode, in-process workers
    serial = _manifest(tmp_path, MANIFEST.format(out=tmp_path / "serial"))
    assert mirror(serial)[0] == EXIT_OK
    fan = tmp_path / "fan.toml"
    fan.write_text(MANIFEST.format(out=tmp_path / "dask"))
    code, outcomes = mirror(fan, engine="dask", workers=2, hub_connections=4)
    assert code == EXIT_OK and [o.status for o in outcomes] == ["converted"] * 3
    assert _digests(tmp_path / "serial") == _digests(tmp_path / "dask")


def test_an_engine_is_a_plug_in_with_one_method(mini_hub, tmp_path, monkeypatch):
    """Any object with ``run(work, jobs)`` yielding (index, outcome) runs a mirror; outcomes land in
    manifest order and in the state file whatever order the engine finishes them in."""
    import hfstream

    made = []

    def convert(repo, outtype, revision, outfile, force, **options):
        made.append((repo, outtype, options.get("connections")))
        return _fake_result(repo, outtype, outfile)

    monkeypatch.setattr(hfstream, "convert", convert)

    class LastFirst:
        def run(self, work, jobs):
            for i in reversed(range(len(jobs))):
                yield i, work(jobs[i].with_connections(3))

    manifest = _manifest(tmp_path, MANIFEST.format(out=tmp_path / "out"))
    code, outcomes = mirror(manifest, engine=LastFirst())
    assert code == EXIT_OK
    assert [(o.repo, o.outtype, o.status) for o in outcomes] == [
        ("hfs-test/two-commits", "q8_0", "converted"), ("hfs-test/two-commits", "f16", "converted"),
        ("hfs-test/tiny-llama-spm", "q8_0", "converted")]
    assert [Path(o.outputs[0]).name for o in outcomes] == [
        "two-commits-q8_0.gguf", "two-commits-f16.gguf", "tiny-llama-spm-q8_0.gguf"]
    # one job per model: its two outtypes in one pass
    assert [m[0:2] for m in made] == [("hfs-test/tiny-llama-spm", "q8_0"), ("hfs-test/two-commits", "q8_0,f16")]
    assert {m[2] for m in made} == {3}  # what the engine gave each job
    state = json.loads(manifest.with_name(manifest.name + ".state.json").read_text())
    assert len(state["done"]) == 3
    assert mirror(manifest, engine=LastFirst())[1][0].status == "skipped"


def test_an_unknown_engine_is_refused_before_any_work(tmp_path):
    manifest = _manifest(tmp_path, MANIFEST.format(out=tmp_path / "out"))
    with pytest.raises(errors.UnsupportedOptionError, match="unknown engine 'spark'; choose serial or dask"):
        mirror(manifest, engine="spark")
    assert not manifest.with_name(manifest.name + ".state.json").exists()


def test_an_interrupted_run_resumes_where_it_stopped(mini_hub, tmp_path, monkeypatch):
    """Ctrl-C during the second model: the first's two outtypes (one pass) are in the state file; the
    rerun skips them and finishes."""
    import hfstream

    hub, _ = mini_hub
    manifest = _manifest(tmp_path, MANIFEST.format(out=tmp_path / "out"))
    real = hfstream.convert
    calls = {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(hfstream, "convert", interrupted)
    with pytest.raises(KeyboardInterrupt):
        mirror(manifest)
    monkeypatch.setattr(hfstream, "convert", real)
    state = json.loads(manifest.with_name(manifest.name + ".state.json").read_text())
    assert sorted(e["outtype"] for e in state["done"].values()) == ["f16", "q8_0"]
    code, outcomes = mirror(manifest)
    assert code == EXIT_OK
    assert [o.status for o in outcomes] == ["skipped", "skipped", "converted"]


# --------------------------------------------------------------------------- what the user sees


def test_each_entry_is_printed_as_it_finishes_then_a_summary(mini_hub, tmp_path, monkeypatch, capsys):
    """A line per entry as soon as it is done (before the next conversion starts), then one summary line."""
    import hfstream
    from hfstream import cli

    seen_before: list[str] = []

    def convert(repo, outtype, revision, outfile, force, **options):
        seen_before.append(capsys.readouterr().out)  # what the user saw when this conversion started
        return _fake_result(repo, outtype, outfile, b"GGUF" + bytes(1000), bytes_fetched=2000)

    monkeypatch.setattr(hfstream, "convert", convert)
    manifest = _manifest(tmp_path, MANIFEST.format(out=tmp_path / "out"))
    assert cli.main(["mirror", str(manifest)]) == 0
    rest = capsys.readouterr().out
    assert seen_before[0] == ""
    # the first model's two outtypes came from one pass (its bytes fetched once, counted once)
    assert seen_before[1].splitlines() == ["converted hfs-test/two-commits@main q8_0: two-commits-q8_0.gguf",
                                           "converted hfs-test/two-commits@main f16: two-commits-f16.gguf"]
    assert rest.splitlines() == ["converted hfs-test/tiny-llama-spm@main q8_0: tiny-llama-spm-q8_0.gguf",
                                 "3 converted, 0 skipped, 0 failed; 3.0 kB written, 4.0 kB fetched"]
    # the second run: skipped entries are printed too, and counted
    assert cli.main(["mirror", str(manifest)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "0 converted, 3 skipped, 0 failed; 0 B written, 0 B fetched"


def test_the_lock_file_goes_when_the_run_ends_dry_run_or_not(mini_hub, tmp_path):
    hub, _ = mini_hub
    manifest = _manifest(tmp_path, MANIFEST.format(out=tmp_path / "out"))
    lock = manifest.with_name(manifest.name + ".state.json.lock")
    for extra in (["--dry-run"], ["--json", "--dry-run"]):
        proc = subprocess.run([sys.executable, "-m", "hfstream", "mirror", str(manifest), *extra], env=cli_env(hub),
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert not lock.exists()
    # a failing run too
    with pytest.raises(errors.ManifestError):
        (tmp_path / "mirror.toml.state.json").write_text("{not json")
        mirror(manifest)
    assert not lock.exists()


def test_a_lock_removed_under_a_waiting_run_is_not_shared(tmp_path):
    """The lock file goes at the end of a run; a run that opened it just before must not hold a lock on
    the removed file while a third run locks the new one (it starts over on the file at the path)."""
    import fcntl
    import os

    state = tmp_path / "s.json"
    lock = state.with_name("s.json.lock")
    stale = os.open(lock, os.O_RDWR | os.O_CREAT)  # as opened by a run that then lost the race
    os.unlink(lock)
    fcntl.flock(stale, fcntl.LOCK_EX | fcntl.LOCK_NB)  # it holds a lock on a file no one else can see
    with locked(state):
        assert lock.exists()
        with pytest.raises(errors.LockHeldError):
            with locked(state):
                pass
    assert not lock.exists()
    os.close(stale)


def test_help_names_the_state_file_a_run_really_uses(mini_hub, tmp_path, capsys, monkeypatch):
    import hfstream
    from hfstream import cli

    with pytest.raises(SystemExit):
        cli.main(["mirror", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "e.g. mirror.toml.state.json" in help_text and "MANIFEST.state.json" not in help_text

    def convert(repo, outtype, revision, outfile, force, **options):
        return _fake_result(repo, outtype, outfile)

    monkeypatch.setattr(hfstream, "convert", convert)
    manifest = _manifest(tmp_path, MANIFEST.format(out=tmp_path / "out"))
    assert mirror(manifest)[0] == EXIT_OK
    assert [p.name for p in tmp_path.glob("*.state.json")] == ["mirror.toml.state.json"]


def test_failure_messages_name_the_manifest_keys_not_convert_flags(mini_hub, tmp_path, fixture_root):
    hub, root = mini_hub
    shutil.copytree(fixture_root / "hfs-test/gated-llama", root / "hfs-test/gated-llama", symlinks=True)
    manifest = _manifest(tmp_path, f"""
[defaults]
target_dir = "{tmp_path}/out"
[[model]]
repo = "hfs-test/gated-llama"
outtypes = ["q8_0"]
""")
    proc = subprocess.run([sys.executable, "-m", "hfstream", "mirror", str(manifest)],
                          env=cli_env(hub, HF_HOME=str(tmp_path / "hf")), capture_output=True, text=True, timeout=120)
    assert proc.returncode == EXIT_PERMANENT
    line = proc.stdout.splitlines()[0]
    assert line.startswith("failed    hfs-test/gated-llama@main q8_0: hfs-test/gated-llama is gated")
    assert "--token" not in proc.stdout + proc.stderr
    assert "set `token` in the manifest" in line


def test_json_prints_one_result_with_every_entry(mini_hub, tmp_path):
    hub, _ = mini_hub
    manifest = _manifest(tmp_path, MANIFEST.format(out=tmp_path / "out"))
    proc = subprocess.run([sys.executable, "-m", "hfstream", "mirror", str(manifest), "--json"], env=cli_env(hub),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)  # the whole of stdout is one JSON document
    assert (result["exit_code"], result["converted"], result["skipped"], result["failed"]) == (0, 3, 0, 0)
    sizes = sorted(Path(p).stat().st_size for e in result["entries"] for p in e["outputs"])
    assert sorted(e["bytes_written"] for e in result["entries"]) == sizes
    assert result["bytes_written"] == sum(sizes) and result["bytes_fetched"] > 0
    assert {e["repo"] for e in result["entries"]} == {"hfs-test/two-commits", "hfs-test/tiny-llama-spm"}


def test_outtypes_in_any_case(tmp_path):
    manifest = _manifest(tmp_path, "[[model]]\nrepo = 'a/b'\ntarget_dir = 'x'\nouttypes = ['Q8_0', 'Q4_K_M']\n")
    assert [e.outtype for e in load_manifest(manifest)] == ["q8_0", "q4_k_m"]


def test_an_unreachable_dask_scheduler_is_a_network_error_not_a_bug(mini_hub, tmp_path):
    pytest.importorskip("distributed")
    import socket

    hub, _ = mini_hub
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    manifest = _manifest(tmp_path, MANIFEST.format(out=tmp_path / "out"))
    proc = subprocess.run([sys.executable, "-m", "hfstream", "mirror", str(manifest), "--engine", "dask"],
                          env=cli_env(hub, HFSTREAM_DASK_SCHEDULER=f"tcp://127.0.0.1:{port}",
                                      DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT="2s"),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == errors.NetworkError.exit_code, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"hfstream: error: cannot reach the Dask scheduler at tcp://127.0.0.1:{port} (HFSTREAM_DASK_SCHEDULER): "
        f"Timed out trying to connect to tcp://127.0.0.1:{port} after 2 s"]


# --- manifests that would lose outputs or reach into Python -----------------------------------------


def test_entries_that_would_share_an_output_are_refused_with_the_clash_named(tmp_path):
    """Same repo and outtype, options that differ (so do the bytes), one target: one file would be lost
    and both would say converted. Refused when the manifest is read, whatever the engine."""
    body = f"""
[defaults]
target_dir = "{tmp_path}/out/{{name}}"

[[model]]
repo = "org/model"
outtypes = ["q4_k_m"]

[[model]]
repo = "org/model"
outtypes = ["q8_0", "q4_k_m"]
tensor_types = ["attn_v=q8_0"]
"""
    manifest = _manifest(tmp_path, body)
    with pytest.raises(errors.ManifestError, match=r"models #1 and #2 would both write org/model q4_k_m to "
                                                   r".*/out/model .*give one its own target_dir"):
        load_manifest(manifest)
    for engine in ("serial", "dask"):
        with pytest.raises(errors.ManifestError):
            mirror(manifest, engine=engine)
    assert not (tmp_path / "out").exists() and not manifest.with_name(manifest.name + ".state.json").exists()
    with pytest.raises(errors.ManifestError, match="model #1 would twice write org/model q8_0"):
        load_manifest(_manifest(tmp_path, f'[[model]]\nrepo = "org/model"\ntarget_dir = "{tmp_path}"\n'
                                          'outtypes = ["q8_0", "Q8_0"]\n'))
    # the same repo twice is fine once the targets differ
    fixed = body.replace('tensor_types', 'target_dir = "' + str(tmp_path) + '/out/{name}-attn-v"\ntensor_types')
    assert len(load_manifest(_manifest(tmp_path, fixed))) == 3


def test_two_repos_whose_outputs_get_one_name_fail_the_second_and_redo_the_first(mini_hub, tmp_path, monkeypatch):
    """File names come from the models' metadata, so two repos can meet on one name only when converted:
    the second fails (permanently) naming the first, whose record is dropped since its file was
    overwritten; the state never claims a file holds what it does not."""
    from types import SimpleNamespace

    import hfstream

    def convert(repo, outtype, revision, outfile, force, **options):
        path = Path(outfile) / f"Model-{outtype}.gguf"  # both repos' models call themselves "Model"
        path.write_bytes(repo.encode())
        return SimpleNamespace(path=path, paths=[path], outtype=outtype)

    monkeypatch.setattr(hfstream, "convert", convert)
    manifest = _manifest(tmp_path, f"""
[defaults]
target_dir = "{tmp_path}/flat"
[[model]]
repo = "hfs-test/two-commits"
outtypes = ["q8_0"]
[[model]]
repo = "hfs-test/tiny-llama-spm"
outtypes = ["q8_0"]
""")
    code, outcomes = mirror(manifest)
    assert code == EXIT_PERMANENT
    assert [o.status for o in outcomes] == ["converted", "failed"]
    assert "also the output of hfs-test/two-commits@main q8_0" in outcomes[1].reason
    assert json.loads(manifest.with_name(manifest.name + ".state.json").read_text())["done"] == {}


@pytest.mark.parametrize("template, says", [
    ("out/{foo}", "uses '{foo}'"),
    ("out/{repo.__class__.__mro__[1].__subclasses__}", "uses '{repo.__class__.__mro__[1].__subclasses__}'"),
    ("out/{name!r}", "uses '{name!r}'"),
    ("out/{name:>{repo}}", "uses '{name:>{repo}}'"),
    ("out/{0}", "uses '{0}'"),
    ("out/{name", "is not a valid template"),
])
def test_a_template_may_use_the_documented_fields_only(template, says, fresh_hub, tmp_path, capsys):
    from hfstream import cli

    repo = "hfs-test/tiny-llama-spm"
    manifest = _manifest(tmp_path, f'[[model]]\nrepo = "{repo}"\ntarget_dir = "{tmp_path}/{template}"\n')
    code = cli.main(["mirror", str(manifest)])
    err = capsys.readouterr().err
    assert code == errors.ManifestError.exit_code == 60, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"model #1 ({repo}): target_dir" in lines[0] and says in lines[0], err
    assert "{org} {name} {repo} {outtype}" in lines[0] or "not a valid template" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mirror.toml"]  # no directory of any name made


@pytest.mark.parametrize("value", ["5", "true", "''", "['a']"])
def test_a_target_that_is_not_a_string_is_refused(value, tmp_path):
    with pytest.raises(errors.ManifestError, match="'target_dir' must be a non-empty string"):
        load_manifest(_manifest(tmp_path, f'[[model]]\nrepo = "org/model"\ntarget_dir = {value}\n'))
