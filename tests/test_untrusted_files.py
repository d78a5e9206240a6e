"""Files hfstream creates are created, never found: links planted at their names are not followed,
and a resume trusts only a ``.part`` and journal this user made.

The output directory may be shared (``/tmp``, a team mount): another user can plant a link at
``out.gguf.part`` (to make the GGUF overwrite a victim file) or leave a ``.part`` and a journal whose
CRCs match tampered bytes (to get them published). Each case here is one such plant.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zlib
from pathlib import Path

import pytest

import hfstream
from hfstream import errors
from hfstream.mirror import EXIT_OK, load_manifest, mirror
from hfstream.writer import OutputFile, check_destination, journal_path, lock_path, part_path

from .test_mirror import _manifest
from .test_publish import GOOD, _download, lfs_protocol, publishing  # noqa: F401  (fixtures)
from .test_mirror import mini_hub  # noqa: F401  (a fixture)

VICTIM = b"a file of the victim's, which no conversion may touch\n"


@pytest.fixture
def victim(tmp_path) -> Path:
    p = tmp_path / "elsewhere" / "victim.txt"
    p.parent.mkdir()
    p.write_bytes(VICTIM)
    return p


def _write_all(out: OutputFile, data: bytes) -> None:
    out.pwrite(data, 0)
    out.record(0, len(data), zlib.crc32(data))


# --- links at the names hfstream creates -----------------------------------------------------------


@pytest.mark.parametrize("plant", ["part", "journal.tmp", "journal"])
def test_a_link_at_a_file_of_the_output_is_never_written_through(plant, victim, tmp_path):
    final = tmp_path / "out" / "model.gguf"
    final.parent.mkdir()
    where = {"part": part_path(final), "journal": journal_path(final),
             "journal.tmp": journal_path(final).with_name(journal_path(final).name + ".tmp")}[plant]
    where.symlink_to(victim)
    out = OutputFile(final, 10, identity="plan")
    _write_all(out, b"helloworld")
    out.commit()
    assert victim.read_bytes() == VICTIM
    assert final.read_bytes() == b"helloworld" and not final.is_symlink()
    assert not os.path.lexists(where) or not where.is_symlink()


def test_a_link_at_the_output_counts_as_an_output_even_pointing_nowhere(tmp_path):
    final = tmp_path / "model.gguf"
    final.symlink_to(tmp_path / "nowhere" / "victim.gguf")
    with pytest.raises(errors.OutputExistsError, match="already exists"):
        check_destination(final, force=False)
    out = OutputFile(final, 4, force=True)  # --force replaces the link itself, never its target
    _write_all(out, b"GGUF")
    out.commit()
    assert not final.is_symlink() and final.read_bytes() == b"GGUF"
    assert not (tmp_path / "nowhere").exists()


def test_a_link_at_the_output_lock_is_refused_with_one_line(victim, tmp_path):
    from hfstream.writer import OutputLock

    final = tmp_path / "model.gguf"
    lock_path(final).symlink_to(victim)
    with pytest.raises(errors.OutputWriteError, match="is a symbolic link"):
        with OutputLock(final):
            pass
    assert victim.read_bytes() == VICTIM


def test_the_mirror_state_lock_and_its_tmp_are_never_written_through(fresh_hub, victim, tmp_path, monkeypatch):
    """A link at ``<state>.lock`` is refused (it was truncated, then written); one at ``<state>.tmp`` is
    replaced by the state's own file."""
    from types import SimpleNamespace

    def convert(repo, outtype, revision, outfile, force, **options):
        path = Path(outfile) / f"{repo.split('/')[1]}-{outtype}.gguf"
        path.write_bytes(b"GGUF")
        return SimpleNamespace(path=path, paths=[path], outtype=outtype)

    monkeypatch.setattr(hfstream, "convert", convert)
    manifest = _manifest(tmp_path, f'[[model]]\nrepo = "hfs-test/tiny-llama-spm"\ntarget_dir = "{tmp_path}/out"\n')
    state = manifest.with_name(manifest.name + ".state.json")
    lock = state.with_name(state.name + ".lock")
    lock.symlink_to(victim)
    with pytest.raises(errors.OutputWriteError, match="is a symbolic link"):
        mirror(manifest)
    assert victim.read_bytes() == VICTIM and not state.exists()

    lock.unlink()
    state.with_name(state.name + ".tmp").symlink_to(victim)
    code, outcomes = mirror(manifest)
    assert code == EXIT_OK and outcomes[0].status == "converted"
    assert victim.read_bytes() == VICTIM
    assert not state.is_symlink() and len(json.loads(state.read_text())["done"]) == 1


# --- a resume trusts only files this user made ------------------------------------------------------


