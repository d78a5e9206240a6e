"""HTTP answers turned into hfstream errors, in one place: hub.py, fetch.py and publish.py all ask here.

The Hub says what went wrong twice: in the status, and for its own refusals in ``X-Error-Code``
(huggingface_hub turns the pair into its exception classes; ``from_exception`` turns those back into
a code, so both roads meet in ``for_status``). A user needs different lines for answers that share a
status: 401 means "log in" without a token and "the token was rejected" with one; a gated repo
means "log in" or "request access at <page>"; while publishing, any refusal means "a write token is
needed". The table (reading the repo / publishing to one):

    X-Error-Code or status          reading                                  publishing
    RevisionNotFound                RevisionNotFoundError (11)               PublishError (62)
    RepoNotFound, 404 (no file)     RepoNotFoundError (10)                   PublishError (62)
    GatedRepo                       AuthRequiredError (12) / AccessDenied... AccessDeniedError (13)
    EntryNotFound, 404 (a file)     MissingFileError (15)                    PublishError (62)
    401                             AuthRequiredError (12), or AccessDeniedError (13) with a token
    403                             AccessDeniedError (13)                   AccessDeniedError (13)
    409, 412                        ProtocolError (43)                       PublishConflictError (63)
    416                             InvalidHeaderError (31): a range past the file's end
    408 / 429 / 5xx                 NetworkError (40) / RateLimitedError (41) / ServerError (42)
    anything else                   ProtocolError (43)                       PublishError (62)

The last-but-one row is the ``NetworkError`` family, the failures ``retry.RetryPolicy`` tries again;
each carries the wait the server asked for (``Retry-After``, ``RateLimit: "api";r=0;t=N``).
Connection failures (OS, httpx, aiohttp errors) are ``NetworkError`` too. A redirect anywhere but to
http(s) (``file://``, ``ftp://``) is a ``ProtocolError`` at once: no retry makes it another answer.
Messages never contain a token.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from . import errors


@dataclass(frozen=True)
class Request:
    """What was asked, so that the error can say it: a repo (or one of its files) on a Hub."""

    repo_id: str
    endpoint: str
    #: a token was sent with it
    token: bool = False
    #: a file of the repo (None: the repo itself, e.g. its model info)
    path: str | None = None
    revision: str | None = None
    #: a write (publishing to the repo), not a read
    publishing: bool = False

    @property
    def what(self) -> str:
        """The subject of the message."""
        if self.publishing:
            return f"publishing to {self.repo_id}"
        if self.path is not None:
            return self.path
        return f"{self.repo_id}@{self.revision}" if self.revision else self.repo_id

    @property
    def page(self) -> str:
        return f"{self.endpoint}/{self.repo_id}"


_LOG_IN = "log in with `hf auth login`, set HF_TOKEN or pass --token"
_INVALID_CREDENTIALS = "Invalid credentials in Authorization header"
#: statuses that redirect
REDIRECTS = (301, 302, 303, 307, 308)


def api_error_code(status: int, headers: Mapping[str, str]) -> str | None:
    """The ``X-Error-Code`` an answer of the Hub's repo API stands for, as huggingface_hub reads it: a
    401 without one means the repo is not there for us (missing, private or gated), unless the Hub
    says the token itself is invalid."""
    code = headers.get("X-Error-Code")
    if code:
        return code
    if status == 401 and headers.get("X-Error-Message") != _INVALID_CREDENTIALS:
        return "RepoNotFound"
    return None


def redirect_target(url: str, headers: Mapping[str, str], what: str) -> str:
    """Where a redirect from ``url`` points: an http(s) URL, else the server broke the protocol."""
    location = headers.get("Location")
    if not location:
        raise errors.ProtocolError(f"{what}: redirect without a Location header")
    target = urljoin(url, location)
    scheme = urlsplit(target).scheme.lower()
    if scheme not in ("http", "https"):
        raise errors.ProtocolError(f"{what}: the server redirected to a {scheme[:20]}: URL, not to http(s)")
    return target


def origin(url: str) -> tuple[str, str]:
    """(scheme, host:port) of ``url``: a token goes only to its own origin."""
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def for_status(status: int | None, headers: Mapping[str, str], request: Request, *,
               error_code: str | None = None, clock: Callable[[], float] = time.time) -> errors.HfstreamError:
    """The error for an answer with ``status`` (None: no answer at all) and ``headers``.

    ``error_code`` overrides the ``X-Error-Code`` header (huggingface_hub keeps it in its class);
    ``clock`` (wall time) reads a ``Retry-After`` given as a date.
    """
    code = error_code if error_code is not None else headers.get("X-Error-Code", "")
    repo, what = request.repo_id, request.what
    if status == 408 or status == 429 or (status is not None and status >= 500) or status is None:
        asked = asked_wait(headers, clock)
        if status == 429:
            return errors.RateLimitedError(f"{what}: rate-limited by {request.endpoint}", retry_after=asked)
        if status is None:
            return errors.NetworkError(f"{what}: no answer from {request.endpoint}", retry_after=asked)
        kind = errors.NetworkError if status == 408 else errors.ServerError
        return kind(f"{what}: {request.endpoint} answered HTTP {status}", retry_after=asked)
    if request.publishing:
        if status in (401, 403):
            return errors.AccessDeniedError(f"no write access to {repo}: check the token (a write token is needed)")
        if status in (409, 412):
            return errors.PublishConflictError(f"{repo} moved while publishing (its head changed); run again")
        return errors.PublishError(f"publishing to {repo} failed: HTTP {status}")
    if code == "RevisionNotFound":
        return errors.RevisionNotFoundError(f"revision {request.revision!r} not found in {repo}")
    if code == "GatedRepo":
        if request.token:
            return errors.AccessDeniedError(f"your token has no access to the gated repo {repo}: "
                                            f"request access at {request.page}")
        return errors.AuthRequiredError(f"{repo} is gated: {_LOG_IN}")
    if code == "EntryNotFound" or (status == 404 and request.path is not None and code != "RepoNotFound"):
        at = f"{repo}@{request.revision[:12]}" if request.revision else repo
        return errors.MissingFileError(f"{request.path} not found in {at}")
    if code == "RepoNotFound" or status == 404:
        hint = "" if request.token else " (if it is private, log in with `hf auth login` or set HF_TOKEN)"
        return errors.RepoNotFoundError(f"repository {repo} not found on {request.endpoint}{hint}")
    if status == 401:
        if request.token:
            return errors.AccessDeniedError(f"the Hub rejected the token for {repo} (invalid credentials); "
                                            "check HF_TOKEN or --token")
        return errors.AuthRequiredError(f"{repo} needs a token: {_LOG_IN}")
    if status == 403:
        return errors.AccessDeniedError(f"your token has no access to {repo}: request access at {request.page}")
    if status == 416:
        return errors.InvalidHeaderError(f"{what}: the requested range lies outside the file")
    return errors.ProtocolError(f"{what}: unexpected HTTP {status}")


#: huggingface_hub's exception classes -> the X-Error-Code they stand for (most specific first:
#: GatedRepoError is a RepositoryNotFoundError)
_HF_CODES = (("GatedRepoError", "GatedRepo"), ("RevisionNotFoundError", "RevisionNotFound"),
             ("RemoteEntryNotFoundError", "EntryNotFound"), ("EntryNotFoundError", "EntryNotFound"),
             ("RepositoryNotFoundError", "RepoNotFound"))


def from_exception(e: BaseException, request: Request, *,
                   clock: Callable[[], float] = time.time) -> errors.HfstreamError | None:
    """A huggingface_hub, httpx or OS exception as ours; ``e`` itself when it is ours already; None
    for anything else (a bug, which should stay visible as one)."""
    if isinstance(e, errors.HfstreamError):
        return e
    from huggingface_hub import errors as hf_errors

    if isinstance(e, hf_errors.HFValidationError):
        return errors.RepoNotFoundError(f"{request.repo_id!r} is not a valid repo id ({first_line(e)})")
    if isinstance(e, hf_errors.HfHubHTTPError):
        code = next((code for name, code in _HF_CODES
                     if isinstance(e, getattr(hf_errors, name, ()))), None)  # type: ignore[arg-type]
        response = e.response
        return for_status(response.status_code if response is not None else None,
                          response.headers if response is not None else {}, request, error_code=code, clock=clock)
    if isinstance(e, OSError) or type(e).__module__.startswith(("httpx", "httpcore")):
        return errors.NetworkError(f"{request.what}: cannot reach {request.endpoint} ({describe(e)})")
    return None


def asked_wait(headers: Mapping[str, str], clock: Callable[[], float] = time.time) -> float | None:
    """Seconds the server asked to wait: ``Retry-After`` (seconds, or an HTTP date read against
    ``clock``), else the Hub's ``RateLimit: "api";r=0;t=N`` plus one second (``t`` is rounded down:
    huggingface_hub adds the same second). None when the answer does not say."""
    retry_after = (headers.get("Retry-After") or "").strip()
    if retry_after.isdigit():
        return float(retry_after)
    if retry_after:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(retry_after).timestamp() - clock())
        except (TypeError, ValueError, OverflowError):
            pass
    ratelimit = headers.get("RateLimit") or ""
    if re.search(r"\br=0\b", ratelimit) and (m := re.search(r"\bt=(\d+)", ratelimit)):
        return float(m.group(1)) + 1.0
    return None


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def describe(e: BaseException) -> str:
    """``Type: first line of the message`` (just the type when the message is empty, as for timeouts)."""
    line = first_line(e)
    return type(e).__name__ if line == type(e).__name__ else f"{type(e).__name__}: {line}"
