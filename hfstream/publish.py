"""Publishing GGUF files to a Hub repo with huggingface_hub: each file uploaded when ready, one guarded commit.

    pub = Publisher("me/Model-GGUF")        # creates the repo if needed: no write access fails here,
                                            # before any conversion work is spent
    pub.upload(path, delete_after=True)     # per finished file or shard: bytes go up now, then the disk is freed
    pub.finish(source_repo="org/Model", source_commit=sha, outtype="q8_0")   # model card + one commit

**The per-shard hook.** ``upload`` sends one file's bytes to the Hub's storage at once
(``HfApi.preupload_lfs_files``) and remembers the file for the commit; nothing shows in the repo
until ``finish``. Once ``upload`` returns the commit needs only the file's sha256 and size, so
``delete_after=True`` removes the local file: a converter that calls
``functools.partial(pub.upload, delete_after=True)`` from its "shard finished" callback holds one
shard on disk at a time, whatever the number of shards. ``upload`` blocks until the shard is stored
upstream (huggingface_hub is synchronous): a pipeline that wants to go on converting meanwhile calls
it off its event loop (``asyncio.to_thread``); uploads of different files may run in parallel threads.

**The commit.** ``commit`` is one ``create_commit`` with ``parent_commit`` set to the head the card
was built from: if the branch moved in between, the Hub answers 412 and nothing is committed
(``PublishConflictError``, retryable). ``finish`` reads the head and the files there, builds the card,
commits, and on a conflict starts again from the new head (``attempts`` times in all); the uploads are
never repeated. So publishers of several outtypes of one model into one repo (a fanned-out mirror)
all land, none dropping another's files from the card.

**The card** names the base model (``base_model`` front matter, ``base_model_relation: quantized``),
and for every GGUF file its quant type and the exact source commit it was converted from. Files of
the same outtype that this publish no longer produces (a different shard count) are deleted in the
same commit. The per-file record is kept in the card itself (an HTML comment read back by the next
publish), so the card stays right when outtypes are republished at different times.

**Protocol.** huggingface_hub chooses how bytes travel: with ``hf_xet`` installed (its default) to
the Hub's Xet storage; with ``HF_HUB_DISABLE_XET=1`` through the Git LFS batch API to pre-signed
storage URLs (the fixture Hub implements only this one). Either way the Hub token goes to the Hub
endpoint only, never to the storage host.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from . import errors, httperrors, jsonfile, settings
from .retry import RetryPolicy

T = TypeVar("T")

#: the record of published files inside the card (an HTML comment, invisible on the Hub's page)
_RECORD_RE = re.compile(r"<!-- hfstream-files: (\{.*?\}) -->", re.S)
#: ``-00001-of-00003`` before ``.gguf`` in a split output's name
_SPLIT_RE = re.compile(r"-\d{5}-of-\d{5}$")


class Publisher:
    """One commit's worth of uploads to ``repo_id`` (a model repo, branch ``main``)."""

    def __init__(self, repo_id: str, *, token: str | None = None, endpoint: str | None = None,
                 retries: int | RetryPolicy = 8):
        from huggingface_hub import HfApi

        from . import __version__

        self.repo_id = repo_id
        self.endpoint = (endpoint or settings.endpoint()).rstrip("/")
        self.token = settings.token(token)
        self.api = HfApi(endpoint=self.endpoint, token=self.token, library_name="hfstream",
                         library_version=__version__)
        #: every call to the Hub runs under this policy (429, 5xx and connection failures are retried)
        self.retry = RetryPolicy.of(retries)
        self._request = httperrors.Request(repo_id, self.endpoint, token=bool(self.token), publishing=True)
        self._ops: dict[str, object] = {}  # path in repo -> CommitOperationAdd, uploaded
        self._call(self.api.create_repo, repo_id, exist_ok=True, repo_type="model")
        #: the head the next ``commit`` is guarded by (``refresh`` moves it)
        self.parent = self.refresh()

    @property
    def uploaded(self) -> list[str]:
        """Paths in the repo of the files uploaded and not committed yet (``commit`` / ``finish`` do that)."""
        return sorted(self._ops)

    def refresh(self) -> str:
        """Read the branch head now and guard the next commit with it."""
        sha = self._call(self.api.model_info, self.repo_id, revision="main").sha
        if sha is None:
            raise errors.PublishError(f"{self.repo_id}: the Hub gave no commit for its main branch")
        self.parent = sha
        return sha

    def upload(self, path: Path, path_in_repo: str | None = None, *, delete_after: bool = False) -> None:
        """Upload one file's bytes now; it becomes visible with the commit. ``delete_after`` removes it once up.

        This is the per-shard hook: see the module docstring.
        """
        from huggingface_hub import CommitOperationAdd

        path = Path(path)
        op = CommitOperationAdd(path_in_repo=path_in_repo or path.name, path_or_fileobj=str(path))
        self._call(self.api.preupload_lfs_files, self.repo_id, additions=[op], repo_type="model", free_memory=True)
        if delete_after:
            # A file the Hub stores as a plain git blob (small, not binary: never a GGUF) is sent inside
            # the commit itself, so keep its bytes in memory before the file goes.
            if not getattr(op, "_is_uploaded", True):
                op = CommitOperationAdd(path_in_repo=op.path_in_repo, path_or_fileobj=path.read_bytes())
            path.unlink(missing_ok=True)
        self._ops[op.path_in_repo] = op

    def commit(self, message: str, card: str | None = None, *, delete: tuple[str, ...] = ()) -> str:
        """Make every uploaded file (and ``card`` as README.md) visible in one commit guarded by ``parent``.

        Raises PublishConflictError (nothing committed) if the branch moved since ``parent``.
        Returns the new head (the old one when nothing changed: the Hub then makes no commit).
        """
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        ops: list = [CommitOperationDelete(path_in_repo=p) for p in delete]
        ops += list(self._ops.values())
        if card is not None:
            ops.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card.encode("utf-8")))
        info = self._call(self.api.create_commit, self.repo_id, operations=ops, commit_message=message,
                          parent_commit=self.parent, repo_type="model")
        self.parent = info.oid
        self._ops.clear()  # committed: huggingface_hub refuses to commit an operation twice
        return info.oid

    def finish(self, *, source_repo: str, source_commit: str, outtype: str | Mapping[str, str], attempts: int = 3) -> str:
        """Commit the uploads with an updated model card, starting over from the new head on a conflict.

        ``outtype``: the type of every upload, or, for the outputs of one pass of several types, a
        map from each uploaded file's path in the repo to its type."""
        def type_of(name: str) -> str:
            return outtype if isinstance(outtype, str) else outtype.get(name) or _outtype_from_name(name)

        ours = {name: {"outtype": type_of(name), "source_commit": source_commit} for name in self._ops}
        types = {info["outtype"] for info in ours.values()} or ({outtype} if isinstance(outtype, str) else set())
        for attempt in range(1, max(1, attempts) + 1):
            head = self.refresh()
            files = self._call(self.api.list_repo_files, self.repo_id, revision=head)
            record = _read_record(self._call(self._read_text, "README.md", head)) if "README.md" in files else {}
            ggufs = {f for f in files if f.endswith(".gguf")}
            # what is there now: recorded files that still exist, and GGUFs someone else put there
            current = {f: record.get(f) or {"outtype": _outtype_from_name(f), "source_commit": ""} for f in ggufs}
            stale = tuple(sorted(f for f, info in current.items()
                                 if f in record and info["outtype"] in types and f not in ours))
            merged = {**{f: i for f, i in current.items() if f not in stale}, **ours}
            card = model_card(source_repo, merged)
            try:
                return self.commit(f"hfstream: {source_repo}@{source_commit[:12]} as {', '.join(sorted(types))}", card,
                                   delete=stale)
            except errors.PublishConflictError:
                if attempt == attempts:
                    raise
        raise AssertionError("unreachable")

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)``, a call to the Hub, under the retry policy; its failures as ours."""

        def attempt() -> T:
            try:
                return fn(*args, **kwargs)
            except Exception as e:
                raise _translate(e, self._request, self.retry) from None

        return self.retry.call(attempt)

    def _read_text(self, path: str, revision: str) -> str:
        from huggingface_hub import hf_hub_url
        from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

        url = hf_hub_url(self.repo_id, path, revision=revision, endpoint=self.endpoint)
        response = get_session().get(url, headers=build_hf_headers(token=self.token, library_name="hfstream"))
        hf_raise_for_status(response)
        return response.text


def model_card(source_repo: str, files: dict[str, dict[str, str]]) -> str:
    """A model card naming the base model and, per GGUF file, its quant type and source commit."""
    types = sorted({info["outtype"] for info in files.values()})
    commits = sorted({info["source_commit"] for info in files.values() if info["source_commit"]})
    rows = "\n".join(f"| `{name}` | {info['outtype']} | " + (f"`{info['source_commit']}`" if info["source_commit"]
                                                              else "unknown") + " |"
                     for name, info in sorted(files.items()))
    at = f"at commit `{commits[0]}`" if len(commits) == 1 else "at the commits listed below"
    record = json.dumps(files, sort_keys=True, separators=(",", ":"))
    return f"""---