def _interrupted(tmp_path: Path) -> Path:
    """An output with a .part and a journal of two units, as an interrupted run leaves them."""
    final = tmp_path / "model.gguf"
    out = OutputFile(final, 8, identity="plan")
    out.pwrite(b"abcd", 0)
    out.record(0, 4, zlib.crc32(b"abcd"))
    out.pwrite(b"efgh", 4)
    out.record(4, 4, zlib.crc32(b"efgh"))
    out.abort(keep=True)
    assert OutputFile(final, 8, identity="plan").done == {(0, 4), (4, 4)}  # ours: resumed
    return final


@pytest.mark.parametrize("how", ["part-writable-by-others", "journal-writable-by-others", "another-users",
                                 "journal-a-link"])
def test_a_part_and_journal_not_of_this_users_making_are_not_resumed(how, tmp_path, monkeypatch):
    final = _interrupted(tmp_path)
    if how == "part-writable-by-others":
        os.chmod(part_path(final), 0o666)
    elif how == "journal-writable-by-others":
        os.chmod(journal_path(final), 0o646)
    elif how == "another-users":
        uid = os.geteuid()
        monkeypatch.setattr(os, "geteuid", lambda: uid + 1)
    else:
        real = tmp_path / "elsewhere.journal"
        journal_path(final).rename(real)
        journal_path(final).symlink_to(real)
    out = OutputFile(final, 8, identity="plan")
    assert out.done == set()  # nothing reused: every unit is done again
    _write_all(out, b"12345678")
    out.commit()
    assert final.read_bytes() == b"12345678"


def test_a_mirror_publishing_only_never_resumes_from_a_shared_predictable_directory(publishing, tmp_path, monkeypatch):  # noqa: F811
    """Another local user pre-creates the directory the mirror used to resume from
    (``/tmp/hfstream-mirror-<key>``, mode 0777) with a .part and a journal whose CRCs match tampered
    bytes. What is published is still the conversion's own bytes."""
    hub, _, work = publishing
    shared_tmp = tmp_path / "shared-tmp"
    shared_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(shared_tmp))
    manifest = _manifest(tmp_path, '[[model]]\nrepo = "hfs-test/tiny-llama-spm"\nouttypes = ["q8_0"]\n'
                                   'target_repo = "mirrors/{name}-GGUF"\n')
    (entry,) = load_manifest(manifest)
    sha = json.loads((hub.root / entry.repo / "repo.json").read_text())["refs"]["main"]
    planted = shared_tmp / f"hfstream-mirror-{entry.key(sha)}"
    planted.mkdir()
    os.chmod(planted, 0o777)

    # the attacker's plant: a conversion of the very plan stopped before its rename, then bytes changed
    # and their CRC in the journal to match
    (tmp_path / "clean").mkdir()
    clean = hfstream.convert(entry.repo, outtype="q8_0", revision=sha, outfile=tmp_path / "clean")
    out = planted / clean.path.name

    def link_down(self):
        raise errors.NetworkError("simulated: stopped before the rename")

    with monkeypatch.context() as m:
        m.setattr(OutputFile, "commit", link_down)
        with pytest.raises(errors.NetworkError):
            hfstream.convert(entry.repo, outtype="q8_0", revision=sha, outfile=planted)
    lines = journal_path(out).read_text().splitlines()
    offset, nbytes, _ = map(int, lines[1].split())
    with open(part_path(out), "r+b") as f:
        tampered = bytes(b ^ 0x5A for b in os.pread(f.fileno(), nbytes, offset))
        os.pwrite(f.fileno(), tampered, offset)
    lines[1] = f"{offset} {nbytes} {zlib.crc32(tampered)}"
    journal_path(out).write_text("\n".join(lines) + "\n")

    code, outcomes = mirror(manifest)
    assert code == EXIT_OK, outcomes[0].reason
    published = _download(hub, "mirrors/tiny-llama-spm-GGUF", clean.path.name)
    assert hashlib.sha256(published).digest() == hashlib.sha256(clean.path.read_bytes()).digest()
    assert list(work.iterdir()) == []  # the private work directory, emptied after the upload


def test_a_work_directory_that_is_not_private_is_refused(tmp_path, monkeypatch):
    from hfstream.mirror import work_dir

    monkeypatch.setenv("HFSTREAM_CACHE", str(tmp_path / "cache"))
    made = work_dir("abc")
    assert made == tmp_path / "cache" / "mirror" / "abc" and made.stat().st_mode & 0o777 == 0o700
    os.chmod(made, 0o777)
    with pytest.raises(errors.OutputWriteError, match="writable by others"):
        work_dir("abc")
    made.rmdir()
    made.symlink_to(tmp_path)
    with pytest.raises(errors.OutputWriteError, match="symbolic link"):
        work_dir("abc")
