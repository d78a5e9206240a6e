"""Ctrl-C and SIGTERM, at any moment: one line, exit 130 (143 for SIGTERM), and whatever a rerun
resumes from kept.

The command goes through two phases, and the signals mean something else in each:

- **Starting** (the interpreter importing hfstream, numpy, gguf: 0.2-0.7 s): nothing has been
  asked of the Hub or written, so there is nothing to keep. ``install_early`` (called by the package
  first thing, only when it runs as the ``hfstream`` command) makes either signal print the line and
  end the process at once: no traceback from a half-done import.
- **Working** (``handling``, around ``cli.main``): SIGINT raises KeyboardInterrupt where the program
  is; inside ``asyncio.run`` asyncio's own handler turns it into the cancellation of the main task,
  which unwinds through every ``finally`` (the writer keeps the ``.part`` file and fsyncs the
  journal). SIGTERM is made the same interruption, so a scheduler that stops a run gets the same
  guarantees, and is remembered (``error``) for its own exit code.

A helper process (``forked``) dies of the signal the whole process group got; the parent then
raises the same interruption (``forked`` calls ``note``).

This module imports nothing heavy: it runs before the rest of the package is imported.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .errors import InterruptedError_

INTERRUPTED = "interrupted; rerun the same command to resume"
TERMINATED = "terminated (SIGTERM); rerun the same command to resume"

#: a SIGTERM stopped this run (else Ctrl-C did, if anything)
_terminated = False
#: this process is the command (``install_early`` ran): when ``handling`` ends, so does the process
_command = False


def started_as_the_command() -> bool:
    """Whether this interpreter was started as ``hfstream`` (the console script) or ``python -m
    hfstream``, not by a program that imports the package."""
    if sys.argv and os.path.basename(sys.argv[0]).lower() in ("hfstream", "hfstream.exe", "hfstream-script.py"):
        return True
    orig, names = list(getattr(sys, "orig_argv", ())), ("hfstream", "hfstream.__main__")
    i = 1
    while i < len(orig):  # the interpreter's own options, up to -m, -c or the script
        arg = orig[i]
        if arg == "-m":
            return i + 1 < len(orig) and orig[i + 1] in names
        if arg.startswith("-m"):
            return arg[2:] in names
        if arg in ("-X", "-W"):
            i += 2
            continue
        if not arg.startswith("-") or arg in ("-", "-c") or arg.startswith("-c"):
            return False
        i += 1
    return False


def install_early() -> None:
    """While the command starts: either signal prints the line and ends the process, now."""
    global _command
    if threading.current_thread() is threading.main_thread():
        _command = True
        signal.signal(signal.SIGINT, _exit_now)
        signal.signal(signal.SIGTERM, _exit_now)


def _exit_now(signum: int, frame: object) -> None:
    code, text = (143, TERMINATED) if signum == signal.SIGTERM else (130, INTERRUPTED)
    try:
        os.write(2, f"hfstream: error: {text}\n".encode())
    finally:
        os._exit(code)


@contextlib.contextmanager
def handling() -> Iterator[None]:
    """While the command works: SIGINT raises KeyboardInterrupt, and so does SIGTERM (remembered). The
    handlers before are put back after; in the command itself, whose outcome is then decided (only the
    exit is left), both are ignored instead, so that a late signal cannot make the exit code lie.
    Outside the main thread (where signals are not delivered to Python) it changes nothing."""
    global _terminated
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _terminated = False
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        if _command:
            ignore()
        else:
            signal.signal(signal.SIGINT, before[0])
            signal.signal(signal.SIGTERM, before[1])


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    note(signal.SIGTERM)
    handler = signal.getsignal(signal.SIGINT)  # asyncio's, while asyncio.run runs: it cancels the main task
    if callable(handler) and handler is not _on_sigterm:
        handler(signal.SIGINT, frame)
    else:
        raise KeyboardInterrupt


def note(signum: int) -> None:
    """Remember that ``signum`` stopped the run (a helper process died of it, the group got it too)."""
    global _terminated
    if signum == signal.SIGTERM:
        _terminated = True


def ignore() -> None:
    """From here on the outcome is decided (an error being reported, the result being printed): a late
    signal does not change it."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def error() -> InterruptedError_:
    """The error for the interruption that happened: TerminatedError (143) after a SIGTERM, else
    InterruptedError_ (130)."""
    from . import errors

    return errors.TerminatedError(TERMINATED) if _terminated else errors.InterruptedError_(INTERRUPTED)
