"""Resolve a repo and revision on the Hub to one pinned commit and its file list.

Everything later reads ``/resolve/{sha}/...`` with the sha pinned here, so a push
upstream during a run cannot mix two versions of a model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from . import errors, settings


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
                       retries: int = 8) -> tuple[Snapshot, str | None]:
    """``resolve`` with the token to use found first (``token``, else HF_TOKEN, else the cached login);
    returns the snapshot and that token. One call, so it can run in another process."""
    token = settings.token(token)
    return resolve(repo_id, revision, endpoint, token, retries=retries), token


def resolve(repo_id: str, revision: str, endpoint: str, token: str | None, *, retries: int = 8,
            max_wait: float = 300.0) -> Snapshot:
    """Pin ``revision`` of ``repo_id`` to a commit sha and list its files with sizes.

    Transient answers (429, 5xx, connection errors) are retried with backoff, honouring
    ``Retry-After`` and the Hub's ``RateLimit: ...;t=N``. Raises RepoNotFoundError,
    RevisionNotFoundError, AuthRequiredError (gated, no token), AccessDeniedError (token
    without access), or a NetworkError subclass once the retries are spent.
    """
    import random
    import time

    delay = 0.5
    for attempt in range(retries + 1):
        try:
            return _resolve_once(repo_id, revision, endpoint, token)
        except errors.NetworkError as e:
            if attempt == retries:
                raise
            wait = getattr(e, "wait_seconds", None) or delay * (0.5 + random.random())
            time.sleep(min(wait, max_wait))
            delay = min(delay * 2, 30.0)
    raise AssertionError("unreachable")


def _resolve_once(repo_id: str, revision: str, endpoint: str, token: str | None) -> Snapshot:
    from huggingface_hub import HfApi
    from huggingface_hub import errors as hf_errors

    api = HfApi(endpoint=endpoint, token=token if token else False, library_name="hfstream")
    try:
        info = api.model_info(repo_id, revision=revision, files_metadata=True, token=token if token else False)
    except hf_errors.HFValidationError as e:
        raise errors.RepoNotFoundError(f"{repo_id!r} is not a valid repo id ({_first_line(e)})") from None
    except hf_errors.GatedRepoError:
        if token:
            raise errors.AccessDeniedError(
                f"your token has no access to the gated repo {repo_id}: request access at {endpoint}/{repo_id}"
            ) from None
        raise errors.AuthRequiredError(
            f"{repo_id} is gated: log in with `hf auth login`, set HF_TOKEN or pass --token"
        ) from None
    except hf_errors.RevisionNotFoundError:
        raise errors.RevisionNotFoundError(f"revision {revision!r} not found in {repo_id}") from None
    except hf_errors.RepositoryNotFoundError:
        hint = "" if token else " (if it is private, log in with `hf auth login` or set HF_TOKEN)"
        raise errors.RepoNotFoundError(f"repository {repo_id} not found on {endpoint}{hint}") from None
    except hf_errors.HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else None
        if status == 401:
            if token:
                raise errors.AccessDeniedError(
                    f"the Hub rejected the token for {repo_id} (invalid credentials); check HF_TOKEN or --token"
                ) from None
            raise errors.AuthRequiredError(
                f"{repo_id} needs a token: log in with `hf auth login`, set HF_TOKEN or pass --token"
            ) from None
        if status == 403:
            raise errors.AccessDeniedError(
                f"your token has no access to {repo_id}: request access at {endpoint}/{repo_id}"
            ) from None
        if status == 429:
            err: errors.NetworkError = errors.RateLimitedError(f"rate-limited by {endpoint} while resolving {repo_id}")
            err.wait_seconds = asked_wait(e.response.headers)  # type: ignore[attr-defined]
            raise err from None
        if status is not None and status >= 500:
            err = errors.ServerError(f"{endpoint} answered {status} while resolving {repo_id}")
            err.wait_seconds = asked_wait(e.response.headers)  # type: ignore[attr-defined]
            raise err from None
        raise errors.NetworkError(f"resolving {repo_id}@{revision} failed: HTTP {status}") from None
    except OSError as e:  # connection refused, DNS, timeouts (httpx errors subclass neither; see below)
        raise errors.NetworkError(f"cannot reach {endpoint}: {_first_line(e)}") from None
    except Exception as e:  # httpx transport errors
        if type(e).__module__.startswith(("httpx", "httpcore")):
            raise errors.NetworkError(f"cannot reach {endpoint}: {type(e).__name__}") from None
        raise

    if not info.sha:
        raise errors.NetworkError(f"{endpoint} did not return a commit sha for {repo_id}@{revision}")
    files = {s.rfilename: s.size for s in (info.siblings or [])}
    return Snapshot(repo_id=repo_id, revision=revision, sha=info.sha, endpoint=endpoint, files=files)


def asked_wait(headers) -> float | None:
    """Seconds the server asked for: ``Retry-After``, or the Hub's ``RateLimit: "api";r=0;t=N``."""
    import re

    retry_after = headers.get("Retry-After", "")
    if retry_after.strip().isdigit():
        return float(retry_after)
    m = re.search(r"\bt=(\d+)", headers.get("RateLimit", ""))
    return float(m.group(1)) if m else None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
