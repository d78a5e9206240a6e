"""hfstream: convert Hugging Face safetensors repos to GGUF by streaming them from the Hub.

    >>> import hfstream
    >>> result = hfstream.convert("org/model", outtype="q8_0")
    >>> result.path, result.commit_sha
"""

from __future__ import annotations

from . import interrupt as _interrupt

# Before anything else is imported: Ctrl-C while the command starts is one line, not a traceback.
if _interrupt.started_as_the_command():
    _interrupt.install_early()

from typing import Any  # noqa: E402

from . import errors  # noqa: E402
from ._version import __version__  # noqa: E402
from .errors import HfstreamError  # noqa: E402
from .options import ConvertResult, Options, Progress  # noqa: E402
from .options import describe as _describe_options  # noqa: E402
from .options import signature as _options_signature  # noqa: E402

__all__ = ["convert", "ConvertResult", "Progress", "HfstreamError", "errors", "__version__"]


def convert(repo_id: str, *args: Any, **kwargs: Any) -> ConvertResult:
    # The signature and the argument list of the docstring are made from hfstream.options.Options
    # (below), where every option is declared once.
    try:
        bound = _SIGNATURE.bind(repo_id, *args, **kwargs)
    except TypeError as e:  # an unknown or doubled argument, as Python words it for a plain function
        raise TypeError(f"convert() {e}") from None
    repo = bound.arguments.pop("repo_id")
    opts = Options(**bound.arguments)
    # The pipeline (numpy, aiohttp, gguf: ~0.2 s of imports) loads on first use, so that the CLI can
    # start resolving the repo in a child process before it imports them.
    from .pipeline import run

    return run(repo, opts)


_SIGNATURE = _options_signature(ConvertResult)
convert.__signature__ = _SIGNATURE  # type: ignore[attr-defined]
convert.__doc__ = f"""Convert ``repo_id`` at ``revision`` to a GGUF file, streaming the weights from the Hub.

    ``repo_id`` is ``org/name`` on the Hub, or a path to a local model directory. Every other argument
    is an option (``hfstream.options.Options``); ``outtype``, ``revision``, ``outfile`` and ``token``
    may also be given by position, in that order.

    Args:
{_describe_options()}

    Returns a ConvertResult (path, commit sha, tensor count, bytes fetched and written, seconds).
    Raises an ``hfstream.errors.HfstreamError`` subclass for every expected failure (a bad option
    value: ``UnsupportedOptionError``); no partial file is ever left at the output path.
    """
