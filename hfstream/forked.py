"""Run one function in a forked child process and take its result back.

Building a big vocabulary and the header is about a second of single-threaded Python (json.loads
of a 17 MB tokenizer.json is one 0.2 s C call). In a thread it holds the GIL, so the event loop that
streams the first units meanwhile gets a slice now and then and a second core idles. A forked child
has a GIL of its own. It inherits its arguments (the draft plan, the small files) without pickling
them; only the result comes back through a pipe, pickled (a layout: a few MB of header).

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
from typing import Callable, TypeVar

from . import errors

T = TypeVar("T")


def available() -> bool:
    """Linux only: fork is cheap and safe enough there; macOS frameworks are not fork-safe."""
    return sys.platform.startswith("linux") and hasattr(os, "fork")


def call(what: str, fn: Callable[..., T], *args) -> T:
    """``fn(*args)`` computed in a forked child; its exception is raised here as it was raised there.

    ``what`` names the work in the error if the child dies without an answer. If the fork itself
    fails (no memory or processes left), the work is done here instead.
    """
    read_fd, write_fd = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(read_fd)
        os.close(write_fd)
        return fn(*args)
    if pid == 0:
        os.close(read_fd)
        _child(write_fd, fn, args)  # never returns
    os.close(write_fd)
    try:
        with open(read_fd, "rb") as pipe:  # blocks without the GIL
            payload = pipe.read()
    finally:
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:  # reaped by someone else's SIGCHLD handler: its status is gone
            status = None
    answer = _answer(payload) if status is None or status == 0 else None  # 0: it wrote all it had
    if answer is None:
        if status is not None and os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGINT:
            raise KeyboardInterrupt  # Ctrl-C reached the child too: the user's interrupt, not a failure
        if status is None:
            how = "ended"
        elif os.WIFSIGNALED(status):
            how = f"was killed by signal {os.WTERMSIG(status)}"
            how += " (out of memory?)" if os.WTERMSIG(status) == signal.SIGKILL else ""
        else:
            how = f"exited with status {os.waitstatus_to_exitcode(status)}"
        raise errors.HelperDiedError(f"{what}: the child process {how} before answering")
    ok, value = answer
    if not ok:
        raise value
    return value


def _answer(payload: bytes) -> tuple | None:
    try:
        return pickle.loads(payload)
    except Exception:  # cut short
        return None


def _child(write_fd: int, fn: Callable, args: tuple) -> None:
    status = 70
    try:
        gc.disable()
        # the parent's handlers (asyncio's Ctrl-C handling, its wakeup fd) belong to the parent's loop
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        try:
            answer = (True, fn(*args))
        except BaseException as e:  # noqa: B036 - every failure goes back to the parent
            if os.environ.get("HFSTREAM_DEBUG"):
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
