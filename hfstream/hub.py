"""Resolve a repo and revision on the Hub to one pinned commit and its file list.

Everything later reads ``/resolve/{sha}/...`` with the sha pinned here, so a push
upstream during a run cannot mix two versions of a model.

The one API call (``/api/models/{repo}/revision/{rev}?blobs=true``, huggingface_hub's
``model_info``) is made here on aiohttp, as fetch.py reads the files, not through huggingface_hub's
client, which has no timeout and reads any answer whole: a server that sends headers and then
nothing would hang the run, one that trickles would never be cut, a gzip answer of 400 KB that
inflates to 400 MB would be held in memory. Here the call has the run's connect and read timeouts,
the body must make progress (``retry.Progress``), its decoded size is counted as it arrives
(``settings.MAX_LISTING_BYTES``), redirects are followed by hand (http(s) only; the token to the
endpoint's own origin only), and every answer meets the one status table in ``httperrors``.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from . import errors, httperrors, jsonfile, settings
from ._version import __version__
from .localdir import local_snapshot
from .retry import RetryPolicy
from .snapshot import Snapshot

T = TypeVar("T")

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
                       retries: int | RetryPolicy = 8, connect_timeout: float = 30.0,
                       read_timeout: float = 60.0) -> tuple[Snapshot, str | None]:
    """``resolve`` with the token to use found first (``token``, else HF_TOKEN, else the cached login);
    returns the snapshot and that token. One call, so it can run in another process."""
    token = settings.token(token)
    return resolve(repo_id, revision, endpoint, token, retries=retries, connect_timeout=connect_timeout,
                   read_timeout=read_timeout), token


def resolve(repo_id: str, revision: str, endpoint: str, token: str | None, *,
            retries: int | RetryPolicy = 8, connect_timeout: float = 30.0, read_timeout: float = 60.0) -> Snapshot:
    """Pin ``revision`` of ``repo_id`` to a commit sha and list its files with sizes.

    Transient answers (429, 5xx, connection errors, a connection that stalls: nothing for
    ``read_timeout`` seconds, or a trickle) are retried under ``retries`` (a number of retries, or a
    ``RetryPolicy``). Raises RepoNotFoundError, RevisionNotFoundError, AuthRequiredError (gated, no
    token), AccessDeniedError (token without access), ProtocolError (a redirect away from http(s), a
    listing that is not one or too large), or a NetworkError subclass once the retries are spent (see
    ``httperrors`` for which answer is which).

    With ``HF_HUB_OFFLINE=1`` nothing goes to the network: the snapshot is the cache's
    (``cached_snapshot``), a local one (``local_root`` set), with its repo id and commit sha.
    """
    if settings.offline():
        return local_snapshot(cached_snapshot(repo_id, revision))
    policy = RetryPolicy.of(retries)
    _check_repo_id(repo_id)
    request = httperrors.Request(repo_id, endpoint, token=bool(token), revision=revision)
    url = f"{endpoint}/api/models/{repo_id}/revision/{quote(revision, safe='')}?blobs=true"
    info = policy.call(lambda: _run(lambda: _model_info(url, token, request, policy, connect_timeout, read_timeout)))
    return _snapshot(info, request)


#: huggingface_hub's rules for a repo id (``validate_repo_id``): [namespace/]name of word characters,
#: '-' and '.', at most 96 each, not starting or ending with '-' or '.'; no '--' or '..'; not '.git' at the end
_REPO_ID = re.compile(r"(\b[\w\-.]{1,96}\b/)?\b[\w\-.]{1,96}\b")


def _check_repo_id(repo_id: str) -> None:
    if not _REPO_ID.fullmatch(repo_id) or "--" in repo_id or ".." in repo_id or repo_id.endswith(".git"):
        shown = repr(repo_id) if len(repo_id) <= 100 else repr(repo_id[:100]) + "..."
        raise errors.RepoNotFoundError(f"{shown} is not a valid repo id (org/name: letters, digits, '-', '_', '.')")


def _run(make: Callable[[], Awaitable[T]]) -> T:
    """The coroutine ``make()`` run to its end from synchronous code, in this thread, or in a thread of
    its own when this one is already running an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())  # type: ignore[arg-type]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()  # type: ignore[arg-type]


