"""Resolve a repo and revision on the Hub to one pinned commit and its file list.

Everything later reads ``/resolve/{sha}/...`` with the sha pinned here, so a push
upstream during a run cannot mix two versions of a model.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from . import errors, httperrors, settings
from .localdir import local_snapshot
from .retry import RetryPolicy
from .snapshot import Snapshot

__all__ = ["Snapshot", "resolve", "resolve_with_token"]


def is_local(repo: str) -> bool:
    """A path to a directory (``./model``, ``/data/model``, ``~/model``) rather than a Hub repo."""
    return repo.startswith((".", "/", "~")) or os.path.isdir(repo)


@dataclass(frozen=True)
class Source:
    """What a user typed for the model, understood: a Hub repo, or a local directory."""

    #: ``org/name`` on the Hub (None for a local directory)
    repo_id: str | None = None
    #: the revision the text named (``@rev``, ``/tree/rev``); None: it named none
    revision: str | None = None
    #: a local directory: a model directory or a Hugging Face cache snapshot
    directory: Path | None = None


#: hosts whose model URLs name a Hub repo whatever ``HF_ENDPOINT`` says (a mirror serves the same repos)
HUB_HOSTS = ("huggingface.co", "www.huggingface.co", "hf.co")


def parse_source(text: str, endpoint: str) -> Source:
    """The forms people type: ``org/name``, ``org/name@rev``, ``hf://[models/]org/name[@rev]``, a Hub URL
    (``https://huggingface.co/org/name[/tree/rev]``, or one on ``endpoint``), or a local directory.

    Raises RepoNotFoundError for text that is none of these (a dataset, a file URL, another host).
    """
    from urllib.parse import unquote, urlsplit

    if text.startswith("hf://"):
        path = text[len("hf://"):]
        kind, _, rest = path.partition("/")
        if kind in ("datasets", "spaces"):
            raise errors.RepoNotFoundError(f"{text} is a {kind[:-1]}, not a model repo")
        repo, _, revision = (rest if kind == "models" else path).partition("@")
        return _hub_source(text, repo, revision or None)
    if re.match(r"(?i)https?://", text):
        url = urlsplit(text)
        ours = urlsplit(endpoint)
        host = (url.hostname or "").lower()
        if host not in HUB_HOSTS and (url.scheme, url.netloc.lower()) != (ours.scheme, ours.netloc.lower()):
            raise errors.RepoNotFoundError(
                f"{text} is not a Hub URL (the Hub here is {endpoint}; set HF_ENDPOINT to use another)")
        parts = [unquote(p) for p in url.path.strip("/").split("/") if p]
        if parts[:1] == ["models"]:
            parts = parts[1:]
        if parts[:1] in (["datasets"], ["spaces"]):
            raise errors.RepoNotFoundError(f"{text} is a {parts[0][:-1]}, not a model repo")
        if len(parts) == 2:
            return _hub_source(text, "/".join(parts), None)
        if len(parts) == 4 and parts[2] == "tree":
            return _hub_source(text, "/".join(parts[:2]), parts[3])
        raise errors.RepoNotFoundError(
            f"{text} is not a model repo's URL (expected {endpoint}/org/name or .../org/name/tree/REVISION)")
    if is_local(text):
        return Source(directory=Path(text).expanduser())
    repo, at, revision = text.partition("@")
    if at and not revision:
        raise errors.RevisionNotFoundError(f"{text}: no revision after '@'")
    return _hub_source(text, repo, revision or None)


def _hub_source(text: str, repo: str, revision: str | None) -> Source:
    # one part is a legacy id the Hub may still know (gpt2)
    parts = repo.split("/")
    if len(parts) > 2 or not all(_REPO_PART.fullmatch(p) and "--" not in p and ".." not in p for p in parts) \
            or len(parts[-1]) > 96:
        raise errors.RepoNotFoundError(
            f"{text!r} is not a valid repo id (expected org/name of letters, digits, '-', '_' and '.', "
            "e.g. Qwen/Qwen3-8B)")
    return Source(repo_id=repo, revision=revision)


#: one part of a repo id, as the Hub allows it (huggingface_hub's validate_repo_id)
_REPO_PART = re.compile(r"[A-Za-z0-9](?:[\w.-]*[A-Za-z0-9])?")


def pick_revision(named: str | None, option: str) -> str:
    """The revision to read: the one the text named (``org/name@rev``) or ``--revision``; both only if the same.

    ``--revision`` at its default (``main``) gives way to a named one.
    """
    if named is None or option in (named, "main"):
        return named or option
    raise errors.UnsupportedOptionError(f"two revisions: {named!r} in the repo and --revision {option!r}")


def cached_snapshot(repo_id: str, revision: str) -> Path:
    """The directory of ``repo_id`` at ``revision`` in the Hugging Face cache (``settings.hub_cache``).

    What ``HF_HUB_OFFLINE=1`` reads instead of the Hub: a branch or tag through the cache's
    ``refs/``, a commit sha by its snapshot. Raises RepoNotFoundError / RevisionNotFoundError
    when the cache does not have it.
    """
    cache = settings.hub_cache()
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    if not (repo_dir / "snapshots").is_dir():
        raise errors.RepoNotFoundError(
            f"HF_HUB_OFFLINE is set and {repo_id} is not in the Hugging Face cache ({cache}); "
            "download it first or unset HF_HUB_OFFLINE")
    sha: str | None = revision
    if not _SHA.fullmatch(revision):
        ref = repo_dir / "refs" / revision
        try:
            sha = ref.read_text(encoding="ascii").strip() if ".." not in Path(revision).parts else None
        except (OSError, UnicodeDecodeError):
            sha = None
    if sha is None or not _SHA.fullmatch(sha) or not (repo_dir / "snapshots" / sha).is_dir():
        raise errors.RevisionNotFoundError(
            f"HF_HUB_OFFLINE is set and revision {revision!r} of {repo_id} is not in the Hugging Face cache ({cache})")
    return repo_dir / "snapshots" / sha


_SHA = re.compile(r"[0-9a-f]{40}")


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
    subclass once the retries are spent (see ``httperrors`` for which answer is which); an answer
    that is not a model's info at all is a ProtocolError, not retried.

    With ``HF_HUB_OFFLINE=1`` nothing goes to the network: the snapshot is the cache's
    (``cached_snapshot``), a local one (``local_root`` set), with its repo id and commit sha.
    """
    if settings.offline():
        return local_snapshot(cached_snapshot(repo_id, revision))
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
        if ours is None and isinstance(e, (ValueError, KeyError, TypeError, AttributeError)):
            # a 200 whose body is not JSON, or JSON that is not a model's info (a portal, a wrong endpoint)
            ours = errors.ProtocolError(f"{endpoint} answered something that is not a model's info for "
                                        f"{repo_id}@{revision} ({type(e).__name__})")
        if ours is None:
            raise
        raise ours from None
    if not info.sha:
        raise errors.ProtocolError(f"{endpoint} did not return a commit sha for {repo_id}@{revision}")
    files = {s.rfilename: s.size for s in (info.siblings or [])}
    return Snapshot(repo_id=repo_id, revision=revision, sha=info.sha, endpoint=endpoint, files=files)
