"""The output file: a preallocated temporary file filled by positional writes, renamed when complete.

The final path never holds a partial file: data goes to ``<final>.part`` next to it,
which is fsynced and atomically renamed into place only after every tensor landed.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from . import errors


def part_path(final: Path) -> Path:
    return final.with_name(final.name + ".part")


class OutputFile:
    """``<final>.part`` opened for positional writes."""

    def __init__(self, final: Path, size: int, *, force: bool = False):
        self.final = final
        self.path = part_path(final)
        self.size = size
        if final.exists() and not force:
            raise errors.OutputExistsError(f"{final} already exists (use --force to overwrite)")
        if not final.parent.is_dir():
            raise errors.OutputWriteError(f"output directory {final.parent} does not exist")
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            self._preallocate(size)
        except OSError as e:
            self._cleanup()
            raise _translate(e, self.path) from None
        self.bytes_written = 0

    def _preallocate(self, size: int) -> None:
        try:
            os.posix_fallocate(self._fd, 0, size)
        except (AttributeError, OSError) as e:
            # Filesystems without fallocate (tmpfs on some kernels, network mounts) still take a sparse file;
            # a real "disk full" is reported as such.
            if isinstance(e, OSError) and e.errno == errno.ENOSPC:
                raise
            os.ftruncate(self._fd, size)

    def pwrite(self, data, offset: int) -> None:
        view = memoryview(data).cast("B")
        try:
            while view:
                n = os.pwrite(self._fd, view, offset)
                view = view[n:]
                offset += n
                self.bytes_written += n
        except OSError as e:
            raise _translate(e, self.path) from None

    def commit(self) -> Path:
        """fsync, rename into place, fsync the directory."""
        try:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
            os.replace(self.path, self.final)
            dir_fd = os.open(self.final.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as e:
            raise _translate(e, self.final) from None
        return self.final

    def abort(self) -> None:
        """Remove the temporary file (a failed run leaves nothing behind)."""
        self._cleanup()

    def _cleanup(self) -> None:
        fd = getattr(self, "_fd", -1)
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass
            self._fd = -1
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


def _translate(e: OSError, path: Path) -> errors.OutputWriteError:
    if e.errno == errno.ENOSPC:
        return errors.OutputWriteError(f"disk full while writing {path}")
    if e.errno in (errno.EACCES, errno.EPERM):
        return errors.OutputWriteError(f"permission denied writing {path}")
    return errors.OutputWriteError(f"cannot write {path}: {e.strerror or e}")
