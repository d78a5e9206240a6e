"""Every failure hfstream reports, grouped by cause.

Each class carries the process exit code and a one-line message; the CLI prints
``hfstream: error: <message>`` and exits with ``exit_code``. Foreign failures are
translated into these once, where they enter the program: JSON files in
``jsonfile``, HTTP answers in ``httperrors`` (status -> error) and ``retry`` (what
is tried again), OS errors where the output is written. Nothing above that
boundary sees a foreign exception. Messages never contain a token.

A caller can catch a whole group; the five groups are the first level of the tree
(exit codes on the right)::

    HfstreamError                          1
    ├── InputError                         the repo's files or the options are wrong: fix them, not the run
    │   ├── NoWeightsError                 14
    │   ├── MissingFileError               15
    │   ├── UnsupportedArchitectureError   20
    │   │   ├── NotReproducibleError       20
    │   │   ├── UnsupportedQuantizationError 24
    │   │   └── UnusedTensorError          25
    │   ├── UnsupportedTokenizerError      21
    │   ├── UnsupportedOptionError         22
    │   ├── ImatrixRequiredError           23
    │   ├── InvalidConfigError             30
    │   ├── InvalidHeaderError             31
    │   ├── InvalidIndexError              32
    │   ├── ConfigMismatchError            33
    │   ├── InvalidImatrixError            34
    │   ├── MissingTensorError             35
    │   ├── InvalidChatTemplateError       36
    │   └── ManifestError                  60
    ├── AccessError                        the Hub does not show us the repo or let us in
    │   ├── RepoNotFoundError              10
    │   ├── RevisionNotFoundError          11
    │   ├── AuthRequiredError              12
    │   └── AccessDeniedError              13
    ├── TransferError                      the bytes did not come as they should
    │   ├── NetworkError                   40  retryable
    │   │   ├── RateLimitedError           41  retryable
    │   │   └── ServerError                42  retryable
    │   └── ProtocolError                  43
    ├── OutputError                        the result cannot be put where it goes
    │   ├── OutputExistsError              50
    │   ├── OutputWriteError               51
    │   ├── OutputBusyError                52  retryable
    │   ├── LockHeldError                  61  retryable
    │   └── PublishError                   62
    │       └── PublishConflictError       63  retryable
    └── InternalError                      1   the run itself stopped: a bug, a helper killed, Ctrl-C
        ├── HelperDiedError                70
        └── InterruptedError_              130
            └── TerminatedError            143

``retryable``: running the same command again later may succeed (``mirror`` exits 75 when
every failed entry is retryable). Within a run, ``retry.RetryPolicy`` retries the
``NetworkError`` family only.
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


# --- the groups ----------------------------------------------------------------


class InputError(HfstreamError):
    """Bad input: the repo's files, the options or the files given cannot make a GGUF as they are."""


class AccessError(HfstreamError):
    """Access: the repository or revision is not there for us, or the Hub wants a (better) token."""


class TransferError(HfstreamError):
    """Network: the bytes did not come as they should (connection, rate limits, 5xx, a broken protocol)."""


class OutputError(HfstreamError):
    """Output: the result cannot be put where it goes (a file, the mirror's state, a Hub repo)."""


class InternalError(HfstreamError):
    """Internal: the run itself stopped (a bug, a helper process killed, an interruption)."""

    exit_code = 1


# --- bad input: the model's files ------------------------------------------------


class NoWeightsError(InputError):
    """The repository holds no safetensors weights."""

    exit_code = 14


class MissingFileError(InputError):
    """A file the conversion needs (config.json, a shard) is missing upstream."""

    exit_code = 15


class UnsupportedArchitectureError(InputError):
    """``architectures[0]`` of config.json has no module in ``hfstream.arch``."""

    exit_code = 20


class NotReproducibleError(UnsupportedArchitectureError):
    """config.json needs something hfstream cannot give transformers (another configuration file,
    or a model type the installed transformers does not know although the family reads it), so the
    hparams the reference converter would see are unknown."""


class UnsupportedQuantizationError(UnsupportedArchitectureError):
    """The checkpoint is pre-quantized (``quantization_config``) with a method hfstream does not convert."""

    exit_code = 24


class UnusedTensorError(UnsupportedArchitectureError):
    """A tensor of the weights that the family neither converts nor knowingly leaves out (a variant
    of the architecture hfstream does not know): converting without it could change the model."""

    exit_code = 25


