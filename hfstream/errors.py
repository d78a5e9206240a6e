"""Every failure hfstream reports, grouped by cause.

Each class carries the process exit code and a one-line message; the CLI prints
``hfstream: error: <message>`` and exits with ``exit_code``. Lower-level errors
(aiohttp, OS, JSON) are translated into these where they enter the program, so
nothing above the boundary sees a foreign exception. Messages never contain a
token.
"""

from __future__ import annotations


class HfstreamError(Exception):
    """Base class: a failure with a one-line message and an exit code."""

    exit_code = 1
    #: retryable failures (network, rate limits, 5xx) may succeed if run again
    retryable = False

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


# --- the repository and access ---------------------------------------------


class RepoNotFoundError(HfstreamError):
    """The repository does not exist (or is private and invisible to this token)."""

    exit_code = 10


class RevisionNotFoundError(HfstreamError):
    """The branch, tag or commit does not exist in the repository."""

    exit_code = 11


class AuthRequiredError(HfstreamError):
    """The repository is gated or private and no token was given."""

    exit_code = 12


class AccessDeniedError(HfstreamError):
    """A token was given but it has no access to the gated repository."""

    exit_code = 13


class NoWeightsError(HfstreamError):
    """The repository holds no safetensors weights."""

    exit_code = 14


class MissingFileError(HfstreamError):
    """A file the conversion needs (config.json, a shard) is missing upstream."""

    exit_code = 15


# --- what the model is ---------------------------------------------------------


class UnsupportedArchitectureError(HfstreamError):
    """``architectures[0]`` of config.json has no module in ``hfstream.arch``."""

    exit_code = 20


class UnsupportedQuantizationError(UnsupportedArchitectureError):
    """The checkpoint is pre-quantized (``quantization_config``) with a method hfstream does not convert."""

    exit_code = 24


class UnsupportedTokenizerError(HfstreamError):
    """The tokenizer cannot be converted (e.g. an unknown BPE pre-tokenizer)."""

    exit_code = 21


class UnsupportedOptionError(HfstreamError):
    """An option value this build cannot honour (e.g. an unknown outtype)."""

    exit_code = 22


class ImatrixRequiredError(HfstreamError):
    """The output type quantizes some tensor to a type that needs an importance matrix (``--imatrix``)."""

    exit_code = 23


# --- malformed input -----------------------------------------------------------


class InvalidConfigError(HfstreamError):
    """config.json (or another small JSON file) is missing keys or has bad values."""

    exit_code = 30


class InvalidHeaderError(HfstreamError):
    """A safetensors header is malformed, inconsistent or hostile."""

    exit_code = 31


class InvalidIndexError(HfstreamError):
    """model.safetensors.index.json is malformed or disagrees with the shards."""

    exit_code = 32


class ConfigMismatchError(HfstreamError):
    """The files are each well formed but disagree: a tensor's shape or the tokenizer vs config.json."""

    exit_code = 33


class InvalidImatrixError(HfstreamError):
    """The ``--imatrix`` file is unreadable, malformed, or made for another model."""

    exit_code = 34


# --- the network ---------------------------------------------------------------


class NetworkError(HfstreamError):
    """The Hub could not be reached or kept failing after all retries."""

    exit_code = 40
    retryable = True


class RateLimitedError(NetworkError):
    """The Hub kept answering 429 after all retries."""

    exit_code = 41


class ServerError(NetworkError):
    """The Hub kept answering 5xx after all retries."""

    exit_code = 42


class ProtocolError(HfstreamError):
    """The server answered in a way that breaks the protocol (e.g. ignored Range)."""

    exit_code = 43


# --- the output ----------------------------------------------------------------


class OutputExistsError(HfstreamError):
    """The output file exists and ``--force`` was not given."""

    exit_code = 50


class OutputWriteError(HfstreamError):
    """The output could not be written (disk full, permissions)."""

    exit_code = 51


# --- mirror jobs -----------------------------------------------------------------


class ManifestError(HfstreamError):
    """A mirror manifest (or its state file) is malformed."""

    exit_code = 60


class LockHeldError(HfstreamError):
    """Another mirror run holds the lock on the same state file."""

    exit_code = 61
    retryable = True


class PublishError(HfstreamError):
    """Uploading to the target Hub repo failed (other than by network trouble)."""

    exit_code = 62


class PublishConflictError(PublishError):
    """The target repo moved while publishing (its head is no longer the commit we started from)."""

    exit_code = 63
    retryable = True


class HelperDiedError(HfstreamError):
    """A helper process (resolving the repo, building the vocabulary and header) ended without an
    answer (killed, e.g. by the kernel when memory ran out). Nothing was written; a rerun starts over."""

    exit_code = 70


class InterruptedError_(HfstreamError):
    """The run was interrupted (Ctrl-C); a rerun resumes."""

    exit_code = 130
