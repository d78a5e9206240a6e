"""A local model directory as the byte source: the same pipeline, positional reads instead of Range requests.

Raw-copied tensors (output type = source type, no transform) go from file to file with
``os.copy_file_range`` where the platform has it, without passing through Python.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from . import errors, settings
from .hub import Snapshot
from .settings import MAX_SMALL_FILE_BYTES
from .source import ByteSource


def local_snapshot(path: Path) -> Snapshot:
    """A Snapshot for a directory: its files (recursively, relative paths) with sizes, no commit sha."""
    root = path.resolve()
    if not root.is_dir():
        raise errors.RepoNotFoundError(f"{path} is not a directory")
    files: dict[str, int | None] = {}
    for dirpath, dirnames, names in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in names:
            full = Path(dirpath) / name
            if full.is_file():
                files[full.relative_to(root).as_posix()] = full.stat().st_size
    return Snapshot(repo_id=str(root), revision="", sha="", endpoint=root.as_uri(), files=files, local_root=root)


class LocalSource(ByteSource):
    """A ByteSource over a directory, with one open descriptor per file."""

    def __init__(self, snapshot: Snapshot):
        assert snapshot.local_root is not None
        super().__init__()
        self.snapshot = snapshot
        self.root = snapshot.local_root
        self._fds: dict[str, int] = {}
        #: raw copies go file to file (``copy_to``)
        self._copies = hasattr(os, "copy_file_range") and settings.linux_path("copy_file_range")

    async def __aenter__(self) -> "LocalSource":
        return self

    async def __aexit__(self, *exc) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def _fd(self, path: str) -> int:
        if path not in self._fds:
            full = (self.root / path).resolve()
            if self.root not in full.parents:
                raise errors.InvalidIndexError(f"{path}: outside the model directory")
            try:
                self._fds[path] = os.open(full, os.O_RDONLY)
            except FileNotFoundError:
                raise errors.MissingFileError(f"{path} not found in {self.root}") from None
            except OSError as e:
                raise errors.MissingFileError(f"cannot open {path}: {e.strerror}") from None
        return self._fds[path]

    async def get(self, path: str) -> bytes | None:
        size = self.snapshot.files.get(path)
        if path not in self.snapshot.files:
            return None
        if size is not None and size > MAX_SMALL_FILE_BYTES:
            raise errors.InvalidConfigError(f"{path}: {size} bytes is too large for a metadata file")
        data = (self.root / path).read_bytes()
        self.stats.bytes_fetched += len(data)
        return data

    async def read(self, path: str, start: int, length: int) -> bytes:
        fd = self._fd(path)
        data = await asyncio.to_thread(os.pread, fd, length, start)
        if len(data) != length:
            raise errors.InvalidHeaderError(f"{path}: file ends before byte {start + length}")
        self.stats.bytes_fetched += len(data)
        self.stats.requests += 1
        return data

    def copy_to(self, path: str, start: int, length: int, out_fd: int, out_offset: int) -> bool:
        """Copy bytes straight into the output file; False when the platform cannot (caller reads instead)."""
        if not self._copies:
            return False
        fd = self._fd(path)
        done = 0
        try:
            while done < length:
                n = os.copy_file_range(fd, out_fd, length - done, start + done, out_offset + done)
                if n == 0:
                    raise errors.InvalidHeaderError(f"{path}: file ends before byte {start + length}")
                done += n
        except OSError:
            if done == 0:
                return False
            raise
        self.stats.bytes_fetched += length
        return True
