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


# -- direct writes ---------------------------------------------------------------------------------

def _direct_or_skip(out):
    """The O_DIRECT descriptor; skipped only where the test's filesystem refuses O_DIRECT."""
    import fcntl
    import os

    if out._dfd < 0:
        pytest.skip("the temporary directory's filesystem refuses O_DIRECT")
    assert fcntl.fcntl(out._dfd, fcntl.F_GETFL) & os.O_DIRECT
    return out._dfd


def _spy_pwrite(monkeypatch, fail_fd=None, errno_=None):
    """Record (fd, offset, nbytes) of every os.pwrite; make those on ``fail_fd`` fail with ``errno_``."""
    import os

    from hfstream import writer

    real = os.pwrite
    calls = []

    def pwrite(fd, data, offset):
        calls.append((fd, offset, memoryview(data).nbytes))
        if fd == fail_fd:
            raise OSError(errno_, os.strerror(errno_))
        return real(fd, data, offset)

    monkeypatch.setattr(writer.os, "pwrite", pwrite)
    return calls


def test_the_aligned_middle_of_a_big_write_goes_around_the_page_cache(tmp_path, monkeypatch):
    import numpy as np

    from hfstream import writer

    data = np.random.default_rng(1).integers(0, 256, 3 * writer.DIRECT_MIN + 999, dtype=np.uint8).tobytes()
    offset = 5 * writer.DIRECT_ALIGN + 123
    final = tmp_path / "m.gguf"
    out = OutputFile(final, offset + len(data) + 50)
    dfd = _direct_or_skip(out)
    calls = _spy_pwrite(monkeypatch)
    out.pwrite(b"h" * offset, 0)  # under DIRECT_MIN: through the page cache, sharing a block with the next
    out.pwrite(data, offset)
    out.pwrite(b"t" * 50, offset + len(data))
    assert out.bytes_written == offset + len(data) + 50
    out.commit()
    assert final.read_bytes() == b"h" * offset + data + b"t" * 50

    direct = [(o, n) for fd, o, n in calls if fd == dfd]
    a = writer.DIRECT_ALIGN
    first, end = -(-offset // a) * a, (offset + len(data)) // a * a
    assert direct and all(o % a == 0 and n % a == 0 for o, n in direct)
    assert direct[0][0] == first and sum(n for _, n in direct) == end - first
    assert {(o, n) for fd, o, n in calls if fd != dfd} == {(0, offset), (offset, first - offset),
                                                           (end, offset + len(data) - end),
                                                           (offset + len(data), 50)}


def test_a_filesystem_refusing_a_direct_write_gets_the_bytes_through_the_page_cache(tmp_path, monkeypatch):
    import errno

    import numpy as np

    from hfstream import writer

    data = np.random.default_rng(2).integers(0, 256, 2 * writer.DIRECT_MIN, dtype=np.uint8).tobytes()
    final = tmp_path / "m.gguf"
    out = OutputFile(final, 3 + 2 * len(data))
    dfd = _direct_or_skip(out)
    calls = _spy_pwrite(monkeypatch, fail_fd=dfd, errno_=errno.EINVAL)
    out.pwrite(data, 3)
    out.pwrite(data[::-1], 3 + len(data))
    out.pwrite(b"abc", 0)
    out.commit()
    assert final.read_bytes() == b"abc" + data + data[::-1]
    assert sum(1 for fd, _, _ in calls if fd == dfd) == 1  # refused once, not tried again


def test_no_o_direct_at_all_means_plain_writes(tmp_path, monkeypatch):
    import os

    from hfstream import writer

    real = os.open

    def refuse_direct(path, flags, *mode):
        if flags & getattr(os, "O_DIRECT", 0):
            raise OSError(22, "Invalid argument")
        return real(path, flags, *mode)

    monkeypatch.setattr(writer.os, "open", refuse_direct)
    final = tmp_path / "m.gguf"
    out = OutputFile(final, writer.DIRECT_MIN + 1)
    assert out._dfd == -1
    out.pwrite(b"x" * (writer.DIRECT_MIN + 1), 0)
    out.commit()
    assert final.read_bytes() == b"x" * (writer.DIRECT_MIN + 1)


def test_a_direct_write_failing_otherwise_is_an_output_error(tmp_path, monkeypatch):
    import errno

    from hfstream import writer

    final = tmp_path / "m.gguf"
    out = OutputFile(final, 2 * writer.DIRECT_MIN)
    dfd = _direct_or_skip(out)
    _spy_pwrite(monkeypatch, fail_fd=dfd, errno_=errno.ENOSPC)
    with pytest.raises(errors.OutputWriteError, match="disk full"):
        out.pwrite(b"y" * 2 * writer.DIRECT_MIN, 0)
    out.abort()
    assert list(tmp_path.iterdir()) == []


def test_units_written_directly_from_several_threads_are_all_there_and_resume_checks_them(tmp_path):
    """Neighbouring units share the blocks at their edges; those go through the page cache."""
    import random
    import zlib
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from hfstream import writer

    rng = np.random.default_rng(3)
    sizes = [int(rng.integers(writer.DIRECT_MIN // 2, 3 * writer.DIRECT_MIN)) // 32 * 32 for _ in range(24)]
    offsets = np.cumsum([96] + sizes[:-1]).tolist()
    blobs = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in sizes]
    size = offsets[-1] + sizes[-1]
    final = tmp_path / "m.gguf"
    out = OutputFile(final, size, identity="plan")
    _direct_or_skip(out)
    order = list(range(len(sizes)))
    random.Random(4).shuffle(order)

    def write(i):
        out.pwrite(blobs[i], offsets[i])
        out.record(offsets[i], sizes[i], zlib.crc32(blobs[i]))

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(write, order[:16]))
    out.abort(keep=True)

    again = OutputFile(final, size, identity="plan")
    assert again.done == {(offsets[i], sizes[i]) for i in order[:16]}
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: again.pwrite(blobs[i], offsets[i]), order[16:]))
    again.pwrite(b"\0" * 96, 0)
    again.commit()
    assert final.read_bytes() == b"\0" * 96 + b"".join(blobs)


def test_a_conversion_writes_its_big_tensors_directly_and_the_same_bytes_as_through_the_page_cache(
        fresh_hub, tmp_path, monkeypatch):
    import os

    import hfstream
    from hfstream import writer

    real = writer.OutputFile._direct
    direct_bytes = []

    def counting(self, view, offset):
        done = real(self, view, offset)
        direct_bytes.append(done)
        return done

    probe = tmp_path / "probe"
    probe.write_bytes(b"")
    fd = writer._open_direct(probe)
    if fd < 0:
        pytest.skip("the temporary directory's filesystem refuses O_DIRECT")
    os.close(fd)
    monkeypatch.setattr(writer.OutputFile, "_direct", counting)
    repo = "hfs-test/tiny-llama-sharded"  # its embedding and the two biggest matrices are over DIRECT_MIN
    direct = hfstream.convert(repo, outtype="bf16", outfile=tmp_path / "direct.gguf")
    assert sum(direct_bytes) > direct.path.stat().st_size // 2
    monkeypatch.setattr(writer, "_O_DIRECT", 0)  # as on macOS: no direct descriptor at all
    direct_bytes.clear()
    plain = hfstream.convert(repo, outtype="bf16", outfile=tmp_path / "plain.gguf")
    assert direct_bytes == []
    assert direct.path.read_bytes() == plain.path.read_bytes()
