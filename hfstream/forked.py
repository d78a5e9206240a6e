"""Run one function in a forked child process and take its result back, now or later.

Two uses, both to put a second core to work on what would otherwise run alone on one:

- Building a big vocabulary and the header is about a second of single-threaded Python (json.loads
  of a 17 MB tokenizer.json is one 0.2 s C call). In a thread it holds the GIL, so the event loop that
  streams the first units meanwhile gets a slice now and then and a second core idles. A forked child
  has a GIL of its own. It inherits its arguments (the draft plan, the small files) without pickling
  them; only the result comes back through a pipe, pickled (a layout: a few MB of header).
- The CLI resolves the repo (huggingface_hub's import and one API call) in a child started before
  it imports the pipeline (``start``), and takes the answer when the pipeline needs it.

The child runs the function and nothing else: no garbage collection (it is short-lived, and a full
collection would touch, and so copy, the parent's pages), default signal handling, and ``os._exit``
whatever happens, so none of the parent's cleanup, buffers or ``atexit`` hooks run twice.
"""

from __future__ import annotations

import gc
import os
import pickle
import signal
import sys
import threading
from typing import Any, Callable, Generic, TypeVar

from . import errors, interrupt, settings

T = TypeVar("T")


def available() -> bool:
    """Linux only: fork is cheap and safe enough there; macOS frameworks are not fork-safe. Callers
    do the work in this process instead (a thread) where it is not, or where ``settings`` says not."""
    return sys.platform.startswith("linux") and hasattr(os, "fork") and settings.linux_path("fork")


def call(what: str, fn: Callable[..., T], *args) -> T:
    """``fn(*args)`` computed in a forked child; its exception is raised here as it was raised there.

    ``what`` names the work in the error if the child dies without an answer. If the fork itself
    fails (no memory or processes left), the work is done here instead.
    """
    return start(what, fn, *args).result()


#: what Ctrl-C and ``kill`` send, held off across a fork (``start``)
_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def start(what: str, fn: Callable[..., T], *args) -> Pending[T]:
    """``call``, but returning at once: the answer is taken with ``result()`` (or dropped with ``cancel()``)."""
    read_fd, write_fd = os.pipe()
    # Ctrl-C held off across the fork: the child would otherwise take it in the parent's handler while
    # Python's own after-fork hooks run, and print "Exception ignored in ... _after_fork" beside the
    # parent's one line. Held, it reaches the child once its handlers are the defaults (and ends it).
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        pid = os.fork()
    except OSError:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.close(read_fd)
        os.close(write_fd)
        return Pending(what, -1, -1, _outcome(fn, args))
    if pid == 0:
        os.close(read_fd)
        _child(write_fd, fn, args, mask)  # never returns
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    os.close(write_fd)
    return Pending(what, pid, read_fd)


class Pending(Generic[T]):
    """A child's answer to come."""

    def __init__(self, what: str, pid: int, read_fd: int, outcome: tuple[bool, Any] | None = None):
        self._what = what
        self._pid = pid
        self._read_fd = read_fd
        self._outcome = outcome
        # ``result`` may wait in one thread while ``cancel`` is called from another (the run stopped):
        # one of them reads the pipe and reaps the child, and no signal goes to its pid once reaped
        self._reading = threading.Lock()
        self._reaping = threading.Lock()

    def result(self) -> T:
        """Wait for the child's answer: its value, or its exception raised here."""
        with self._reading:
            if self._outcome is None:
                try:
                    self._outcome = self._collect()
                except BaseException as e:  # noqa: B036 - the child died: say so again if asked again
                    self._outcome = (False, e)
                    raise
        ok, value = self._outcome
        if not ok:
            raise value
        return value

    def cancel(self) -> None:
        """Stop the child if it has not answered yet (no-op once ``result`` has it); a ``result`` waiting
        in another thread then raises."""
        with self._reaping:
            if self._pid > 0:
                try:
                    os.kill(self._pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        with self._reading:  # a reader in another thread has its end of file now, and finishes first
            if self._outcome is None:
                try:
                    self._collect()
                except BaseException:  # noqa: B036 - killed on purpose: nothing to report
                    pass
                self._outcome = (False, RuntimeError(f"{self._what}: cancelled"))

    def _collect(self) -> tuple[bool, Any]:
        try:
            with open(self._read_fd, "rb") as pipe:  # blocks without the GIL
                payload = pipe.read()
        finally:
            status: int | None
            with self._reaping:
                try:
                    _, status = os.waitpid(self._pid, 0)
                except ChildProcessError:  # reaped by someone else's SIGCHLD handler: its status is gone
                    status = None
                self._pid = -1
        answer = _answer(payload) if status is None or status == 0 else None  # 0: it wrote all it had
        if answer is None:
            if status is not None and os.WIFSIGNALED(status) and os.WTERMSIG(status) in (signal.SIGINT, signal.SIGTERM):
                # Ctrl-C (or a SIGTERM to the process group) reached the child too: the run is being
                # stopped, it did not fail
                interrupt.note(os.WTERMSIG(status))
                raise KeyboardInterrupt
            if status is None:
                how = "ended"
            elif os.WIFSIGNALED(status):
                how = f"was killed by signal {os.WTERMSIG(status)}"
                how += " (out of memory?)" if os.WTERMSIG(status) == signal.SIGKILL else ""
            else:
                how = f"exited with status {os.waitstatus_to_exitcode(status)}"
            raise errors.HelperDiedError(f"{self._what}: the child process {how} before answering")
        return answer


def _outcome(fn: Callable, args: tuple) -> tuple[bool, Any]:
    try:
        return True, fn(*args)
    except Exception as e:
        return False, e


def _answer(payload: bytes) -> tuple | None:
    try:
        return pickle.loads(payload)
    except Exception:  # cut short
        return None


def _child(write_fd: int, fn: Callable, args: tuple, mask: set[int | signal.Signals]) -> None:
    status = 70
    try:
        gc.disable()
        # the parent's handlers (asyncio's Ctrl-C handling, its wakeup fd) belong to the parent's loop
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        try:
            answer = (True, fn(*args))
        except BaseException as e:  # noqa: B036 - every failure goes back to the parent
            if settings.debug():
                import traceback

                traceback.print_exc()
            answer = (False, e)
        try:
            payload = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
            if not answer[0]:
                pickle.loads(payload)  # exceptions with their own __init__ may not come back
        except Exception as e:  # what does not pickle still goes back as a type and a message
            cause = e if answer[0] else answer[1]
            payload = pickle.dumps((False, RuntimeError(f"{type(cause).__name__}: {cause}")))
        with open(write_fd, "wb") as pipe:
            pipe.write(payload)
        status = 0
    finally:
        os._exit(status)
