"""Publishing GGUF files to a Hub repo with huggingface_hub: uploads first, then one guarded commit.

Each file's bytes go up as soon as it is ready (``preupload_lfs_files``), so a caller that
deletes a shard after its upload holds one shard on disk at a time; the commit that makes
them visible is made once, with ``parent_commit`` set to the head it started from, so a
concurrent push to the target fails the commit instead of being overwritten.
"""

from __future__ import annotations

from pathlib import Path

from . import errors, settings


class Publisher:
    """One commit's worth of uploads to ``repo_id``."""

    def __init__(self, repo_id: str, *, token: str | None = None, endpoint: str | None = None):
        from huggingface_hub import HfApi

        self.repo_id = repo_id
        self.endpoint = (endpoint or settings.endpoint()).rstrip("/")
        self.token = settings.token(token)
        self.api = HfApi(endpoint=self.endpoint, token=self.token, library_name="hfstream")
        self._ops: list = []
        try:
            self.api.create_repo(repo_id, exist_ok=True, repo_type="model")
            self.parent = self.api.model_info(repo_id).sha
        except Exception as e:
            raise _translate(e, repo_id) from None

    def upload(self, path: Path, path_in_repo: str | None = None) -> None:
        """Upload one file's bytes now (it becomes visible with ``commit``)."""
        from huggingface_hub import CommitOperationAdd

        op = CommitOperationAdd(path_in_repo=path_in_repo or path.name, path_or_fileobj=str(path))
        try:
            self.api.preupload_lfs_files(self.repo_id, additions=[op], repo_type="model")
        except Exception as e:
            raise _translate(e, self.repo_id) from None
        self._ops.append(op)

    def commit(self, message: str, card: str | None = None) -> str:
        """Make every uploaded file (and the model card) visible in one commit; returns its sha."""
        from huggingface_hub import CommitOperationAdd

        ops = list(self._ops)
        if card is not None:
            ops.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card.encode("utf-8")))
        try:
            info = self.api.create_commit(self.repo_id, operations=ops, commit_message=message,
                                          parent_commit=self.parent, repo_type="model")
        except Exception as e:
            raise _translate(e, self.repo_id) from None
        return info.oid


def model_card(source_repo: str, source_commit: str, outtypes: list[str], files: list[str]) -> str:
    """A model card naming the base model, the exact source commit and the quant types."""
    listing = "\n".join(f"| `{f}` |" for f in sorted(files))
    types = ", ".join(sorted(set(outtypes)))
    return f"""---
base_model: {source_repo}
tags:
- gguf
- hfstream
---

# {source_repo.rsplit('/', 1)[-1]} GGUF

GGUF conversions of [{source_repo}](https://huggingface.co/{source_repo}) at commit
`{source_commit}`, made by hfstream (streamed from the Hub, byte-identical to llama.cpp's
converter). Quant types: {types}.

| file |
|---|
{listing}
"""


def publish(target_repo: str, paths: list[Path], *, source_repo: str, source_commit: str, outtype: str,
            token: str | None = None, endpoint: str | None = None) -> str:
    """Upload ``paths`` to ``target_repo`` and commit them with a model card; returns the commit sha."""
    pub = Publisher(target_repo, token=token, endpoint=endpoint)
    for p in paths:
        pub.upload(p)
    existing = []
    try:
        existing = [f for f in pub.api.list_repo_files(target_repo) if f.endswith(".gguf")]
    except Exception:
        pass
    files = sorted(set(existing) | {p.name for p in paths})
    outtypes = sorted({outtype} | {f.rsplit("-", 1)[-1].removesuffix(".gguf").lower() for f in existing})
    card = model_card(source_repo, source_commit, outtypes, files)
    return pub.commit(f"hfstream: {source_repo}@{source_commit[:12]} as {outtype}", card)


def _translate(e: Exception, repo_id: str) -> errors.HfstreamError:
    from huggingface_hub import errors as hf_errors

    if isinstance(e, errors.HfstreamError):
        return e
    if isinstance(e, hf_errors.HfHubHTTPError):
        status = e.response.status_code if e.response is not None else None
        if status in (401, 403):
            return errors.AccessDeniedError(f"no write access to {repo_id}: check the token")
        if status == 412 or (status == 409):
            return errors.PublishConflictError(f"{repo_id} moved while publishing (parent commit changed); run again")
        if status is not None and (status == 429 or status >= 500):
            err = errors.ServerError(f"publishing to {repo_id}: HTTP {status}")
            return err
        return errors.PublishError(f"publishing to {repo_id} failed: HTTP {status}")
    if isinstance(e, OSError) or type(e).__module__.startswith(("httpx", "httpcore")):
        return errors.NetworkError(f"publishing to {repo_id}: {type(e).__name__}")
    return errors.PublishError(f"publishing to {repo_id} failed: {type(e).__name__}: {e}")