class UnsupportedTokenizerError(InputError):
    """The tokenizer cannot be converted (an unknown BPE pre-tokenizer, a tokenizer file that is not JSON)."""

    exit_code = 21


class UnsupportedOptionError(InputError):
    """An option value this build cannot honour (e.g. an unknown outtype)."""

    exit_code = 22


class ImatrixRequiredError(InputError):
    """The output type quantizes some tensor to a type that needs an importance matrix (``--imatrix``)."""

    exit_code = 23


class InvalidConfigError(InputError):
    """config.json (or another small metadata file) is not JSON, is missing keys or has bad values."""

    exit_code = 30


class InvalidHeaderError(InputError):
    """A safetensors header is malformed, inconsistent or hostile."""

    exit_code = 31


class InvalidIndexError(InputError):
    """model.safetensors.index.json is malformed or disagrees with the shards."""

    exit_code = 32


class ConfigMismatchError(InputError):
    """The files are each well formed but disagree: a tensor's shape or the tokenizer vs config.json."""

    exit_code = 33


class InvalidImatrixError(InputError):
    """The ``--imatrix`` file is unreadable, malformed, or made for another model."""

    exit_code = 34


class MissingTensorError(InputError):
    """A tensor the architecture needs is not in the weights (a layer config.json counts that has
    no tensors at all included): llama.cpp would refuse the file."""

    exit_code = 35


class InvalidChatTemplateError(InputError):
    """The ``--chat-template`` file cannot be read or is not UTF-8 text."""

    exit_code = 36


class ManifestError(InputError):
    """A mirror manifest (or its state file) is malformed."""

    exit_code = 60


# --- access ----------------------------------------------------------------------


class RepoNotFoundError(AccessError):
    """The repository does not exist (or is private and invisible to this token)."""

    exit_code = 10


class RevisionNotFoundError(AccessError):
    """The branch, tag or commit does not exist in the repository."""

    exit_code = 11


class AuthRequiredError(AccessError):
    """The repository is gated or private and no token was given."""

    exit_code = 12


class AccessDeniedError(AccessError):
    """A token was given but it has no access (to a gated repo, or to write), or it was rejected."""

    exit_code = 13


# --- the network -------------------------------------------------------------------


class NetworkError(TransferError):
    """The Hub could not be reached or kept failing after all retries."""

    exit_code = 40
    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None):
        super().__init__(message)
        #: seconds the server asked to wait before the next attempt (``Retry-After``, ``RateLimit: ...;t=N``)
        self.retry_after = retry_after


class RateLimitedError(NetworkError):
    """The Hub kept answering 429 after all retries."""

    exit_code = 41


class ServerError(NetworkError):
    """The Hub kept answering 5xx after all retries."""

    exit_code = 42


class ProtocolError(TransferError):
    """The server answered in a way that breaks the protocol (e.g. ignored Range)."""

    exit_code = 43


# --- the output ----------------------------------------------------------------------


class OutputExistsError(OutputError):
    """The output file exists and ``--force`` was not given."""

    exit_code = 50


class OutputWriteError(OutputError):
    """The output could not be written (disk full, permissions)."""

    exit_code = 51


class OutputBusyError(OutputError):
    """Another hfstream run is writing the same output file right now (its lock is held)."""

    exit_code = 52
    retryable = True


class LockHeldError(OutputError):
    """Another mirror run holds the lock on the same state file."""

    exit_code = 61
    retryable = True


class PublishError(OutputError):
    """Uploading to the target Hub repo failed (other than by network trouble)."""

    exit_code = 62


class PublishConflictError(PublishError):
    """The target repo moved while publishing (its head is no longer the commit we started from)."""

    exit_code = 63
    retryable = True


# --- the run itself ----------------------------------------------------------------------


class HelperDiedError(InternalError):
    """A helper process (resolving the repo, building the vocabulary and header) ended without an
    answer (killed, e.g. by the kernel when memory ran out). Nothing was written; a rerun starts over."""

    exit_code = 70


class InterruptedError_(InternalError):
    """The run was interrupted (Ctrl-C, SIGINT); a rerun resumes."""

    exit_code = 130


class TerminatedError(InterruptedError_):
    """The run was stopped by SIGTERM (a scheduler's stop), handled as Ctrl-C is; a rerun resumes."""

    exit_code = 143