async def _model_info(url: str, token: str | None, request: httperrors.Request, policy: RetryPolicy,
                      connect_timeout: float, read_timeout: float) -> dict[str, Any]:
    """The Hub's JSON answer about the repo at the revision, one attempt (redirects followed)."""
    import aiohttp
    from aiohttp.helpers import get_env_proxy_for_url
    from yarl import URL

    home = httperrors.origin(request.endpoint)
    what = request.what
    timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_read=read_timeout)
    try:
        # not trust_env (it would read ~/.netrc and send its password instead of the token): proxies
        # come from the environment per URL, as fetch.py takes them
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for _ in range(5):
                headers = {"User-Agent": f"hfstream/{__version__}", "Accept": "application/json"}
                if token and httperrors.origin(url) == home:
                    headers["Authorization"] = f"Bearer {token}"
                try:
                    proxy, auth = get_env_proxy_for_url(URL(url))
                    via: dict[str, Any] = {"proxy": proxy, "proxy_auth": auth}
                except LookupError:
                    via = {}
                async with session.get(url, headers=headers, allow_redirects=False, **via) as resp:
                    if resp.status in httperrors.REDIRECTS:
                        url = httperrors.redirect_target(url, resp.headers, what)
                        continue
                    if resp.status != 200:
                        raise httperrors.for_status(resp.status, resp.headers, request, clock=policy.clock,
                                                    error_code=httperrors.api_error_code(resp.status, resp.headers))
                    body = await _listing_body(resp, what, policy, read_timeout)
                    return jsonfile.load(body, f"{request.endpoint}'s answer for {what}", jsonfile.LISTING,
                                         expect=dict)
            raise errors.ProtocolError(f"{what}: too many redirects from {request.endpoint}")
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
        # aiohttp's timeouts are asyncio's; its payload errors are truncated bodies
        raise errors.NetworkError(f"{what}: cannot reach {request.endpoint} ({httperrors.describe(e)})") from None


async def _listing_body(resp: Any, what: str, policy: RetryPolicy, read_timeout: float) -> bytes:
    """The answer's body, decoded (aiohttp inflates gzip a bounded chunk at a time), counted as it
    arrives: refused past ``settings.MAX_LISTING_BYTES``, or once it stops making progress."""
    encoded = resp.headers.get("Content-Encoding", "identity").lower() not in ("", "identity")
    progress = policy.progress(what, read_timeout, None if encoded else resp.content_length)
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_any():
        size += len(chunk)
        if size > settings.MAX_LISTING_BYTES:
            raise errors.ProtocolError(f"{what}: the Hub's file listing is larger than {settings.MAX_LISTING_BYTES} "
                                       "bytes decoded; refused before reading the rest")
        chunks.append(chunk)
        progress.arrived(len(chunk))
    return b"".join(chunks)


def _snapshot(info: dict[str, Any], request: httperrors.Request) -> Snapshot:
    """The Snapshot an answer describes, every field checked (the listing is the server's word)."""
    repo_id, revision, endpoint = request.repo_id, request.revision or "main", request.endpoint
    sha = info.get("sha")
    if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-fA-F]{7,64}", sha):
        raise errors.ProtocolError(f"{endpoint} did not return a commit sha for {repo_id}@{revision}")
    siblings = info.get("siblings") or []
    if not isinstance(siblings, list):
        raise errors.ProtocolError(f"{endpoint}'s answer for {repo_id}@{revision}: 'siblings' is not a list")
    files: dict[str, int | None] = {}
    for s in siblings:
        name = s.get("rfilename") if isinstance(s, dict) else None
        size = s.get("size") if isinstance(s, dict) else None
        if not isinstance(name, str) or not (size is None or (type(size) is int and size >= 0)):
            raise errors.ProtocolError(f"{endpoint}'s answer for {repo_id}@{revision} lists a file that is not a "
                                       f"name and a size: {str(s)[:80]}")
        files[name] = size
    return Snapshot(repo_id=repo_id, revision=revision, sha=sha, endpoint=endpoint, files=files)
