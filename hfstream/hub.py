"""Resolve a repo and revision on the Hub to one pinned commit and its file list.

Everything later reads ``/resolve/{sha}/...`` with the sha pinned here, so a push
upstream during a run cannot mix two versions of a model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from . import errors, httperrors, settings
from .retry import RetryPolicy


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


def is_local(repo: str) -> bool:
    """A path to an existing directory (``./model``, ``/data/model``) rather than a Hub repo id."""
    return repo.startswith((".", "/", "~")) or os.path.isdir(repo)


def resolve_with_token(repo_id: str, revision: str, endpoint: str, token: str | None, *,
                       retries: int | RetryPolicy = 8) -> tuple[Snapshot, str | None]:
    """``resolve`` with the token to use found first (``token``, else HF_TOKEN, else the cached login);
    returns the snapshot and that token. One call, so it can run in another process."""
    token = settings.token(token)
    return resolve(repo_id, revision, endpoint, token, retries=retries), token


def resolve(repo_id: str, revision: str, endpoint: str, token: str | None, *,
            retries: int | RetryPolicy = 8) -> Snapshot:
    """Pin ``revision`` of ``repo_id`` to a commit sha and list its files with sizes.

    Transient answers (429, 5xx, connection errors) are retried under ``retries`` (a number of
    retries, or a ``RetryPolicy``). Raises RepoNotFoundError, RevisionNotFoundError,
    AuthRequiredError (gated, no token), AccessDeniedError (token without access), or a NetworkError
    subclass once the retries are spent (see ``httperrors`` for which answer is which).
    """
    policy = RetryPolicy.of(retries)
    request = httperrors.Request(repo_id, endpoint, token=bool(token), revision=revision)
    return policy.call(lambda: _resolve_once(request, token, policy))


def _resolve_once(request: httperrors.Request, token: str | None, policy: RetryPolicy) -> Snapshot:
    from huggingface_hub import HfApi

    repo_id, revision, endpoint = request.repo_id, request.revision or "main", request.endpoint
    api = HfApi(endpoint=endpoint, token=token if token else False, library_name="hfstream")
    try:
        info = api.model_info(repo_id, revision=revision, files_metadata=True, token=token if token else False)
    except Exception as e:
        ours = httperrors.from_exception(e, request, clock=policy.clock)
        if ours is None:
            raise
        raise ours from None
    if not info.sha:
        raise errors.ProtocolError(f"{endpoint} did not return a commit sha for {repo_id}@{revision}")
    files = {s.rfilename: s.size for s in (info.siblings or [])}
    return Snapshot(repo_id=repo_id, revision=revision, sha=info.sha, endpoint=endpoint, files=files)
