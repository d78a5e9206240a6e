"""A local model directory as the byte source: the same pipeline, positional reads instead of Range requests.

Raw-copied tensors (output type = source type, no transform) go from file to file with
``os.copy_file_range`` where the platform has it, without passing through Python.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

from . import errors, settings
from .snapshot import Snapshot
from .settings import MAX_SMALL_FILE_BYTES
from .source import ByteSource


def local_snapshot(path: Path) -> Snapshot:
    """A Snapshot for a directory: its files (recursively, relative paths) with sizes.

    A plain directory has no commit sha. A Hugging Face cache snapshot
    (``.../models--org--name/snapshots/<sha>``) is that repo at that commit, as read from the Hub.
    """
    root = path.resolve()
    if not root.is_dir():
        raise errors.RepoNotFoundError(f"{path} is not a directory")
    cached = cache_snapshot(root)
    files: dict[str, int | None] = {}
    for dirpath, dirnames, names in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in names:
            full = Path(dirpath) / name
            if full.is_file():
                files[full.relative_to(root).as_posix()] = full.stat().st_size
    if cached is not None:
        repo_id, sha = cached
        return Snapshot(repo_id=repo_id, revision=sha, sha=sha, endpoint=root.as_uri(), files=files, local_root=root)
    return Snapshot(repo_id=str(root), revision="", sha="", endpoint=root.as_uri(), files=files, local_root=root)


def cache_snapshot(root: Path) -> tuple[str, str] | None:
    """(repo id, commit sha) when ``root`` is a snapshot of huggingface_hub's cache, else None.

    The cache keeps each file once, in the repo's ``blobs/``; a snapshot is a directory of symlinks
    into it (``models--org--name/snapshots/<sha>/config.json -> ../../blobs/<hash>``).
    """
    snapshots, repo_dir = root.parent, root.parent.parent
    if snapshots.name != "snapshots" or not repo_dir.name.startswith("models--") or not _SHA.fullmatch(root.name):
        return None
    repo_id = repo_dir.name[len("models--"):].replace("--", "/")
    return (repo_id, root.name) if repo_id else None


_SHA = re.compile(r"[0-9a-f]{40}")
#: reads up to this size are done on the event loop (``LocalSource.read``); bigger ones in a thread
INLINE_READ_BYTES = 256 << 10


def readable_roots(root: Path) -> tuple[Path, ...]:
    """Where the files of the directory ``root`` may lead: itself, and for a cache snapshot its repo's
    ``blobs/`` as well (the cache's own symlinks). Nothing else: a link elsewhere is refused."""
    if cache_snapshot(root) is None:
        return (root,)
    return (root, (root.parent.parent / "blobs").resolve())


class LocalSource(ByteSource):
    """A ByteSource over a directory, with one open descriptor per file."""

    def __init__(self, snapshot: Snapshot):
        assert snapshot.local_root is not None
        super().__init__()
        self.snapshot = snapshot
        self.root = snapshot.local_root
        self._fds: dict[str, int] = {}
        self._roots = readable_roots(self.root)
        #: raw copies go file to file (``copy_to``)
        self._copies = hasattr(os, "copy_file_range") and settings.linux_path("copy_file_range")

    async def __aenter__(self) -> "LocalSource":
        return self

    async def __aexit__(self, *exc) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def _inside(self, path: str) -> Path:
        """The real file ``path`` names, refused when a link takes it out of the model (or cache) directory."""
        full = (self.root / path).resolve()
        if not any(r in full.parents for r in self._roots):
            where = "the model directory and its cache's blobs" if len(self._roots) > 1 else "the model directory"
            raise errors.InvalidIndexError(f"{path}: leads outside {where}")
        return full

    def _fd(self, path: str) -> int:
        if path not in self._fds:
            full = self._inside(path)
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
        data = self._inside(path).read_bytes()
        self.stats.bytes_fetched += len(data)
        return data

    async def read(self, path: str, start: int, length: int) -> bytes:
        fd = self._fd(path)
        # A small read is done here: handing it to a thread costs more than the read (a future, a
        # thread hop, two wake-ups of the loop), and a model of thousands of small tensors is made of them.
        data = os.pread(fd, length, start) if length <= INLINE_READ_BYTES else \
            await asyncio.to_thread(os.pread, fd, length, start)
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