base_model: {source_repo}
base_model_relation: quantized
tags:
- gguf
- hfstream
---

# {source_repo.rsplit('/', 1)[-1]} GGUF

GGUF conversions of [{source_repo}](https://huggingface.co/{source_repo}) {at}, made by hfstream
(streamed from the Hub; the same tensors and metadata as llama.cpp's converter). Quant types: {", ".join(types)}.

| file | type | source commit |
|---|---|---|
{rows}

<!-- hfstream-files: {record} -->
"""


def publish(target_repo: str, paths: list[Path], *, source_repo: str, source_commit: str, outtype: str,
            token: str | None = None, endpoint: str | None = None, delete_after: bool = False,
            attempts: int = 3, retries: int | RetryPolicy = 8) -> str:
    """Upload ``paths`` to ``target_repo`` and commit them with an updated model card; returns the commit sha."""
    pub = Publisher(target_repo, token=token, endpoint=endpoint, retries=retries)
    for p in paths:
        pub.upload(Path(p), delete_after=delete_after)
    return pub.finish(source_repo=source_repo, source_commit=source_commit, outtype=outtype, attempts=attempts)


def _read_record(card: str) -> dict[str, dict[str, str]]:
    """The per-file record an earlier publish left in the card ({} if none or unreadable)."""
    match = _RECORD_RE.search(card)
    try:
        record = jsonfile.load(match.group(1), "README.md's file record") if match else {}
    except errors.HfstreamError:
        return {}
    if not isinstance(record, dict):
        return {}
    return {name: {"outtype": str(info.get("outtype", "")), "source_commit": str(info.get("source_commit", ""))}
            for name, info in record.items() if isinstance(name, str) and isinstance(info, dict)}


def _outtype_from_name(name: str) -> str:
    """``Name-1B-Q8_0.gguf`` or ``Name-1B-Q8_0-00001-of-00002.gguf`` -> ``q8_0``."""
    stem = _SPLIT_RE.sub("", name.removesuffix(".gguf"))
    return stem.rsplit("-", 1)[-1].lower()


def _translate(e: BaseException, request: httperrors.Request, policy: RetryPolicy) -> errors.HfstreamError:
    """huggingface_hub / httpx / OS errors, or what they wrap (an upload error's cause), as ours."""
    seen: BaseException | None = e
    while seen is not None:  # huggingface_hub wraps a failed upload in RuntimeError("Error while uploading ...")
        ours = httperrors.from_exception(seen, request, clock=policy.clock)
        if ours is not None:
            return ours
        seen = seen.__cause__
    return errors.PublishError(f"publishing to {request.repo_id} failed: {httperrors.describe(e)}")
