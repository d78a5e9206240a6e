"""The output file: a preallocated temporary file filled by positional writes, renamed when complete.

The final path never holds a partial file: data goes to ``<final>.part`` next to it, which is
fsynced and atomically renamed into place only after every unit landed. Beside it,
``<final>.part.journal`` records each finished unit (output offset, length, CRC-32 of its
bytes). A rerun of the same plan (the journal's first line names it: a hash of the GGUF header,
which holds the commit sha, the options and every tensor's type and offset) reopens the
``.part`` file, checks each journaled unit's bytes against its CRC, and does only the rest.

The output directory may be shared (``/tmp``, a team's mount), so nothing found there is trusted:

- ``<final>.lock`` (``OutputLock``), an ``flock`` held for the whole run, keeps a second run off the
  same output: it is refused at once, naming the run that holds it. The kernel drops the lock of a
  killed run, so a stale lock file is simply taken over.
- Every file is created anew (``O_CREAT | O_EXCL``, whatever was at its name removed first) and
  opened with ``O_NOFOLLOW``: a link planted at ``.part``, the journal or its ``.tmp`` is never
  written through, and a link at the final path counts as an existing output.
- A resume trusts only a ``.part`` and journal this user created: regular files (not links), owned
  by the user, writable by nobody else. Anything else is replaced by a fresh start.
"""

from __future__ import annotations

import errno
import mmap
import os
import socket
import stat
import threading
import zlib
from pathlib import Path

from . import errors, settings

try:
    import fcntl
except ImportError:  # Windows: no flock; outputs are not locked there
    fcntl = None  # type: ignore[assignment]

JOURNAL_MAGIC = "hfstream-journal-v1"

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def part_path(final: Path) -> Path:
    return final.with_name(final.name + ".part")


def journal_path(final: Path) -> Path:
    return final.with_name(final.name + ".part.journal")


def lock_path(final: Path) -> Path:
    return final.with_name(final.name + ".lock")


def check_destination(final: Path, force: bool) -> None:
    """Refuse to overwrite ``final`` without ``force`` (a link there, even one pointing nowhere, is
    something to overwrite), or to write into a directory that is not there."""
    if os.path.lexists(final) and not force:
        raise errors.OutputExistsError(f"{final} already exists (use --force to overwrite)")
    if not final.parent.is_dir():
        raise errors.OutputWriteError(f"output directory {final.parent} does not exist")


def create_new(path: Path, flags: int = os.O_RDWR, mode: int = 0o644) -> int:
    """A file descriptor on a file this call creates at ``path``: whatever was there (a stale file of
    ours, a link someone planted) is removed first, and the new file is made with ``O_EXCL`` so no
    link is ever followed. Raises OSError (EEXIST if something reappeared at the name meanwhile)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    return os.open(path, flags | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, mode)


def open_own(path: Path, flags: int) -> int | None:
    """``path`` opened without following a link, if it is a regular file of this user that nobody
    else may write (a file this user's earlier run made); None otherwise (missing, a link, someone
    else's, or open to others' writes)."""
    try:
        fd = os.open(path, flags | _NOFOLLOW | _CLOEXEC)
    except OSError:  # missing, or a link (ELOOP)
        return None
    st = os.fstat(fd)  # of what was opened, not of what the name points at by now
    if stat.S_ISREG(st.st_mode) and _owned(st) and not st.st_mode & 0o022:
        return fd
    os.close(fd)
    return None


def _owned(st: os.stat_result) -> bool:
    return not hasattr(os, "geteuid") or st.st_uid == os.geteuid()


class OutputLock:
    """``<final>.lock`` held with ``flock`` from before the destination is checked until the output is
    in place (or the run stopped): a second run on the same output is refused at once with
    OutputBusyError naming the holder's pid. The lock file is removed by the run that holds it; a
    killed run's is left behind unlocked (the kernel releases an ``flock`` with its process) and the
    next run takes it over."""

    def __init__(self, final: Path):
        self.final = final
        self.path = lock_path(final)
        self._fd = -1

    def __enter__(self) -> "OutputLock":
        if fcntl is None:
            return self
        for _ in range(100):  # each turn: the holder removed the file between our open and flock
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | _NOFOLLOW | _CLOEXEC, 0o644)
            except OSError as e:
                raise write_error(e, self.path) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                os.close(fd)
                raise errors.OutputBusyError(
                    f"another hfstream run{holder} is writing {self.final} (it holds {self.path.name}); "
                    "wait for it to finish or choose another output") from None
            if _same_file(fd, self.path):
                try:
                    os.ftruncate(fd, 0)
                    os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
                except OSError:
                    pass  # the lock is what counts; the pid is for the other run's message
                self._fd = fd
                return self
            os.close(fd)
        raise errors.OutputBusyError(f"{self.path} keeps being replaced: another run is using {self.final}")

    def __exit__(self, *exc: object) -> None:
        if self._fd >= 0:
            try:
                os.unlink(self.path)  # while holding it: a run waiting on the old file sees it is gone
            except OSError:
                pass
            os.close(self._fd)
            self._fd = -1


def _same_file(fd: int, path: Path) -> bool:
    try:
        now = os.lstat(path)
    except FileNotFoundError:
        return False
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (now.st_dev, now.st_ino)


def _holder(fd: int) -> str:
    """`` (pid N)``, or `` (pid N on host)``, from a lock file's first line; empty if unreadable."""
    try:
        words = os.pread(fd, 200, 0).decode("ascii", "replace").split()
    except OSError:
        return ""
    if not words or not words[0].isdigit():
        return ""
    if len(words) > 1 and words[1] != socket.gethostname():
        return f" (pid {words[0]} on {words[1][:60]})"
    return f" (pid {words[0]})"


