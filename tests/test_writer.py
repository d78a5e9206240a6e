"""The output file: positional writes, atomic rename, nothing left behind on failure."""

import pytest

from hfstream import errors
from hfstream.writer import OutputFile, part_path


def test_commit_renames_a_complete_file(tmp_path):
    final = tmp_path / "m.gguf"
    out = OutputFile(final, 10)
    out.pwrite(b"world", 5)
    out.pwrite(b"hello", 0)
    assert not final.exists() and part_path(final).exists()
    out.commit()
    assert final.read_bytes() == b"helloworld" and not part_path(final).exists()


def test_abort_leaves_nothing(tmp_path):
    final = tmp_path / "m.gguf"
    out = OutputFile(final, 10)
    out.pwrite(b"x", 0)
    out.abort()
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_force(tmp_path):
    final = tmp_path / "m.gguf"
    final.write_bytes(b"precious")
    with pytest.raises(errors.OutputExistsError, match="--force"):
        OutputFile(final, 4)
    assert final.read_bytes() == b"precious"
    out = OutputFile(final, 4, force=True)
    out.pwrite(b"new!", 0)
    assert final.read_bytes() == b"precious"  # untouched until commit
    out.commit()
    assert final.read_bytes() == b"new!"


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(errors.OutputWriteError, match="does not exist"):
        OutputFile(tmp_path / "nope" / "m.gguf", 4)


def test_each_write_starts_its_writeback_so_the_final_fsync_does_not_wait_for_the_whole_file(tmp_path, monkeypatch):
    import sys

    from hfstream import writer

    if writer._SYNC_FILE_RANGE is None:
        assert not sys.platform.startswith("linux"), "Linux has sync_file_range"
        pytest.skip("no sync_file_range on this platform")
    real = writer._SYNC_FILE_RANGE
    calls = []

    def record(fd, offset, nbytes, flags):
        calls.append((offset, nbytes, flags))
        return real(fd, offset, nbytes, flags)

    monkeypatch.setattr(writer, "_SYNC_FILE_RANGE", record)
    final = tmp_path / "m.gguf"
    out = OutputFile(final, 12)
    out.pwrite(b"abcd", 8)
    out.pwrite(memoryview(b"0123456789ab")[:8], 0)
    out.commit()
    assert calls == [(8, 4, 2), (0, 8, 2)]  # SYNC_FILE_RANGE_WRITE: start, don't wait
    assert final.read_bytes() == b"01234567abcd"
