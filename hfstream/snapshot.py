"""One commit of a repo (or a local directory): what every read of a conversion is pinned to."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote


@dataclass(frozen=True)
class Snapshot:
    """One commit of a repo: what every later request is pinned to."""

    repo_id: str
    revision: str
    sha: str
    endpoint: str
    #: repo-relative path -> size in bytes (None when the Hub did not say)
    files: dict[str, int | None] = field(default_factory=dict)
    #: set when the "repo" is a local directory (then ``sha`` is empty)
    local_root: Path | None = None

    @property
    def name(self) -> str:
        """The repo name without its owner, as a local clone directory would be called."""
        return self.repo_id.rstrip("/").rsplit("/", 1)[-1]

    @property
    def page_url(self) -> str:
        return f"{self.endpoint}/{self.repo_id}"

    def resolve_url(self, path: str) -> str:
        return f"{self.endpoint}/{self.repo_id}/resolve/{self.sha}/{quote(path)}"