class OutputFile:
    """``<final>.part`` opened for positional writes, resumed from its journal when the plan is the same."""

    def __init__(self, final: Path, size: int, *, identity: str = "", force: bool = False):
        self.final = final
        self.path = part_path(final)
        self.journal = journal_path(final)
        self.size = size
        self.identity = identity
        self.bytes_written = 0
        #: (offset, nbytes) of units already in the file (verified), from an earlier run
        self.done: set[tuple[int, int]] = set()
        self._fd = -1
        self._jfd = -1
        #: the same file opened with O_DIRECT for the block-aligned middle of big writes (-1: none)
        self._dfd = -1
        #: cleared when the filesystem refuses a direct write
        self._direct_ok = True
        #: start each write's writeback at once (``_start_writeback``)
        self._writeback = settings.linux_path("sync_file_range")
        check_destination(final, force)
        try:
            if not self._resume():
                self._start_over()
            self._dfd = _open_direct(self.path, self._fd)
        except OSError as e:
            self._close()
            raise write_error(e, self.path) from None

    # -- opening -----------------------------------------------------------------

    def _resume(self) -> bool:
        """Reopen an earlier run's .part file if its journal is for this very plan, and both are this
        user's own files (``open_own``): a .part and journal someone else left cannot inject bytes."""
        if not self.identity:
            return False
        jfd = open_own(self.journal, os.O_RDONLY)
        if jfd is None:
            return False
        try:
            with open(jfd, "rb", closefd=True) as f:
                lines = f.read(1 << 26).decode("ascii").splitlines()
        except (OSError, UnicodeDecodeError):
            return False
        if not lines or lines[0] != f"{JOURNAL_MAGIC} {self.identity} {self.size}":
            return False
        fd = open_own(self.path, os.O_RDWR)
        if fd is None:
            return False
        if os.fstat(fd).st_size != self.size:
            os.close(fd)
            return False
        self._fd = fd
        entries = []
        for line in lines[1:]:
            parts = line.split()
            if len(parts) != 3 or not all(p.isdigit() for p in parts):
                break  # a torn last line from a crash: stop there
            entries.append(tuple(int(p) for p in parts))
        for offset, nbytes, crc in entries:
            if offset + nbytes <= self.size and zlib.crc32(os.pread(self._fd, nbytes, offset)) == crc:
                self.done.add((offset, nbytes))
        # rewrite the journal with the verified entries only, so a torn tail cannot linger
        self._write_journal_header(verified=sorted(self.done), crcs={(o, n): c for o, n, c in entries})
        return True

    def _start_over(self) -> None:
        self._fd = create_new(self.path)
        self._preallocate(self.size)
        if self.identity:
            self._write_journal_header()

    def _write_journal_header(self, verified=(), crcs=None) -> None:
        """A new journal (the plan's line, then ``verified`` units) written to ``.tmp`` and renamed
        over the old one; its descriptor stays open for the appends."""
        tmp = self.journal.with_name(self.journal.name + ".tmp")
        lines = [f"{JOURNAL_MAGIC} {self.identity} {self.size}"]
        lines += [f"{o} {n} {crcs[(o, n)]}" for o, n in verified]
        fd = create_new(tmp, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, ("\n".join(lines) + "\n").encode("ascii"))
            os.replace(tmp, self.journal)
        except BaseException:
            os.close(fd)
            raise
        self._jfd = fd

    def _preallocate(self, size: int) -> None:
        if hasattr(os, "posix_fallocate") and settings.linux_path("fallocate"):
            try:
                os.posix_fallocate(self._fd, 0, size)
                return
            except OSError as e:
                # a real "disk full" is reported as such, before anything is fetched
                if e.errno == errno.ENOSPC:
                    raise
        # Platforms and filesystems without fallocate (macOS, some tmpfs, network mounts) take a sparse file.
        os.ftruncate(self._fd, size)

    # -- writing -----------------------------------------------------------------

    def is_done(self, offset: int, nbytes: int) -> bool:
        return (offset, nbytes) in self.done

    def pwrite(self, data, offset: int) -> None:
        """Write ``data`` at ``offset``: the block-aligned middle of a big write around the page cache
        (``_direct``), the rest, and everything where the filesystem refuses that, through it."""
        view = memoryview(data).cast("B")
        if view.nbytes >= DIRECT_MIN and self._direct_ok and self._dfd >= 0:
            first = -offset % DIRECT_ALIGN
            last = (offset + view.nbytes) // DIRECT_ALIGN * DIRECT_ALIGN - offset
            done = self._direct(view[first:last], offset + first)
            self._buffered(view[:first], offset)
            self._buffered(view[first + done:], offset + first + done)
            return
        self._buffered(view, offset)

    def _buffered(self, view: memoryview, offset: int) -> None:
        start, total = offset, view.nbytes
        try:
            while view:
                n = os.pwrite(self._fd, view, offset)
                view = view[n:]
                offset += n
                self.bytes_written += n
        except OSError as e:
            raise write_error(e, self.path) from None
        if self._writeback:
            _start_writeback(self._fd, start, total)

    def _direct(self, view: memoryview, offset: int) -> int:
        """Write block-aligned bytes with O_DIRECT through this thread's aligned bounce buffer.

        Output written through the page cache costs a copy into pages the kernel must first find:
        on the benchmark's VM, 1.3 core-seconds for an 800 MB file, a fifth of a q8_0 run's CPU.
        Direct writes leave memory alone. Returns how many bytes were written (all unless the
        filesystem refused: then this file goes through the page cache from here on).
        """
        bounce = _bounce_buffer()
        done = 0
        try:
            while done < view.nbytes and self._direct_ok:
                n = min(view.nbytes - done, len(bounce))
                bounce[:n] = view[done:done + n]
                k = 0
                while k < n:
                    w = os.pwrite(self._dfd, bounce[k:n], offset + done + k)
                    if w <= 0 or w % DIRECT_ALIGN:
                        raise OSError(errno.EIO, f"direct write of {n - k} bytes wrote {w}")
                    k += w
                done += n
                self.bytes_written += n
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise write_error(e, self.path) from None
            self._direct_ok = False
        return done

    def fileno(self) -> int:
        return self._fd

    def record(self, offset: int, nbytes: int, crc: int) -> None:
        """Journal a finished unit. Its bytes were written first, so a crash never journals missing data
        (a power loss might; the CRC check on resume catches that)."""
        if self._jfd < 0:
            return
        try:
            os.write(self._jfd, f"{offset} {nbytes} {crc}\n".encode("ascii"))
        except OSError as e:
            raise write_error(e, self.journal) from None

    # -- finishing ---------------------------------------------------------------

    def commit(self) -> Path:
        """fsync, rename into place, fsync the directory, drop the journal."""
        try:
            os.fsync(self._fd)
            # what the rename puts in place must be the file written, not one swapped in at its name
            if not _same_file(self._fd, self.path):
                raise errors.OutputWriteError(f"{self.path} was replaced by another file while it was written")
            os.replace(self.path, self.final)
            if not _same_file(self._fd, self.final):
                os.unlink(self.final)
                raise errors.OutputWriteError(f"{self.path} was replaced by another file while it was written")
            self._close()
            dir_fd = os.open(self.final.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
            try:
                self.journal.unlink()
            except FileNotFoundError:
                pass
        except OSError as e:
            raise write_error(e, self.final) from None
        return self.final

    def abort(self, keep: bool = False) -> None:
        """Stop. ``keep``: leave .part and journal for a resume; else remove both."""
        if keep and self._jfd >= 0:
            try:
                os.fsync(self._fd)
                os.fsync(self._jfd)
            except OSError:
                pass
        self._close()
        if not keep:
            for p in (self.path, self.journal):
                try:
                    p.unlink()
                except FileNotFoundError:
                    pass

    def _close(self) -> None:
        for attr in ("_fd", "_jfd", "_dfd"):
            fd = getattr(self, attr, -1)
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
                setattr(self, attr, -1)


_O_DIRECT = getattr(os, "O_DIRECT", 0)
#: writes this big go mostly around the page cache
DIRECT_MIN = 1 << 20
#: file offsets, lengths and memory of direct writes are multiples of this (a page: covers 512- and
#: 4096-byte logical blocks)
DIRECT_ALIGN = 4096
_BOUNCE_SIZE = 4 << 20
_bounce = threading.local()


def _open_direct(path: Path, fd: int | None = None) -> int:
    """``path`` (the file open as ``fd``, if given) opened again for O_DIRECT writes, or -1 where there is
    no such thing (macOS, tmpfs before Linux 6.6) or the name no longer leads to that file."""
    if not _O_DIRECT or not settings.linux_path("o_direct"):
        return -1
    try:
        direct = os.open(path, os.O_WRONLY | _O_DIRECT | _NOFOLLOW | _CLOEXEC)
    except OSError:
        return -1
    if fd is None:
        return direct
    st, ours = os.fstat(direct), os.fstat(fd)
    if (st.st_dev, st.st_ino) != (ours.st_dev, ours.st_ino):
        os.close(direct)
        return -1
    return direct


def _bounce_buffer() -> memoryview:
    """This thread's page-aligned buffer for direct writes (anonymous mmaps are page-aligned)."""
    buf = getattr(_bounce, "view", None)
    if buf is None:
        buf = _bounce.view = memoryview(mmap.mmap(-1, _BOUNCE_SIZE))
    return buf


def _sync_file_range():
    """libc's sync_file_range (Linux), or None."""
    try:
        import ctypes

        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    return fn


_SYNC_FILE_RANGE = _sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2


def _start_writeback(fd: int, offset: int, nbytes: int) -> None:
    """Ask the kernel to start writing these bytes to disk now, without waiting for it.

    Otherwise dirty pages sit in memory until the final fsync (the kernel's own writeback starts
    after 30 s or gigabytes), which then waits for the whole file at once. Errors surface there.
    """
    if _SYNC_FILE_RANGE is not None and nbytes:
        _SYNC_FILE_RANGE(fd, offset, nbytes, _SYNC_FILE_RANGE_WRITE)


def write_error(e: OSError, path: Path) -> errors.OutputWriteError:
    """An OS error while creating or writing ``path`` as the one-line OutputWriteError."""
    if e.errno == errno.ELOOP:
        return errors.OutputWriteError(f"{path} is a symbolic link; hfstream does not write through links")
    if e.errno == errno.EEXIST:
        return errors.OutputWriteError(f"{path} appeared while hfstream was creating it (another process?)")
    if e.errno == errno.ENOSPC:
        return errors.OutputWriteError(f"disk full while writing {path} (rerun to resume once there is room)")
    if e.errno in (errno.EACCES, errno.EPERM):
        return errors.OutputWriteError(f"permission denied writing {path}")
    return errors.OutputWriteError(f"cannot write {path}: {e.strerror or e}")
